"""The NeMo launcher's conversion keys (``conf/conversion/{gpt3,t5,mt5}/convert_*.yaml``), typed.

``to-nemo --config gpt3/convert_gpt3`` reads them; ``--checkpoint``, ``--output`` and the layout
flags override ``model.checkpoint_folder``, ``run.results_dir``/``run.nemo_file_name`` and
``model.tensor_model_parallel_size``/``pipeline_model_parallel_size``. A file written for the
launcher (its keys under ``conversion``, interpolations like ``${conversion.run.train_dir}``)
loads as it is; the launcher's cluster keys (``run.nodes``, ``time_limit``, ``ntasks_per_node``)
are accepted and unused here: resources are the sbatch template's business.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bignlp_contracts import ConfigError, load_config

CONFIGS_DIR = Path(__file__).parent / "configs"
# the launcher's make_vocab_size_divisible_by: vocabularies are padded to a multiple of it (× TP)
VOCAB_DIVISIBLE_BY = 128


@dataclass
class ConversionModelConfig:
    """``conversion.model``: what to convert and the layout of the ``.nemo`` written."""

    model_type: str | None = None  # gpt or t5 (mT5 is a t5); checked against the checkpoint's family
    checkpoint_folder: str | None = None  # a run directory, its checkpoints/ directory, or one checkpoint
    checkpoint_name: str = "latest"  # latest, or a checkpoint directory name or glob (step-00001000, step-*)
    hparams_file: str | None = None  # the launcher's; unused (our checkpoints carry their architecture)
    tensor_model_parallel_size: int = 1
    pipeline_model_parallel_size: int = 1
    pipeline_model_parallel_split_rank: int | None = None  # T5: first decoder stage (default: half the stages)
    model_parallel_size: int | None = None  # the launcher's T × P; checked when given
    vocab_file: str | None = None  # the launcher's; unused (the checkpoint's tokenizer/ is written)
    merge_file: str | None = None


@dataclass
class ConversionRunConfig:
    """``conversion.run``: where the ``.nemo`` goes (``results_dir/nemo_file_name``)."""

    name: str | None = None
    results_dir: str | None = None
    output_path: str | None = None  # the launcher's twin of results_dir; used when results_dir is unset
    nemo_file_name: str = "megatron_gpt.nemo"
    convert_name: str = "convert_nemo"
    model_train_name: str | None = None
    train_dir: str | None = None
    # launcher cluster keys, accepted and unused here
    nodes: Any = None
    time_limit: Any = None
    ntasks_per_node: Any = None


@dataclass
class ConversionConfig:
    run: ConversionRunConfig = field(default_factory=ConversionRunConfig)
    model: ConversionModelConfig = field(default_factory=ConversionModelConfig)
    base_results_dir: str = "results"  # the launcher's top-level key its paths start from
    data_dir: str | None = None


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))


def load_conversion_config(source: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ConversionConfig:
    """A shipped config name (``gpt3/convert_gpt3``), a YAML path, or nothing; then ``key.sub=value`` overrides."""
    cfg = load_config(ConversionConfig, source, overrides, builtin_dir=CONFIGS_DIR, section="conversion")
    m = cfg.model
    if m.model_type not in (None, "gpt", "t5"):
        raise ConfigError(f"model.model_type={m.model_type!r}: expected gpt or t5 (an mT5 is a t5)")
    for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
        if getattr(m, key) < 1:
            raise ConfigError(f"model.{key}={getattr(m, key)}: must be at least 1")
    mp = m.tensor_model_parallel_size * m.pipeline_model_parallel_size
    if m.model_parallel_size is not None and m.model_parallel_size != mp:
        raise ConfigError(f"model.model_parallel_size={m.model_parallel_size} is not tensor_model_parallel_size × "
                          f"pipeline_model_parallel_size = {mp}",
                          hint="drop model.model_parallel_size, or make it agree")
    if not cfg.run.nemo_file_name.endswith(".nemo"):
        raise ConfigError(f"run.nemo_file_name={cfg.run.nemo_file_name!r} must end in .nemo")
    return cfg
