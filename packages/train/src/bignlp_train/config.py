"""The training config: frozen dataclasses with the NeMo-Megatron key names users already know.

A YAML written for the seed's ``conf/training/gpt3/*.yaml`` carries over key for
key (``trainer.max_steps``, ``model.optim.sched.warmup_steps``,
``exp_manager.checkpoint_callback_params.save_top_k``, ...). Keys the seed had
that do nothing here are left out, so a user who sets one is told so by name;
the few kept only for compatibility say so in a comment and in the README.
Every check is a one-line ``ConfigError`` naming the dotted key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bignlp_contracts import ConfigError, load_config

from .affinity import NumaMappingConfig

CONFIGS_DIR = Path(__file__).parent / "configs"

OPTIMIZERS = ("adam", "adamw", "fused_adam", "distributed_fused_adam")
CHECKPOINT_GRANULARITIES = ("full", "selective")
CHECKPOINT_METHODS = ("uniform", "block")


def parse_max_time(text: str) -> float:
    """``"DD:HH:MM:SS"`` (Lightning's ``max_time`` format) → seconds."""
    m = re.fullmatch(r"(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})", text.strip())
    if not m:
        raise ValueError(f"{text!r} is not of the form DD:HH:MM:SS")
    days, hours, minutes, seconds = map(int, m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Job-level settings; read by the launcher and Slurm templates, recorded here."""

    name: str = "gpt3"
    results_dir: str | None = None  # the launcher's run directory; training writes to exp_manager's
    time_limit: str | None = None  # Slurm --time, e.g. "1-12:00:00"
    dependency: str | None = None  # Slurm --dependency, e.g. "singleton"


@dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """How long and how to train (Lightning's Trainer keys)."""

    num_nodes: int = 1  # for the Slurm template; the world size is the number of processes started
    devices: int = 1  # processes (GPUs or CPU slots) per node, for the Slurm template
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    precision: int | str = 32  # 32 (fp32) or bf16 (bf16 compute, fp32 master weights and optimizer)
    max_steps: int = 100
    max_time: str | None = None  # "DD:HH:MM:SS": stop, validate and checkpoint when reached
    log_every_n_steps: int = 10
    val_check_interval: int = 50  # in optimizer steps
    limit_val_batches: int = 4  # global batches per validation
    limit_test_batches: int = 0  # global batches of the test split scored at the end (0: skip)
    accumulate_grad_batches: int = 1  # must be 1: accumulation follows from the batch sizes
    gradient_clip_val: float = 1.0  # max global grad norm; 0 disables clipping

    def __post_init__(self) -> None:
        if self.num_nodes < 1 or self.devices < 1:
            raise ConfigError("trainer.num_nodes and trainer.devices must be at least 1")
        if self.precision_name is None:
            raise ConfigError(
                f"trainer.precision={self.precision!r} is not supported",
                hint="use trainer.precision=32 or trainer.precision=bf16",
            )
        for key in ("max_steps", "log_every_n_steps", "val_check_interval"):
            if getattr(self, key) < 1:
                raise ConfigError(f"trainer.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("limit_val_batches", "limit_test_batches"):
            if getattr(self, key) < 0:
                raise ConfigError(f"trainer.{key} must be 0 or more, got {getattr(self, key)}")
        if self.accumulate_grad_batches != 1:
            raise ConfigError(
                "trainer.accumulate_grad_batches must be 1: gradient accumulation follows from "
                "model.global_batch_size / model.micro_batch_size",
                hint="raise model.global_batch_size instead",
            )
        if self.gradient_clip_val < 0:
            raise ConfigError(f"trainer.gradient_clip_val must be 0 or more, got {self.gradient_clip_val}")
        if self.max_time is not None:
            try:
                parse_max_time(self.max_time)
            except ValueError as exc:
                raise ConfigError(f"trainer.max_time: {exc}") from None

    @property
    def precision_name(self) -> str | None:
        """``"32"`` or ``"bf16"``; None for a precision this version does not train in."""
        text = str(self.precision).lower()
        return {"32": "32", "32-true": "32", "bf16": "bf16", "bf16-mixed": "bf16"}.get(text)

    @property
    def max_time_s(self) -> float | None:
        """``max_time`` in seconds, or None for no limit."""
        return None if self.max_time is None else parse_max_time(self.max_time)


@dataclass(frozen=True, kw_only=True)
class CheckpointCallbackParams:
    """Which checkpoints to keep."""

    monitor: Literal["val_loss", "train_loss"] = "val_loss"
    save_top_k: int = 3  # best k by monitor, plus always the latest; -1 keeps all
    mode: Literal["min", "max"] = "min"
    every_n_steps: int | None = None  # also save every n steps (between validations)

    def __post_init__(self) -> None:
        if self.save_top_k < -1:
            raise ConfigError("exp_manager.checkpoint_callback_params.save_top_k must be -1 (all), 0 or more")
        if self.every_n_steps is not None and self.every_n_steps < 1:
            raise ConfigError("exp_manager.checkpoint_callback_params.every_n_steps must be at least 1 or null")


@dataclass(frozen=True, kw_only=True)
class WandbLoggerKwargs:
    """Where W&B files the run (NeMo's ``exp_manager.wandb_logger_kwargs``)."""

    project: str | None = None  # null: "bignlp"
    name: str | None = None  # the run's display name; null: exp_manager.name
    entity: str | None = None  # team or user; null: the API key's default
    group: str | None = None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ExpManagerConfig:
    """Where a run writes, and whether it resumes."""

    exp_dir: str | None = None  # parent of the run dir; default "results"
    name: str = "megatron_gpt"
    explicit_log_dir: str | None = None  # the run dir itself; wins over exp_dir/name
    resume_if_exists: bool = True
    resume_ignore_no_checkpoint: bool = True
    create_checkpoint_callback: bool = True
    checkpoint_callback_params: CheckpointCallbackParams = field(default_factory=CheckpointCallbackParams)
    # Scalars (reduced_train_loss, val_loss, lr, ...) as TensorBoard events in the run dir; the seed's
    # default is true, here false because tensorboard is an optional extra (bignlp-train[tensorboard]).
    create_tensorboard_logger: bool = False
    create_wandb_logger: bool = False  # the same scalars to Weights & Biases (bignlp-train[wandb])
    wandb_logger_kwargs: WandbLoggerKwargs = field(default_factory=WandbLoggerKwargs)

    def run_dir(self) -> Path:
        """``explicit_log_dir``, else ``{exp_dir or results}/{name}``."""
        if self.explicit_log_dir:
            return Path(self.explicit_log_dir)
        return Path(self.exp_dir or "results") / self.name


@dataclass(frozen=True, kw_only=True)
class TokenizerConfig:
    """The model's vocabulary. The tokenizer itself comes from the dataset artifact."""

    library: str = "megatron"  # compatibility: recorded only
    type: str = "GPT2BPETokenizer"  # compatibility: recorded only
    vocab_file: str | None = None  # compatibility: the dataset's tokenizer/ files are used
    merge_file: str | None = None  # compatibility: the dataset's tokenizer/ files are used
    vocab_size: int | None = None  # null: the dataset's; set: datasets must fit in it

    def __post_init__(self) -> None:
        if self.vocab_size is not None and self.vocab_size < 1:
            raise ConfigError(f"model.tokenizer.vocab_size must be positive, got {self.vocab_size}")


@dataclass(frozen=True, kw_only=True)
class SchedConfig:
    """NeMo's ``CosineAnnealing``: warmup, cosine decay to min_lr, then min_lr for constant_steps."""

    name: Literal["CosineAnnealing"] = "CosineAnnealing"
    warmup_steps: int = 0
    constant_steps: int = 0
    min_lr: float = 0.0
    max_steps: int | None = None  # null: trainer.max_steps


@dataclass(frozen=True, kw_only=True)
class OptimConfig:
    """AdamW (Megatron's Adam with decoupled weight decay; fused on GPU)."""

    name: str = "adamw"
    lr: float = 6e-4
    weight_decay: float = 0.1  # not applied to biases and LayerNorms
    betas: tuple[float, float] = (0.9, 0.95)
    sched: SchedConfig = field(default_factory=SchedConfig)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(
                f"model.optim.name={self.name!r} is not supported", hint=f"use one of {', '.join(OPTIMIZERS)}"
            )
        if self.lr <= 0:
            raise ConfigError(f"model.optim.lr must be positive, got {self.lr}")
        if not 0 <= self.sched.min_lr <= self.lr:
            raise ConfigError(f"model.optim.sched.min_lr={self.sched.min_lr} must lie in [0, model.optim.lr={self.lr}]")
        if self.sched.warmup_steps < 0 or self.sched.constant_steps < 0:
            raise ConfigError("model.optim.sched.warmup_steps and constant_steps must be 0 or more")


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Which Megatron datasets to read and how to cut samples from them."""

    data_prefix: Any = None  # DIR/NAME_text_document, a dataset dir, or [w1, path1, w2, path2, ...]
    splits_string: str = "99990,8,2"  # train,valid,test weights over each dataset's documents
    seq_length: int | None = None  # null: model.encoder_seq_length
    num_workers: int = 0  # DataLoader worker processes
    index_mapping_dir: str | None = None  # where sample indices are cached; null: RUN_DIR/index_cache
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    data_impl: Literal["mmap"] = "mmap"  # compatibility: the only format there is
    skip_warmup: bool = True  # compatibility: no effect
    dataloader_type: Literal["single"] = "single"  # Megatron's sequential sampler

    def __post_init__(self) -> None:
        if self.data_prefix is not None:
            self.blend()  # validates the form
        if self.num_workers < 0:
            raise ConfigError(f"model.data.num_workers must be 0 or more, got {self.num_workers}")
        weights = [float(w) for w in re.findall(r"[.0-9]+", self.splits_string)]
        if not weights or len(weights) > 3 or sum(weights) <= 0:
            raise ConfigError(f"model.data.splits_string={self.splits_string!r} must be up to 3 weights like '98,2,0'")


    def blend(self) -> list[tuple[float, str]]:
        """``data_prefix`` as (weight, path) pairs; a single path gets weight 1.0."""
        prefix, key = self.data_prefix, "model.data.data_prefix"
        if prefix is None:
            raise ConfigError(
                f"{key} is not set",
                hint=f"add {key}=[1.0,DIR/NAME_text_document] (a dataset made by bignlp-dataprep preprocess)",
            )
        if isinstance(prefix, str) and prefix:
            return [(1.0, prefix)]
        if isinstance(prefix, (list, tuple)) and len(prefix) == 1 and isinstance(prefix[0], str):
            return [(1.0, prefix[0])]
        form = f"{key} must be a path or a list [weight1, path1, weight2, path2, ...]"
        if not isinstance(prefix, (list, tuple)) or not prefix or len(prefix) % 2:
            raise ConfigError(f"{form}, got {prefix!r}")
        pairs = []
        for weight, path in zip(prefix[0::2], prefix[1::2]):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not isinstance(path, str):
                raise ConfigError(f"{form}; {weight!r}, {path!r} is not a (weight, path) pair")
            if weight <= 0:
                raise ConfigError(f"{key}: weight {weight} of {path} must be positive")
            pairs.append((float(weight), path))
        return pairs


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """GPT-3 architecture, batch sizes, tokenizer, optimizer and data."""

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
    make_vocab_size_divisible_by: int = 128
    seed: int = 1234
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)

    def __post_init__(self) -> None:
        for key in ("micro_batch_size", "tensor_model_parallel_size", "pipeline_model_parallel_size",
                    "global_batch_size", "encoder_seq_length",
                    "max_position_embeddings", "num_layers", "hidden_size", "num_attention_heads",
                    "make_vocab_size_divisible_by"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be positive, got {getattr(self, key)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"model.global_batch_size={self.global_batch_size} is not a multiple of "
                f"model.micro_batch_size={self.micro_batch_size}"
            )
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
        if self.virtual_pipeline_model_parallel_size is not None:
            if self.virtual_pipeline_model_parallel_size < 1:
                raise ConfigError("model.virtual_pipeline_model_parallel_size must be null or positive, got "
                                  f"{self.virtual_pipeline_model_parallel_size}")
            if self.virtual_pipeline_model_parallel_size > 1 and self.pipeline_model_parallel_size == 1:
                raise ConfigError(
                    f"model.virtual_pipeline_model_parallel_size={self.virtual_pipeline_model_parallel_size} "
                    "needs model.pipeline_model_parallel_size > 1",
                    hint="set model.virtual_pipeline_model_parallel_size=null, or raise the pipeline size")
        self._check_recompute()

    @property
    def virtual_pipeline_size(self) -> int:
        """Model chunks per pipeline rank (``virtual_pipeline_model_parallel_size``, null: 1)."""
        return self.virtual_pipeline_model_parallel_size or 1

    def _check_recompute(self) -> None:
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
        layers_per_stage = self.num_layers // (self.pipeline_model_parallel_size * self.virtual_pipeline_size)
        minimum = 1 if method == "uniform" else 0
        if n is None or n < minimum:
            raise ConfigError(f"model.activations_checkpoint_num_layers={n} must be at least {minimum} "
                              f"with model.activations_checkpoint_method={method}")
        limit, what = (self.num_layers, "model.num_layers") if method == "uniform" else (
            layers_per_stage, "the layers per pipeline stage")
        if n > limit:
            raise ConfigError(f"model.activations_checkpoint_num_layers={n} exceeds {what} ({limit})",
                              hint=f"use at most {limit}")

    @property
    def seq_length(self) -> int:
        """Tokens per sample: ``data.seq_length``, else ``encoder_seq_length``."""
        return self.data.seq_length or self.encoder_seq_length

    @property
    def num_micro_batches(self) -> int:
        """Micro-batches per optimizer step over all data-parallel ranks together."""
        return self.global_batch_size // self.micro_batch_size

    def data_parallel_size(self, world_size: int) -> int:
        """DP for ``world_size`` processes, after ``check_parallel_layout``."""
        return check_parallel_layout(self, world_size)


def check_parallel_layout(model: ModelConfig, world_size: int) -> int:
    """Check the parallel layout against ``world_size`` processes; return the data-parallel size.

    A pure function of the config and the world size (seed section 5.7): world size = TP × PP × DP,
    heads % TP, seq_length % TP with sequence parallelism, layers % (PP × virtual), GBS % (MBS × DP),
    and with PP enough micro-batches to fill the pipeline (at least PP; a multiple of PP when
    interleaved). Training calls it before any process group exists, so a bad layout costs one
    line, not a hang; the config tests call it for every shipped config.
    """
    tp, pp = model.tensor_model_parallel_size, model.pipeline_model_parallel_size
    if world_size % (tp * pp):
        raise ConfigError(
            f"world size {world_size} is not a multiple of model.tensor_model_parallel_size={tp} × "
            f"model.pipeline_model_parallel_size={pp} (world size = TP × PP × DP)",
            hint=f"start a multiple of {tp * pp} processes, or change the parallel sizes",
        )
    if model.num_attention_heads % tp:
        raise ConfigError(
            f"model.num_attention_heads={model.num_attention_heads} is not divisible by "
            f"model.tensor_model_parallel_size={tp}", hint="each tensor-parallel rank computes whole attention heads")
    if model.sequence_parallel and tp > 1 and model.seq_length % tp:
        raise ConfigError(
            f"model.seq_length={model.seq_length} is not divisible by model.tensor_model_parallel_size={tp}, "
            "as model.sequence_parallel=true needs", hint="each tensor-parallel rank holds an equal slice of the "
            "sequence: pick a sequence length that divides, or set model.sequence_parallel=false")
    virtual = model.virtual_pipeline_size
    if model.num_layers % pp:
        raise ConfigError(
            f"model.num_layers={model.num_layers} is not divisible by model.pipeline_model_parallel_size={pp}",
            hint="each pipeline stage holds the same number of layers")
    if model.num_layers % (pp * virtual):
        raise ConfigError(
            f"model.num_layers={model.num_layers} is not divisible by model.pipeline_model_parallel_size={pp} × "
            f"model.virtual_pipeline_model_parallel_size={virtual}",
            hint="each model chunk holds the same number of layers")
    dp = world_size // (tp * pp)
    if model.global_batch_size % (model.micro_batch_size * dp):
        raise ConfigError(
            f"model.global_batch_size={model.global_batch_size} is not a multiple of "
            f"model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp} "
            f"(GBS must be a multiple of MBS × num_gpus / (TP × PP) = {model.micro_batch_size * dp})",
            hint="keep GBS and pick a process count or micro-batch size that divides it",
        )
    micro = model.global_batch_size // (model.micro_batch_size * dp)  # per pipeline, per step
    if pp > 1 and micro < pp:
        raise ConfigError(
            f"{micro} micro-batches per step (model.global_batch_size={model.global_batch_size} / "
            f"(model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp})) cannot fill "
            f"{pp} pipeline stages (model.pipeline_model_parallel_size={pp})",
            hint=f"raise model.global_batch_size to at least {pp * model.micro_batch_size * dp}")
    if virtual > 1 and micro % pp:
        raise ConfigError(
            f"{micro} micro-batches per step (model.global_batch_size={model.global_batch_size} / "
            f"(model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp})) is not a multiple of "
            f"model.pipeline_model_parallel_size={pp}, as the interleaved schedule "
            f"(model.virtual_pipeline_model_parallel_size={virtual}) needs",
            hint="pick a global batch size that gives a multiple of PP micro-batches")
    return dp


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything ``bignlp-train pretrain`` reads."""

    run: RunConfig = field(default_factory=RunConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    exp_manager: ExpManagerConfig = field(default_factory=ExpManagerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    # The seed's conf/config.yaml keys, kept at the top level as there: CPU/NUMA pinning of each
    # worker, and the file whose first line is the W&B API key (exp_manager.create_wandb_logger).
    numa_mapping: NumaMappingConfig = field(default_factory=NumaMappingConfig)
    wandb_api_key_file: str | None = None

    def __post_init__(self) -> None:
        sched = self.model.optim.sched
        if sched.constant_steps > 0 and sched.warmup_steps + sched.constant_steps >= self.sched_max_steps:
            raise ConfigError(
                f"model.optim.sched.warmup_steps + constant_steps = {sched.warmup_steps + sched.constant_steps} "
                f"leaves no decay before step {self.sched_max_steps}",
                hint="lower them or raise model.optim.sched.max_steps / trainer.max_steps",
            )

    @property
    def sched_max_steps(self) -> int:
        """The step the cosine reaches ``min_lr``: ``sched.max_steps``, else ``trainer.max_steps``."""
        return self.model.optim.sched.max_steps or self.trainer.max_steps


def load_train_config(
    name_or_path: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Load a shipped config (``gpt3/tiny-cpu``) or a YAML path, then apply ``key.sub=value`` overrides."""
    return load_config(TrainConfig, name_or_path, overrides, builtin_dir=CONFIGS_DIR)


def shipped_configs() -> list[str]:
    """Names of the configs that ship with the package."""
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))
