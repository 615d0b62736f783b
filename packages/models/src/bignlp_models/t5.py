"""A T5/mT5-style encoder-decoder in plain single-device PyTorch.

Read top to bottom: token embedding shared by encoder and decoder (+ learned absolute positions,
or T5's relative position bias per stack) → encoder: N pre-norm blocks of bidirectional
self-attention and MLP → final norm → decoder: M pre-norm blocks of causal self-attention,
cross-attention over the encoder output and MLP → final norm → logits through the token embedding
(tied, with a per-token bias as Megatron's T5 head) or an own output weight (untied, T5 v1.1/mT5).

The options are the NeMo launcher's T5 keys: ``position_embedding_type`` (learned_absolute,
relative), ``activation`` (gelu, geglu, swiglu), ``normalization`` (layernorm, rmsnorm), ``bias``,
``kv_channels``, ``share_decoder_tokens_head_embeddings``; encoder and decoder may have their own
depth and MLP width. With relative + rmsnorm + no bias + geglu + untied head the math is T5 v1.1 /
mT5's, except that attention scores are scaled by 1/√kv_channels as in Megatron (T5 folds that
scale into its query weights at initialisation; a converter multiplies the query rows by √kv).

As GPT: built on the meta device and materialised by the caller; a pipeline part is this class
with pieces absent (``split_for_pipeline``): encoder stages first, then decoder stages (Megatron's
``pipeline_model_parallel_split_rank``). Parameter names and fused QKV / KV layouts follow
Megatron core's T5.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .layers import (
    MLP,
    CrossAttention,
    Dropout,
    KVCache,
    LayerCache,
    LayerStack,
    OutputLayer,
    RelativePositionBias,
    SelfAttention,
    build_norm,
    vocab_logits,
)

Fill = Callable[[torch.Tensor, Callable[[torch.Tensor], object]], None]  # (param, init_) -> None

POSITION_EMBEDDING_TYPES = ("learned_absolute", "relative")


@dataclass(frozen=True, kw_only=True)
class T5Config:
    """The architecture alone: what a checkpoint needs to rebuild the model."""

    vocab_size: int  # padded: embedding rows and logits (sentinels included)
    hidden_size: int
    num_attention_heads: int
    kv_channels: int
    encoder_num_layers: int
    decoder_num_layers: int
    encoder_ffn_hidden_size: int
    decoder_ffn_hidden_size: int
    max_position_embeddings: int = 512  # learned_absolute: rows of each stack's position table
    position_embedding_type: str = "learned_absolute"
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    relative_position_bias_self_attention_only: bool = True  # else a bias in cross-attention too
    activation: str = "geglu"
    gelu_approximation: str = "tanh"  # of gelu/geglu; "none": exact erf (NeMo without fusion or openai_gelu)
    normalization: str = "layernorm"
    bias: bool = True  # biases of the linears and LayerNorms, and of the tied output head
    share_decoder_tokens_head_embeddings: bool = True  # tied output head; false: own weight (T5 v1.1)
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    layernorm_epsilon: float = 1e-5
    init_method_std: float = 0.015

    def __post_init__(self) -> None:
        if self.position_embedding_type not in POSITION_EMBEDDING_TYPES:
            raise ValueError(f"position_embedding_type {self.position_embedding_type!r} is not supported; use one "
                             f"of {', '.join(POSITION_EMBEDDING_TYPES)}")

    @property
    def relative(self) -> bool:
        return self.position_embedding_type == "relative"

    def stack(self, which: str) -> StackShape:
        """The shape the layers of the ``encoder`` or ``decoder`` stack are built from."""
        return StackShape(hidden_size=self.hidden_size, num_attention_heads=self.num_attention_heads,
                          kv_channels=self.kv_channels, attention_dropout=self.attention_dropout,
                          hidden_dropout=self.hidden_dropout,
                          ffn_hidden_size=getattr(self, f"{which}_ffn_hidden_size"))


@dataclass(frozen=True, kw_only=True)
class StackShape:
    """What a layer of one stack reads (the fields bignlp_models.layers modules take)."""

    hidden_size: int
    num_attention_heads: int
    kv_channels: int
    ffn_hidden_size: int
    attention_dropout: float
    hidden_dropout: float


class T5Embedding(nn.Module):
    """Token embedding (+ learned absolute positions), then dropout: one per stack.

    The decoder's looks its tokens up in the encoder's table (shared embeddings); only a pipeline
    part holding the decoder's first stage without the encoder's has its own copy of it.
    """

    def __init__(self, cfg: T5Config, *, word_embeddings: bool) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size) if word_embeddings else None
        self.position_embeddings = (None if cfg.relative
                                    else nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size))
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, tokens: torch.Tensor, word_embeddings: nn.Module | None = None,
                position_offset: int = 0) -> torch.Tensor:
        x = (word_embeddings or self.word_embeddings)(tokens)
        if self.position_embeddings is not None:
            positions = torch.arange(position_offset, position_offset + tokens.shape[1], device=tokens.device)
            x = x + self.position_embeddings(positions.unsqueeze(0))
        return self.dropout(x)


class EncoderLayer(nn.Module):
    """Pre-norm block: x + drop(attn(norm(x))) with bidirectional attention, then x + drop(mlp(norm(x)))."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        shape = cfg.stack("encoder")
        self.input_layernorm = build_norm(cfg.normalization, cfg.hidden_size, cfg.layernorm_epsilon, bias=cfg.bias)
        self.self_attention = SelfAttention(shape, bias=cfg.bias, causal=False)
        self.pre_mlp_layernorm = build_norm(cfg.normalization, cfg.hidden_size, cfg.layernorm_epsilon, bias=cfg.bias)
        self.mlp = MLP(shape, activation=cfg.activation, bias=cfg.bias, gelu_approximation=cfg.gelu_approximation)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.input_layernorm(x), attention_mask, position_bias=position_bias))
        return x + self.dropout(self.mlp(self.pre_mlp_layernorm(x)))


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, cross-attention over the encoder output, MLP; each residual."""

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        shape = cfg.stack("decoder")
        norm = lambda: build_norm(cfg.normalization, cfg.hidden_size, cfg.layernorm_epsilon, bias=cfg.bias)  # noqa: E731
        self.input_layernorm = norm()
        self.self_attention = SelfAttention(shape, bias=cfg.bias, causal=True)
        self.pre_cross_attn_layernorm = norm()
        self.cross_attention = CrossAttention(shape, bias=cfg.bias)
        self.pre_mlp_layernorm = norm()
        self.mlp = MLP(shape, activation=cfg.activation, bias=cfg.bias, gelu_approximation=cfg.gelu_approximation)
        self.dropout = Dropout(cfg.hidden_dropout)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, attention_mask: torch.Tensor | None = None,
                memory_mask: torch.Tensor | None = None, position_bias: torch.Tensor | None = None,
                cross_position_bias: torch.Tensor | None = None, cache: LayerCache | None = None) -> torch.Tensor:
        x = x + self.dropout(self.self_attention(self.input_layernorm(x), attention_mask, cache,
                                                 position_bias=position_bias))
        x = x + self.dropout(self.cross_attention(self.pre_cross_attn_layernorm(x), memory, memory_mask, cache,
                                                  position_bias=cross_position_bias))
        return x + self.dropout(self.mlp(self.pre_mlp_layernorm(x)))


class TokensHead(nn.Module):
    """The output layer: logits = x · Wᵀ (+ b). W is the token embedding (tied), or this head's own weight.

    Megatron's T5 head (tied) adds a per-token bias; the untied head of T5 v1.1 / mT5 has no bias.
    """

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        tied = cfg.share_decoder_tokens_head_embeddings
        self.weight = None if tied else nn.Parameter(torch.empty(cfg.vocab_size, cfg.hidden_size))
        self.bias = nn.Parameter(torch.empty(cfg.vocab_size)) if cfg.bias else None

    def forward(self, x: torch.Tensor, tied_weight: torch.Tensor | None, *, decoding: bool = False) -> torch.Tensor:
        weight = self.weight if self.weight is not None else tied_weight
        logits = vocab_logits(x, weight) if decoding else F.linear(x, weight)
        return logits if self.bias is None else logits + self.bias


def _key_mask(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """(batch, keys) True at real tokens → (batch, 1, 1, keys): which keys every query may attend to."""
    return None if padding_mask is None else padding_mask.bool()[:, None, None, :]


class T5(nn.Module):
    """The encoder-decoder. ``forward(encoder_tokens, decoder_tokens=...)`` → logits (batch, dec_seq, vocab).

    Padding masks are (batch, seq), True at real tokens; padded keys are never attended to (padded
    queries attend to real keys: their outputs are finite and their loss is masked). As a pipeline
    part it takes and returns what its stages pass on (see ``forward``).

    Decoding: ``encode`` once, then ``decode(new_tokens, memory, memory_mask, cache=cache)`` per step:
    the decoder's self-attention keys and values and each layer's cross-attention keys and values (of
    the encoder output, computed on the first step) live in the ``KVCache``.
    """

    def __init__(self, cfg: T5Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder_embedding: T5Embedding | None = T5Embedding(cfg, word_embeddings=True)
        self.decoder_embedding: T5Embedding | None = T5Embedding(cfg, word_embeddings=False)
        buckets, distance, heads = (cfg.relative_attention_num_buckets, cfg.relative_attention_max_distance,
                                    cfg.num_attention_heads)
        relative = cfg.relative
        self.encoder_relative_position_bias = (RelativePositionBias(buckets, distance, heads, bidirectional=True)
                                               if relative else None)
        self.decoder_relative_position_bias = (RelativePositionBias(buckets, distance, heads, bidirectional=False)
                                               if relative else None)
        self.decoder_cross_relative_position_bias = (
            RelativePositionBias(buckets, distance, heads, bidirectional=True)
            if relative and not cfg.relative_position_bias_self_attention_only else None)
        self.encoder_layers = LayerStack({str(i): EncoderLayer(cfg) for i in range(cfg.encoder_num_layers)})
        self.encoder_final_layernorm: nn.Module | None = build_norm(cfg.normalization, cfg.hidden_size,
                                                                    cfg.layernorm_epsilon, bias=cfg.bias)
        self.decoder_layers = LayerStack({str(i): DecoderLayer(cfg) for i in range(cfg.decoder_num_layers)})
        self.decoder_final_layernorm: nn.Module | None = build_norm(cfg.normalization, cfg.hidden_size,
                                                                    cfg.layernorm_epsilon, bias=cfg.bias)
        self.tokens_head: TokensHead | None = TokensHead(cfg)
        self.output_layer: OutputLayer | None = None  # only a last pipeline part without the token embedding

    # --- which stages a part holds ---------------------------------------------------------------
    @property
    def has_encoder(self) -> bool:
        return (self.encoder_embedding is not None or len(self.encoder_layers) > 0
                or self.encoder_final_layernorm is not None)

    @property
    def has_decoder(self) -> bool:
        return (self.decoder_embedding is not None or len(self.decoder_layers) > 0
                or self.decoder_final_layernorm is not None)

    def _word_embeddings(self) -> nn.Module:
        """The token embedding module this part looks decoder tokens up in."""
        if self.decoder_embedding is not None and self.decoder_embedding.word_embeddings is not None:
            return self.decoder_embedding.word_embeddings
        return self.encoder_embedding.word_embeddings

    @property
    def output_weight(self) -> torch.Tensor:
        """The tied output projection: the token embedding, or this part's copy of it."""
        if self.output_layer is not None:
            return self.output_layer.weight
        return self._word_embeddings().weight

    # --- the two halves --------------------------------------------------------------------------
    def encode(self, encoder_tokens_or_hidden: torch.Tensor, encoder_mask: torch.Tensor | None = None,
               *, num_positions: int | None = None) -> torch.Tensor:
        """This part's encoder layers (from the tokens when it holds the embedding); after the final norm,
        the encoder output."""
        x = encoder_tokens_or_hidden
        if self.encoder_embedding is not None:
            x = self.encoder_embedding(x)
        positions = num_positions or (encoder_tokens_or_hidden.shape[1] if self.encoder_embedding is not None
                                      else None)
        bias = None
        if self.encoder_relative_position_bias is not None:
            bias = self.encoder_relative_position_bias(positions, positions)
        x = self.encoder_layers(x, _key_mask(encoder_mask), position_bias=bias)
        if self.encoder_final_layernorm is not None:
            x = self.encoder_final_layernorm(x)
        return x

    def decode(self, decoder_tokens_or_hidden: torch.Tensor, memory: torch.Tensor,
               memory_mask: torch.Tensor | None = None, decoder_mask: torch.Tensor | None = None, *,
               cache: KVCache | None = None, logits_to_keep: int = 0) -> torch.Tensor:
        """This part's decoder layers over ``memory`` (the encoder output); logits after the head.

        ``cache``: ``decoder_tokens_or_hidden`` are the new decoder positions after the cached ones.
        """
        x = decoder_tokens_or_hidden
        offset = 0 if cache is None else cache.length
        num_new = x.shape[1]
        if self.decoder_embedding is not None:
            x = self.decoder_embedding(x, None if self.decoder_embedding.word_embeddings is not None
                                       else self._word_embeddings(), position_offset=offset)
        keys = offset + num_new
        self_mask = None
        if cache is not None:
            self_mask = cache.attention_mask(num_new)
        elif decoder_mask is not None:  # causal, and never a padded key
            causal = torch.ones(num_new, num_new, dtype=torch.bool, device=x.device).tril()
            self_mask = causal & _key_mask(decoder_mask)
        bias = cross_bias = None
        if self.decoder_relative_position_bias is not None:
            bias = self.decoder_relative_position_bias(num_new, keys, offset)
        if self.decoder_cross_relative_position_bias is not None:
            cross_bias = self.decoder_cross_relative_position_bias(num_new, memory.shape[1], offset)
        kwargs = dict(attention_mask=self_mask, memory_mask=_key_mask(memory_mask), position_bias=bias,
                      cross_position_bias=cross_bias)
        if cache is None:
            x = self.decoder_layers(x, memory, **kwargs)
        else:
            x = self.decoder_layers(x, memory, cache=cache, **kwargs)
            cache.advance(num_new)
        if self.decoder_final_layernorm is None:
            return x
        if logits_to_keep > 0:
            x = x[:, -logits_to_keep:]
        return self.tokens_head(self.decoder_final_layernorm(x),
                                self.output_weight if self.tokens_head.weight is None else None,
                                decoding=cache is not None)

    def forward(self, *inputs: torch.Tensor, decoder_tokens: torch.Tensor | None = None,
                encoder_mask: torch.Tensor | None = None, decoder_mask: torch.Tensor | None = None):
        """The whole model: ``forward(encoder_tokens, decoder_tokens=...)`` → logits.

        A pipeline part takes what the stage before it returned, and the keyword inputs every stage
        gets (decoder tokens, padding masks):

        - encoder stages: (encoder tokens or hidden states) → hidden states; the last one returns the
          encoder output (after the final norm);
        - decoder stages: (encoder output[, decoder hidden states]) → (encoder output, decoder hidden
          states), passed on so every decoder stage can attend to it; the last returns logits.
        """
        x = inputs[0]
        if self.has_encoder:
            x = self.encode(x, encoder_mask, num_positions=None if encoder_mask is None else encoder_mask.shape[1])
            if not self.has_decoder:
                return x
            memory, y = x, decoder_tokens
        else:
            memory = x
            y = decoder_tokens if self.decoder_embedding is not None else inputs[1]
        out = self.decode(y, memory, encoder_mask, decoder_mask)
        if self.decoder_final_layernorm is None:
            # The encoder output goes on with the decoder states; a view, so that its gradient from here
            # and from the later stages reach the stage that sent it.
            return memory.view_as(memory), out
        return out

    @torch.no_grad()
    def init_weights(self, fill: Fill | None = None) -> None:
        """Megatron's init: weights ~ N(0, std), each stack's output projections N(0, std/√(2·layers)),
        biases 0, norms 1/0; the relative position tables and an untied head N(0, std) too.

        ``fill(param, init_)`` as in ``GPT.init_weights`` (a sharded model keeps its slice of each draw).
        """
        fill = fill or (lambda param, init_: init_(param))
        std = self.cfg.init_method_std
        scaled = {"encoder": std / math.sqrt(2.0 * self.cfg.encoder_num_layers),
                  "decoder": std / math.sqrt(2.0 * self.cfg.decoder_num_layers)}
        for name, module in self.named_modules():
            if isinstance(module, (nn.LayerNorm, nn.RMSNorm)):
                fill(module.weight, nn.init.ones_)
                if getattr(module, "bias", None) is not None:
                    fill(module.bias, nn.init.zeros_)
            elif isinstance(module, nn.Embedding):
                fill(module.weight, lambda t: nn.init.normal_(t, mean=0.0, std=std))
            elif isinstance(module, nn.Linear):
                out_std = scaled[name.split("_", 1)[0]] if name.endswith(("linear_proj", "linear_fc2")) else std
                fill(module.weight, lambda t, s=out_std: nn.init.normal_(t, mean=0.0, std=s))
                if module.bias is not None:
                    fill(module.bias, nn.init.zeros_)
            elif isinstance(module, TokensHead):
                if module.weight is not None:
                    fill(module.weight, lambda t: nn.init.normal_(t, mean=0.0, std=std))
                if module.bias is not None:
                    fill(module.bias, nn.init.zeros_)


