"""T5/mT5's ``model.*`` keys: the encoder-decoder architecture, between the shared parallel and training keys.

The NeMo launcher's T5 and mT5 training configs, key for key: ``seq_length`` (encoder) with
``data.seq_length_dec``, ``position_embedding_type``, ``activation``, ``normalization``, ``bias``,
``share_decoder_tokens_head_embeddings``, ``pipeline_model_parallel_split_rank``; an asymmetric
model sets ``encoder.num_layers`` / ``decoder.num_layers`` (and their ``ffn_hidden_size``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from bignlp_contracts import ConfigError

from .common import TokenizerConfig
from .data import T5DataConfig
from .model import ParallelKeys, TrainingKeys

if TYPE_CHECKING:
    from bignlp_models.t5 import T5Config

POSITION_EMBEDDING_TYPES = ("learned_absolute", "relative")
ACTIVATIONS = ("gelu", "geglu", "swiglu")
NORMALIZATIONS = ("layernorm", "rmsnorm")


@dataclass(frozen=True, kw_only=True)
class StackKeys:
    """One stack's own depth and MLP width (NeMo's ``model.encoder`` / ``model.decoder``); null: the model's."""

    num_layers: int | None = None
    ffn_hidden_size: int | None = None


@dataclass(frozen=True, kw_only=True)
class T5TokenizerConfig(TokenizerConfig):
    """The T5 tokenizer keys; the tokenizer itself (sentinels included) comes from the dataset artifact."""

    type: str = "BertWordPieceCase"  # compatibility: recorded only
    # Sentinels the span corruption may use; the dataset's tokenizer must carry at least this many
    # (bignlp-dataprep --num-sentinel-tokens).
    num_sentinel_tokens: int = 100

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_sentinel_tokens < 1:
            raise ConfigError(f"model.tokenizer.num_sentinel_tokens must be positive, got {self.num_sentinel_tokens}")


@dataclass(frozen=True, kw_only=True)
class T5ArchitectureKeys:
    """An encoder-decoder's shape, options and regularisation."""

    seq_length: int = 512  # encoder tokens per sample (model.data.seq_length_dec: the decoder's)
    max_position_embeddings: int | None = None  # learned_absolute: rows of each position table; null: seq_length
    num_layers: int = 12  # each stack's, unless encoder.num_layers / decoder.num_layers say otherwise
    hidden_size: int = 768
    ffn_hidden_size: int = 2048
    num_attention_heads: int = 12
    init_method_std: float = 0.015
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    position_embedding_type: str = "learned_absolute"  # or "relative" (T5's bucketed relative bias)
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    relative_position_bias_self_attention_only: bool = True  # false: a bias in cross-attention too
    kv_channels: int | None = None  # per-head width; null: hidden_size / num_attention_heads
    layernorm_epsilon: float = 1e-5
    bias: bool = True  # biases of the linears, LayerNorms and the tied head
    normalization: str = "layernorm"  # or "rmsnorm" (T5 v1.1, mT5)
    activation: str = "geglu"  # or "gelu", "swiglu"
    share_token_embeddings: bool = True  # encoder and decoder share one token embedding (must be true)
    share_decoder_tokens_head_embeddings: bool = True  # tied output head; false: its own weight (T5 v1.1)
    encoder: StackKeys = field(default_factory=StackKeys)
    decoder: StackKeys = field(default_factory=StackKeys)


@dataclass(frozen=True, kw_only=True)
class T5TrainingKeys(TrainingKeys):
    """The training keys with T5's tokenizer and span-corruption data."""

    pipeline_model_parallel_split_rank: int | None = None  # encoder stages under PP; null: half, rounded up
    tokenizer: T5TokenizerConfig = field(default_factory=T5TokenizerConfig)
    data: T5DataConfig = field(default_factory=T5DataConfig)


