"""A GPT-3-style decoder in plain single-device PyTorch.

Read top to bottom: embeddings (token + learned absolute position) → N pre-LayerNorm
blocks (causal self-attention, GeLU MLP) → final LayerNorm → logits through the
token embedding (tied). Parameter names and the fused QKV layout follow Megatron's.
Nothing here knows about devices, precision or parallelism: the model is built on the
meta device and materialised by the caller (``build_model``), so that parallelism can
shard it before anything is allocated.

A pipeline part is this same class with pieces absent (``split_for_pipeline``): the
first part holds the embedding, the last the final LayerNorm and the output layer, each
the layers of its stage under their whole-model keys.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import MLP, Dropout, Embedding, KVCache, LayerCache, LayerStack, OutputLayer, SelfAttention, vocab_logits

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
    gelu_approximation: str = "tanh"  # "none": exact erf GeLU (Hugging Face "gelu", Megatron unfused)


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: x + drop(attn(ln(x))), then x + drop(mlp(ln(x)))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.self_attention = SelfAttention(cfg)
        self.pre_mlp_layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.mlp = MLP(cfg, gelu_approximation=cfg.gelu_approximation)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None) -> torch.Tensor:
        if cache is None:
            x = x + self.dropout(self.self_attention(self.input_layernorm(x), attention_mask))
        else:
            x = x + self.dropout(self.self_attention(self.input_layernorm(x), attention_mask, cache))
        return x + self.dropout(self.mlp(self.pre_mlp_layernorm(x)))


class GPT(nn.Module):
    """The decoder. ``forward(tokens)`` → logits of shape (batch, seq, vocab_size).

    As a pipeline part without the embedding it takes hidden states instead of tokens, and
    without the final LayerNorm it returns hidden states instead of logits.

    Incremental decoding: ``forward(new_tokens, cache=cache)`` with a ``KVCache`` runs the new
    positions only, attending over the cached ones; positions and masks come from the cache.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding: Embedding | None = Embedding(cfg)
        self.layers = LayerStack({str(i): TransformerLayer(cfg) for i in range(cfg.num_layers)})
        self.final_layernorm: nn.LayerNorm | None = nn.LayerNorm(cfg.hidden_size, eps=cfg.layernorm_epsilon)
        self.output_layer: OutputLayer | None = None  # only a last pipeline part without the embedding

    @property
    def output_weight(self) -> torch.Tensor:
        """The output projection: the token embedding itself (tied, as in GPT-3), or this part's copy of it."""
        if self.output_layer is not None:
            return self.output_layer.weight
        return self.embedding.word_embeddings.weight

    def forward(
        self,
        tokens: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        cache: KVCache | None = None,
        logits_to_keep: int = 0,
    ) -> torch.Tensor:
        """Logits (or a part's hidden states) of every position of ``tokens`` (batch, seq).

        ``attention_mask`` (batch, 1, seq, seq), True = may attend: causal when None.
        ``cache``: ``tokens`` are the positions after the cached ones (see ``KVCache``); the
        cache supplies position ids and the mask, and is advanced past them.
        ``logits_to_keep`` > 0: logits of the last that many positions only (decoding needs the
        last one; the output projection is the largest matmul of a step).
        """
        x = tokens
        if cache is not None:
            if attention_mask is not None:
                raise ValueError("attention_mask and cache together: with a cache the mask comes from the cache")
            num_new = tokens.shape[1]
            attention_mask = cache.attention_mask(num_new)
            if position_ids is None:
                position_ids = cache.position_ids(num_new)
        if self.embedding is not None:
            if position_ids is None:
                position_ids = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
            x = self.embedding(tokens, position_ids)
        if cache is None:
            x = self.layers(x, attention_mask)
        else:
            x = self.layers(x, attention_mask, cache=cache)
            cache.advance(num_new)
        if self.final_layernorm is None:
            return x
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]
        if cache is None:
            return F.linear(self.final_layernorm(x), self.output_weight)
        return vocab_logits(self.final_layernorm(x), self.output_weight)  # a decoding step's few rows

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


# What a pipeline's last part without the embedding stores under the embedding's name (see OutputLayer).
TIED_PARAMETERS = {"output_layer.weight": "embedding.word_embeddings.weight"}