# What pipeline parts without the encoder's token embedding store under its name.
TIED_PARAMETERS = {
    "decoder_embedding.word_embeddings.weight": "encoder_embedding.word_embeddings.weight",
    "output_layer.weight": "encoder_embedding.word_embeddings.weight",
}

STACKS = ("encoder_layers", "decoder_layers")


def pipeline_stages(cfg: T5Config, pp: int, virtual: int = 1, split_rank: int | None = None) -> list[dict[str, range]]:
    """The layers of each pipeline stage: ``split_rank`` encoder stages, then ``pp - split_rank`` decoder stages.

    Megatron's ``pipeline_model_parallel_split_rank`` (null: half the stages each, the encoder taking
    the odd one); each side's layers split evenly over its stages. No interleaving for T5.
    """
    if virtual != 1:
        raise ValueError("T5 has no interleaved pipeline schedule (virtual_pipeline_model_parallel_size must be 1)")
    if pp == 1:
        return [{"encoder_layers": range(cfg.encoder_num_layers), "decoder_layers": range(cfg.decoder_num_layers)}]
    split = default_split_rank(pp) if split_rank is None else split_rank
    enc, dec = cfg.encoder_num_layers // split, cfg.decoder_num_layers // (pp - split)
    return ([{"encoder_layers": range(s * enc, (s + 1) * enc), "decoder_layers": range(0)} for s in range(split)]
            + [{"encoder_layers": range(0), "decoder_layers": range(s * dec, (s + 1) * dec)}
               for s in range(pp - split)])


