"""The training config: frozen dataclasses with the NeMo-Megatron key names users already know.

A YAML written for the seed's ``conf/training/gpt3/*.yaml`` carries over key for
key (``trainer.max_steps``, ``model.optim.sched.warmup_steps``,
``exp_manager.checkpoint_callback_params.save_top_k``, ...). Keys the seed had
that do nothing here are left out, so a user who sets one is told so by name;
the few kept only for compatibility say so in a comment and in the README.
Every check is a one-line ``ConfigError`` naming the dotted key.

Split by what the keys belong to: ``common`` (run, trainer, exp_manager, optimizer, tokenizer),
``model`` (the ``model.*`` keys every family shares: batch sizes, parallel layout, recomputation),
one module per family (``gpt``: the architecture), one per task's data (``data``: pretraining's
Megatron datasets), and ``layout`` (the parallel layout check).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bignlp_contracts import ConfigError, load_config

from ..affinity import NumaMappingConfig
from .common import (
    OPTIMIZERS,
    CheckpointCallbackParams,
    ExpManagerConfig,
    OptimConfig,
    RunConfig,
    SchedConfig,
    TokenizerConfig,
    TrainerConfig,
    WandbLoggerKwargs,
    parse_max_time,
)
from .data import DataConfig
from .gpt import GPTArchitectureKeys, GPTModelConfig
from .layout import check_parallel_layout
from .model import CHECKPOINT_GRANULARITIES, CHECKPOINT_METHODS, ParallelKeys, TrainingKeys

CONFIGS_DIR = Path(__file__).parent.parent / "configs"
ModelConfig = GPTModelConfig  # the model keys of the one family pretraining trains today

__all__ = [
    "CHECKPOINT_GRANULARITIES", "CHECKPOINT_METHODS", "CONFIGS_DIR", "OPTIMIZERS", "CheckpointCallbackParams",
    "DataConfig", "ExpManagerConfig", "GPTArchitectureKeys", "GPTModelConfig", "ModelConfig", "OptimConfig",
    "ParallelKeys", "RunConfig", "SchedConfig", "TokenizerConfig", "TrainConfig", "TrainerConfig", "TrainingKeys",
    "WandbLoggerKwargs", "check_parallel_layout", "load_train_config", "parse_max_time", "shipped_configs",
]


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Everything ``bignlp-train pretrain`` reads."""

    run: RunConfig = field(default_factory=RunConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    exp_manager: ExpManagerConfig = field(default_factory=ExpManagerConfig)
    model: GPTModelConfig = field(default_factory=GPTModelConfig)
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
