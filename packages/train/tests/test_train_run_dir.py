"""Run directories that defend themselves: one writer per run directory, content-verified resume, and the fall-back
to the newest intact checkpoint when ``latest`` names a damaged one.

The runs are test_train_faults.py's (12 steps, a checkpoint every 2, dropout on) and are compared bit for bit
with its uninterrupted ``reference`` run; a kill -9 leaving a stale lock is tested there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_train_faults import (
    FAULTS,
    MAX_STEPS,
    assert_steps_equal,
    command,
    kill_group,
    start_with_fault,
    train_records,
    uninterrupted_run,
)
from test_train_run import _fake_checkpoint
from train_helpers import tiny_overrides

from bignlp_contracts import read_checkpoint, read_lock_holder, set_latest_checkpoint, share_files
from bignlp_train.checkpoint import prune_checkpoints
from bignlp_train.cli import main
from bignlp_train.config import CheckpointCallbackParams, load_train_config
from bignlp_train.launch import free_port, worker_env
from bignlp_train.rundir import choose_resume_checkpoint
from bignlp_train.trainer import pretrain

CLI = [sys.executable, "-m", "bignlp_train"]


def two_workers(dataset, run_dir: Path) -> list[str]:
    """The command line with ``--nproc-per-node 2``."""
    args = command(dataset, run_dir)
    return [*CLI, *args[:3], "--nproc-per-node", "2", *args[3:]]
BUSY_S = 60  # startup (imports) included; the lock itself is refused at once


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict[int, dict]:
    """test_train_faults' uninterrupted 12-step run."""
    return uninterrupted_run(dataset, tmp_path_factory)


def in_process(dataset, run_dir: Path, *extra: str) -> list[str]:
    """The test_train_faults run in this process; its log lines."""
    lines: list[str] = []
    pretrain(load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, run_dir, *FAULTS, *extra)), log=lines.append)
    return lines


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int) -> None:
    deadline = time.monotonic() + 90
    while step not in train_records(run_dir):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"step {step} was never logged"
        time.sleep(0.05)


def refused(out: subprocess.CompletedProcess | tuple[int, str], holder_pid: int) -> str:
    """The one line a run refused on a busy directory prints (exit 2), naming the holder."""
    code, err = (out.returncode, out.stderr) if isinstance(out, subprocess.CompletedProcess) else out
    assert code == 2, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("bignlp-train: error:")]
    assert lines and all(line == lines[0] for line in lines), err[-3000:]
    assert f"is in use by bignlp-train pretrain (pid {holder_pid} on " in lines[0], lines[0]
    assert "(fix: wait for that run to end or stop it, or give this one another exp_manager.explicit_log_dir" \
        in lines[0]
    return lines[0]


