"""The whole demo pipeline through slurm-templates/pipeline.sh on the real local Slurm cluster.

A dataprep array of 2 tasks (generic/custom_dataset over 2 small files cut from the demo corpus)
-> finalize -> gpt3/tiny-cpu training on 2 emulated nodes x 1 task (gloo between them), then
the same with shard 1 corrupt. Each emulated node has 1 CPU, so every stage asks for 1.
"""

from __future__ import annotations

import gzip
import json
import re
import sys
import time
from pathlib import Path

import pytest

from slurm_support import job_fields, sbatch, wait_gone
from support import DATA, REPO, run

PIPELINE = REPO / "slurm-templates" / "pipeline.sh"
TRAIN_OVERRIDES = (
    "trainer.max_steps=3 trainer.val_check_interval=3 trainer.limit_val_batches=1 trainer.log_every_n_steps=1 "
    "model.data.splits_string=90,10,0 trainer.limit_test_batches=0"
)


def _shards(tmp_path: Path, *, corrupt_second: bool = False) -> list[Path]:
    """Two JSONL files of 150 documents each; the second ends in a broken line if asked."""
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(300)]
    paths = [tmp_path / "raw" / "part-a.jsonl", tmp_path / "raw" / "part-b.jsonl"]
    paths[0].parent.mkdir()
    paths[0].write_text("".join(lines[:150]))
    paths[1].write_text("".join(lines[150:]) + ('{"text": "cut off here\n' if corrupt_second else ""))
    return paths


def _pipeline(slurm_env: dict[str, str], tmp_path: Path, shards: list[Path], **extra: str):
    env = {
        **slurm_env,
        "DATA_CONFIG": "generic/custom_dataset",
        "DATA_DIR": str(tmp_path / "data"),
        "NUM_SHARDS": "2",
        "DATA_OVERRIDES": f"raw_dataset_files=[{','.join(map(str, shards))}] "
        f"vocab_file={DATA / 'gpt2' / 'vocab.json'} merge_file={DATA / 'gpt2' / 'merges.txt'}",
        "TRAIN_CONFIG": "gpt3/tiny-cpu",
        "RESULTS_DIR": str(tmp_path / "run"),
        "TRAIN_NODES": "2",
        "TRAIN_OVERRIDES": TRAIN_OVERRIDES,
        "DATAPREP_CPUS": "1",  # the templates ask for 8 and 2; each emulated node has 1
        "TRAIN_CPUS": "1",
        "LOG_DIR": str(tmp_path / "logs"),
        "WATCH_POLL_S": "0.3",
        "BIGNLP_VENV": str(Path(sys.executable).parents[1]),
        **extra,
    }
    out = run(["bash", str(PIPELINE)], cwd=tmp_path, env=env, timeout=240)
    ids = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    return out, ids


@pytest.fixture(scope="module")
def demo_run(slurm_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory):
    """The successful demo pipeline, run once: (pipeline process, stage job ids, its directory)."""
    tmp_path = tmp_path_factory.mktemp("pipeline")
    out, ids = _pipeline(slurm_env, tmp_path, _shards(tmp_path))
    logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted((tmp_path / "logs").glob("*.out")))
    assert out.returncode == 0, f"{out.stderr}\n{logs}"
    return out, ids, tmp_path


def test_pipeline_dataprep_array_finalize_train_on_two_nodes(slurm_env: dict[str, str], demo_run):
    from bignlp_contracts import read_manifest

    out, ids, tmp_path = demo_run
    assert set(ids) == {"dataprep", "finalize", "train"}
    assert "all stages completed" in out.stderr

    # One share per array task.
    for task in (0, 1):
        log = (tmp_path / "logs" / f"bignlp-dataprep-{ids['dataprep']}_{task}.out").read_text()
        assert f"share {task} of 2: 1 file(s) 0{task}" in log, log
    dataset = read_manifest(tmp_path / "data", "megatron-dataset", verify="sha256")
    assert sorted(d["prefix"] for d in dataset.summary["datasets"]) == [
        "custom_00_text_document", "custom_01_text_document"]
    assert dataset.producer.slurm["job_id"] == ids["finalize"], dataset.producer
    # each input names the array task that preprocessed it
    tasks = {i["item"]: i["slurm"] for i in dataset.inputs}
    assert {t["array_job_id"] for t in tasks.values()} == {ids["dataprep"]}, tasks
    assert sorted(t["array_task_id"] for t in tasks.values()) == [0, 1], tasks
    assert all(t["job_id"].isdigit() and t["nodelist"] for t in tasks.values()), tasks

    # Training ran as 2 tasks on 2 nodes that met over gloo, and its checkpoint names the job.
    train = job_fields(slurm_env, ids["train"])
    assert (train["JobState"], train["NodeList"], train["NumTasks"]) == ("COMPLETED", "n[1-2]", "2"), train
    train_log = (tmp_path / "logs" / f"bignlp-train-{ids['train']}.out").read_text()
    assert "device cpu × 2 processes (DP 2" in train_log, train_log
    assert re.search(r"rendezvous 127\.0\.0\.1:\d+", train_log), train_log
    ckpt = tmp_path / "run" / "checkpoints" / "step-00000003"
    manifest = read_manifest(ckpt, "model-checkpoint", verify="sha256")
    assert manifest.producer.slurm == {"job_id": ids["train"], "array_job_id": None, "array_task_id": None,
                                       "nodelist": "n[1-2]"}
    assert manifest.inputs[0]["path"] == str((tmp_path / "data").resolve())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "train"] == [1, 2, 3]