def default_split_rank(pp: int) -> int:
    """Encoder stages when ``pipeline_model_parallel_split_rank`` is null."""
    return (pp + 1) // 2


def split_for_pipeline(model: T5, stages: Sequence[Mapping[str, Sequence[int]]], num_stages: int,
                       stage_ids: Sequence[int]) -> list[T5]:
    """The parts of a meta-device ``model`` for the global stages ``stage_ids`` (see ``pipeline_stages``).

    The first stage keeps the token embedding, the last encoder stage the encoder's final norm, the
    first decoder stage the decoder's embedding (with a copy of the shared token embedding), the last
    stage the decoder's final norm and the head (with a copy of the tied weight when it holds no
    token embedding). A stack's relative position bias sits on each stage holding layers of that stack.
    """
    first_decoder = next(s for s in range(num_stages) if len(stages[s]["decoder_layers"]) > 0
                         or s == num_stages - 1)
    parts = []
    for s in stage_ids:
        part = copy.deepcopy(model)
        for stack in STACKS:
            keep = {str(i) for i in stages[s][stack]}
            layers = getattr(part, stack)
            for key in [k for k in layers if k not in keep]:
                del layers[key]
        encoder_stage = s < first_decoder
        if s != 0:
            part.encoder_embedding = None
        if not encoder_stage:
            part.encoder_relative_position_bias = None
        if s != first_decoder - 1:
            part.encoder_final_layernorm = None
        if encoder_stage:
            part.decoder_relative_position_bias = part.decoder_cross_relative_position_bias = None
        if s != first_decoder:
            part.decoder_embedding = None
        elif s != 0:
            with torch.device("meta"):
                part.decoder_embedding.word_embeddings = nn.Embedding(model.cfg.vocab_size, model.cfg.hidden_size)
        if s != num_stages - 1:
            part.decoder_final_layernorm = None
            part.tokens_head = None
        elif model.cfg.share_decoder_tokens_head_embeddings and part.decoder_embedding is None and s != 0:
            with torch.device("meta"):
                part.output_layer = OutputLayer(model.cfg.vocab_size, model.cfg.hidden_size)
        parts.append(part)
    return parts


