"""Faults during real training runs: kill -9 mid-run (its stale lock taken over), kill during a checkpoint write,
then resume.

Each run is a real ``python -m bignlp_train pretrain`` subprocess (tiny model, fp32, one process,
a checkpoint every 2 steps). To kill at an exact step, the subprocess is started through a small
hook that pauses (or kills itself) at that point; the hook only stops the process, it changes
nothing the run computes. A dying worker in a 2-process job is covered in test_train_parallel.py
(test_killing_a_training_rank_ends_the_job).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from bignlp_contracts import MANIFEST_NAME, latest_checkpoint, read_checkpoint, read_lock_holder

MAX_STEPS = 12
# Dropout on: the resumed run must also restore the RNG. sched.max_steps fixed: a shorter first run
# follows the same LR schedule.
FAULTS = ("trainer.max_steps=12", "model.optim.sched.max_steps=12", "trainer.val_check_interval=4",
          "trainer.limit_val_batches=1", "trainer.limit_test_batches=0", "trainer.precision=32",
          "exp_manager.checkpoint_callback_params.every_n_steps=2",
          "exp_manager.checkpoint_callback_params.save_top_k=-1",
          "model.hidden_dropout=0.1", "model.attention_dropout=0.1")

# Runs the CLI exactly as ``python -m bignlp_train`` would, with one fault injected at a step:
#   hang-after-log  the step's metrics are written, then the process blocks (the test kill -9s it);
#   kill-in-save    the step's DCP shards are on disk, the manifest is not: the process kill -9s itself;
#   kill-before-pointer  the step's directory is complete and renamed into place, `latest` not yet moved;
#   wait-after-log  the step's metrics are written, then the process waits until the file FAULT_RELEASE exists.
HOOK = """
import os, runpy, signal, sys, time
mode, at = os.environ["FAULT_MODE"], int(os.environ["FAULT_STEP"])
if mode in ("hang-after-log", "wait-after-log"):
    from bignlp_train import progress
    original = progress.Progress.train_step
    def train_step(self, step, **kw):
        original(self, step, **kw)
        if step == at and mode == "hang-after-log":
            time.sleep(600)
        while step == at and mode == "wait-after-log" and not os.path.exists(os.environ["FAULT_RELEASE"]):
            time.sleep(0.05)
    progress.Progress.train_step = train_step
elif mode == "kill-in-save":
    import torch.distributed.checkpoint as dcp
    original = dcp.save
    def save(state_dict, **kw):
        original(state_dict, **kw)
        if state_dict["train_state"]["step"] == at:
            os.kill(os.getpid(), signal.SIGKILL)
    dcp.save = save
elif mode == "kill-before-pointer":
    from bignlp_train import checkpoint
    original = checkpoint.set_latest_checkpoint
    def set_latest_checkpoint(run_dir, path):
        if path.name == f"step-{at:08d}":
            os.kill(os.getpid(), signal.SIGKILL)
        original(run_dir, path)
    checkpoint.set_latest_checkpoint = set_latest_checkpoint
