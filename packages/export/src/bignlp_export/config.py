"""The NeMo launcher's export keys (``conf/export/gpt3/export_gpt3.yaml``, seed 5.12.1.1), typed.

``bignlp-export triton --config gpt3/export_gpt3`` reads them (a launcher file with its keys under
``export:`` loads as it is). Flags override: ``--checkpoint`` → ``model.checkpoint_path``,
``--output`` → ``triton_deployment.triton_model_dir``, ``--max-batch-size``, ``--data-type``
(``triton_deployment.data_type``), ``--instances``, ``--model-name``, ``--tensor-parallel``
(``model.tensor_model_parallel_size``), ``--pipeline-parallel``
(``triton_deployment.pipeline_model_parallel_size``).

The two splits mean for our Python backend what they meant for FasterTransformer's: an instance
with ``model.tensor_model_parallel_size`` N splits every matrix over N devices, one process each
(Megatron's tensor parallelism: the instance is rank 0 and starts N-1 workers; N must divide the
attention heads, checked against the checkpoint before anything is written); with
``triton_deployment.pipeline_model_parallel_size`` N it spreads its layers over N devices in one
process. One instance does one or the other: both above 1 are refused, as is ``int8_mode``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bignlp_contracts import ConfigError, load_config

CONFIGS_DIR = Path(__file__).parent / "configs"
DTYPES = ("fp32", "fp16", "bf16")


@dataclass
class ExportRunConfig:
    """``export.run``: names and where results go (the launcher's; resources are the sbatch template's)."""

    name: str | None = None
    time_limit: Any = None
    model_train_name: str | None = None
    training_dir: str | None = None
    config_summary: str | None = None
    results_dir: str | None = None
    model_type: str | None = None  # gpt3, t5 or mt5: checked against the checkpoint's family when given


@dataclass
class ExportModelConfig:
    """``export.model``: the checkpoint and the weights the repository stores."""

    checkpoint_path: str | None = None  # a checkpoint, or a run directory / its checkpoints/ (the latest)
    tensor_model_parallel_size: int = 1  # devices (one process each) an instance splits every matrix over
    weight_data_type: str | None = None  # fp32|fp16|bf16: dtype stored in the repository (None: as checkpoint)
    processes: Any = None  # the launcher's conversion processes; unused
    load_checkpoints_to_cpu: Any = None  # unused: export always reads on the CPU


@dataclass
class TritonDeploymentConfig:
    """``export.triton_deployment``: the repository and how Triton runs it."""

    triton_model_dir: str | None = None
    max_batch_size: int = 8
    pipeline_model_parallel_size: int = 1  # devices an instance spreads the layers over (layer-wise placement)
    int8_mode: bool = False
    enable_custom_all_reduce: bool = False  # FasterTransformer's; unused
    data_type: str = "fp32"  # fp32|fp16|bf16: the dtype the model runs in
    model_name: str | None = None  # default: the family (gpt, t5)
    instances: int = 1  # model instances (each holds the weights)
    instance_kind: str = "auto"  # auto: a GPU when the instance sees one, else the CPU; cpu; gpu
    max_queue_delay_microseconds: int = 5000  # dynamic batching: how long a request waits for others
    num_threads: int = 0  # torch threads per CPU instance (0: torch's default)


@dataclass
class AccuracyConfig:
    enabled: bool = True
    ntasks_per_node: Any = None
    runtime_config_ini_path: Any = None
    test_data: str | None = None  # lambada JSONL ({"text": ...} a line)
    output_path: str | None = None
    batch_size: int = 8
    runtime: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchmarkConfig:
    enabled: bool = True
    input_len: int = 60
    output_len: int = 20
    batch_sizes: list[int] = field(default_factory=lambda: [1, 2, 4, 8])
    triton_wait_time: int = 300


@dataclass
class ExportConfig:
    run: ExportRunConfig = field(default_factory=ExportRunConfig)
    model: ExportModelConfig = field(default_factory=ExportModelConfig)
    triton_deployment: TritonDeploymentConfig = field(default_factory=TritonDeploymentConfig)
    accuracy: AccuracyConfig = field(default_factory=AccuracyConfig)
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)
    base_results_dir: str = "results"
    data_dir: str | None = None


def shipped_configs() -> list[str]:
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))


def check_parallel(tensor_parallel: int, pipeline_parallel: int) -> None:
    """ConfigError unless at most one of the two splits is above 1 (an instance does one or the other)."""
    if tensor_parallel > 1 and pipeline_parallel > 1:
        raise ConfigError(f"tensor_model_parallel_size={tensor_parallel} with pipeline_model_parallel_size="
                          f"{pipeline_parallel}: an instance splits its matrices (TP) or spreads its layers (PP) "
                          "over devices, not both", hint="set one of them to 1")


def load_export_config(source: str | os.PathLike | None, overrides: Sequence[str] = ()) -> ExportConfig:
    """A shipped config name (``gpt3/export_gpt3``), a YAML path, or nothing; then ``key.sub=value`` overrides."""
    cfg = load_config(ExportConfig, source, overrides, builtin_dir=CONFIGS_DIR, section="export")
    m, t = cfg.model, cfg.triton_deployment
    if m.tensor_model_parallel_size < 1:
        raise ConfigError(f"model.tensor_model_parallel_size={m.tensor_model_parallel_size}: must be at least 1 "
                          "(devices an instance splits its matrices over)")
    if t.pipeline_model_parallel_size < 1:
        raise ConfigError(f"triton_deployment.pipeline_model_parallel_size={t.pipeline_model_parallel_size}: "
                          "must be at least 1 (devices per instance)")
    check_parallel(m.tensor_model_parallel_size, t.pipeline_model_parallel_size)
    if t.int8_mode:
        raise ConfigError("triton_deployment.int8_mode=true: int8 weights are not supported; use data_type fp16/bf16")
    if t.data_type not in DTYPES or (m.weight_data_type is not None and m.weight_data_type not in DTYPES):
        raise ConfigError(f"data type {t.data_type}/{m.weight_data_type}: expected one of {', '.join(DTYPES)}")
    if cfg.run.model_type not in (None, "gpt3", "gpt", "t5", "mt5"):
        raise ConfigError(f"run.model_type={cfg.run.model_type!r}: expected gpt3, t5 or mt5")
    return cfg
