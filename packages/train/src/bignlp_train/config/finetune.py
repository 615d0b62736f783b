"""``bignlp-train finetune``'s config: the NeMo launcher's ``fine_tuning/{t5,mt5}/*.yaml`` keys.

The model's architecture and tokenizer come from the base checkpoint (``model.restore_from_path``);
the config gives the data (``model.data.train_ds`` / ``validation_ds``: parallel src/tgt text files,
one example a line), the batch sizes (in ``train_ds``, as NeMo has them), the parallel layout, the
optimizer and the validation metric. ``effective_train_config`` turns it, with the base's
architecture, into the ``T5TrainConfig`` the shared loop, parallelism and checkpointing read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bignlp_contracts import ConfigError, from_dict

from ..affinity import NumaMappingConfig
from .common import (
    EpochTrainerConfig,
    ExpManagerConfig,
    NemoCheckpointParams,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TrainerConfig,
    config_data,
    config_names,
)

FINE_TUNING_DIR = Path(__file__).parent.parent / "configs" / "fine_tuning"
METRICS = ("exact_string_match", "F1", "accuracy")


@dataclass(frozen=True, kw_only=True)
class FinetuneRunConfig(RunConfig):
    """The launcher's ``run`` keys for a fine-tuning job (recorded; Slurm reads time_limit/dependency)."""

    name: str = "squad_t5"
    task_name: str | None = None  # squad, xquad, mnli, ...
    model_train_name: str | None = None  # the pretraining run the base came from
    convert_name: str | None = None  # compatibility: the launcher's conversion directory name


@dataclass(frozen=True, kw_only=True)
class FinetuneTrainerConfig(EpochTrainerConfig):
    """The trainer keys (``max_epochs`` with ``max_steps``, as Lightning)."""

    # Validation examples scored per validation: up to 1.0 a share of each validation file (1.0: all), above 1
    # that many validation_ds global batches; 0 skips validation.
    limit_val_batches: float = 1.0  # type: ignore[assignment]
    limit_test_batches: int = 0


@dataclass(frozen=True, kw_only=True)
class FinetuneCheckpointParams(NemoCheckpointParams):
    """Which checkpoints to keep: the best ``save_top_k`` by ``monitor`` (``validation_<metric.name>``
    or ``val_loss``) plus the latest."""

    monitor: str = "validation_exact_string_match"  # type: ignore[assignment]
    save_top_k: int = 1
    mode: Literal["min", "max"] = "max"


@dataclass(frozen=True, kw_only=True)
class FinetuneExpManagerConfig(ExpManagerConfig):
    name: str = "megatron_t5_finetune"
    checkpoint_callback_params: FinetuneCheckpointParams = field(  # type: ignore[assignment]
        default_factory=FinetuneCheckpointParams)


@dataclass(frozen=True, kw_only=True)
class MetricConfig:
    """How validation scores the greedy outputs against the targets."""

    # exact_string_match: share of outputs equal to their target (stripped); accuracy: the same, the name GLUE
    # configs use; F1: SQuAD's token F1 (0-100, torchmetrics' SQuAD, the official v1.1 script's normalisation).
    name: str = "exact_string_match"
    average: str | None = None  # compatibility: NeMo's classification averaging (must stay null)
    num_classes: int | None = None  # compatibility (must stay null)

    def __post_init__(self) -> None:
        if self.name not in METRICS:
            raise ConfigError(f"model.data.validation_ds.metric.name={self.name!r} is not supported",
                              hint=f"use one of {', '.join(METRICS)}")
        if self.average is not None or self.num_classes is not None:
            raise ConfigError("model.data.validation_ds.metric.average/num_classes: classification averaging is not "
                              "supported; targets are compared as text", hint="leave them null")


