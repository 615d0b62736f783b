"""Metric sinks beside ``metrics.jsonl``: TensorBoard and Weights & Biases (the seed's exp_manager loggers).

Every record ``Progress`` appends to ``metrics.jsonl`` (train steps, validations, the test
loss) also goes, under NeMo's scalar names, to each sink the config asks for:

- ``exp_manager.create_tensorboard_logger``: event files in the run dir (``tensorboard --logdir RUN_DIR``);
- ``exp_manager.create_wandb_logger``: a W&B run (files under ``RUN_DIR/wandb``) named by
  ``exp_manager.wandb_logger_kwargs``, authenticated with the first line of ``wandb_api_key_file``;
  ``WANDB_MODE=offline`` keeps it local (``wandb sync RUN_DIR/wandb/offline-run-*`` uploads it later).

Rank 0 alone writes. A resumed run continues the same W&B run (its id is kept in the run dir)
and hides TensorBoard events past the checkpoint's step, as ``metrics.jsonl`` drops its records.
"""

from __future__ import annotations

import math
import os
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from bignlp_contracts import ConfigError, atomic_write_text, to_dict

from .config import TrainConfig

# metrics.jsonl field -> scalar name (NeMo's where it has one), per record event
SCALAR_NAMES: dict[str, dict[str, str]] = {
    "train": {"loss": "reduced_train_loss", "lr": "lr", "grad_norm": "grad_norm",
              "step_time_s": "train_step_timing", "tokens_per_s": "tokens_per_sec",
              "tflops_per_device": "tflops_per_device", "mfu": "mfu", "consumed_samples": "consumed_samples"},
    "validation": {"val_loss": "val_loss"},
    "test": {"test_loss": "test_loss"},
}
WANDB_ID_FILE = "wandb/bignlp-run-id"


def scalars(event: str, fields: Mapping[str, Any]) -> dict[str, float]:
    """The record's numbers under their scalar names (unknown events and NaN/None left out)."""
    names = SCALAR_NAMES.get(event, {})
    out = {}
    for key, name in names.items():
        value = fields.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


class MetricSink(Protocol):
    """Where scalars go besides ``metrics.jsonl``."""

    def log(self, values: dict[str, float], step: int) -> None:
        """Record ``values`` at optimizer step ``step``."""

    def close(self) -> None:
        """Flush and release (called once, when training ends)."""


def _require(module: str, key: str) -> None:
    """``module`` importable, else a ConfigError naming its extra (each extra is named after its package)."""
    try:
        __import__(module)
    except ImportError:
        raise ConfigError(f"exp_manager.{key}=true but the {module} package is not installed",
                          hint=f"pip install 'bignlp-train[{module}]', or set exp_manager.{key}=false") from None


class TensorBoardSink:
    """Scalars as TensorBoard event files in ``log_dir`` (torch.utils.tensorboard)."""

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: events at or after it, left by a run that died after its last checkpoint, are hidden
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)

    def log(self, values: dict[str, float], step: int) -> None:
        """One scalar per name at ``step``; flushed at once, so a killed run keeps what it logged."""
        for name, value in values.items():
            self.writer.add_scalar(name, value, global_step=step)
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()


def read_api_key(path: str | Path) -> str:
    """The W&B API key: the first line of ``path`` (the seed's ``wandb_api_key_file``)."""
    file = Path(path).expanduser()
    try:
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"wandb_api_key_file={path}: cannot read it ({exc.strerror})",
                          hint="put the W&B API key on the first line of that file") from None
    key = lines[0].strip() if lines else ""
    if not key:
        raise ConfigError(f"wandb_api_key_file={path} is empty", hint="put the W&B API key on its first line")
    return key


class WandbSink:
    """Scalars to a Weights & Biases run; its files go under ``run_dir/wandb``."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, *, resuming: bool) -> None:
        import wandb

        kwargs = cfg.exp_manager.wandb_logger_kwargs
        settings = {}
        if cfg.wandb_api_key_file:
            settings["api_key"] = read_api_key(cfg.wandb_api_key_file)
        id_file = run_dir / WANDB_ID_FILE
        run_id = id_file.read_text().strip() if resuming and id_file.is_file() else None
        (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
        try:
            self.run = wandb.init(
                project=kwargs.project or "bignlp", name=kwargs.name or cfg.exp_manager.name, entity=kwargs.entity,
                group=kwargs.group, tags=list(kwargs.tags) or None, dir=str(run_dir), config=to_dict(cfg),
                id=run_id, resume="allow" if run_id else None, reinit="finish_previous",
                settings=wandb.Settings(**settings, silent=True),
            )
        except Exception as exc:  # wandb raises its own kinds for a missing key, no network, ...
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"exp_manager.create_wandb_logger=true but W&B would not start: {first}",
                              hint="set wandb_api_key_file to a file holding the API key, or WANDB_MODE=offline "
                              "to log locally") from None
        atomic_write_text(id_file, f"{self.run.id}\n")

    def log(self, values: dict[str, float], step: int) -> None:
        """Log ``values`` at ``step`` (W&B's own step follows the optimizer step)."""
        self.run.log(values, step=step)

    def close(self) -> None:
        """Finish the run (an offline run's history is then complete on disk)."""
        self.run.finish()


def check_loggers(cfg: TrainConfig) -> None:
    """The packages and API key file the requested loggers need (before any run dir is written)."""
    em = cfg.exp_manager
    if em.create_tensorboard_logger:
        _require("tensorboard", "create_tensorboard_logger")
    if em.create_wandb_logger:
        _require("wandb", "create_wandb_logger")
        if cfg.wandb_api_key_file:
            read_api_key(cfg.wandb_api_key_file)


def open_sinks(cfg: TrainConfig, run_dir: Path, *, enabled: bool, resume_step: int | None = None) -> list[MetricSink]:
    """The sinks ``cfg.exp_manager`` asks for (none where ``enabled`` is false: ranks other than 0).

    Every rank checks that the packages are installed, so all stop with the same error line.
    """
    check_loggers(cfg)
    em = cfg.exp_manager
    if not enabled:
        return []
    sinks: list[MetricSink] = []
    if em.create_tensorboard_logger:
        sinks.append(TensorBoardSink(run_dir, purge_step=None if resume_step is None else resume_step + 1))
    if em.create_wandb_logger:
        os.environ.setdefault("WANDB_SILENT", "true")  # its banner would interleave with the progress lines
        sinks.append(WandbSink(cfg, run_dir, resuming=resume_step is not None))
    return sinks


def _close_all(sinks: list[MetricSink]) -> None:
    for sink in sinks:
        sink.close()


def attach_loggers(progress: Any, cfg: TrainConfig, run_dir: Path, *, enabled: bool,
                   resume_step: int | None = None) -> list[MetricSink]:
    """Send every record ``progress`` writes to ``metrics.jsonl`` to the configured sinks too.

    The sinks close when ``progress`` goes away (the end of training) or, failing that, at exit.
    """
    sinks = open_sinks(cfg, run_dir, enabled=enabled, resume_step=resume_step)
    if not sinks:
        return sinks
    record, owner = type(progress).record, weakref.ref(progress)  # no cycle: progress can be freed

    def record_and_log(event: str, **fields: Any) -> None:
        record(owner(), event, **fields)
        values, step = scalars(event, fields), fields.get("step")
        if values and isinstance(step, int):
            for sink in sinks:
                sink.log(values, step)

    progress.record = record_and_log
    weakref.finalize(progress, _close_all, sinks)
    return sinks