def count_parameters(cfg: T5Config) -> int:
    """Parameters of ``T5(cfg)`` from the config alone (equals ``num_parameters(T5(cfg))``)."""
    h, a, b = cfg.hidden_size, cfg.num_attention_heads * cfg.kv_channels, int(cfg.bias)
    norm = h * (2 if cfg.normalization == "layernorm" and cfg.bias else 1)
    gates = 1 if cfg.activation == "gelu" else 2

    def mlp(f: int) -> int:
        return gates * (h * f + b * f) + f * h + b * h

    self_attn = 3 * h * a + b * 3 * a + a * h + b * h
    cross_attn = h * a + b * a + 2 * h * a + b * 2 * a + a * h + b * h
    encoder = cfg.encoder_num_layers * (self_attn + mlp(cfg.encoder_ffn_hidden_size) + 2 * norm)
    decoder = cfg.decoder_num_layers * (self_attn + cross_attn + mlp(cfg.decoder_ffn_hidden_size) + 3 * norm)
    embeddings = cfg.vocab_size * h
    if cfg.relative:
        tables = 3 if not cfg.relative_position_bias_self_attention_only else 2
        embeddings += tables * cfg.relative_attention_num_buckets * cfg.num_attention_heads
    else:
        embeddings += 2 * cfg.max_position_embeddings * h
    head = (0 if cfg.share_decoder_tokens_head_embeddings else cfg.vocab_size * h) + b * cfg.vocab_size
    return embeddings + encoder + decoder + 2 * norm + head


