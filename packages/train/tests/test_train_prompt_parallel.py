"""bignlp-train prompt-learn over 2 gloo processes on a tiny GPT base: data, tensor and pipeline parallelism each
equal one process (same global batch: losses per step, validation loss, the folded prompt rows), and the frozen
base stays bit-identical on every rank; a T5 base's data parallelism likewise; a killed DP run resumes exactly;
layouts that do not fit are refused in one line.

The TP and PP runs go through a worker (``WORKER``, under ``bignlp_contracts.launch``) that keeps this rank's part
of the base and checks it after training against the base checkpoint, slice by slice.
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
import torch
from prompt_helpers import assert_one_line, make_base, make_task_data, prompt_overrides

from bignlp_contracts.launch import launch_local
from bignlp_models.prompt import load_prompt_checkpoint

STEPS = 5
EXTRA = (f"trainer.max_steps={STEPS}", "trainer.log_every_n_steps=1", f"trainer.val_check_interval={STEPS}",
         "model.global_batch_size=8", "model.micro_batch_size=2", "model.optim.sched.warmup_steps=1")

WORKER = """
import json, sys
from pathlib import Path
import torch
from torch.distributed.tensor import DTensor
from bignlp_models import load_state_dict_only
from bignlp_train import prompt_learning as pl
from bignlp_train.config.prompt import load_prompt_config

out, base, overrides = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
held = {}
original = pl.load_frozen_parts

def keep(*args, **kwargs):
    parts, arch = original(*args, **kwargs)
    held["part"] = parts[0]
    held["loaded"] = [(n, p, p.detach().clone()) for n, p in held["part"].named_parameters()]
    held["coordinates"] = {id(p): (p.device_mesh.get_local_rank(), p.device_mesh.size())  # while the group lives
                           for p in held["part"].parameters() if isinstance(p, DTensor)}
    return parts, arch

pl.load_frozen_parts = keep
result = pl.prompt_learn(load_prompt_config("gpt3/squad", overrides), log=lambda _line: None)
saved, _ = load_state_dict_only(base, unpad=False)
part, report = held["part"], {"rank": result.rank, "params": 0, "problems": []}
local = lambda t: t.to_local() if isinstance(t, DTensor) else t
for name, p in part.named_parameters():
    if ".table." in name:
        continue  # the prompts, installed after loading
    report["params"] += 1
    key = name.replace("word_embeddings.inner.", "word_embeddings.")
    key = key.replace("output_layer.", "embedding.word_embeddings.")
    want = saved[key]
    if isinstance(p, DTensor):  # this rank's slice (a 1-D TP mesh)
        coordinate, size = held["coordinates"][id(p)]
        for placement in p.placements:
            if placement.is_shard():
                want = torch.chunk(want, size, placement.dim)[coordinate]
    if p.requires_grad or p.grad is not None:
        report["problems"].append(f"{name}: trainable or has a gradient")
    if not torch.equal(local(p), want):
        report["problems"].append(f"{name}: differs from the checkpoint")
for name, p, before in held["loaded"]:
    if not torch.equal(local(p), local(before)):
        report["problems"].append(f"{name}: changed during training")
(out / f"rank{result.rank}.json").write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_base(tmp_path_factory.mktemp("gptbase") / "base", "gpt")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("keys")
    return {"train": make_task_data(root / "train.jsonl", num=64, seed=1),
            "validation": make_task_data(root / "validation.jsonl", num=12, seed=2)}


def overrides(base: Path, data: dict[str, Path], run_dir: Path, *extra: str) -> list[str]:
    return prompt_overrides(base, run_dir, data["train"], *EXTRA, f"model.data.validation_ds=[{data['validation']}]",
                            *extra)


