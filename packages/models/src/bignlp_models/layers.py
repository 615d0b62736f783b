"""Building blocks every model family is made of, in plain single-device PyTorch.

Parameter names and the fused QKV layout follow Megatron's, so converting to Megatron/NeMo
checkpoints is a copy, not a reshuffle. Nothing here knows about devices, precision or
parallelism: models are built on the meta device and materialised by the caller, and
tensor parallelism is applied from outside (the family's tensor-parallel plan names these
modules). A module takes any config object with the fields it reads.

``KVCache`` holds the keys and values of past positions for decoding token by token; a forward
without one runs exactly the ops it ran before the cache existed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

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
                attention_mask: torch.Tensor | None = None, causal: bool = True,
                position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``causal=False``: no mask means every query sees every key (an encoder; one new token over a KV
        cache). ``position_bias`` (1 or batch, heads, queries, keys): added to the scaled scores (T5's
        relative position bias), masked positions still excluded."""
        dropout_p = self.dropout_p if self.training else 0.0
        if position_bias is not None:
            attention_mask = additive_mask(position_bias, attention_mask, causal)
        if dropout_p > 0.0 and q.device.type == "cpu":
            return unfused_attention(q, k, v, attention_mask, dropout_p, causal)
        if attention_mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
        # document-wise causal mask (reset_attention_mask), True = may attend; or an additive float bias
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attention_mask, dropout_p=dropout_p)