sys.argv = ["bignlp-train", *sys.argv[1:]]
runpy.run_module("bignlp_train", run_name="__main__")
"""


def command(dataset, run_dir: Path, *extra: str) -> list[str]:
    """The pretrain command line (without the interpreter)."""
    return ["pretrain", "--config", "gpt3/tiny-cpu", *tiny_overrides(dataset, run_dir, *FAULTS, *extra)]


def same_threads_env() -> dict[str, str]:
    """This environment with torch's thread count pinned to this process's: the runs are compared bit for bit,
    with each other and with runs made in this process (test_train_run_dir), and a float sum split over another
    number of threads rounds differently (other packages' conftests set 2 threads here, whatever
    OMP_NUM_THREADS says)."""
    import torch

    return {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}


def pretrain(dataset, run_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    """``python -m bignlp_train pretrain ...``, which must succeed."""
    out = subprocess.run([sys.executable, "-m", "bignlp_train", *command(dataset, run_dir, *extra)],
                         env=same_threads_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def start_with_fault(dataset, run_dir: Path, mode: str, step: int, *extra: str,
                     env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start the same command through ``HOOK``, in its own process group (``env``: more variables)."""
    env = {**same_threads_env(), "FAULT_MODE": mode, "FAULT_STEP": str(step), **(env or {})}
    return subprocess.Popen([sys.executable, "-c", HOOK, *command(dataset, run_dir, *extra)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def train_records(run_dir: Path) -> dict[int, dict]:
    """step → the train record of metrics.jsonl (a partly written last line is ignored)."""
    path = run_dir / "metrics.jsonl"
    rows = []
    for line in (path.read_text().splitlines() if path.is_file() else []):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return {r["step"]: r for r in rows if r["event"] == "train"}


def kill_group(proc: subprocess.Popen) -> None:
    """kill -9 the process and everything it started."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def uninterrupted_run(dataset, tmp_path_factory) -> dict[int, dict]:
    """The train records of the uninterrupted 12-step run (the reference every fault test compares with)."""
    run_dir = tmp_path_factory.mktemp("straight")
    pretrain(dataset, run_dir)
    return train_records(run_dir)


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict[int, dict]:
    """The uninterrupted 12-step run."""
    return uninterrupted_run(dataset, tmp_path_factory)


def assert_steps_equal(got: dict[int, dict], want: dict[int, dict], steps) -> None:
    """Bit-for-bit: loss, grad norm, lr and data position of every step."""
    for step in steps:
        keys = ("loss", "grad_norm", "lr", "consumed_samples")
        assert [got[step][k] for k in keys] == [want[step][k] for k in keys], step


def test_kill_9_at_step_6_then_resume_matches_the_uninterrupted_run(dataset, tmp_path, reference):
    proc = start_with_fault(dataset, tmp_path, "hang-after-log", 6)
    try:
        deadline = time.monotonic() + 60
        while 6 not in train_records(tmp_path):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "step 6 was never logged"
            time.sleep(0.05)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    # step 6 was logged but its checkpoint never written: the last complete one is step 4
    assert latest_checkpoint(tmp_path).name == "step-00000004"
    assert max(train_records(tmp_path)) == 6
    stale = read_lock_holder(tmp_path)  # the dead run's lock record stays; its flock went with it
    assert stale is not None and stale.pid == proc.pid and stale.command == "bignlp-train pretrain"

    out = pretrain(dataset, tmp_path)  # the same command: exp_manager.resume_if_exists=true
    assert f"{tmp_path}: taking over the lock of {stale.describe()}, which ended without releasing it" in out.stdout
    assert "resumed from" in out.stdout and "(step 4, 16 samples consumed)" in out.stdout
    assert read_lock_holder(tmp_path) is None  # released at the end
    got = train_records(tmp_path)
    assert sorted(got) == list(range(1, MAX_STEPS + 1))  # the killed run's steps 5-6 were replaced, not doubled
    assert_steps_equal(got, reference, range(1, MAX_STEPS + 1))
    assert read_checkpoint(tmp_path)[1].summary["step"] == MAX_STEPS


def run_until_it_kills_itself(dataset, run_dir, fault: str, step: int) -> None:
    """Run with a fault that SIGKILLs the process at ``step``; check it died that way."""
    proc = start_with_fault(dataset, run_dir, fault, step)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]


def test_kill_9_during_a_checkpoint_write_keeps_the_previous_one(dataset, tmp_path, reference):
    run_until_it_kills_itself(dataset, tmp_path, "kill-in-save", 8)
    ckpts = tmp_path / "checkpoints"
    partial = list(ckpts.glob(".step-00000008.*.tmp"))
    assert len(partial) == 1 and (partial[0] / "dcp" / ".metadata").is_file()
    assert not (partial[0] / MANIFEST_NAME).exists() and not (ckpts / "step-00000008").exists()
    assert latest_checkpoint(tmp_path).name == "step-00000006"
    assert read_checkpoint(tmp_path)[1].summary["step"] == 6

    out = pretrain(dataset, tmp_path)
    assert "(step 6, 24 samples consumed)" in out.stdout
    assert_steps_equal(train_records(tmp_path), reference, range(1, MAX_STEPS + 1))
    assert latest_checkpoint(tmp_path).name == "step-00000012"


def test_kill_9_before_latest_moves_resumes_from_the_pointer(dataset, tmp_path, reference):
    """A complete step-8 directory that `latest` does not name yet: the pointer wins, step 8 is redone."""
    run_until_it_kills_itself(dataset, tmp_path, "kill-before-pointer", 8)
    ckpts = tmp_path / "checkpoints"
    assert (ckpts / "step-00000008" / MANIFEST_NAME).is_file()
    assert (ckpts / "latest").read_text() == "step-00000006\n"
    assert latest_checkpoint(tmp_path).name == "step-00000006"

    out = pretrain(dataset, tmp_path)
    assert "(step 6, 24 samples consumed)" in out.stdout
    assert_steps_equal(train_records(tmp_path), reference, range(1, MAX_STEPS + 1))
    assert read_checkpoint(ckpts / "step-00000008")[1].summary["step"] == 8  # rewritten in place


def test_half_written_checkpoint_and_stray_pointer_are_skipped(dataset, tmp_path, reference):
    """The state a crash mid-save can leave, built by hand: partial temp dir, manifest-less dir, `latest` on it."""
    pretrain(dataset, tmp_path, "trainer.max_steps=6")
    ckpts = tmp_path / "checkpoints"
    partial = ckpts / ".step-00000008.abc123.tmp" / "dcp"
    partial.mkdir(parents=True)
    (partial / "__0_0.distcp").write_bytes(b"\x00" * 100)  # half a shard, no .metadata, no manifest
    torn = ckpts / "step-00000008"
    (torn / "dcp").mkdir(parents=True)
    (torn / "dcp" / "__0_0.distcp").write_bytes(b"\x00" * 100)
    (ckpts / "latest").write_text("step-00000008\n")

    assert latest_checkpoint(tmp_path) == ckpts / "step-00000006"
    path, manifest = read_checkpoint(tmp_path)
    assert path == ckpts / "step-00000006" and manifest.summary["step"] == 6

    out = pretrain(dataset, tmp_path)
    assert "(step 6, 24 samples consumed)" in out.stdout
    assert_steps_equal(train_records(tmp_path), reference, range(1, MAX_STEPS + 1))
    assert latest_checkpoint(tmp_path).name == "step-00000012"
    _, manifest = read_checkpoint(ckpts / "step-00000008")  # the torn directory was replaced by a complete one
    assert manifest.summary["step"] == 8