def flops_per_sample(cfg: T5Config, seq_length: int, seq_length_dec: int | None = None) -> tuple[float, float]:
    """Model FLOPs of one sample, forward + backward, as (over encoder rows, over decoder rows): the
    matrix multiplies whose rows are the s_e encoder tokens (the encoder, the decoder's cross-attention
    key/value projection, the encoder's attention) and those whose rows are the s_d decoder tokens
    (the rest of the decoder, its attention, the output layer). A performance model runs the second
    kind on s_e/s_d times fewer rows, at a lower rate.

    6 per weight and token, 12·a per query-key pair of an attention's QKᵀ and scores·V
    (a = heads × kv_channels), over the full squares (s_e² encoder, s_d² decoder self, s_d·s_e cross).
    """
    s_e = seq_length
    s_d = seq_length_dec or seq_length
    h, a, g = cfg.hidden_size, cfg.num_attention_heads * cfg.kv_channels, (1 if cfg.activation == "gelu" else 2)
    le, ld = cfg.encoder_num_layers, cfg.decoder_num_layers
    enc_weights = le * (4 * h * a + (g + 1) * h * cfg.encoder_ffn_hidden_size)
    # self-attention, cross-attention's query and output projections, MLP
    dec_weights_per_dec_token = ld * (4 * h * a + 2 * h * a + (g + 1) * h * cfg.decoder_ffn_hidden_size)
    dec_cross_kv_per_enc_token = ld * 2 * h * a
    encoder_rows = 6.0 * s_e * (enc_weights + dec_cross_kv_per_enc_token) + 12 * a * le * s_e * s_e
    decoder_rows = 6.0 * s_d * (dec_weights_per_dec_token + cfg.vocab_size * h) + 12 * a * ld * (s_d * s_d + s_d * s_e)
    return encoder_rows, decoder_rows