def additive_mask(position_bias: torch.Tensor, attention_mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    """One float mask for SDPA and the unfused path: the bias where attention is allowed, -inf elsewhere.

    ``attention_mask`` True = may attend (None: all keys, or causal when ``causal``).
    """
    queries, keys = position_bias.shape[-2:]
    allowed = attention_mask
    if allowed is None and causal:
        allowed = torch.ones(queries, keys, dtype=torch.bool, device=position_bias.device).tril(keys - queries)
    if allowed is None:
        return position_bias
    return position_bias.masked_fill(~allowed, float("-inf"))


def unfused_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention_mask: torch.Tensor | None,
                      dropout_p: float, causal: bool = True) -> torch.Tensor:
    """Attention as separate ops, each keeping what Megatron's unfused path keeps for backward.

    q: (batch, heads, seq, kv); k, v: (batch, heads, keys, kv), keys = seq unless a KV cache holds
    earlier positions. Kept: Q, K, V (one contiguous copy each), the softmax output, the bool
    dropout mask and the dropped probabilities. The mask enters as an additive -inf bias in the QKᵀ
    matmul (``baddbmm``, which keeps nothing for it). Softmax accumulates in fp32 whatever the input
    dtype. Masked positions get probability 0; every row keeps at least one position.
    """
    batch, heads, seq, kv = q.shape
    keys = k.shape[2]
    q3 = q.reshape(batch * heads, seq, kv)
    k3, v3 = (t.reshape(batch * heads, keys, kv) for t in (k, v))
    if attention_mask is not None and attention_mask.is_floating_point():  # an additive bias (additive_mask)
        bias = attention_mask.to(q.dtype).expand(batch, heads, seq, keys).reshape(batch * heads, seq, keys)
    else:
        if attention_mask is None:
            allowed = torch.ones(seq, keys, dtype=torch.bool, device=q.device)
            allowed = allowed.tril() if causal else allowed
        else:  # (batch or 1, 1, seq, keys) → one bias per (batch, head)
            allowed = attention_mask.expand(batch, heads, seq, keys).reshape(batch * heads, seq, keys)
        bias = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    scores = torch.baddbmm(bias.expand(batch * heads, seq, keys), q3, k3.transpose(1, 2), alpha=kv ** -0.5)
    probs = torch.native_dropout(torch.softmax(scores, dim=-1), dropout_p, True)[0]
    return torch.bmm(probs, v3).view(batch, heads, seq, kv)


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    Causal (a decoder) unless ``causal=False`` (an encoder: every position sees every other the mask allows).
    """

    def __init__(self, cfg, *, bias: bool = True, causal: bool = True) -> None:
        super().__init__()
        self.kv_channels = cfg.kv_channels
        self.causal = causal
        projection = cfg.num_attention_heads * cfg.kv_channels
        self.linear_qkv = nn.Linear(cfg.hidden_size, 3 * projection, bias=bias)
        self.core_attention = CoreAttention(cfg)
        self.linear_proj = nn.Linear(projection, cfg.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """With ``cache``, ``x`` holds the new positions only; their keys and values join the cache's,
        and ``attention_mask`` (from ``KVCache.attention_mask``) says which of all positions each sees.
        ``position_bias``: see ``CoreAttention``."""
        batch, seq, _ = x.shape
        # Megatron's layout: per head [q | k | v], so a head's three slices sit together. The head
        # count comes from the output width: under tensor parallelism a rank holds whole heads only.
        qkv = self.linear_qkv(x)
        qkv = qkv.view(batch, seq, qkv.shape[-1] // (3 * self.kv_channels), 3 * self.kv_channels)
        q, k, v = (t.transpose(1, 2) for t in qkv.split(self.kv_channels, dim=-1))  # (B, heads, S, kv)
        if cache is None:
            if position_bias is None and self.causal:
                out = self.core_attention(q, k, v, attention_mask)  # GPT's exact call
            else:
                out = self.core_attention(q, k, v, attention_mask, causal=self.causal, position_bias=position_bias)
        else:
            k, v = cache.append(k, v)
            # No mask from the cache means causal over all positions: for the whole square on the
            # first call (SDPA's own causal kernel), for one new token every position.
            causal = self.causal and seq > 1
            if position_bias is None:
                out = self.core_attention(q, k, v, attention_mask, causal=causal)
            else:
                out = self.core_attention(q, k, v, attention_mask, causal=causal, position_bias=position_bias)
        return self.linear_proj(out.transpose(1, 2).reshape(batch, seq, -1))


class CrossAttention(nn.Module):
    """Multi-head attention of decoder queries over encoder outputs (an encoder-decoder's inter-attention).

    Megatron's names and layouts: ``linear_q`` for the queries, one fused ``linear_kv`` for keys and
    values in per-head ``[k | v]`` order (so a tensor-parallel rank's whole heads stay together),
    ``linear_proj`` back to the hidden size. Not causal: every query sees every encoder position the
    mask allows (the encoder's padding). With a ``LayerCache`` the keys and values are computed from
    the encoder output once and reused at every decoding step.
    """

    def __init__(self, cfg, *, bias: bool = True) -> None:
        super().__init__()
        self.kv_channels = cfg.kv_channels
        projection = cfg.num_attention_heads * cfg.kv_channels
        self.linear_q = nn.Linear(cfg.hidden_size, projection, bias=bias)
        self.linear_kv = nn.Linear(cfg.hidden_size, 2 * projection, bias=bias)
        self.core_attention = CoreAttention(cfg)
        self.linear_proj = nn.Linear(projection, cfg.hidden_size, bias=bias)

    def _keys_values(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, keys, _ = memory.shape
        kv = self.linear_kv(memory)
        kv = kv.view(batch, keys, kv.shape[-1] // (2 * self.kv_channels), 2 * self.kv_channels)
        k, v = (t.transpose(1, 2) for t in kv.split(self.kv_channels, dim=-1))  # (B, heads, keys, kv)
        return k, v

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None,
                cache: LayerCache | None = None, position_bias: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (batch, seq, h) decoder states, ``memory`` (batch, keys, h) encoder outputs;
        ``memory_mask`` (batch, 1, 1 or seq, keys), True = may attend (None: all); ``position_bias``:
        see ``CoreAttention``."""
        batch, seq, _ = x.shape
        q = self.linear_q(x)
        q = q.view(batch, seq, q.shape[-1] // self.kv_channels, self.kv_channels).transpose(1, 2)
        k, v = self._keys_values(memory) if cache is None else cache.cross(lambda: self._keys_values(memory))
        out = self.core_attention(q, k, v, memory_mask, causal=False, position_bias=position_bias)
        return self.linear_proj(out.transpose(1, 2).reshape(batch, seq, -1))


# Activations an MLP may use; the gated ones (GLU variants, Shazeer 2020) multiply by a second projection.
ACTIVATIONS = ("gelu", "geglu", "swiglu")
# How GeLU is computed (torch's F.gelu ``approximate``): "tanh" is Megatron's fused bias-GeLU, NeMo's
# openai_gelu, Hugging Face's "gelu_new"; "none" the exact erf form (Megatron's unfused F.gelu, HF's "gelu").
GELU_APPROXIMATIONS = ("tanh", "none")


class MLP(nn.Module):
    """h → ffn → activation → h; with a gated activation, act(fc1(x)) · fc1_2(x) first.

    gelu is the tanh approximation by default: what Megatron's fused bias-GeLU (the GPT-3 recipes'
    default) and T5 v1.1's gated-gelu compute; ``gelu_approximation="none"`` is the exact erf form
    (checkpoints trained without the fusion, Hugging Face's ``"gelu"``). The gated variants keep
    their second projection as its own linear (``linear_fc1_2``, NeMo 1.x's ``dense_h_to_4h_2``), so
    column-parallel splitting keeps each rank's halves matched.
    """

    def __init__(self, cfg, *, activation: str = "gelu", bias: bool = True, gelu_approximation: str = "tanh") -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not supported; use one of {', '.join(ACTIVATIONS)}")
        if gelu_approximation not in GELU_APPROXIMATIONS:
            raise ValueError(f"gelu_approximation {gelu_approximation!r} is not supported; use one of "
                             f"{', '.join(GELU_APPROXIMATIONS)}")
        self.activation = activation
        self.gelu_approximation = gelu_approximation
        self.linear_fc1 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=bias)
        if activation != "gelu":
            self.linear_fc1_2 = nn.Linear(cfg.hidden_size, cfg.ffn_hidden_size, bias=bias)
        self.linear_fc2 = nn.Linear(cfg.ffn_hidden_size, cfg.hidden_size, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.linear_fc1(x)
        if self.activation == "gelu":
            return self.linear_fc2(F.gelu(h, approximate=self.gelu_approximation))
        gate = F.gelu(h, approximate=self.gelu_approximation) if self.activation == "geglu" else F.silu(h)
        return self.linear_fc2(gate * self.linear_fc1_2(x))

    def extra_repr(self) -> str:
        extra = "" if self.gelu_approximation == "tanh" else f", gelu_approximation={self.gelu_approximation}"
        return f"activation={self.activation}{extra}"


# Normalisations a family may use: LayerNorm (GPT-3, T5 v1.0) or RMSNorm (T5 v1.1, mT5: no mean, no bias).
NORMALIZATIONS = ("layernorm", "rmsnorm")


def build_norm(kind: str, hidden_size: int, eps: float, *, bias: bool = True) -> nn.Module:
    """A ``layernorm`` (nn.LayerNorm, weight and, with ``bias``, bias) or ``rmsnorm`` (nn.RMSNorm, weight only)."""
    if kind == "layernorm":
        return nn.LayerNorm(hidden_size, eps=eps, bias=bias)
    if kind == "rmsnorm":
        return nn.RMSNorm(hidden_size, eps=eps)
    raise ValueError(f"normalization {kind!r} is not supported; use one of {', '.join(NORMALIZATIONS)}")


def relative_position_bucket(relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> torch.Tensor:
    """T5's buckets for ``key position - query position`` (Raffel et al. 2020, Mesh TensorFlow's scheme).

    Distances below half the buckets (of each direction, when ``bidirectional``) get one bucket
    each; larger ones share logarithmically wider buckets up to ``max_distance``, beyond which all
    fall into the last. A causal decoder (not bidirectional) only sees keys at or before the query.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (relative_position > 0).long() * num_buckets  # keys after the query
        distance = relative_position.abs()
    else:
        distance = (-relative_position).clamp(min=0)
    exact = num_buckets // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    large = (exact + (log_ratio * (num_buckets - exact)).long()).clamp(max=num_buckets - 1)
    return buckets + torch.where(distance < exact, distance, large)


class RelativePositionBias(nn.Module):
    """T5's learned relative position bias: one scalar per (bucket, head), added to attention scores.

    Computed once per forward for all layers of a stack (as T5 and NeMo do). The table is
    ``relative_attention_bias`` (buckets, heads); under tensor parallelism it is split along the heads
    like the attention projections, so each rank gets the bias of its own heads.
    """

    def __init__(self, num_buckets: int, max_distance: int, num_heads: int, *, bidirectional: bool) -> None:
        super().__init__()
        self.num_buckets, self.max_distance, self.bidirectional = num_buckets, max_distance, bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)

    def forward(self, num_queries: int, num_keys: int, query_offset: int = 0) -> torch.Tensor:
        """(1, heads, num_queries, num_keys); queries sit at positions ``query_offset ...`` (a KV cache's)."""
        device = self.relative_attention_bias.weight.device
        query = torch.arange(query_offset, query_offset + num_queries, device=device)[:, None]
        key = torch.arange(num_keys, device=device)[None, :]
        bucket = relative_position_bucket(key - query, bidirectional=self.bidirectional,
                                          num_buckets=self.num_buckets, max_distance=self.max_distance)
        return self.relative_attention_bias(bucket).permute(2, 0, 1).unsqueeze(0)

    def extra_repr(self) -> str:
        return (f"buckets={self.num_buckets}, max_distance={self.max_distance}, "
                f"bidirectional={self.bidirectional}")


class Embedding(nn.Module):
    """Token embedding + learned absolute position embedding, then dropout."""

    def __init__(self, cfg) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, tokens: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.word_embeddings(tokens) + self.position_embeddings(position_ids))


def vocab_logits(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` for the few positions a decoding step needs, ``weight`` (vocab, hidden): the logits.

    On CPUs it runs as one batched matmul over up to 16 chunks of the vocabulary. With a handful of
    rows a single matmul is a matrix-vector product over the largest weight of the model, and MKL
    runs that 2-4 times slower than the batched form (measured on 2 cores for a 50,304 × 384
    weight at 1 and 8 rows). Equal to ``F.linear(x, weight)`` up to float rounding.
    """
    # a tensor-parallel weight (a DTensor: it has placements) gives vocabulary-split logits through F.linear
    if x.device.type != "cpu" or not weight.is_contiguous() or hasattr(weight, "placements"):
        return F.linear(x, weight)
    vocab, hidden = weight.shape
    chunks = math.gcd(vocab, 16)
    rows = x.reshape(-1, hidden)
    out = torch.bmm(weight.view(chunks, vocab // chunks, hidden), rows.t().expand(chunks, hidden, rows.shape[0]))
    return out.permute(2, 0, 1).reshape(*x.shape[:-1], vocab)  # (chunks, vocab/chunks, rows) → (..., vocab)


class LayerStack(nn.ModuleDict):
    """Transformer layers keyed by their index in the whole model, run in key order.

    Keyed, not listed, so that a pipeline part is the model with some layers absent and every
    parameter keeps its whole-model name (``layers.5.mlp.linear_fc1.weight`` on whichever rank
    holds layer 5): checkpoints do not depend on the layout.
    """

    def forward(self, x: torch.Tensor, *args, cache: KVCache | None = None, **kwargs) -> torch.Tensor:
        """``cache``: each layer gets its own part of it (``cache.layer(key)``) as ``cache=``."""
        if cache is None:
            for layer in self.values():
                x = layer(x, *args, **kwargs)
            return x
        for key, layer in self.items():
            x = layer(x, *args, cache=cache.layer(key), **kwargs)
        return x


class KVCache:
    """Keys and values of the positions a model has seen, for decoding one token at a time.

    One per model and batch, passed to its forward as ``cache=``. A forward with the cache takes
    only the new positions: it reads their position ids and attention mask from here, each
    attention layer appends its new keys and values to its ``LayerCache`` and attends over all
    positions so far; the model then advances ``length`` past them.

    Buffers are preallocated to ``max_len`` positions, so a step writes into them instead of
    concatenating. Each layer's are (batch, heads, max_len, kv) and allocated on the layer's first
    write, with the shape, dtype and device of what it writes: under tensor parallelism a rank
    holds its own heads only, and the cache needs no head count.

    Left padding (prompts of different lengths in one batch): ``padding_mask`` (batch, prompt_len)
    is True at real tokens; everything after the prompt is real. Padding positions are never
    attended to, and position ids count real tokens only, so a row's first real token has position
    0 whatever its padding (Hugging Face's ``attention_mask.cumsum(-1) - 1``).
    """

    def __init__(self, batch_size: int, max_len: int, *, padding_mask: torch.Tensor | None = None,
                 device: torch.device | str | None = None) -> None:
        self.batch_size, self.max_len = batch_size, max_len
        self.length = 0  # positions filled, the same in every row
        self.layers: dict[str, LayerCache] = {}
        if padding_mask is not None:
            device = padding_mask.device
        real = torch.ones(batch_size, max_len, dtype=torch.bool, device=device)
        if padding_mask is not None:
            real[:, :padding_mask.shape[1]] = padding_mask
        # Without padding the keys need no mask at all: one new token sees everything before it.
        self.padded = not bool(real.all())
        self._key_mask = real[:, None, None, :]  # (batch, 1, 1, max_len), as attention masks broadcast
        self._position_ids = (real.cumsum(-1) - 1).clamp_(min=0)  # padding gets 0; nothing attends to it

    def layer(self, key: str) -> LayerCache:
        """The cache of layer ``key`` (a ``LayerStack`` key), created on first use."""
        cache = self.layers.get(key)
        if cache is None:
            cache = self.layers[key] = LayerCache(self)
        return cache

    def position_ids(self, num_new: int) -> torch.Tensor:
        """(batch, num_new) position ids of the next ``num_new`` positions."""
        self._check_room(num_new)
        return self._position_ids[:, self.length:self.length + num_new]

    def attention_mask(self, num_new: int) -> torch.Tensor | None:
        """Which positions the next ``num_new`` may attend to (True = may): (batch or 1, 1, num_new, positions).

        Earlier positions and, among the new ones, those up to itself; never padding. None when
        that is plain causal attention: without padding, either the first call (the new positions
        are all there is) or one new token (it sees every position).
        """
        self._check_room(num_new)
        start, end = self.length, self.length + num_new
        if num_new == 1:
            return self._key_mask[..., :end] if self.padded else None
        if start == 0 and not self.padded:
            return None
        query = torch.arange(start, end, device=self._key_mask.device)[:, None]
        key = torch.arange(end, device=self._key_mask.device)[None, :]
        allowed = (key <= query)[None, None]  # (1, 1, num_new, end)
        if self.padded:
            # A padding query sees itself only: with nothing to attend to its output would be NaN,
            # and a NaN value reaches real queries even through a probability of 0 (0 · NaN = NaN).
            allowed = allowed & (self._key_mask[..., :end] | (key == query))  # (batch, 1, num_new, end)
        return allowed

    def advance(self, num_new: int) -> None:
        """Count ``num_new`` more positions as filled (the model's forward does, after its layers)."""
        self._check_room(num_new)
        self.length += num_new

    def _check_room(self, num_new: int) -> None:
        if self.length + num_new > self.max_len:
            raise ValueError(f"KV cache full: {self.length} positions filled, {num_new} more do not fit in "
                             f"max_len={self.max_len}")


class LayerCache:
    """One layer's part of a ``KVCache``: its self-attention keys and values, and cross-attention's if any.

    An encoder-decoder's decoder layer keeps the keys and values of its cross-attention over the
    encoder output here too (``cross``): computed on the first step, the same on every later one.
    """

    def __init__(self, cache: KVCache) -> None:
        self._cache = cache
        self.keys: torch.Tensor | None = None  # (batch, heads, max_len, kv)
        self.values: torch.Tensor | None = None
        self.cross_keys: torch.Tensor | None = None
        self.cross_values: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new positions' (batch, heads, new, kv) keys and values; return all positions' so far."""
        start = self._cache.length
        end = start + k.shape[2]
        if self.keys is None:
            self.keys = k.new_empty(k.shape[0], k.shape[1], self._cache.max_len, k.shape[3])
            self.values = v.new_empty(v.shape[0], v.shape[1], self._cache.max_len, v.shape[3])
        self.keys[:, :, start:end] = k
        self.values[:, :, start:end] = v
        return self.keys[:, :, :end], self.values[:, :, :end]

    def cross(self, compute: Callable[[], tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-attention's keys and values: ``compute()`` on the first call, the stored ones after."""
        if self.cross_keys is None:
            self.cross_keys, self.cross_values = compute()
        return self.cross_keys, self.cross_values


class OutputLayer(nn.Module):
    """A part's own copy of a tied output weight (the token embedding), used as the output projection.

    Only a pipeline's last stage without the embedding holds one (Megatron's ``word_embeddings``
    copy on the last stage): initialised from the embedding's draw, its gradient summed with the
    embedding's after every backward, so both take the same update.
    """

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))