@dataclass(frozen=True, kw_only=True)
class Seq2SeqDataset:
    """One side of ``model.data``: parallel source/target text files, one example a line."""

    src_file_name: str | tuple[str, ...] | None = None
    tgt_file_name: str | tuple[str, ...] | None = None
    names: str | tuple[str, ...] | None = None  # per file, for the metric names; null: file stems
    global_batch_size: int = 128
    micro_batch_size: int = 16
    shuffle: bool = True
    num_workers: int = 0  # compatibility: examples are tokenized once, in the training process
    pin_memory: bool = True  # compatibility
    max_src_seq_length: int = 512  # encoder tokens, <bos> and <eos> included; a longer source keeps its tail
    max_tgt_seq_length: int = 128  # decoder tokens; a longer target is cut at the end
    drop_last: bool = True  # compatibility: training reads a continuous stream over epochs
    concat_sampling_probabilities: Any = None  # compatibility: one file per side (must stay null)

    def files(self, key: str) -> list[tuple[str, str, str]]:
        """(name, src, tgt) per file pair; a ConfigError naming ``key`` when unset or unequal in number."""
        src, tgt = _as_list(self.src_file_name), _as_list(self.tgt_file_name)
        if not src or not tgt:
            raise ConfigError(f"model.data.{key}.src_file_name and tgt_file_name must be set",
                              hint=f"e.g. model.data.{key}.src_file_name=DATA/t5/train_src.txt "
                                   f"model.data.{key}.tgt_file_name=DATA/t5/train_tgt.txt")
        if len(src) != len(tgt):
            raise ConfigError(f"model.data.{key}: {len(src)} src_file_name(s) but {len(tgt)} tgt_file_name(s)")
        names = _as_list(self.names) or [Path(s).name.removesuffix("_src.txt").removesuffix(".txt") for s in src]
        if len(names) != len(src):
            raise ConfigError(f"model.data.{key}.names: {len(names)} names for {len(src)} files")
        return list(zip(names, src, tgt))

    def check(self, key: str) -> None:
        for name in ("global_batch_size", "micro_batch_size", "max_src_seq_length", "max_tgt_seq_length"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.data.{key}.{name} must be positive, got {getattr(self, name)}")
        if self.max_src_seq_length < 3 or self.max_tgt_seq_length < 2:
            raise ConfigError(f"model.data.{key}: max_src_seq_length must be at least 3 and max_tgt_seq_length 2 "
                              "(<bos>/<eos> count)")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"model.data.{key}.global_batch_size={self.global_batch_size} is not a multiple of "
                              f"micro_batch_size={self.micro_batch_size}")
        if self.concat_sampling_probabilities is not None:
            raise ConfigError(f"model.data.{key}.concat_sampling_probabilities: one file per side is supported",
                              hint="concatenate the files, or leave it null")


@dataclass(frozen=True, kw_only=True)
class ValidationDataset(Seq2SeqDataset):
    shuffle: bool = False
    drop_last: bool = False
    write_predictions_to_file: bool = False  # RUN_DIR/predictions/{name}_step-N.txt, one output a line
    output_file_path_prefix: str | None = None  # compatibility: predictions go to the run directory
    metric: MetricConfig = field(default_factory=MetricConfig)


@dataclass(frozen=True, kw_only=True)
class FinetuneDataConfig:
    train_ds: Seq2SeqDataset = field(default_factory=Seq2SeqDataset)
    validation_ds: ValidationDataset = field(default_factory=ValidationDataset)


@dataclass(frozen=True, kw_only=True)
class FinetuneModelConfig:
    """The launcher's fine-tuning ``model:`` keys."""

    restore_from_path: str | None = None  # the base: a model-checkpoint directory or a run directory (its latest)
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    pipeline_model_parallel_split_rank: int | None = 0  # compatibility (PP 1 only for now)
    seed: int = 1234
    make_vocab_size_divisible_by: int = 128
    hidden_dropout: float | None = None  # null: the base's
    attention_dropout: float | None = None  # null: the base's
    gradient_as_bucket_view: bool = True  # compatibility
    megatron_amp_O2: bool = False  # compatibility: trainer.precision=bf16 keeps fp32 master weights  # noqa: N815
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="fused_adam", lr=5e-6, weight_decay=0.0, betas=(0.9, 0.98),
        sched=SchedConfig(name="WarmupAnnealing", warmup_ratio=0.0, min_lr=0.0)))

    def __post_init__(self) -> None:
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size", "make_vocab_size_divisible_by"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.pipeline_model_parallel_size != 1:
            raise ConfigError(f"model.pipeline_model_parallel_size={self.pipeline_model_parallel_size}: fine-tuning "
                              "runs without pipeline stages for now (validation generates with the whole model)",
                              hint="use tensor_model_parallel_size and data parallelism, or pretraining's pipeline")
        for key in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, key)
            if value is not None and not 0.0 <= value < 1.0:
                raise ConfigError(f"model.{key} must lie in [0, 1), got {value}")
        self.data.train_ds.check("train_ds")
        self.data.validation_ds.check("validation_ds")


