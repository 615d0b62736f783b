"""Multi-process training on CPU/gloo: DP (FSDP2), TP, TP+SP (with recomputation) and resharded resume equal one
process.

Tiny model, fp32, dropout 0, fixed seed: the loss curves must agree within 1e-5 relative.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from train_helpers import tiny_overrides

from bignlp_contracts import latest_checkpoint, read_checkpoint
from bignlp_train.cli import main
from bignlp_train.launch import launch_local

RTOL = 1e-5
# GBS 8 / MBS 2: 4 micro-batches a step, i.e. 2 per rank at DP=2 (accumulation and DP both exercised)
CURVE = ("trainer.max_steps=10", "trainer.val_check_interval=5", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=0", "model.global_batch_size=8", "model.hidden_dropout=0",
         "model.attention_dropout=0", "model.optim.sched.max_steps=10")


def pretrain(dataset, run_dir: Path, *extra: str, nproc: int = 1) -> subprocess.CompletedProcess:
    """``python -m bignlp_train pretrain`` (with ``--nproc-per-node`` when nproc > 1)."""
    args = [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu"]
    if nproc > 1:
        args += ["--nproc-per-node", str(nproc)]
    out = subprocess.run([*args, *tiny_overrides(dataset, run_dir, *CURVE, *extra)], capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def curve(run_dir: Path) -> dict[int, tuple[float, float]]:
    """step → (loss, grad norm) from metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in rows if r["event"] == "train"}


def assert_same_curve(got: dict, want: dict, steps) -> None:
    for step in steps:
        for g, w in zip(got[step], want[step]):
            assert g == pytest.approx(w, rel=RTOL), (step, got[step], want[step])


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory) -> dict:
    """The single-process curve every layout must reproduce."""
    run_dir = tmp_path_factory.mktemp("single")
    pretrain(dataset, run_dir)
    return curve(run_dir)


@pytest.mark.parametrize(
    "layout",
    [(), ("model.tensor_model_parallel_size=2",),
     ("model.tensor_model_parallel_size=2", "model.sequence_parallel=true"),
     ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
      "model.activations_checkpoint_num_layers=2"),
     ("model.tensor_model_parallel_size=2", "model.sequence_parallel=true",
      "model.activations_checkpoint_granularity=selective")],
    ids=["dp2-fsdp", "tp2", "tp2-sp", "dp2-fsdp-full-recompute", "tp2-sp-selective-recompute"],
)
def test_two_process_curve_equals_single_process(dataset, tmp_path, reference, layout):
    out = pretrain(dataset, tmp_path, *layout, nproc=2)
    assert_same_curve(curve(tmp_path), reference, range(1, 11))
    assert sum(line.startswith("step 10/10 |") for line in out.stdout.splitlines()) == 1  # rank 0 alone prints
    assert "× 2 processes" in out.stdout


def test_sharded_init_equals_single_device_init():
    worker = Path(__file__).with_name("parallel_worker.py")
    assert launch_local([sys.executable, str(worker)], 2) == 0


def test_save_at_dp2_resume_at_tp2_and_one_process(dataset, tmp_path, reference):
    saved = tmp_path / "dp2"
    pretrain(dataset, saved, "trainer.max_steps=5", nproc=2)
    assert sorted(p.name for p in (saved / "checkpoints" / "step-00000005" / "dcp").glob("*.distcp")) == [
        "__0_0.distcp", "__1_0.distcp"]
    for name, nproc, extra in [("tp2", 2, ("model.tensor_model_parallel_size=2",)), ("single", 1, ())]:
        run_dir = tmp_path / name
        shutil.copytree(saved, run_dir)
        out = pretrain(dataset, run_dir, *extra, nproc=nproc)
        assert "resumed from" in out.stdout and "(step 5, 40 samples consumed)" in out.stdout
        assert_same_curve(curve(run_dir), reference, range(6, 11))


def test_a_dying_worker_stops_the_job(tmp_path):
    script = ("import os, sys, time\n"
              "if os.environ['RANK'] == '1':\n    sys.exit(3)\n"
              "time.sleep(120)\n")
    started = time.monotonic()
    assert launch_local([sys.executable, "-c", script], 2, grace_s=2.0) == 3
    assert time.monotonic() - started < 30


def test_killed_worker_gives_signal_exit_code():
    script = ("import os, signal, time\n"
              "if os.environ['RANK'] == '0':\n    os.kill(os.getpid(), signal.SIGKILL)\n"
              "time.sleep(120)\n")
    assert launch_local([sys.executable, "-c", script], 2, grace_s=2.0) == 128 + 9


def test_ranks_stopping_early_finish_before_the_job_exits_75(tmp_path):
    """A rank exiting 75 (checkpointed, stopping early) is not a crash: the others get to finish."""
    done = tmp_path / "rank0-finished"
    script = ("import os, sys, time\n"
              "if os.environ['RANK'] == '0':\n"
              f"    time.sleep(1.5)\n    open({str(done)!r}, 'w').close()\n"
              "sys.exit(75)\n")
    assert launch_local([sys.executable, "-c", script], 2, grace_s=5.0) == 75
    assert done.exists(), "rank 0 was stopped before it finished"


def test_bad_layout_is_one_line_before_workers_start(dataset, tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "3",
                                       *tiny_overrides(dataset, tmp_path, "model.global_batch_size=8")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "model.global_batch_size=8 is not a multiple of model.micro_batch_size=2 × data-parallel size 3" in (
        result.stderr)
    assert not (tmp_path / "config.yaml").exists()


def test_nproc_per_node_under_torchrun_is_a_usage_error(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
                                       *tiny_overrides(dataset, tmp_path)])
    assert result.exit_code == 2 and "under torchrun or srun leave it at 1" in result.stderr


def test_killing_a_training_rank_ends_the_job(dataset, tmp_path):
    args = [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
            *tiny_overrides(dataset, tmp_path, *CURVE, "trainer.max_steps=2000",
                            "model.optim.sched.max_steps=2000")]
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert job.stdout.readline().startswith("model:")  # rank 0 is training
        children = Path(f"/proc/{job.pid}/task/{job.pid}/children").read_text().split()
        assert len(children) == 2
        started = time.monotonic()
        subprocess.run(["kill", "-9", children[1]], check=True)
        assert job.wait(timeout=60) != 0
        assert time.monotonic() - started < 60
    finally:
        job.kill()
        job.wait()


def test_sigterm_checkpoints_and_exits_75_then_resumes(dataset, tmp_path):
    long_run = (*CURVE, "trainer.max_steps=2000", "model.optim.sched.max_steps=2000")
    args = [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
            *tiny_overrides(dataset, tmp_path, *long_run)]
    job = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in job.stdout:  # wait until training is under way
            if line.startswith("step 2/"):
                break
        assert job.poll() is None, "the job ended before step 2"
        job.send_signal(signal.SIGTERM)  # to the launcher, which passes it on to both ranks
        out, err = job.communicate(timeout=60)
    finally:
        job.kill()
        job.wait()
    assert job.returncode == 75, err
    assert "stopped by SIGTERM at step" in err and "SIGTERM received at step" in out
    path, manifest = read_checkpoint(tmp_path)
    stopped_at = manifest.summary["step"]
    assert 2 <= stopped_at < 2000 and path == latest_checkpoint(tmp_path)
    again = pretrain(dataset, tmp_path, "trainer.max_steps=" + str(stopped_at + 1), *long_run[-1:])
    assert f"(step {stopped_at}," in again.stdout and f"step {stopped_at + 1}/{stopped_at + 1} |" in again.stdout
