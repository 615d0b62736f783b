"""``bignlp-train prompt-learn``'s config: NeMo 1.11's prompt-learning keys (the launcher's ``prompt_learning/*``).

The base model (``model.language_model_path``) stays frozen; what is learned are the virtual tokens of
``model.new_tasks``, by p-tuning or prompt tuning (``model.virtual_prompt_style``). ``model.restore_path``
names an earlier prompt checkpoint whose tasks (``model.existing_tasks``) are kept unchanged.
``effective_train_config`` gives the shared loop the ``TrainConfig`` it reads (batch sizes, schedule).
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bignlp_contracts import ConfigError, from_dict
from bignlp_models.prompt_template import VIRTUAL_PROMPT, template_fields

from .common import (
    CheckpointCallbackParams,
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

PROMPT_LEARNING_DIR = Path(__file__).parent.parent / "configs" / "prompt_learning"
STYLES = ("p-tuning", "prompt-tuning")


@dataclass(frozen=True, kw_only=True)
class TaskTemplate:
    """One task: how an example becomes tokens (NeMo's ``task_templates`` entry)."""

    taskname: str
    prompt_template: str  # "<|VIRTUAL_PROMPT_0|>Context: {context} Question: {question} Answer: {answer}"
    total_virtual_tokens: int
    virtual_token_splits: tuple[int, ...]  # one per <|VIRTUAL_PROMPT_n|>, in order; sums to the total
    answer_only_loss: bool = True  # loss on the answer (and <eos>) only; false: on every text token
    answer_field: str = "answer"  # must end the template: generation starts where it begins
    truncate_field: str | None = None  # the one field cut when an example is too long; else it is skipped

    def __post_init__(self) -> None:
        key = f"model.task_templates[{self.taskname}]"
        if self.total_virtual_tokens < 1:
            raise ConfigError(f"{key}.total_virtual_tokens must be at least 1, got {self.total_virtual_tokens}")
        if sum(self.virtual_token_splits) != self.total_virtual_tokens:
            raise ConfigError(f"{key}.virtual_token_splits {list(self.virtual_token_splits)} sum to "
                              f"{sum(self.virtual_token_splits)}, not total_virtual_tokens={self.total_virtual_tokens}")
        if any(n < 1 for n in self.virtual_token_splits):
            raise ConfigError(f"{key}.virtual_token_splits must all be positive, got {list(self.virtual_token_splits)}")
        found = [int(n) for n in VIRTUAL_PROMPT.findall(self.prompt_template)]
        if found != list(range(len(self.virtual_token_splits))):
            raise ConfigError(f"{key}.prompt_template has placeholders {[f'<|VIRTUAL_PROMPT_{n}|>' for n in found]}"
                              f", virtual_token_splits has {len(self.virtual_token_splits)} entries",
                              hint="one <|VIRTUAL_PROMPT_n|> per split, numbered 0, 1, ... in order")
        answer = "{" + self.answer_field + "}"
        if not self.prompt_template.rstrip().endswith(answer):
            raise ConfigError(f"{key}.answer_field {self.answer_field!r}: the prompt_template must end with {answer}",
                              hint="put the answer field last: generation continues the text before it")
        if self.prompt_template.count(answer) != 1:
            raise ConfigError(f"{key}.prompt_template uses {answer} more than once")
        if self.truncate_field is not None and self.truncate_field not in self.fields:
            raise ConfigError(f"{key}.truncate_field {self.truncate_field!r} is not a field of the prompt_template",
                              hint=f"fields: {', '.join(self.fields)}")
        if self.truncate_field == self.answer_field:
            raise ConfigError(f"{key}.truncate_field must not be the answer field")

    @property
    def fields(self) -> list[str]:
        """The ``{field}``s of the template, in order (the answer field last)."""
        return template_fields(self.prompt_template)


@dataclass(frozen=True, kw_only=True)
class PTuningConfig:
    encoder_type: Literal["lstm", "mlp"] = "lstm"
    dropout: float = 0.0
    num_layers: int = 2

    def __post_init__(self) -> None:
        if self.num_layers < 1:
            raise ConfigError(f"model.p_tuning.num_layers must be at least 1, got {self.num_layers}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.p_tuning.dropout must lie in [0, 1), got {self.dropout}")


@dataclass(frozen=True, kw_only=True)
class PromptTuningConfig:
    new_prompt_init_methods: tuple[Literal["random", "text"], ...] = ("random",)  # one per new task (or one for all)
    new_prompt_init_text: tuple[str | None, ...] = ()  # per new task, for the "text" method


@dataclass(frozen=True, kw_only=True)
class PromptDataConfig:
    train_ds: tuple[str, ...] = ()  # JSONL files: taskname + the template's fields per line
    validation_ds: tuple[str, ...] = ()
    test_ds: tuple[str, ...] = ()
    add_eos: bool = True  # compatibility: <eos> is always appended (generation stops on it)
    shuffle: bool = True
    num_workers: int = 0  # compatibility: examples are tokenized once, in the training process
    pin_memory: bool = True  # compatibility
    max_seq_length: int | None = None  # tokens per example; null: the base's max_position_embeddings (GPT)
    max_new_tokens: int = 32  # answer tokens generated when validating/evaluating (bignlp-evaluate prompt)


@dataclass(frozen=True, kw_only=True)
class PromptModelConfig:
    """The launcher's prompt-learning ``model:`` keys."""

    seed: int = 1234
    nemo_path: str | None = None  # compatibility: the output is RUN_DIR/prompt_checkpoint
    virtual_prompt_style: str = "p-tuning"
    tensor_model_parallel_size: int = 1  # a GPT base split as pretraining splits it; T5/mT5: 1
    pipeline_model_parallel_size: int = 1  # GPT only; the prompts live on the first stage
    global_batch_size: int = 8
    micro_batch_size: int = 4
    restore_path: str | None = None  # an existing prompt-checkpoint: its tasks are kept as they are
    language_model_path: str | None = None  # the frozen base: a model-checkpoint or a run directory
    save_nemo_on_validation_end: bool = True  # compatibility
    existing_tasks: tuple[str, ...] = ()
    new_tasks: tuple[str, ...] = ()
    task_templates: tuple[TaskTemplate, ...] = ()
    prompt_tuning: PromptTuningConfig = field(default_factory=PromptTuningConfig)
    p_tuning: PTuningConfig = field(default_factory=PTuningConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        name="fused_adam", lr=1e-4, weight_decay=0.01, betas=(0.9, 0.98),
        sched=SchedConfig(name="CosineAnnealing", warmup_steps=50, constant_steps=0, min_lr=0.0)))

    def __post_init__(self) -> None:
        if self.virtual_prompt_style not in STYLES:
            close = difflib.get_close_matches(self.virtual_prompt_style.replace("_", "-"), STYLES, n=1)
            raise ConfigError(f"model.virtual_prompt_style={self.virtual_prompt_style!r} is not supported",
                              hint=f"use {close[0]}" if close else f"use one of {', '.join(STYLES)}")
        for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"model.{key} must be at least 1, got {getattr(self, key)}")
        if self.micro_batch_size < 1 or self.global_batch_size % self.micro_batch_size:
            raise ConfigError(f"model.global_batch_size={self.global_batch_size} must be a positive multiple of "
                              f"model.micro_batch_size={self.micro_batch_size}")
        names = [t.taskname for t in self.task_templates]
        if len(set(names)) != len(names):
            raise ConfigError("model.task_templates: a taskname appears twice")
        if not self.new_tasks:
            raise ConfigError("model.new_tasks is empty: name the task(s) to learn",
                              hint="e.g. model.new_tasks=[squad]")
        for key in ("new_tasks", "existing_tasks"):
            for name in getattr(self, key):
                if key == "new_tasks" and name not in names:
                    raise ConfigError(f"model.{key}: {name!r} has no entry in model.task_templates",
                                      hint=f"templates: {', '.join(names) or 'none'}")
        both = set(self.new_tasks) & set(self.existing_tasks)
        if both:
            raise ConfigError(f"model.new_tasks and model.existing_tasks both name {sorted(both)}",
                              hint="an existing task's prompts stay frozen; learn it again under a new name")
        if self.existing_tasks and not self.restore_path:
            raise ConfigError("model.existing_tasks needs model.restore_path (the prompt checkpoint that holds them)")
        methods = self.prompt_tuning.new_prompt_init_methods
        if self.virtual_prompt_style == "prompt-tuning" and len(methods) not in (1, len(self.new_tasks)):
            raise ConfigError(f"model.prompt_tuning.new_prompt_init_methods has {len(methods)} entries for "
                              f"{len(self.new_tasks)} new task(s)", hint="give one per new task, or one for all")

    def template(self, name: str) -> TaskTemplate:
        return next(t for t in self.task_templates if t.taskname == name)

    def init_method(self, index: int) -> tuple[str, str | None]:
        """(method, text) of new task ``index`` for prompt tuning."""
        methods, texts = self.prompt_tuning.new_prompt_init_methods, self.prompt_tuning.new_prompt_init_text
        method = methods[index] if len(methods) > 1 else methods[0]
        text = texts[index] if index < len(texts) else (texts[0] if len(texts) == 1 else None)
        if method == "text" and not text:
            raise ConfigError(f"model.prompt_tuning: task {self.new_tasks[index]!r} has init method 'text' but no "
                              f"model.prompt_tuning.new_prompt_init_text")
        return method, text


