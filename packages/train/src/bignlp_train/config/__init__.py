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

from bignlp_contracts import ConfigError, from_dict

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
    config_data,
    parse_max_time,
)
from .data import DataConfig, T5DataConfig
from .gpt import GPTArchitectureKeys, GPTModelConfig
from .layout import check_parallel_layout
from .model import CHECKPOINT_GRANULARITIES, CHECKPOINT_METHODS, ParallelKeys, TrainingKeys
from .t5 import StackKeys, T5ArchitectureKeys, T5ModelConfig, T5TokenizerConfig

CONFIGS_DIR = Path(__file__).parent.parent / "configs"
TASK_CONFIG_DIRS = ("fine_tuning", "prompt_learning")  # bignlp-train finetune / prompt-learn configs
ModelConfig = GPTModelConfig | T5ModelConfig

__all__ = [
    "CHECKPOINT_GRANULARITIES", "CHECKPOINT_METHODS", "CONFIGS_DIR", "OPTIMIZERS", "CheckpointCallbackParams",
    "DataConfig", "ExpManagerConfig", "GPTArchitectureKeys", "GPTModelConfig", "ModelConfig", "OptimConfig",
    "ParallelKeys", "RunConfig", "SchedConfig", "StackKeys", "T5ArchitectureKeys", "T5DataConfig", "T5ModelConfig",
    "T5TokenizerConfig", "T5TrainConfig", "TokenizerConfig", "TrainConfig", "TrainerConfig", "TrainingKeys",
    "WandbLoggerKwargs", "check_parallel_layout", "family_of_config", "load_train_config", "parse_max_time",
    "shipped_configs",
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
        warmup = sched.warmup_steps_for(self.sched_max_steps)
        if sched.constant_steps > 0 and warmup + sched.constant_steps >= self.sched_max_steps:
            raise ConfigError(
                f"model.optim.sched.warmup_steps + constant_steps = {warmup + sched.constant_steps} "
                f"leaves no decay before step {self.sched_max_steps}",
                hint="lower them or raise model.optim.sched.max_steps / trainer.max_steps",
            )

    @property
    def sched_max_steps(self) -> int:
        """The step the schedule reaches ``min_lr``: ``sched.max_steps``, else ``trainer.max_steps``."""
        return self.model.optim.sched.max_steps or self.trainer.max_steps


@dataclass(frozen=True, kw_only=True)
class T5TrainConfig(TrainConfig):
    """Everything ``bignlp-train pretrain`` reads for a T5/mT5 model."""

    run: RunConfig = field(default_factory=lambda: RunConfig(name="t5"))
    exp_manager: ExpManagerConfig = field(default_factory=lambda: ExpManagerConfig(name="megatron_t5"))
    model: T5ModelConfig = field(default_factory=T5ModelConfig)


# Keys only an encoder-decoder config has: how a YAML file says which family it trains (the NeMo
# launcher told them apart by the config's directory, gpt3/ or t5/, which a user's own file lacks).
_T5_KEYS = (("data", "seq_length_dec"), ("encoder",), ("decoder",), ("pipeline_model_parallel_split_rank",),
            ("position_embedding_type",))


def family_of_config(data: Mapping[str, Any]) -> str:
    """``"t5"`` when the ``model`` section has a key only T5 configs have, else ``"gpt"``."""
    model = data.get("model") or {}
    for path in _T5_KEYS:
        node: Any = model
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if node is not None:
            return "t5"
    return "gpt"


def load_train_config(
    name_or_path: str | Path | Mapping[str, Any] | None = None, overrides: Sequence[str] = ()
) -> TrainConfig:
    """Load a shipped config (``gpt3/tiny-cpu``, ``t5/220m``) or a YAML path, then apply ``key.sub=value``
    overrides; a T5 config (see ``family_of_config``) loads as ``T5TrainConfig``."""
    data = config_data(name_or_path, overrides, CONFIGS_DIR)
    cls = T5TrainConfig if family_of_config(data) == "t5" else TrainConfig
    return from_dict(cls, data)


def shipped_configs() -> list[str]:
    """Names of the pretraining configs that ship with the package (the task directories have their own loaders)."""
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml")
                  if p.relative_to(CONFIGS_DIR).parts[0] not in TASK_CONFIG_DIRS)
