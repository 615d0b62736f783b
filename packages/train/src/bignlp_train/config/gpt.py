"""GPT's ``model.*`` keys: the architecture, between the shared parallel and training keys."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from bignlp_contracts import ConfigError

from .layout import check_parallel_layout
from .model import ParallelKeys, TrainingKeys

if TYPE_CHECKING:
    from bignlp_models import GPTConfig


@dataclass(frozen=True, kw_only=True)
class GPTArchitectureKeys:
    """A GPT-3-style decoder's shape and regularisation."""

    encoder_seq_length: int = 2048
    max_position_embeddings: int = 2048
    num_layers: int = 12
    hidden_size: int = 768
    ffn_hidden_size: int | None = None  # null: 4 × hidden_size
    num_attention_heads: int = 12
    init_method_std: float = 0.02
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    kv_channels: int | None = None  # null: hidden_size / num_attention_heads
    layernorm_epsilon: float = 1e-5


@dataclass(frozen=True, kw_only=True)
class GPTModelConfig(TrainingKeys, GPTArchitectureKeys, ParallelKeys):
    """GPT-3 architecture, batch sizes, parallel layout, tokenizer, optimizer and data (the seed's ``model:``)."""

    family: ClassVar[str] = "gpt"  # the bignlp_models family these keys build

    def __post_init__(self) -> None:
        self._check_parallel()
        for key in ("encoder_seq_length", "max_position_embeddings", "num_layers", "hidden_size",
                    "num_attention_heads"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        self._check_training()
        if self.num_attention_heads % self.tensor_model_parallel_size:
            raise ConfigError(
                f"model.num_attention_heads={self.num_attention_heads} is not divisible by "
                f"model.tensor_model_parallel_size={self.tensor_model_parallel_size}",
                hint="each tensor-parallel rank computes whole attention heads",
            )
        if self.kv_channels is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"model.num_attention_heads={self.num_attention_heads} does not divide "
                f"model.hidden_size={self.hidden_size}",
                hint="pick a head count that divides hidden_size, or set model.kv_channels",
            )
        if self.data.seq_length is not None and self.data.seq_length != self.encoder_seq_length:
            raise ConfigError(
                f"model.data.seq_length={self.data.seq_length} differs from "
                f"model.encoder_seq_length={self.encoder_seq_length}",
                hint="set them to the same value, or leave model.data.seq_length null",
            )
        if self.seq_length > self.max_position_embeddings:
            raise ConfigError(
                f"model.data.seq_length={self.seq_length} exceeds "
                f"model.max_position_embeddings={self.max_position_embeddings}"
            )
        for key in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"model.{key} must lie in [0, 1), got {getattr(self, key)}")
        if self.init_method_std <= 0:
            raise ConfigError(f"model.init_method_std must be positive, got {self.init_method_std}")
        self._check_recompute(self.num_layers)

    @property
    def seq_length(self) -> int:
        """Tokens per sample: ``data.seq_length``, else ``encoder_seq_length``."""
        return self.data.seq_length or self.encoder_seq_length

    @property
    def sequence_lengths(self) -> tuple[int]:
        """Tokens per sample, one length per stack (GPT has one)."""
        return (self.seq_length,)

    @property
    def split_rank(self) -> None:
        """GPT's pipeline stages are all alike: no encoder/decoder split."""
        return None

    def data_parallel_size(self, world_size: int) -> int:
        """DP for ``world_size`` processes, after ``check_parallel_layout``."""
        return check_parallel_layout(self, world_size)

    def architecture(self, vocab_size: int) -> GPTConfig:
        """The model's architecture for a tokenizer of ``vocab_size`` tokens (padded as Megatron pads it)."""
        from bignlp_models import GPTConfig, padded_vocab_size  # torch: only when a model is built

        return GPTConfig(
            vocab_size=padded_vocab_size(vocab_size, self.make_vocab_size_divisible_by,
                                         self.tensor_model_parallel_size),
            max_position_embeddings=self.max_position_embeddings,
            num_layers=self.num_layers,
            hidden_size=self.hidden_size,
            num_attention_heads=self.num_attention_heads,
            ffn_hidden_size=self.ffn_hidden_size or 4 * self.hidden_size,
            kv_channels=self.kv_channels or self.hidden_size // self.num_attention_heads,
            hidden_dropout=self.hidden_dropout,
            attention_dropout=self.attention_dropout,
            layernorm_epsilon=self.layernorm_epsilon,
            init_method_std=self.init_method_std,
        )