@dataclass(frozen=True, kw_only=True)
class PromptTrainerConfig(EpochTrainerConfig):
    """The trainer keys (``max_epochs`` with ``max_steps``, as Lightning)."""

    max_epochs: int | None = 3


@dataclass(frozen=True, kw_only=True)
class PromptCheckpointParams(NemoCheckpointParams):
    save_top_k: int = 1  # resume states kept in RUN_DIR/checkpoints (the newest always)


@dataclass(frozen=True, kw_only=True)
class PromptExpManagerConfig(ExpManagerConfig):
    name: str = "megatron_virtual_prompt"
    checkpoint_callback_params: PromptCheckpointParams = field(  # type: ignore[assignment]
        default_factory=PromptCheckpointParams)


@dataclass(frozen=True, kw_only=True)
class PromptRunConfig(RunConfig):
    name: str = "squad_prompt"
    task_name: str | None = None
    model_train_name: str | None = None
    convert_name: str | None = None  # compatibility


@dataclass(frozen=True, kw_only=True)
class PromptLearnConfig:
    """Everything ``bignlp-train prompt-learn`` reads."""

    name: str | None = None  # compatibility: NeMo's top-level run name
    run: PromptRunConfig = field(default_factory=PromptRunConfig)
    trainer: PromptTrainerConfig = field(default_factory=PromptTrainerConfig)
    exp_manager: PromptExpManagerConfig = field(default_factory=PromptExpManagerConfig)
    model: PromptModelConfig = field(default_factory=PromptModelConfig)


