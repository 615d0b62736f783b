"""The HP tool's config: the launcher's ``conf/config.yaml`` + ``conf/search_config/<model>/<size>.yaml`` keys.

One YAML per search (shipped: ``gpt3/5b``, ``t5/3b``, ``mt5/unknown_size``, ... and ``*/tiny-cpu``
for tests) with ``key.sub=value`` overrides, loaded strictly by ``bignlp_contracts.load_config``:
an unknown key is refused with the closest valid one. Keys the launcher had keep its names;
ours (marked below) say what the launcher left to its cluster config or hard-coded.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from bignlp_contracts import ConfigError, load_config, load_yaml
from bignlp_contracts.config import resolve_config_path

SEARCH_CONFIGS = Path(__file__).parent / "search_configs"
MODEL_TYPES = ("gpt3", "t5", "mt5")
Auto = Literal["auto"]


@dataclass(frozen=True, kw_only=True)
class HardwareOverrides:
    """Ours: override one figure of the GPU kind's table (null: the table's)."""

    peak_tflops: float | None = None  # dense 16-bit (fp32 for the cpu kind) peak per device
    intra_node_gbps: float | None = None  # per-device bandwidth to the other devices of its node, GB/s
    inter_node_gbps: float | None = None  # per-device network bandwidth across nodes, GB/s
    reserved_gb: float | None = None  # memory the runtime takes before the model (context, buffers)
    memory_gbps: float | None = None  # device memory bandwidth, GB/s (softmax and embedding-gradient traffic)


@dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """``train_settings``: the launcher's keys, then ours."""

    model_size_in_b: float | None = None  # null: recommend one from the nodes, days, TFLOP/s and tokens
    num_nodes: int = 20  # nodes of the full training run (the search uses the fewest that fit)
    gpus_per_node: int = 8
    gpu_memory_gb: float = 80  # memory per GPU the memory model admits candidates against
    max_training_days: float | None = 5  # null with a size: estimated
    limit_search_runs: int = 100  # candidates launched (the best predicted first)
    output_top_n: int = 10
    max_steps_per_run: int = 50
    max_minutes_per_run: float = 40
    tflops_per_gpu: float = 140  # for the size recommendation and time to train only
    num_tokens_in_b: float = 300
    vocab_size: int = 51200
    logs: str | None = None  # null: {base_results_dir}/{search config}_{gpu_memory_gb}gb
    override_search_num_nodes: int | Auto = "auto"
    tensor_parallel_sizes: tuple[int, ...] | Auto = "auto"
    pipeline_parallel_sizes: tuple[int, ...] | Auto = "auto"
    micro_batch_sizes: tuple[int, ...] | Auto = "auto"
    act_ckpt_layers: tuple[int, ...] | Auto = "auto"
    # ours
    gpu_kind: str | None = None  # a100-40gb, a100-80gb, h100-80gb, h200, cpu; null: A100 of gpu_memory_gb
    hardware: HardwareOverrides = field(default_factory=HardwareOverrides)
    memory_margin: float = 0.1  # admit a candidate only below (1 - margin) x gpu_memory_gb
    seq_length: int | None = None  # null: 2048 (GPT), 512 (T5/mT5; decoder 128)
    data_prefix: str | None = None  # the dataset the search runs train on (required to launch)
    virtual_pipeline_sizes: tuple[int, ...] | Auto = "auto"
    search_sequence_parallel: bool = True  # also search SP (with TP > 1)
    search_selective_recompute: bool = True  # also search selective recomputation

    def __post_init__(self) -> None:
        for key in ("num_nodes", "gpus_per_node", "limit_search_runs", "output_top_n", "max_steps_per_run"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train_settings.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("gpu_memory_gb", "max_minutes_per_run", "tflops_per_gpu", "num_tokens_in_b"):
            if getattr(self, key) <= 0:
                raise ValueError(f"train_settings.{key} must be positive, got {getattr(self, key)}")
        if self.model_size_in_b is not None and self.model_size_in_b <= 0:
            raise ValueError(f"train_settings.model_size_in_b must be positive or null, got {self.model_size_in_b}")
        if self.model_size_in_b is None and self.max_training_days is None:
            raise ValueError("train_settings: give model_size_in_b or max_training_days (or both)")
        if self.max_training_days is not None and self.max_training_days <= 0:
            raise ValueError(f"train_settings.max_training_days must be positive, got {self.max_training_days}")
        if self.override_search_num_nodes != "auto" and self.override_search_num_nodes <= 0:
            raise ValueError("train_settings.override_search_num_nodes must be auto or at least 1")
        if not 0 <= self.memory_margin < 1:
            raise ValueError(f"train_settings.memory_margin must be in [0, 1), got {self.memory_margin}")
        for key in ("tensor_parallel_sizes", "pipeline_parallel_sizes", "micro_batch_sizes",
                    "virtual_pipeline_sizes"):
            value = getattr(self, key)
            if value != "auto" and (not value or min(value) < 1):
                raise ValueError(f"train_settings.{key} must be auto or a non-empty list of sizes >= 1, got {value}")
        if self.act_ckpt_layers != "auto" and (not self.act_ckpt_layers or min(self.act_ckpt_layers) < 0):
            raise ValueError("train_settings.act_ckpt_layers must be auto or a non-empty list of counts >= 0")


@dataclass(frozen=True, kw_only=True)
class InferenceSettings:
    """``inference_settings``: the launcher's keys, then ours (the search: ``inference.py``)."""

    vocab_size: int = 51200
    start_id: int = 50256
    end_id: int = 50256
    input_seq_len: int = 60
    output_seq_len: int = 20
    max_latency_ms: float = 1200
    top_n: int = 10
    logs: str | None = None
    tensor_parallel_sizes: tuple[int, ...] = (1, 2, 4, 8)
    pipeline_parallel_sizes: tuple[int, ...] = (1,)
    max_batch_sizes: tuple[int, ...] = (8, 16, 32, 64, 128, 256)
    # ours: the model checkpoint (or training run directory) to serve
    checkpoint: str | None = None
    # ours: Triton model instances per point (each is also the number of concurrent clients measuring it)
    instance_counts: tuple[int, ...] = (1,)
    # ours: requests each client sends per point
    requests_per_point: int = 5


@dataclass(frozen=True, kw_only=True)
class WandbSettings:
    """``wandb``: passed to the search runs' exp_manager W&B logger."""

    enable: bool = False
    api_key_file: str | None = None
    project: str = "bignlp-hp-tool"


@dataclass(frozen=True, kw_only=True)
class ClusterSettings:
    """``cluster`` (the launcher's conf/cluster/bcm.yaml): where ``cluster_type: bcm`` submits the search runs."""

    partition: str | None = None
    account: str | None = None
    exclusive: bool = False
    job_name_prefix: str = "bignlp-hp:"
    # ours: the directory holding train.sbatch (null: slurm-templates/ of the working directory or the checkout
    # this package runs from)
    templates_dir: str | None = None
    # ours: seconds between two looks at the queue while the search runs are pending or running
    poll_s: float = 5.0
    # ours: --cpus-per-task of each search run's tasks (null: the template's)
    cpus_per_task: int | None = None


@dataclass(frozen=True, kw_only=True)
class HPToolConfig:
    """One search: which model, the training and inference settings, logging and the cluster."""

    run_training_hp_search: bool = True
    run_inference_hp_search: bool = False
    # the launcher's: bcm submits the search runs to Slurm (slurm-templates/train.sbatch, all at once);
    # local (ours) runs them on this machine one after another
    cluster_type: Literal["local", "bcm"] = "local"
    model_type: Literal["gpt3", "t5", "mt5"] | None = None  # ours; null: the config name's directory
    search_config_value: str | None = None  # the config name (set by the loader), as the launcher's
    base_results_dir: str = "results/hp_tool"
    train_settings: TrainSettings = field(default_factory=TrainSettings)
    inference_settings: InferenceSettings = field(default_factory=InferenceSettings)
    wandb: WandbSettings = field(default_factory=WandbSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)

    @property
    def family(self) -> str:
        """The bignlp-models family: ``gpt`` or ``t5`` (mT5 is a T5)."""
        return "gpt" if self.model_type == "gpt3" else "t5"

    @property
    def logs_dir(self) -> Path:
        """Where this search writes (train_settings.logs, else the launcher's default naming)."""
        if self.train_settings.logs:
            return Path(self.train_settings.logs)
        name = (self.search_config_value or "search").replace("/", "_").replace("\\", "_")
        return Path(self.base_results_dir) / f"{name}_{self.train_settings.gpu_memory_gb:g}gb"


def load_hp_config(name_or_path: str, overrides: tuple[str, ...] | list[str] = ()) -> HPToolConfig:
    """Load a shipped search config (``gpt3/5b``) or a YAML path, then apply ``key.sub=value`` overrides."""
    path = resolve_config_path(name_or_path, SEARCH_CONFIGS)
    data = load_yaml(path)
    try:
        default_name = str(path.relative_to(SEARCH_CONFIGS).with_suffix(""))
    except ValueError:
        default_name = f"{path.parent.name}/{path.stem}"
    data.setdefault("search_config_value", default_name)
    cfg = load_config(HPToolConfig, data, list(overrides))
    if cfg.model_type is None:
        guess = cfg.search_config_value.split("/")[0] if cfg.search_config_value else None
        if guess not in MODEL_TYPES:
            raise ConfigError(f"cannot tell the model type of {name_or_path!r}",
                              hint="set model_type to gpt3, t5 or mt5 in the file or as model_type=gpt3")
        cfg = replace(cfg, model_type=guess)
    return cfg


def shipped_search_configs() -> list[str]:
    """Names of the shipped search configs (``gpt3/5b``, ...)."""
    return sorted(str(p.relative_to(SEARCH_CONFIGS).with_suffix("")) for p in SEARCH_CONFIGS.rglob("*.yaml"))