def _wait_for(what: str, check, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.3)
    pytest.fail(f"timed out after {timeout_s} s waiting for {what}")


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_usr1_checkpoints_requeues_and_resumes(slurm_env: dict[str, str], demo_run, tmp_path: Path):
    from bignlp_contracts import read_manifest

    _, _, demo = demo_run
    run_dir, log = tmp_path / "run", tmp_path / "train.out"
    env = {**slurm_env, "CONFIG": "gpt3/tiny-cpu", "DATA_PREFIX": str(demo / "data"), "RESULTS_DIR": str(run_dir),
           "OVERRIDES": TRAIN_OVERRIDES.replace("max_steps=3", "max_steps=8").replace("interval=3", "interval=8"),
           "BIGNLP_VENV": str(Path(sys.executable).parents[1])}
    job = sbatch(env, ["--nodes=2", "--cpus-per-task=1", f"--job-name=requeue-{tmp_path.name}", f"--output={log}",
                       str(REPO / "slurm-templates" / "train.sbatch")], tmp_path)
    metrics = run_dir / "metrics.jsonl"
    _wait_for("training step 2", lambda: metrics.is_file() and '"step": 2' in metrics.read_text(), 120)
    # What --signal=USR1@120 does before the time limit: checkpoint, exit 75, scontrol requeue.
    assert run(["scancel", "--signal=USR1", job], env=slurm_env).returncode == 0
    _wait_for("the requeue", lambda: job_fields(slurm_env, job)["Restarts"] == "1", 60)
    # Slurm holds a requeued job for AuthInfo's cred_expire (10 s on the test cluster, 120 s by default)
    # before it starts it again: starting it sooner fails it with "Job credential revoked".
    wait_gone(slurm_env, job, timeout_s=120)
    fields = job_fields(slurm_env, job)
    text = log.read_text()
    assert (fields["JobState"], fields["Restarts"]) == ("COMPLETED", "1"), f"{fields}\n{text}"
    stopped = re.search(r"stopped by SIGUSR1 at step (\d+)/8; exiting with 75", text)
    assert stopped and f"retryable stop, requeueing job {job}" in text, text  # both attempts in one log
    step = int(stopped.group(1))
    assert f"resumed from {run_dir / 'checkpoints' / f'step-{step:08d}'} (step {step}," in text, text
    final = read_manifest(run_dir / "checkpoints" / "step-00000008", "model-checkpoint")
    assert final.producer.slurm["job_id"] == job


def test_pipeline_failed_array_task_cancels_dependents(slurm_env: dict[str, str], tmp_path: Path):
    # --kill-on-invalid-dep=no: Slurm would leave the dependents pending forever, so cancelling
    # them is the pipeline's own doing (the cluster's kill_invalid_depend is overridden per job).
    out, ids = _pipeline(slurm_env, tmp_path, _shards(tmp_path, corrupt_second=True),
                         SBATCH_ARGS="--kill-on-invalid-dep=no")
    assert out.returncode == 1, out.stderr
    stderr = out.stderr
    log = tmp_path / "logs" / f"bignlp-dataprep-{ids['dataprep']}_1.out"
    assert (f"pipeline.sh: stage dataprep failed: array task 1 (job {ids['dataprep']}_1) FAILED, exit code 4; "
            f"log: {log}") in stderr
    assert "part-b.jsonl:151: malformed JSON" in stderr  # the task's own one-line error, quoted
    for stage in ("finalize", "train"):
        assert f"dependent stage {stage} (job {ids[stage]}): 1 cancelled" in stderr
        fields = job_fields(slurm_env, ids[stage])
        assert (fields["JobState"], fields["RunTime"]) == ("CANCELLED", "00:00:00"), fields
    assert not (tmp_path / "data" / "manifest.json").exists()
    assert not (tmp_path / "run").exists()
    wait_gone(slurm_env, ids["dataprep"], timeout_s=60)  # task 0 was left to finish its good shard
    # No half-written dataset: the good shard is marked done, ready for a re-run after the fix.
    assert (tmp_path / "data" / ".bignlp-done" / "preprocess" / "00.json").is_file()
