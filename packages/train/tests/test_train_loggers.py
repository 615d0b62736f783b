"""TensorBoard and W&B (offline) sinks: what a short tiny-cpu run logs, read back from their own files."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from bignlp_contracts import ConfigError
from bignlp_train.config import load_train_config
from bignlp_train.loggers import open_sinks, scalars
from bignlp_train.trainer import pretrain

NAMES = {"reduced_train_loss", "val_loss", "lr", "grad_norm", "train_step_timing", "tokens_per_sec"}


def metrics(run_dir: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def tensorboard_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalar_names():
    got = scalars("train", {"step": 3, "loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "step_time_s": 0.2,
                            "tokens_per_s": 640.0, "consumed_samples": 12, "mfu": None})
    assert got == {"reduced_train_loss": 2.5, "lr": 1e-3, "grad_norm": 0.5, "train_step_timing": 0.2,
                   "tokens_per_sec": 640.0, "consumed_samples": 12.0}
    assert scalars("validation", {"step": 3, "val_loss": float("nan")}) == {}
    assert scalars("diverged", {"loss": 1.0}) == {}


def test_tensorboard_events_match_metrics(dataset, tmp_path):
    pytest.importorskip("tensorboard")
    tb = "exp_manager.create_tensorboard_logger=true"
    pretrain(load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, tmp_path, tb)), log=lambda _line: None)
    got = tensorboard_scalars(tmp_path)
    assert set(got) >= NAMES
    train = metrics(tmp_path, "train")
    assert [s for s, _ in got["reduced_train_loss"]] == [r["step"] for r in train] == list(range(1, 7))
    for (_, value), row in zip(got["reduced_train_loss"], train):
        assert value == pytest.approx(row["loss"], rel=1e-6)  # float32 in the event file
    assert [s for s, _ in got["val_loss"]] == [r["step"] for r in metrics(tmp_path, "validation")] == [0, 3, 6]
    assert got["test_loss"][0][0] == 6

    # Resumed past the end of the first run (new max_steps): one curve, no duplicate steps
    more = tiny_overrides(dataset, tmp_path, tb, "trainer.max_steps=9", "model.optim.sched.max_steps=6")
    pretrain(load_train_config("gpt3/tiny-cpu", more), log=lambda _line: None)
    steps = [s for s, _ in tensorboard_scalars(tmp_path)["reduced_train_loss"]]
    assert steps == list(range(1, 10))


def read_wandb_history(run_dir: Path) -> tuple[dict, list[dict]]:
    """The run record and the history rows of an offline run's ``run-*.wandb`` transaction log.

    The file is W&B's record log: a 7-byte header (``:W&B``, magic, version), then 32 KiB blocks of
    chunks (uint32 CRC, uint16 length, uint8 type: 1 full, 2 first, 3 middle, 4 last), each record a
    ``wandb_internal_pb2.Record``.
    """
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    data, pos, block, pending, run, history = path.read_bytes(), 7, 32768, b"", {}, []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):
            pending = chunk
        elif kind in (3, 4):
            pending += chunk
        if kind not in (1, 4):
            continue
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        which = record.WhichOneof("record_type")
        if which == "run":
            run = {"project": record.run.project, "name": record.run.display_name}
        elif which == "history":
            history.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                            for item in record.history.item})
    return run, history


def test_wandb_offline_run_holds_the_history(dataset, tmp_path):
    pytest.importorskip("wandb")
    key_file = tmp_path / "wandb.key"
    key_file.write_text("0123456789abcdef0123456789abcdef01234567\n")
    run_dir = tmp_path / "run"
    env = {**os.environ, "WANDB_MODE": "offline"}
    out = subprocess.run(
        [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu",
         *tiny_overrides(dataset, run_dir, "exp_manager.create_wandb_logger=true", f"wandb_api_key_file={key_file}",
                         "exp_manager.wandb_logger_kwargs.project=bignlp-tests",
                         "exp_manager.wandb_logger_kwargs.name=tiny")],
        capture_output=True, text=True, timeout=180, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    run, history = read_wandb_history(run_dir)
    assert run == {"project": "bignlp-tests", "name": "tiny"}
    losses = {h["_step"]: h["reduced_train_loss"] for h in history if "reduced_train_loss" in h}
    assert losses == pytest.approx({r["step"]: r["loss"] for r in metrics(run_dir, "train")}, rel=1e-12)
    vals = {h["_step"]: h["val_loss"] for h in history if "val_loss" in h}
    assert vals == pytest.approx({r["step"]: r["val_loss"] for r in metrics(run_dir, "validation")}, rel=1e-12)
    assert all(NAMES - {"val_loss"} <= set(h) for h in history if "reduced_train_loss" in h)
    assert (run_dir / "wandb/bignlp-run-id").read_text().strip() in str(next(run_dir.glob("wandb/offline-run-*")))
    assert "0123456789abcdef" not in (run_dir / "config.yaml").read_text()  # the key itself is never recorded


def test_missing_package_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: import fails
    cfg = load_train_config("gpt3/tiny-cpu", ["exp_manager.create_tensorboard_logger=true"])
    with pytest.raises(ConfigError) as info:
        open_sinks(cfg, tmp_path, enabled=False)
    assert "tensorboard package is not installed" in str(info.value)
    assert "bignlp-train[tensorboard]" in info.value.hint


@pytest.mark.parametrize("content, fragment", [(None, "cannot read it"), ("\n", "is empty")])
def test_bad_wandb_key_file_is_a_config_error(tmp_path, content, fragment):
    pytest.importorskip("wandb")
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    cfg = load_train_config("gpt3/tiny-cpu", ["exp_manager.create_wandb_logger=true",
                                              f"wandb_api_key_file={key_file}"])
    with pytest.raises(ConfigError, match=f"wandb_api_key_file={key_file}.*{fragment}"):
        open_sinks(cfg, tmp_path, enabled=True)