@dataclass(frozen=True, kw_only=True)
class T5ModelConfig(T5TrainingKeys, T5ArchitectureKeys, ParallelKeys):
    """T5/mT5 architecture, batch sizes, parallel layout, tokenizer, optimizer and data (the launcher's ``model:``)."""

    family: ClassVar[str] = "t5"  # the bignlp_models family these keys build

    def __post_init__(self) -> None:
        self._check_parallel()
        for key in ("seq_length", "num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        self._check_training()
        for key, allowed in (("position_embedding_type", POSITION_EMBEDDING_TYPES), ("activation", ACTIVATIONS),
                             ("normalization", NORMALIZATIONS)):
            if getattr(self, key) not in allowed:
                raise ConfigError(f"model.{key}={getattr(self, key)!r} is not supported",
                                  hint=f"use one of {', '.join(allowed)}")
        if not self.share_token_embeddings:
            raise ConfigError("model.share_token_embeddings=false is not supported: encoder and decoder share "
                              "one token embedding", hint="set model.share_token_embeddings=true")
        for stack in ("encoder", "decoder"):
            keys = getattr(self, stack)
            for key in ("num_layers", "ffn_hidden_size"):
                value = getattr(keys, key)
                if value is not None and value < 1:
                    raise ConfigError(f"model.{stack}.{key} must be positive or null, got {value}")
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.num_attention_heads={self.num_attention_heads} does not divide "
                f"model.hidden_size={self.hidden_size}",
                hint="pick a head count that divides hidden_size, or set model.kv_channels")
        if self.data.seq_length is not None and self.data.seq_length != self.seq_length:
            raise ConfigError(f"model.data.seq_length={self.data.seq_length} differs from "
                              f"model.seq_length={self.seq_length}",
                              hint="set them to the same value, or leave model.data.seq_length null")
        if self.position_embedding_type == "learned_absolute":
            longest = max(self.seq_length, self.seq_length_dec)
            if longest > self.position_table_size:
                raise ConfigError(f"sequences of {longest} tokens exceed model.max_position_embeddings="
                                  f"{self.position_table_size}", hint="raise model.max_position_embeddings")
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key} must lie in [0, 1), got {getattr(self, key)}")
        if self.init_method_std <= 0:
            raise ConfigError(f"model.init_method_std must be positive, got {self.init_method_std}")
        if self.virtual_pipeline_size > 1:
            raise ConfigError("model.virtual_pipeline_model_parallel_size must be null or 1 for T5: the interleaved "
                              "schedule needs one stack", hint="set model.virtual_pipeline_model_parallel_size=null")
        self._check_recompute(max(self.encoder_num_layers, self.decoder_num_layers))

    # --- derived -------------------------------------------------------------------------------
    @property
    def seq_length_dec(self) -> int:
        return self.data.seq_length_dec

    @property
    def sequence_lengths(self) -> tuple[int, int]:
        """(encoder, decoder) tokens per sample: what the FLOP count and the SP check need."""
        return self.seq_length, self.seq_length_dec

    @property
    def position_table_size(self) -> int:
        return self.max_position_embeddings or self.seq_length

    @property
    def encoder_num_layers(self) -> int:
        return self.encoder.num_layers or self.num_layers

    @property
    def decoder_num_layers(self) -> int:
        return self.decoder.num_layers or self.num_layers

    @property
    def split_rank(self) -> int | None:
        """Encoder pipeline stages (``pipeline_model_parallel_split_rank``, null: half rounded up); None without PP."""
        pp = self.pipeline_model_parallel_size
        if pp == 1:
            return None
        return self.pipeline_model_parallel_split_rank or (pp + 1) // 2

    def check_pipeline_layers(self) -> None:
        """Each side's layers split evenly over its pipeline stages (encoder: split rank, decoder: the rest)."""
        pp, split = self.pipeline_model_parallel_size, self.split_rank
        if split is None:
            return
        if not 0 < split < pp:
            raise ConfigError(f"model.pipeline_model_parallel_split_rank={split} must lie in [1, {pp - 1}] for "
                              f"model.pipeline_model_parallel_size={pp}",
                              hint="the encoder takes the first split-rank stages, the decoder the others")
        for stack, layers, stages in (("encoder", self.encoder_num_layers, split),
                                      ("decoder", self.decoder_num_layers, pp - split)):
            if layers % stages:
                raise ConfigError(
                    f"the {stack}'s {layers} layers do not split evenly over its {stages} pipeline stages "
                    f"(model.pipeline_model_parallel_size={pp}, model.pipeline_model_parallel_split_rank={split})",
                    hint="pick a split rank (or layer counts) that divides each side evenly")
            if self.position_embedding_type == "relative" and stages > 1:
                raise ConfigError(
                    f"position_embedding_type=relative with the {stack} over {stages} pipeline stages is not "
                    "supported yet (its bias table would need a copy on every stage)",
                    hint="use one encoder and one decoder stage (pipeline_model_parallel_size=2), or learned_absolute")

    def architecture(self, vocab_size: int) -> T5Config:
        """The model's architecture for a tokenizer of ``vocab_size`` tokens (sentinels included), padded."""
        from bignlp_models import padded_vocab_size  # torch: only when a model is built
        from bignlp_models.t5 import T5Config

        return T5Config(
            vocab_size=padded_vocab_size(vocab_size, self.make_vocab_size_divisible_by,
                                         self.tensor_model_parallel_size),
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            kv_channels=self.kv_channels or self.hidden_size // self.num_attention_heads,
            encoder_num_layers=self.encoder_num_layers,
            decoder_num_layers=self.decoder_num_layers,
            encoder_ffn_hidden_size=self.encoder.ffn_hidden_size or self.ffn_hidden_size,
            decoder_ffn_hidden_size=self.decoder.ffn_hidden_size or self.ffn_hidden_size,
            max_position_embeddings=self.position_table_size,
            position_embedding_type=self.position_embedding_type,
            relative_attention_num_buckets=self.relative_attention_num_buckets,
            relative_attention_max_distance=self.relative_attention_max_distance,
            relative_position_bias_self_attention_only=self.relative_position_bias_self_attention_only,
            activation=self.activation,
            normalization=self.normalization,
            bias=self.bias,
            share_decoder_tokens_head_embeddings=self.share_decoder_tokens_head_embeddings,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layernorm_epsilon=self.layernorm_epsilon,
            init_method_std=self.init_method_std,
        )