@dataclass(frozen=True, kw_only=True)
class FinetuneConfig:
    """Everything ``bignlp-train finetune`` reads."""

    run: FinetuneRunConfig = field(default_factory=FinetuneRunConfig)
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    exp_manager: FinetuneExpManagerConfig = field(default_factory=FinetuneExpManagerConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    numa_mapping: NumaMappingConfig = field(default_factory=NumaMappingConfig)
    wandb_api_key_file: str | None = None
    # The launcher's top-level paths, for ${data_dir} / ${base_results_dir} in the data and run keys.
    data_dir: str | None = None
    base_results_dir: str | None = None

    def __post_init__(self) -> None:
        monitor = self.exp_manager.checkpoint_callback_params.monitor
        allowed = ("val_loss", "train_loss", f"validation_{self.model.data.validation_ds.metric.name}")
        if monitor not in allowed:
            raise ConfigError(f"exp_manager.checkpoint_callback_params.monitor={monitor!r} is not logged by this run",
                              hint=f"use one of {', '.join(allowed)}")


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def load_finetune_config(name_or_path: str | Path | Mapping[str, Any] | None = None,
                         overrides: Sequence[str] = ()) -> FinetuneConfig:
    """A shipped fine-tuning config (``t5/squad``, ``mt5/xquad``, resolved in configs/fine_tuning) or a YAML path,
    with ``key.sub=value`` overrides."""
    return from_dict(FinetuneConfig, config_data(name_or_path, overrides, FINE_TUNING_DIR))


def shipped_finetune_configs() -> list[str]:
    return config_names(FINE_TUNING_DIR)


def effective_train_config(cfg: FinetuneConfig, arch: Any, max_steps: int) -> Any:
    """The ``T5TrainConfig`` the shared loop, parallelism and checkpointing read: the base's architecture
    (``arch``, a bignlp_models T5Config), the fine-tuning batch sizes, lengths, layout and optimizer."""
    from . import T5TrainConfig
    from .data import T5DataConfig
    from .t5 import StackKeys, T5ModelConfig

    m, train = cfg.model, cfg.model.data.train_ds
    longest = max(train.max_src_seq_length, cfg.model.data.validation_ds.max_src_seq_length)
    longest_dec = max(train.max_tgt_seq_length, cfg.model.data.validation_ds.max_tgt_seq_length)
    model = T5ModelConfig(
        micro_batch_size=train.micro_batch_size, global_batch_size=train.global_batch_size,
        tensor_model_parallel_size=m.tensor_model_parallel_size, pipeline_model_parallel_size=1,
        seq_length=longest, max_position_embeddings=arch.max_position_embeddings,
        num_layers=arch.encoder_num_layers, hidden_size=arch.hidden_size,
        ffn_hidden_size=arch.encoder_ffn_hidden_size, num_attention_heads=arch.num_attention_heads,
        init_method_std=arch.init_method_std,
        hidden_dropout=arch.hidden_dropout if m.hidden_dropout is None else m.hidden_dropout,
        attention_dropout=arch.attention_dropout if m.attention_dropout is None else m.attention_dropout,
        position_embedding_type=arch.position_embedding_type,
        relative_attention_num_buckets=arch.relative_attention_num_buckets,
        relative_attention_max_distance=arch.relative_attention_max_distance,
        relative_position_bias_self_attention_only=arch.relative_position_bias_self_attention_only,
        kv_channels=arch.kv_channels, layernorm_epsilon=arch.layernorm_epsilon, bias=arch.bias,
        normalization=arch.normalization, activation=arch.activation,
        share_decoder_tokens_head_embeddings=arch.share_decoder_tokens_head_embeddings,
        encoder=StackKeys(num_layers=arch.encoder_num_layers, ffn_hidden_size=arch.encoder_ffn_hidden_size),
        decoder=StackKeys(num_layers=arch.decoder_num_layers, ffn_hidden_size=arch.decoder_ffn_hidden_size),
        make_vocab_size_divisible_by=m.make_vocab_size_divisible_by, seed=m.seed, optim=m.optim,
        data=T5DataConfig(seq_length_dec=longest_dec),
    )
    return T5TrainConfig(run=cfg.run, trainer=dataclasses.replace(_plain_trainer(cfg.trainer), max_steps=max_steps),
                         exp_manager=cfg.exp_manager, model=model, numa_mapping=cfg.numa_mapping,
                         wandb_api_key_file=cfg.wandb_api_key_file)


def _plain_trainer(trainer: FinetuneTrainerConfig) -> TrainerConfig:
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    values = {k: v for k, v in vars(trainer).items() if k in fields}
    values["max_steps"] = max(1, values["max_steps"])
    values["limit_val_batches"] = 1  # read by FinetuneTask from the fine-tuning config
    return TrainerConfig(**values)