def flops_per_token(cfg: T5Config, seq_length: int, seq_length_dec: int | None = None) -> float:
    """Model FLOPs per *encoder* token, forward + backward: ``flops_per_sample`` divided by s_e, since the
    progress line counts a sample as ``seq_length`` (encoder) tokens."""
    return sum(flops_per_sample(cfg, seq_length, seq_length_dec)) / seq_length


def activation_bytes_per_layer(cfg: T5Config, *, seq_length: int, micro_batch_size: int,
                               tensor_parallel_size: int = 1, sequence_parallel: bool = False,
                               recompute: str | None = None, stack: str = "encoder",
                               seq_length_dec: int | None = None) -> float:
    """Bytes one ``stack`` ("encoder" or "decoder") layer keeps for backward with 16-bit activations.

    Korthikanti et al. 2022 (Table 2) term by term for T5's layers, per tensor-parallel rank, with
    1-byte dropout masks. ``seq_length`` is the encoder's s_e, ``seq_length_dec`` the decoder's s_d
    (default s_e); p = heads × kv_channels, f = the stack's ffn width, a = heads. A block is
    norm → column-parallel linear(s) → ... → row-parallel linear → dropout → residual add:

    - every block: its norm's input 2sbh, the column-parallel linear's input (the norm's output)
      2sbh, the dropout mask sbh: 5sbh, replicated over the TP ranks unless SP splits it;
    - self-attention over its own s tokens: Q, K, V 6sbp, the context (linear_proj's input) 2sbp,
      softmax output, dropout mask and dropped probabilities 5·a·s²·b;
    - cross-attention (decoder): Q and context 4·s_d·b·p, K and V of the s_e encoder tokens
      4·s_e·b·p, scores 5·a·s_d·s_e·b;
    - MLP: gated (geglu, swiglu) fc1's output, fc1_2's output, the activation and the product
      8sbf; gelu: fc1's output and the activation 4sbf.

    The decoder's cross-attention reads the encoder output, one (b, s_e, h) tensor that every
    decoder layer's ``linear_kv`` keeps a reference to: it is counted once per decoder stack (per
    decoder pipeline stage), not here: 2·s_e·b·h more (/t under SP). So are the padding and causal
    masks a recomputed layer is given (a few bytes per token, b·s_d² for the decoder's causal one).

    ``recompute``: None; "selective" (the attention cores recomputed: no a·s² terms); "full"
    (only the layer's input, 2sbh, /t under SP). Exact, up to the norms' per-token statistics, for
    the launcher's defaults (measured: tests/bench/bench_train_t5.py) and for no bias, gelu or
    swiglu; ``relative`` position bias adds a 1-byte mask of b·s_d² per decoder layer (b·s_e per
    encoder layer) without recompute (the trainer's padding masks given), whole on every rank.
    ``rmsnorm`` is counted as a fused kernel keeping its 16-bit input; torch's CPU RMSNorm is
    composite and keeps two fp32 copies instead (6sbh more per norm, measured).
    """
    if stack not in ("encoder", "decoder"):
        raise ValueError(f"stack must be 'encoder' or 'decoder', got {stack!r}")
    s_e, s_d = seq_length, seq_length_dec or seq_length
    decoder = stack == "decoder"
    s = s_d if decoder else s_e  # the layer's own tokens
    b, h, a, t = micro_batch_size, cfg.hidden_size, cfg.num_attention_heads, tensor_parallel_size
    p, f = a * cfg.kv_channels, getattr(cfg, f"{stack}_ffn_hidden_size")
    if recompute == "full":
        return 2 * s * b * h / (t if sequence_parallel else 1)
    blocks = 3 if decoder else 2
    replicated = 5 * blocks * s * b * h  # per block: norm input, column-parallel linear input, dropout mask
    split = 8 * s * b * p + (8 if cfg.activation != "gelu" else 4) * s * b * f
    if decoder:
        split += 4 * s_d * b * p + 4 * s_e * b * p
    # relative: additive_mask's masked_fill keeps its bool mask, whole on every rank
    whole = b * s * (s if decoder else 1) if cfg.relative and recompute is None else 0
    if recompute != "selective":
        split += 5 * a * b * s * s + (5 * a * b * s_d * s_e if decoder else 0)
    if sequence_parallel or t == 1:
        return (replicated + split) / t + whole
    return replicated + split / t + whole


