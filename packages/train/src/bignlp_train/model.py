"""A GPT-3-style decoder in plain single-device PyTorch.

Read top to bottom: embeddings (token + learned absolute position) → N pre-LayerNorm
blocks (causal self-attention, GeLU MLP) → final LayerNorm → logits through the
token embedding (tied). Parameter names and the fused QKV layout follow
Megatron's, so converting to Megatron/NeMo checkpoints is a copy, not a
reshuffle. Nothing here knows about devices, precision or parallelism: the model
is built on the meta device and materialised by the caller (``build_model``),
which a later ``parallelize.py`` needs in order to shard it before allocating.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

Fill = Callable[[torch.Tensor, Callable[[torch.Tensor], object]], None]  # (param, init_) -> None


@dataclass(frozen=True, kw_only=True)
class GPTConfig:
    """The architecture alone: what a checkpoint needs to rebuild the model."""

    vocab_size: int  # padded (see padded_vocab_size): embedding rows and logits
    max_position_embeddings: int
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    ffn_hidden_size: int  # GPT-3: 4 × hidden_size
    kv_channels: int  # per-head width; GPT-3: hidden_size / num_attention_heads
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.02


def padded_vocab_size(vocab_size: int, divisible_by: int, tensor_parallel_size: int = 1) -> int:
    """Megatron's padding: round the tokenizer's vocabulary up to a multiple of divisible_by × TP.

    Faster matmuls, and every tensor-parallel rank gets an equal slice (50257 → 50304).
    """
    multiple = divisible_by * tensor_parallel_size
    return ((vocab_size + multiple - 1) // multiple) * multiple


class Dropout(nn.Module):
    """``nn.Dropout`` that keeps a 1-byte mask for backward on every device.

    On CPU ``F.dropout`` multiplies by a noise tensor of the input's dtype and saves it (4 bytes an
    element in fp32, 2 in bf16); ``torch.native_dropout`` (what CUDA's ``F.dropout`` runs) draws the
    same Bernoulli numbers from the same generator, gives bit-identical outputs and gradients, and
    saves a bool mask: Korthikanti et al.'s 1 byte per element.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return F.dropout(x, 1.0, True)
        return torch.native_dropout(x, self.p, True)[0]

    def extra_repr(self) -> str:
        return f"p={self.p}"


class CoreAttention(nn.Module):
    """softmax(QKᵀ/√d)·V with causal (or document) masking and attention dropout; no parameters.

    A module of its own so that selective activation recomputation (``parallelize.apply_ac``)
    can recompute just this part: it is cheap in FLOPs but its activations are large.

    ``F.scaled_dot_product_attention`` runs it wherever it has a fused kernel: on GPUs (flash or
    memory-efficient attention, dropout included; nothing of size s² is kept for backward) and on
    CPUs without dropout. With dropout on a CPU, SDPA falls back to its math path, which upcasts
    16-bit inputs to fp32 and keeps fp32 copies of Q, K, V and three fp32 s² tensors; there this
    module runs Megatron's unfused attention instead (``unfused_attention``): bf16 stays bf16 and
    the dropout mask is 1 byte an element, the 5·a·s²·b bytes Korthikanti et al. count.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.dropout_p = cfg.attention_dropout

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        dropout_p = self.dropout_p if self.training else 0.0
        if dropout_p > 0.0 and q.device.type == "cpu":
            return unfused_attention(q, k, v, attention_mask, dropout_p)
        if attention_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        # document-wise causal mask (reset_attention_mask); True = may attend
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout_p)


def unfused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout_p: float) -> torch.Tensor:
    """Attention as separate ops, each keeping what Megatron's unfused path keeps for backward.

    q, k, v: (batch, heads, seq, kv). Kept: Q, K, V (one contiguous copy each), the softmax output,
    the bool dropout mask and the dropped probabilities. The mask enters as an additive -inf bias in
    the QKᵀ matmul (``baddbmm``, which keeps nothing for it). Softmax accumulates in fp32 whatever
    the input dtype. Masked positions get probability 0; every row keeps its diagonal.
    """
    batch, heads, seq, kv = q.shape
    q3, k3, v3 = (t.reshape(batch * heads, seq, kv) for t in (q, k, v))
    if attention_mask is None:
        allowed = torch.ones(seq, seq, dtype=torch.bool, device=q.device).tril()
    else:  # (batch, 1, seq, seq) → one bias per (batch, head)
        allowed = attention_mask.expand(batch, heads, seq, seq).reshape(batch * heads, seq, seq)
    bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    scores = torch.baddbmm(bias.expand(batch * heads, seq, seq), q3, k3.transpose(1, 2), alpha=kv ** -0.5)
    probs = torch.native_dropout(torch.softmax(scores, dim=-1), dropout_p, True)[0]
    return torch.bmm(probs, v3).view(batch, heads, seq, kv)


class SelfAttention(nn.Module):
    """Causal multi-head attention with one fused QKV projection."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.kv_channels = cfg.kv_channels
        projection = cfg.num_attention_heads * cfg.kv_channels
        self.linear_qkv = nn.Linear(cfg.hidden_size, 3 * projection)
        self.core_attention = CoreAttention(cfg)
        self.linear_proj = nn.Linear(projection, cfg.hidden_size)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, seq, _ = x.shape
        # Megatron's layout: per head [q | k | v], so a head's three slices sit together. The head
        # count comes from the output width: under tensor parallelism a rank holds whole heads only.
        qkv = self.linear_qkv(x)
        qkv = qkv.view(batch, seq, qkv.shape[-1] // (3 * self.kv_channels), 3 * self.kv_channels)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.kv_channels, dim=-1))  # (B, heads, S, kv)
        out = self.core_attention(q, k, v, attention_mask)
        return self.linear_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class MLP(nn.Module):
    """h → ffn → GeLU → h."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size)
        self.linear_fc2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh approximation: what Megatron's fused bias-GeLU (the GPT-3 recipes' default) computes
        return self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: x + drop(attn(ln(x))), then x + drop(mlp(ln(x)))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.self_attention = SelfAttention(cfg)
        self.pre_mlp_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.mlp = MLP(cfg)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.input_layernorm(x), attention_mask))
        return x + self.dropout(self.mlp(self.pre_mlp_layernorm(x)))


class Embedding(nn.Module):
    """Token embedding + learned absolute position embedding, then dropout."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.word_embeddings(tokens) + self.position_embeddings(position_ids))


class GPT(nn.Module):
    """The decoder. ``forward(tokens)`` → logits of shape (batch, seq, vocab_size)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = Embedding(cfg)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.num_layers))
        self.final_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)

    @property
    def output_weight(self) -> torch.Tensor:
        """The output projection: the token embedding itself (tied, as in GPT-3)."""
        return self.embedding.word_embeddings.weight

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if position_ids is None:
            position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        x = self.embedding(tokens, position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return F.linear(self.final_layernorm(x), self.output_weight)

    @torch.no_grad()
    def init_weights(self, fill: Fill | None = None) -> None:
        """Megatron's init: weights ~ N(0, std), output projections N(0, std/√(2·layers)), biases 0, LN 1/0.

        The scaled projections (attention out, second MLP linear) keep the residual
        stream's variance from growing with depth. Uses the global torch RNG, so
        ``torch.manual_seed`` beforehand makes it reproducible on any device.

        ``fill(param, init_)`` applies ``init_`` to ``param``; the default calls it in place.
        A sharded model passes one that runs ``init_`` on the full shape and keeps its
        slice, so its weights equal the single-device ones (same RNG draws, same order).
        """
        fill = fill or (lambda param, init_: init_(param))
        std = self.cfg.init_method_std
        scaled_std = std / math.sqrt(2.0 * self.cfg.num_layers)
        for name, module in self.named_modules():
            if isinstance(module, nn.LayerNorm):
                fill(module.weight, nn.init.ones_)
                fill(module.bias, nn.init.zeros_)
            elif isinstance(module, nn.Embedding):
                fill(module.weight, lambda t: nn.init.normal_(t, mean=0.0, std=std))
            elif isinstance(module, nn.Linear):
                out_std = scaled_std if name.endswith(("linear_proj", "linear_fc2")) else std
                fill(module.weight, lambda t, s=out_std: nn.init.normal_(t, mean=0.0, std=s))
                fill(module.bias, nn.init.zeros_)


def build_model(cfg: GPTConfig, device: torch.device | str = "cpu") -> GPT:
    """Construct on the meta device (no memory, no RNG), allocate on ``device``, then init."""
    with torch.device("meta"):
        model = GPT(cfg)
    model.to_empty(device=device)
    model.init_weights()
    return model


def num_parameters(model: nn.Module) -> int:
    """Distinct parameters (the tied embedding counts once)."""
    return sum(p.numel() for p in model.parameters())


def count_parameters(cfg: GPTConfig) -> int:
    """Parameters of ``GPT(cfg)`` from the config alone (equals ``num_parameters(GPT(cfg))``).

    Token + position embeddings, per layer QKV and output projection (4·h·a + 3a + h, a = heads ×
    kv_channels; 4h² + 4h for GPT-3), MLP (2·h·ffn + ffn + h) and two LayerNorms (4h), then the
    final LayerNorm. The output layer is the token embedding (tied), so it adds nothing.
    """
    h, f, a = cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads * cfg.kv_channels
    per_layer = (3 * h * a + 3 * a) + (a * h + h) + (2 * h * f + f + h) + 4 * h
    return (cfg.vocab_size + cfg.max_position_embeddings) * h + cfg.num_layers * per_layer + 2 * h


def flops_per_token(cfg: GPTConfig, seq_length: int) -> float:
    """Model FLOPs per trained token, forward + backward: ``6·N + 12·L·a·s`` (PaLM appendix B; Megatron).

    ``N`` = the weights of the matrix multiplies a token goes through: per layer QKV, output
    projection and the two MLP linears (``4·h·a + 2·h·ffn``, 12h² for GPT-3), plus the output
    layer (``V·h``, the tied embedding). Biases, LayerNorms and embedding lookups are left out,
    so this is exactly Megatron's ``72·L·h²·(1 + s/(6h) + V/(12·h·L))`` per token
    (Narayanan et al. 2021, without recomputation). ``12·L·a·s`` (a = heads × kv_channels, = h
    for GPT-3) is attention's QKᵀ and scores·V, counted over the full s × s square as both
    papers do. Recomputation is not counted: these are *model* FLOPs, the MFU numerator.
    """
    h, f, a = cfg.hidden_size, cfg.ffn_hidden_size, cfg.num_attention_heads * cfg.kv_channels
    n = cfg.num_layers * (4 * h * a + 2 * h * f) + cfg.vocab_size * h
    return 6.0 * n + 12.0 * cfg.num_layers * a * seq_length


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions loss_mask keeps (Megatron's masked mean)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
    mask = loss_mask.flatten().to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
