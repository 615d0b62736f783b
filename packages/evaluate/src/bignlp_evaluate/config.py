"""The NeMo launcher's evaluation keys (``conf/evaluation/gpt3/evaluate_all.yaml``), typed.

``harness --config gpt3/evaluate_all`` reads them; ``--checkpoint``, ``--tasks``, ``--output``,
``--batch-size``, ``--precision`` and ``--data-dir`` override ``model.checkpoint_folder``,
``run.tasks``, ``run.results_dir``, ``model.eval_batch_size``, ``model.precision`` and
``run.data_dir``. A file written for the launcher (its keys under ``evaluation``, interpolations
like ``${evaluation.run.train_dir}``) loads as it is; the launcher's cluster and tokenizer keys
(``run.nodes``, ``time_limit``, ``model.vocab_file``...) are accepted and unused here: resources are
the sbatch template's business, and a checkpoint carries its own tokenizer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bignlp_contracts import ConfigError, load_config

CONFIGS_DIR = Path(__file__).parent / "configs"
PRECISIONS = {"32": "float32", "fp32": "float32", "bf16": "bfloat16", "16": "float16"}


@dataclass
class EvaluationRunConfig:
    """``evaluation.run``: which tasks, on which data, and where the results go."""

    tasks: Any = "all_tasks"  # a comma list or a YAML list of lambada, boolq, race, piqa, hellaswag, winogrande,
    #                           wikitext2, wikitext103 (or all_tasks), or lm-eval task names
    results_dir: str | None = None  # the evaluation artifact directory
    data_dir: str | None = None  # the task files (<task>.jsonl), see `bignlp-evaluate download`
    name: str | None = None
    eval_name: str = "eval_all"
    model_train_name: str | None = None
    train_dir: str | None = None
    limit: int | None = None  # evaluate only the first N documents of each task (a smoke test, not a score)
    # launcher cluster keys, accepted and unused here
    time_limit: Any = None
    nodes: Any = None
    ntasks_per_node: Any = None


@dataclass
class EvaluationModelConfig:
    """``evaluation.model``: the checkpoint and how to run it."""

    model_type: str = "nemo-gpt3"  # nemo-gpt3 (or gpt): the harness runs decoder-only models
    checkpoint_folder: str | None = None  # a run directory, its checkpoints/, or one checkpoint
    checkpoint_name: str = "latest"  # latest, or a checkpoint directory name or glob (step-*)
    precision: Any = "bf16"  # 32 or bf16 (16: float16); the parameters are cast to it, log-softmax runs in fp32
    eval_batch_size: int = 4  # requests per forward
    device: str = "auto"  # auto (cuda if available, else cpu), cpu, cuda, cuda:N
    # launcher keys, accepted and unused (one process; the checkpoint carries its architecture and tokenizer)
    hparams_file: str | None = None
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    model_parallel_size: Any = None
    vocab_file: str | None = None
    merge_file: str | None = None


@dataclass
class EvaluationConfig:
    run: EvaluationRunConfig = field(default_factory=EvaluationRunConfig)
    model: EvaluationModelConfig = field(default_factory=EvaluationModelConfig)
    base_results_dir: str = "results"  # the launcher's top-level key its paths start from
    data_dir: str | None = None  # the launcher's; run.data_dir falls back to DATA_DIR/eval_harness


def shipped_configs() -> list[str]:
    """Names of the shipped configs (``gpt3/evaluate_all``)."""
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))


def load_evaluation_config(source: str | os.PathLike | None, overrides: Sequence[str] = ()) -> EvaluationConfig:
    """A shipped config name (``gpt3/evaluate_all``), a YAML path, or nothing; then ``key.sub=value`` overrides."""
    cfg = load_config(EvaluationConfig, source, overrides, builtin_dir=CONFIGS_DIR, section="evaluation")
    torch_dtype_name(cfg.model.precision)
    if cfg.model.eval_batch_size < 1:
        raise ConfigError(f"model.eval_batch_size={cfg.model.eval_batch_size}: must be at least 1")
    if cfg.model.model_type not in ("nemo-gpt3", "gpt", "gpt3"):
        raise ConfigError(f"model.model_type={cfg.model.model_type!r}: the harness evaluates GPT models (nemo-gpt3)",
                          hint="T5/mT5 evaluation (SQuAD, XQuAD, GLUE) is not in this release")
    if cfg.run.limit is not None and cfg.run.limit < 1:
        raise ConfigError(f"run.limit={cfg.run.limit}: must be at least 1 (or null: every document)")
    return cfg


def torch_dtype_name(precision: Any) -> str:
    """``32``/``bf16``/``16`` → the torch dtype's name; anything else is a ConfigError."""
    name = PRECISIONS.get(str(precision).lower())
    if name is None:
        raise ConfigError(f"model.precision={precision!r}: expected 32, bf16 or 16")
    return name