def load_prompt_config(name_or_path: str | Path | Mapping[str, Any] | None = None,
                       overrides: Sequence[str] = ()) -> PromptLearnConfig:
    """A shipped config (``gpt3/squad``, ``t5/squad``, ``mt5/squad``: configs/prompt_learning) or a YAML path,
    with ``key.sub=value`` overrides."""
    return from_dict(PromptLearnConfig, config_data(name_or_path, overrides, PROMPT_LEARNING_DIR))


def shipped_prompt_configs() -> list[str]:
    return config_names(PROMPT_LEARNING_DIR)


def effective_train_config(cfg: PromptLearnConfig, max_steps: int) -> Any:
    """The ``TrainConfig`` the shared loop reads: batch sizes, schedule, trainer and checkpointing keys."""
    from . import TrainConfig
    from .gpt import GPTModelConfig

    m = cfg.model
    model = GPTModelConfig(micro_batch_size=m.micro_batch_size, global_batch_size=m.global_batch_size,
                           seed=m.seed, optim=m.optim)
    fields = {f.name for f in dataclasses.fields(TrainerConfig)}
    trainer = TrainerConfig(**{**{k: v for k, v in vars(cfg.trainer).items() if k in fields}, "max_steps": max_steps})
    ccp = cfg.exp_manager.checkpoint_callback_params
    plain_ccp = CheckpointCallbackParams(**{f.name: getattr(ccp, f.name)
                                            for f in dataclasses.fields(CheckpointCallbackParams)})
    exp = ExpManagerConfig(**{**{k: v for k, v in vars(cfg.exp_manager).items()
                                 if k in {f.name for f in dataclasses.fields(ExpManagerConfig)}},
                              "checkpoint_callback_params": plain_ccp})
    return TrainConfig(run=cfg.run, trainer=trainer, exp_manager=exp, model=model)