def test_a_second_run_on_a_busy_directory_exits_2_and_the_first_equals_a_lone_run(dataset, tmp_path, reference):
    release = tmp_path / "go"
    run_dir = tmp_path / "run"
    first = start_with_fault(dataset, run_dir, "wait-after-log", 3, env={"FAULT_RELEASE": str(release)})
    try:
        wait_for_step(first, run_dir, 3)
        before = (run_dir / "metrics.jsonl").read_bytes(), sorted(p.name for p in (run_dir / "checkpoints").iterdir())

        started = time.monotonic()
        again = subprocess.run([*CLI, *command(dataset, run_dir)], capture_output=True, text=True, timeout=BUSY_S)
        took = time.monotonic() - started
        refused(again, first.pid)
        # the local launcher refuses before it starts any worker
        launched = subprocess.run(two_workers(dataset, run_dir), capture_output=True, text=True, timeout=BUSY_S)
        assert refused(launched, first.pid) and launched.stderr.count("\n") == 1
        # torchrun/srun: every rank ends with rank 0's answer, none waits in a collective
        port = free_port()
        ranks = [subprocess.Popen([*CLI, *command(dataset, run_dir)], env=worker_env(rank, 2, port),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for rank in range(2)]
        for proc in ranks:
            refused((proc.wait(timeout=BUSY_S), proc.stderr.read()), first.pid)

        # none of them wrote anything into the run directory
        assert ((run_dir / "metrics.jsonl").read_bytes(),
                sorted(p.name for p in (run_dir / "checkpoints").iterdir())) == before
        assert read_lock_holder(run_dir).pid == first.pid
        release.touch()
        _, err = first.communicate(timeout=120)
    finally:
        kill_group(first)
    assert first.returncode == 0, err[-3000:]
    print(f"second run refused after {took:.1f} s (interpreter start included)")
    assert took < BUSY_S
    # the first run is exactly a lone run: each step once, the reference's values, every checkpoint its own
    lines = [line for line in (run_dir / "metrics.jsonl").read_text().splitlines() if '"event": "train"' in line]
    assert len(lines) == MAX_STEPS
    assert_steps_equal(train_records(run_dir), reference, range(1, MAX_STEPS + 1))
    names = sorted(p.name for p in (run_dir / "checkpoints").glob("step-*"))
    assert names == [f"step-{s:08d}" for s in range(2, MAX_STEPS + 1, 2)]
    assert all(read_checkpoint(run_dir / "checkpoints" / n, verify="sha256")[1].summary["step"] == int(n[5:])
               for n in names)
    assert read_lock_holder(run_dir) is None


@pytest.fixture(scope="module")
def eight_steps(dataset, tmp_path_factory) -> Path:
    """A run directory stopped after step 8: checkpoints at 2, 4, 6 and 8, ``latest`` naming step 8."""
    run_dir = tmp_path_factory.mktemp("eight")
    in_process(dataset, run_dir, "trainer.max_steps=8")
    assert (run_dir / "checkpoints" / "latest").read_text() == "step-00000008\n"
    return run_dir


def flip_byte(path: Path, offset: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2 if offset is None else offset] ^= 0xFF
    path.write_bytes(data)


DAMAGE = {
    "flipped bytes": (lambda ckpt: flip_byte(ckpt / "dcp" / "__0_0.distcp"),
                      "dcp/__0_0.distcp does not match its sha256 in the manifest (corrupt)"),
    "deleted shard": (lambda ckpt: (ckpt / "dcp" / "__0_0.distcp").unlink(), "dcp/__0_0.distcp is missing"),
    "deleted .metadata": (lambda ckpt: (ckpt / "dcp" / ".metadata").unlink(), "dcp/.metadata is missing"),
    "truncated": (lambda ckpt: os.truncate(ckpt / "dcp" / "__0_0.distcp", 1000),
                  "dcp/__0_0.distcp is 1000 bytes, the manifest says "),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_latest_falls_back_to_the_previous_checkpoint(dataset, tmp_path, eight_steps, reference, damage):
    run_dir = tmp_path / "run"
    shutil.copytree(eight_steps, run_dir)
    harm, why = DAMAGE[damage]
    harm(run_dir / "checkpoints" / "step-00000008")

    lines = in_process(dataset, run_dir)
    warning = [line for line in lines if line.startswith("warning: checkpoint step-00000008 is damaged (")]
    assert len(warning) == 1 and why in warning[0], lines
    assert warning[0].endswith("; moved it to checkpoints/damaged/step-00000008, resuming from step-00000006")
    assert f"resumed from {run_dir / 'checkpoints' / 'step-00000006'} (step 6, 24 samples consumed)" in lines
    assert any(line.startswith("checkpoint step-00000006 verified: sha256 of 5 files") for line in lines), lines
    # the next steps are those of the uninterrupted run, which passed through step 6's state
    assert_steps_equal(train_records(run_dir), reference, range(1, MAX_STEPS + 1))
    assert read_checkpoint(run_dir)[1].summary["step"] == MAX_STEPS
    kept = run_dir / "checkpoints" / "damaged" / "step-00000008"
    assert (kept / "manifest.json").is_file()  # kept aside as it was, never deleted


def test_no_intact_checkpoint_exits_3_listing_what_was_tried(dataset, tmp_path, eight_steps):
    run_dir = tmp_path / "run"
    shutil.copytree(eight_steps, run_dir)
    for step in (2, 4, 6, 8):
        flip_byte(run_dir / "checkpoints" / f"step-{step:08d}" / "dcp" / "__0_0.distcp")
    metrics = (run_dir / "metrics.jsonl").read_bytes()
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, run_dir, *FAULTS)])
    assert result.exit_code == 3, result.output
    assert result.stderr.count("\n") == 1
    line = result.stderr
    assert line.startswith(f"bignlp-train: error: {run_dir / 'checkpoints'}: no intact checkpoint to resume from "
                           "(tried step-00000008: dcp/__0_0.distcp does not match its sha256")
    assert all(f"step-{s:08d}: dcp/__0_0.distcp does not match" in line for s in (2, 4, 6, 8))
    assert "exp_manager.verify_checkpoints=false" in line
    assert not (run_dir / "checkpoints" / "damaged").exists()  # nothing moved: the same command says the same
    assert (run_dir / "metrics.jsonl").read_bytes() == metrics
    # without verification the flipped bytes go unseen (sizes and files are right)
    assert choose_resume_checkpoint(run_dir, verify=False, rank=0, world_size=1, log=print).name == "step-00000008"


def test_ranks_verify_their_shares_and_agree(dataset, tmp_path, eight_steps):
    """Two ranks: the damaged file lies in rank 1's share, rank 0 moves the checkpoint aside all the same."""
    run_dir = tmp_path / "run"
    shutil.copytree(eight_steps, run_dir)
    ckpt = run_dir / "checkpoints" / "step-00000008"
    files = read_checkpoint(ckpt)[1].files
    victim = share_files({name: meta["size"] for name, meta in files.items()}, 2, 1)[0]
    flip_byte(ckpt / victim, offset=0)
    out = subprocess.run(two_workers(dataset, run_dir), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (f"warning: checkpoint step-00000008 is damaged ({victim} does not match its sha256 in the manifest "
            "(corrupt)); moved it to checkpoints/damaged/step-00000008") in out.stdout, out.stdout
    assert "checkpoint step-00000006 verified: sha256 of 5 files" in out.stdout and " over 2 ranks in " in out.stdout
    assert "(step 6, 24 samples consumed)" in out.stdout
    assert read_checkpoint(run_dir)[1].summary["step"] == MAX_STEPS


def test_pruning_never_deletes_the_only_intact_checkpoint(tmp_path):
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0)]:
        _fake_checkpoint(tmp_path, step, loss)
    root = tmp_path / "checkpoints"
    set_latest_checkpoint(tmp_path, root / "step-00000030")
    (root / "step-00000030" / "config.yaml").unlink()  # latest lost a file after it was written
    prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=0))
    assert sorted(p.name for p in root.glob("step-*")) == ["step-00000020", "step-00000030"]  # 20: newest intact
    (root / "step-00000030" / "config.yaml").write_text("{}\n")  # intact again: the usual rule
    prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=0))
    assert [p.name for p in root.glob("step-*")] == ["step-00000030"]


def test_a_run_directory_that_cannot_be_locked_is_one_line(dataset, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, not_a_dir, *FAULTS)])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"bignlp-train: error: cannot lock run directory {not_a_dir} (FileExistsError")
    assert "(fix: give a writable exp_manager.explicit_log_dir" in result.stderr
