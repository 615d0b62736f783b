"""The ``model.*`` keys every model family shares: batch sizes, parallel layout, recomputation, and the
training keys (vocabulary padding, seed, tokenizer, optimizer, data). A family's config (gpt.py) puts its
architecture keys between the two, in the order the NeMo launcher's configs list them."""

from __future__ import annotations

from dataclasses import dataclass, field

from bignlp_contracts import ConfigError

from .common import OptimConfig, TokenizerConfig
from .data import DataConfig

CHECKPOINT_GRANULARITIES = ("full", "selective")
CHECKPOINT_METHODS = ("uniform", "block")


@dataclass(frozen=True, kw_only=True)
class ParallelKeys:
    """Batch sizes, the parallel layout and activation recomputation."""

    micro_batch_size: int = 4
    global_batch_size: int = 8
    tensor_model_parallel_size: int = 1  # TP: each layer's matmuls split over this many ranks
    pipeline_model_parallel_size: int = 1  # PP: consecutive layers on successive ranks, 1F1B schedule
    # Interleaved 1F1B: each pipeline rank holds this many model chunks, layers assigned round-robin
    # (Megatron's virtual pipeline); null or 1: one chunk per rank. Needs PP > 1.
    virtual_pipeline_model_parallel_size: int | None = None
    sequence_parallel: bool = False  # with TP: LayerNorms and dropout split along the sequence
    # Activation recomputation (Megatron's keys): null: none; "full": whole blocks, chosen by method and
    # num_layers; "selective": only the attention core softmax(QKᵀ)V (large activations, few FLOPs).
    activations_checkpoint_granularity: str | None = None
    activations_checkpoint_method: str | None = None  # full: "uniform" (groups of num_layers) or "block"
    activations_checkpoint_num_layers: int | None = None  # uniform: group size; block: blocks per stage (0: none)

    def _check_parallel(self) -> None:
        for key in ("micro_batch_size", "tensor_model_parallel_size", "pipeline_model_parallel_size",
                    "global_batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"model.global_batch_size={self.global_batch_size} is not a multiple of "
                f"model.micro_batch_size={self.micro_batch_size}"
            )
        if self.virtual_pipeline_model_parallel_size is not None:
            if self.virtual_pipeline_model_parallel_size < 1:
                raise ConfigError("model.virtual_pipeline_model_parallel_size must be null or positive, got "
                                  f"{self.virtual_pipeline_model_parallel_size}")
            if self.virtual_pipeline_model_parallel_size > 1 and self.pipeline_model_parallel_size == 1:
                raise ConfigError(
                    f"model.virtual_pipeline_model_parallel_size={self.virtual_pipeline_model_parallel_size} "
                    "needs model.pipeline_model_parallel_size > 1",
                    hint="set model.virtual_pipeline_model_parallel_size=null, or raise the pipeline size")

    def _check_recompute(self, num_layers: int) -> None:
        """The recomputation keys, against the model's ``num_layers`` (per pipeline stage for "block")."""
        granularity, method, n = (self.activations_checkpoint_granularity, self.activations_checkpoint_method,
                                  self.activations_checkpoint_num_layers)
        if granularity not in (None, *CHECKPOINT_GRANULARITIES):
            raise ConfigError(f"model.activations_checkpoint_granularity={granularity!r} is not supported",
                              hint="use null, full or selective")
        if method is not None and method not in CHECKPOINT_METHODS:
            raise ConfigError(f"model.activations_checkpoint_method={method!r} is not supported",
                              hint="use uniform or block")
        if granularity != "full":
            return  # selective recomputes the attention core of every block: method and num_layers unused
        if method is None:
            raise ConfigError("model.activations_checkpoint_granularity=full needs model.activations_checkpoint_method",
                              hint="set model.activations_checkpoint_method=uniform or block")
        layers_per_stage = num_layers // (self.pipeline_model_parallel_size * self.virtual_pipeline_size)
        minimum = 1 if method == "uniform" else 0
        if n is None or n < minimum:
            raise ConfigError(f"model.activations_checkpoint_num_layers={n} must be at least {minimum} "
                              f"with model.activations_checkpoint_method={method}")
        limit, what = (num_layers, "model.num_layers") if method == "uniform" else (
            layers_per_stage, "the layers per pipeline stage")
        if n > limit:
            raise ConfigError(f"model.activations_checkpoint_num_layers={n} exceeds {what} ({limit})",
                              hint=f"use at most {limit}")

    @property
    def virtual_pipeline_size(self) -> int:
        """Model chunks per pipeline rank (``virtual_pipeline_model_parallel_size``, null: 1)."""
        return self.virtual_pipeline_model_parallel_size or 1

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per optimizer step over all data-parallel ranks together."""
        return self.global_batch_size // self.micro_batch_size


@dataclass(frozen=True, kw_only=True)
class TrainingKeys:
    """Vocabulary padding, seed, tokenizer, optimizer and data."""

    make_vocab_size_divisible_by: int = 128
    seed: int = 1234
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def _check_training(self) -> None:
        if self.make_vocab_size_divisible_by < 1:
            raise ConfigError(f"model.make_vocab_size_divisible_by must be positive, got "
                              f"{self.make_vocab_size_divisible_by}")