def pipeline_stages(cfg: GPTConfig, pp: int, virtual: int = 1, split_rank: int | None = None) -> list[dict[str, range]]:
    """The layers of each global stage ``s = chunk·PP + rank`` (Megatron's interleaved assignment), evenly."""
    per_stage = cfg.num_layers // (pp * virtual)
    return [{"layers": range(s * per_stage, (s + 1) * per_stage)} for s in range(pp * virtual)]


def split_for_pipeline(model: GPT, stages: Sequence[Mapping[str, Sequence[int]]], num_stages: int,
                       stage_ids: Sequence[int]) -> list[GPT]:
    """The parts of a meta-device ``model`` for the global stages ``stage_ids``.

    ``stages[s]["layers"]`` are the layer indices of global stage ``s`` (of ``num_stages``). Stage 0 keeps
    the embedding, the last stage the final LayerNorm and (without the embedding) an
    ``OutputLayer`` copy of the tied weight. Each part is a copy of ``model`` with the rest
    removed, so parameter names stay the whole model's.
    """
    parts = []
    for s in stage_ids:
        part = copy.deepcopy(model)
        keep = {str(i) for i in stages[s]["layers"]}
        for key in [k for k in part.layers if k not in keep]:
            del part.layers[key]
        if s != 0:
            part.embedding = None
        if s != num_stages - 1:
            part.final_layernorm = None
        elif s != 0:
            with torch.device("meta"):
                part.output_layer = OutputLayer(model.cfg.vocab_size, model.cfg.hidden_size)
        parts.append(part)
    return parts


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


def activation_bytes_per_layer(cfg: GPTConfig, *, seq_length: int, micro_batch_size: int,
                               tensor_parallel_size: int = 1, sequence_parallel: bool = False,
                               recompute: str | None = None) -> float:
    """Bytes one layer keeps for backward with 16-bit activations (Korthikanti et al. 2022, Table 2).

    ``recompute``: None, "selective" (attention core recomputed) or "full" (only the layer input
    kept). 1-byte dropout masks; ``a`` is the head count. Per tensor-parallel rank.
    """
    s, b, h, a, t = seq_length, micro_batch_size, cfg.hidden_size, cfg.num_attention_heads, tensor_parallel_size
    sbh = s * b * h
    split = sequence_parallel or t == 1  # everything per rank is 1/t of the single-device figure
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)  # the layer input; with SP the rank's sequence chunk
    if recompute == "selective":
        return 34 * sbh / t if split else sbh * (10 + 24 / t)
    if split:
        return sbh / t * (34 + 5 * a * s / h)
    return sbh * (10 + 24 / t + 5 * a * s / (h * t))


def tensor_parallel_plan(part: GPT) -> dict[str, str]:
    """Megatron's tensor parallelism for the modules ``part`` holds, by module path (see spec.TP_STYLES).

    Column-parallel QKV and first MLP linear (each rank keeps whole heads: the fused per-head
    [q|k|v] layout splits cleanly), row-parallel output projections; LayerNorms run on the
    sequence shard under sequence parallelism. The token embedding is vocabulary-parallel
    (Megatron's VocabParallelEmbedding), and so is the output layer tied to it: each rank computes
    the logits of its slice of the vocabulary only, and the loss is computed over the slices
    without gathering them (the final LayerNorm's output enters the output layer whole).
    """
    plan: dict[str, str] = {}
    if part.embedding is not None:
        plan["embedding.word_embeddings"] = "vocab_embedding"
        plan["embedding"] = "embedding"
    for key in part.layers:
        prefix = f"layers.{key}"
        plan.update({
            f"{prefix}.input_layernorm": "norm",
            f"{prefix}.self_attention.linear_qkv": "colwise",
            f"{prefix}.self_attention.linear_proj": "rowwise",
            f"{prefix}.pre_mlp_layernorm": "norm",
            f"{prefix}.mlp.linear_fc1": "colwise",
            f"{prefix}.mlp.linear_fc2": "rowwise",
        })
    if part.final_layernorm is not None:
        plan["final_layernorm"] = "final_norm"
    if part.output_layer is not None:
        plan["output_layer"] = "vocab_weight"
    return plan