def tensor_parallel_plan(part: T5) -> dict[str, str]:
    """Megatron's tensor parallelism for the modules ``part`` holds (see spec.TP_STYLES and gpt's plan).

    The token embedding and the output layer are vocabulary-parallel; the relative position tables
    are split along the heads, as the attention projections are.
    """
    plan: dict[str, str] = {}
    if part.encoder_embedding is not None:
        plan["encoder_embedding.word_embeddings"] = "vocab_embedding"
        plan["encoder_embedding"] = "embedding"
    if part.decoder_embedding is not None:
        if part.decoder_embedding.word_embeddings is not None:
            plan["decoder_embedding.word_embeddings"] = "vocab_embedding"
        plan["decoder_embedding"] = "embedding"
    for name in ("encoder_relative_position_bias", "decoder_relative_position_bias",
                 "decoder_cross_relative_position_bias"):
        if getattr(part, name) is not None:
            plan[f"{name}.relative_attention_bias"] = "head_embedding"
    for stack in STACKS:
        for key, layer in getattr(part, stack).items():
            prefix = f"{stack}.{key}"
            plan[f"{prefix}.input_layernorm"] = "norm"
            plan[f"{prefix}.self_attention.linear_qkv"] = "colwise"
            plan[f"{prefix}.self_attention.linear_proj"] = "rowwise"
            if isinstance(layer, DecoderLayer):
                plan[f"{prefix}.pre_cross_attn_layernorm"] = "norm"
                plan[f"{prefix}.cross_attention.linear_q"] = "colwise"
                plan[f"{prefix}.cross_attention.linear_kv"] = "colwise"
                plan[f"{prefix}.cross_attention.linear_proj"] = "rowwise"
            plan[f"{prefix}.pre_mlp_layernorm"] = "norm"
            plan[f"{prefix}.mlp.linear_fc1"] = "colwise"
            if hasattr(layer.mlp, "linear_fc1_2"):
                plan[f"{prefix}.mlp.linear_fc1_2"] = "colwise"
            plan[f"{prefix}.mlp.linear_fc2"] = "rowwise"
    if part.encoder_final_layernorm is not None:
        plan["encoder_final_layernorm"] = "norm"
    if part.decoder_final_layernorm is not None:
        plan["decoder_final_layernorm"] = "final_norm"
    if part.tokens_head is not None:
        plan["tokens_head"] = "vocab_head"
    if part.output_layer is not None:
        plan["output_layer"] = "vocab_weight"
    return plan
