"""Jobs on the real local Slurm cluster (2 emulated nodes; fixture ``slurm_env`` in conftest.py)."""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from slurm_support import job_fields, sbatch, wait_gone
from support import DATA, REPO


def test_wrap_hostname_completes(slurm_env: dict[str, str], tmp_path: Path):
    job = sbatch(slurm_env, ["-o", str(tmp_path / "out-%j.txt"), "--wrap", "hostname"], tmp_path)
    wait_gone(slurm_env, job)
    fields = job_fields(slurm_env, job)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), fields
    assert (tmp_path / f"out-{job}.txt").read_text().strip() == socket.gethostname().split(".")[0]


def test_array_tasks_see_their_index(slurm_env: dict[str, str], tmp_path: Path):
    job = sbatch(
        slurm_env,
        ["--array=0-1", "-o", str(tmp_path / "task-%a.txt"), "--wrap", 'echo "$SLURM_ARRAY_TASK_ID"'],
        tmp_path,
    )
    wait_gone(slurm_env, job)
    for index in (0, 1):
        assert (tmp_path / f"task-{index}.txt").read_text().strip() == str(index)


def test_dataprep_template_produces_dataset(slurm_env: dict[str, str], tmp_path: Path):
    from bignlp_contracts import read_manifest

    out_dir = tmp_path / "dataset"
    env = {
        **slurm_env,
        "INPUT": str(DATA / "corpus" / "demo-en.jsonl.gz"),
        "OUTPUT_PREFIX": str(out_dir / "demo"),
        "VOCAB_FILE": str(DATA / "gpt2" / "vocab.json"),
        "MERGES_FILE": str(DATA / "gpt2" / "merges.txt"),
        "BIGNLP_VENV": str(Path(sys.executable).parents[1]),
    }
    # The template asks for 8 CPUs; each emulated node has 1, and command-line options win.
    template = REPO / "slurm-templates" / "dataprep.sbatch"
    job = sbatch(env, ["--cpus-per-task=1", "-o", str(tmp_path / "dataprep-%j.out"), str(template)], tmp_path)
    wait_gone(slurm_env, job, timeout_s=60)
    fields = job_fields(slurm_env, job)
    log = (tmp_path / f"dataprep-{job}.out").read_text()
    assert fields["JobState"] == "COMPLETED", f"{fields['JobState']} {fields['ExitCode']}\n{log}"
    manifest = read_manifest(out_dir, "megatron-dataset")
    # The manifest names the Slurm job that wrote it (the real id, and the node it ran on).
    assert manifest.producer.slurm == {"job_id": job, "array_job_id": None, "array_task_id": None,
                                       "nodelist": fields["NodeList"]}, manifest.producer


def test_failed_parent_cancels_afterok_child(slurm_env: dict[str, str], tmp_path: Path):
    parent = sbatch(slurm_env, ["-o", "/dev/null", "--wrap", "exit 3"], tmp_path)
    child = sbatch(slurm_env, ["-o", "/dev/null", f"--dependency=afterok:{parent}", "--wrap", "true"], tmp_path)
    wait_gone(slurm_env, child)
    assert job_fields(slurm_env, parent)["JobState"] == "FAILED"
    child_fields = job_fields(slurm_env, child)
    assert child_fields["JobState"] == "CANCELLED", child_fields
    assert child_fields["RunTime"] == "00:00:00", "the child must never have run"


def test_singleton_with_afterok_waits_for_the_same_name(slurm_env: dict[str, str], tmp_path: Path):
    # pipeline.sh submits training with --dependency=afterok:FINALIZE,singleton: both must hold.
    parent = sbatch(slurm_env, ["-o", "/dev/null", "--wrap", "true"], tmp_path)
    name = f"single-{tmp_path.name}"
    first = sbatch(slurm_env, ["-o", "/dev/null", f"--job-name={name}", "--wrap", "sleep 3"], tmp_path)
    second = sbatch(slurm_env, ["-o", "/dev/null", f"--job-name={name}", f"--dependency=afterok:{parent},singleton",
                                "--wrap", "true"], tmp_path)
    wait_gone(slurm_env, second)
    a, b = job_fields(slurm_env, first), job_fields(slurm_env, second)
    assert (a["JobState"], b["JobState"]) == ("COMPLETED", "COMPLETED"), (a, b)
    assert b["StartTime"] >= a["EndTime"], (a["EndTime"], b["StartTime"])
