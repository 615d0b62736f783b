"""Building blocks every model family is made of, in plain single-device PyTorch.

Parameter names and the fused QKV layout follow Megatron's, so converting to Megatron/NeMo
checkpoints is a copy, not a reshuffle. Nothing here knows about devices, precision or
parallelism: models are built on the meta device and materialised by the caller, and
tensor parallelism is applied from outside (the family's tensor-parallel plan names these
modules). A module takes any config object with the fields it reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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

    A module of its own so that selective activation recomputation can recompute just this
    part: it is cheap in FLOPs but its activations are large.

    ``F.scaled_dot_product_attention`` runs it wherever it has a fused kernel: on GPUs (flash or
    memory-efficient attention, dropout included; nothing of size s² is kept for backward) and on
    CPUs without dropout. With dropout on a CPU, SDPA falls back to its math path, which upcasts
    16-bit inputs to fp32 and keeps fp32 copies of Q, K, V and three fp32 s² tensors; there this
    module runs Megatron's unfused attention instead (``unfused_attention``): bf16 stays bf16 and
    the dropout mask is 1 byte an element, the 5·a·s²·b bytes Korthikanti et al. count.
    """

    def __init__(self, cfg) -> None:
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
    """Multi-head self-attention with one fused QKV projection (causal unless a mask says otherwise)."""

    def __init__(self, cfg) -> None:
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

    def __init__(self, cfg) -> None:
        super().__init__()
        self.linear_fc1 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size)
        self.linear_fc2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # tanh approximation: what Megatron's fused bias-GeLU (the GPT-3 recipes' default) computes
        return self.linear_fc2(F.gelu(self.linear_fc1(x), approximate="tanh"))


class Embedding(nn.Module):
    """Token embedding + learned absolute position embedding, then dropout."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.word_embeddings(tokens) + self.position_embeddings(position_ids))


class LayerStack(nn.ModuleDict):
    """Transformer layers keyed by their index in the whole model, run in key order.

    Keyed, not listed, so that a pipeline part is the model with some layers absent and every
    parameter keeps its whole-model name (``layers.5.mlp.linear_fc1.weight`` on whichever rank
    holds layer 5): checkpoints do not depend on the layout.
    """

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        for layer in self.values():
            x = layer(x, *args, **kwargs)
        return x


class OutputLayer(nn.Module):
    """A part's own copy of a tied output weight (the token embedding), used as the output projection.

    Only a pipeline's last stage without the embedding holds one (Megatron's ``word_embeddings``
    copy on the last stage): initialised from the embedding's draw, its gradient summed with the
    embedding's after every backward, so both take the same update.
    """

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))