def cli(base: Path, data: dict[str, Path], run_dir: Path, *extra: str, nproc: int = 1) -> None:
    args = [sys.executable, "-m", "bignlp_train", "prompt-learn", "--config", "gpt3/squad",
            *overrides(base, data, run_dir, *extra)]
    if nproc > 1:
        args[4:4] = ["--nproc-per-node", str(nproc)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


def worker(base: Path, data: dict[str, Path], run_dir: Path, *extra: str) -> list[dict]:
    """A 2-process run through ``WORKER``; each rank's report on its part of the base."""
    reports = run_dir.parent / f"{run_dir.name}-reports"
    reports.mkdir()
    code = launch_local([sys.executable, "-c", WORKER, str(reports), str(base),
                         *overrides(base, data, run_dir, *extra)], 2)
    assert code == 0
    return [json.loads((reports / f"rank{r}.json").read_text()) for r in range(2)]


def metrics(run_dir: Path) -> tuple[dict[int, dict], list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return ({r["step"]: r for r in rows if r["event"] == "train"},
            [r["val_loss"] for r in rows if r["event"] == "validation"])


@pytest.fixture(scope="module")
def one_process(base, data, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("one") / "run"
    cli(base, data, run_dir)
    return run_dir


def assert_equals_one_process(run_dir: Path, one_process: Path) -> dict[str, float]:
    (want, want_val), (got, got_val) = metrics(one_process), metrics(run_dir)
    assert sorted(got) == list(range(1, STEPS + 1))
    loss = max(abs(got[s]["loss"] - want[s]["loss"]) for s in want)
    norm = max(abs(got[s]["grad_norm"] - want[s]["grad_norm"]) for s in want)
    assert loss < 1e-5 and norm < 1e-4, (loss, norm)
    assert len(got_val) == len(want_val) == 2  # before training and at the end
    val = max(abs(a - b) for a, b in zip(got_val, want_val))
    assert val < 1e-5, (got_val, want_val)
    a = load_prompt_checkpoint(one_process / "prompt_checkpoint")
    b = load_prompt_checkpoint(run_dir / "prompt_checkpoint")
    assert a.tasks == b.tasks and a.rows.shape == b.rows.shape
    rows = float((a.rows - b.rows).abs().max())
    assert torch.allclose(a.rows, b.rows, atol=1e-5), rows
    assert want[STEPS]["loss"] < want[1]["loss"]  # the prompts learned something: the comparison means something
    return {"loss": loss, "grad_norm": norm, "val_loss": val, "rows": rows}


def test_data_parallel_2_equals_one_process(base, data, one_process, tmp_path):
    cli(base, data, tmp_path / "dp2", nproc=2)
    diffs = assert_equals_one_process(tmp_path / "dp2", one_process)
    print(f"DP=2 vs one process, max abs differences: {diffs}")
    assert sorted(p.name for p in (tmp_path / "dp2" / "prompt_checkpoint").iterdir()) == [
        "config.yaml", "manifest.json", "prompt_config.json", "prompts.safetensors"]


def test_tensor_parallel_2_equals_one_process_and_keeps_the_base(base, data, one_process, tmp_path):
    reports = worker(base, data, tmp_path / "tp2", "model.tensor_model_parallel_size=2")
    diffs = assert_equals_one_process(tmp_path / "tp2", one_process)
    print(f"TP=2 vs one process, max abs differences: {diffs}")
    for report in reports:  # every base weight: frozen, no gradient, its checkpoint slice bit for bit
        assert report["params"] == 2 + 2 * 12 + 2 and report["problems"] == [], report


def test_pipeline_parallel_2_equals_one_process_and_keeps_the_base(base, data, one_process, tmp_path):
    reports = worker(base, data, tmp_path / "pp2", "model.pipeline_model_parallel_size=2")
    diffs = assert_equals_one_process(tmp_path / "pp2", one_process)
    print(f"PP=2 vs one process, max abs differences: {diffs}")
    # stage 0: word + position embeddings and layer 0; stage 1: layer 1, the final LayerNorm, the output layer
    assert [r["params"] for r in reports] == [2 + 12, 12 + 2 + 1]
    assert all(r["problems"] == [] for r in reports), reports


def test_t5_data_parallel_2_equals_one_process(data, tmp_path):
    """A T5 base is split over no TP/PP ranks, but its replicas share the batch as GPT's do."""
    t5 = make_base(tmp_path / "t5base", "t5")
    first, second = tmp_path / "one", tmp_path / "dp2"
    args = ["--config", "t5/squad", *overrides(t5, data, first, "trainer.max_steps=3")]
    for run_dir, nproc in ((first, 1), (second, 2)):
        argv = [a.replace(f"={first}", f"={run_dir}") for a in args]
        out = subprocess.run([sys.executable, "-m", "bignlp_train", "prompt-learn", "--nproc-per-node", str(nproc),
                              *argv], capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
    (want, want_val), (got, got_val) = metrics(first), metrics(second)
    assert sorted(got) == [1, 2, 3] and len(got_val) == len(want_val) == 2
    assert max(abs(got[s]["loss"] - want[s]["loss"]) for s in want) < 1e-5
    assert max(abs(a - b) for a, b in zip(got_val, want_val)) < 1e-5
    a, b = (load_prompt_checkpoint(d / "prompt_checkpoint").rows for d in (first, second))
    assert torch.allclose(a, b, atol=1e-5)


HANG = """
import os, runpy, sys, time
from bignlp_train import progress
original = progress.Progress.train_step
def train_step(self, step, **kw):
    original(self, step, **kw)
    if step == int(os.environ["HANG_STEP"]):
        time.sleep(600)
progress.Progress.train_step = train_step
sys.argv = ["bignlp-train", *sys.argv[1:]]
runpy.run_module("bignlp_train", run_name="__main__")
"""
LAUNCH = "import sys; from bignlp_contracts.launch import launch_local; sys.exit(launch_local(sys.argv[1:], 2))"


def test_kill_9_of_a_data_parallel_run_then_resume_equals_one_process(base, data, one_process, tmp_path):
    """Rank 0 alone writes the resume points (table, optimizer and RNG are the same on every replica): a DP=2 run
    killed after step 3 (checkpoint at step 2) and rerun ends where the uninterrupted one-process run does."""
    run_dir = tmp_path / "killed"
    every = "exp_manager.checkpoint_callback_params.every_n_steps=2"
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, sys.executable, "-c", HANG, "prompt-learn", "--config",
                             "gpt3/squad", *overrides(base, data, run_dir, every)],
                            env={**os.environ, "HANG_STEP": "3"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while 3 not in (metrics(run_dir)[0] if (run_dir / "metrics.jsonl").is_file() else {}):
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before step 3"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert not (run_dir / "prompt_checkpoint").exists() and (run_dir / "checkpoints" / "step-00000002").is_dir()
    cli(base, data, run_dir, every, nproc=2)
    assert_equals_one_process(run_dir, one_process)


@pytest.mark.parametrize("extra,nproc,needles", [
    (("model.micro_batch_size=8",), 2, ("model.global_batch_size=8", "micro_batch_size=8 × data-parallel size 2")),
    (("model.tensor_model_parallel_size=3",), 3, ("model.tensor_model_parallel_size=3", "4 attention heads")),
    (("model.pipeline_model_parallel_size=2",), 3, ("world size 3", "model.pipeline_model_parallel_size=2")),
    (("model.pipeline_model_parallel_size=2", "model.micro_batch_size=8"), 2, ("1 micro-batches", "2 pipeline")),
])
def test_layouts_that_do_not_fit_are_refused_before_any_worker_starts(base, data, tmp_path, extra, nproc, needles):
    from click.testing import CliRunner

    from bignlp_train.cli import main

    result = CliRunner().invoke(main, ["prompt-learn", "--config", "gpt3/squad", "--nproc-per-node", str(nproc),
                                       *overrides(base, data, tmp_path / "run", *extra)])
    assert_one_line(result, 2, *needles)
    assert not (tmp_path / "run").exists()


def test_a_t5_base_is_refused_tensor_and_pipeline_parallelism(data, tmp_path):
    from click.testing import CliRunner

    from bignlp_train.cli import main

    t5 = make_base(tmp_path / "t5base", "t5")
    for key in ("tensor_model_parallel_size", "pipeline_model_parallel_size"):
        result = CliRunner().invoke(main, ["prompt-learn", "--config", "t5/squad", "--nproc-per-node", "2",
                                           *overrides(t5, data, tmp_path / "run", f"model.{key}=2")])
        assert_one_line(result, 2, f"model.{key}=2", "only a GPT base", "set model.tensor_model_parallel_size=1")
