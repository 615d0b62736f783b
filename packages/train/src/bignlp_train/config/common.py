"""Keys every training task shares: the run, the trainer, the experiment manager, optimizer and tokenizer.

Lightning's and NeMo's key names (``trainer.max_steps``, ``exp_manager.checkpoint_callback_params``,
``model.optim.sched``), as the NeMo launcher's training configs have them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bignlp_contracts import ConfigError
from bignlp_contracts.config import apply_overrides, load_yaml, resolve_config_path, resolve_interpolations

OPTIMIZERS = ("adam", "adamw", "fused_adam", "distributed_fused_adam")


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
    memory_step: int = 2  # the optimizer step whose per-rank memory metrics.jsonl records (memory.py); 0: none

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
        if self.memory_step < 0:
            raise ConfigError(f"trainer.memory_step must be 0 (off) or a step, got {self.memory_step}")
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
class EpochTrainerConfig(TrainerConfig):
    """The trainer keys of NeMo's task configs; ``max_epochs`` as Lightning: stop after that many passes over
    train_ds or ``max_steps``, whichever comes first (``max_steps: -1``: epochs alone)."""

    max_steps: int = -1
    max_epochs: int | None = None

    def __post_init__(self) -> None:
        if self.max_steps == -1 and self.max_epochs is None:
            raise ConfigError("trainer.max_steps=-1 needs trainer.max_epochs", hint="set one of them")
        saved = self.max_steps
        if saved == -1:
            object.__setattr__(self, "max_steps", 1)  # the shared checks, with a placeholder
        try:
            super().__post_init__()
        finally:
            object.__setattr__(self, "max_steps", saved)
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ConfigError(f"trainer.max_epochs must be at least 1 or null, got {self.max_epochs}")

    def steps_for(self, num_examples: int, global_batch_size: int) -> int:
        """The run's optimizer steps for ``num_examples`` training examples."""
        steps = [] if self.max_steps == -1 else [self.max_steps]
        if self.max_epochs is not None:
            steps.append(max(1, math.ceil(self.max_epochs * num_examples / global_batch_size)))
        return min(steps)


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
class NemoCheckpointParams(CheckpointCallbackParams):
    """``checkpoint_callback_params`` of NeMo's fine-tuning and prompt-learning configs: its ``.nemo`` saving
    and file-naming keys are accepted and unused (checkpoints here are model-checkpoint artifacts)."""

    always_save_nemo: bool = False
    save_nemo_on_train_end: bool = False
    filename: str | None = None
    model_parallel_size: int | None = None
    save_best_model: bool = True


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
    # Resume only from a checkpoint whose files match the sha256 its manifest records (the ranks hash
    # their shares in parallel); false checks presence and sizes only, for storage you trust.
    verify_checkpoints: bool = True
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


SCHEDULERS = ("CosineAnnealing", "WarmupAnnealing")


@dataclass(frozen=True, kw_only=True)
class SchedConfig:
    """NeMo's ``CosineAnnealing`` (warmup, cosine decay to min_lr, then min_lr for constant_steps; the GPT-3
    recipes) or ``WarmupAnnealing`` (warmup, then linear decay to min_lr; the T5/mT5 recipes)."""

    name: Literal["CosineAnnealing", "WarmupAnnealing"] = "CosineAnnealing"
    warmup_steps: int | None = None  # null: warmup_ratio × max steps, else 0
    warmup_ratio: float | None = None  # share of the max steps spent warming up (when warmup_steps is null)
    constant_steps: int = 0  # CosineAnnealing only
    min_lr: float = 0.0
    max_steps: int | None = None  # null: trainer.max_steps
    last_epoch: int = -1  # compatibility: NeMo's scheduler argument, no effect

    def __post_init__(self) -> None:
        if self.warmup_ratio is not None and not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"model.optim.sched.warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ConfigError("model.optim.sched.warmup_steps and warmup_ratio are both set",
                              hint="set one of them (the other null)")
        if self.name == "WarmupAnnealing" and self.constant_steps:
            raise ConfigError("model.optim.sched.constant_steps applies to CosineAnnealing only",
                              hint="set it to 0 with WarmupAnnealing")

    def warmup_steps_for(self, max_steps: int) -> int:
        """Warmup steps: ``warmup_steps``, else ``int(warmup_ratio × max_steps)`` as NeMo computes it, else 0."""
        if self.warmup_steps is not None:
            return self.warmup_steps
        return int(self.warmup_ratio * max_steps) if self.warmup_ratio is not None else 0


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
        if (self.sched.warmup_steps or 0) < 0 or self.sched.constant_steps < 0:
            raise ConfigError("model.optim.sched.warmup_steps and constant_steps must be 0 or more")


def config_data(name_or_path: str | Path | Mapping[str, Any] | None, overrides: Sequence[str],
                configs_dir: Path) -> dict[str, Any]:
    """A config's keys: a shipped name (resolved in ``configs_dir``), a YAML path or a mapping, with
    ``key.sub=value`` overrides applied and ``${...}`` interpolations resolved (every command's loader)."""
    if name_or_path is None:
        data: dict[str, Any] = {}
    elif isinstance(name_or_path, Mapping):
        data = dict(name_or_path)
    else:
        data = load_yaml(resolve_config_path(str(name_or_path), configs_dir))
    return resolve_interpolations(apply_overrides(data, overrides))


def config_names(configs_dir: Path) -> list[str]:
    """The shipped configs under ``configs_dir``, as names (``t5/squad``)."""
    return sorted(str(p.relative_to(configs_dir).with_suffix("")) for p in configs_dir.rglob("*.yaml"))
