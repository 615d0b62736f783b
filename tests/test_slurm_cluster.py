"""Jobs on a real local Slurm cluster (2 emulated nodes, tests/slurm/start-local-slurm.sh).

Needs root and either Slurm installed or apt-get to install it; otherwise every test here
skips with one line saying why. Jobs are polled with ``squeue -h -j ID`` every 0.2 s
(``sbatch --wait`` polls every 2 to 10 s; see ../shared/SLURM-NOTES.md).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support import DATA, REPO, run

SLURM_DIR = REPO / "tests" / "slurm"
NUM_NODES = 2
POLL_S = 0.2


def _ports_free(first: int, count: int) -> bool:
    for port in range(first, first + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_port_block(count: int) -> int:
    """A slurmctld port P such that P..P+count-1 are free, so parallel clusters never collide."""
    for _ in range(50):
        first = random.randrange(20000, 60000 - count)
        if _ports_free(first, count):
            return first
    raise RuntimeError(f"no block of {count} free ports found")


@pytest.fixture(scope="module")
def slurm_env() -> dict[str, str]:
    """Start a private 2-node cluster for this module; yield the client env; stop it by PID."""
    if os.geteuid() != 0:
        pytest.skip("local Slurm tests need root (the harness starts slurmctld/slurmd as root)")
    if not shutil.which("slurmctld") and not shutil.which("apt-get"):
        pytest.skip("Slurm is not installed and there is no apt-get to install it")
    # Not under pytest's tmp dirs: those are mode 700, and munged refuses a socket whose
    # ancestors are not executable by all ("Socket is inaccessible").
    state_dir = Path(tempfile.mkdtemp(prefix="bignlp-slurm-", dir="/tmp"))
    state_dir.chmod(0o755)
    port = _free_port_block(NUM_NODES + 1)
    env = {"LOCAL_SLURM_NODES": str(NUM_NODES), "LOCAL_SLURM_CPUS": "1", "LOCAL_SLURM_PORT": str(port)}
    started = time.monotonic()
    out = run(["bash", str(SLURM_DIR / "start-local-slurm.sh"), str(state_dir)], env=env, timeout=300)
    if out.returncode != 0:
        run(["bash", str(SLURM_DIR / "stop-local-slurm.sh"), str(state_dir)], timeout=120)
        shutil.rmtree(state_dir, ignore_errors=True)
        last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        if not shutil.which("slurmctld"):
            pytest.skip(f"Slurm could not be installed: {last}")
        pytest.fail(f"start-local-slurm.sh failed: {out.stderr[-3000:]}")
    print(f"local Slurm up in {time.monotonic() - started:.1f} s on port {port}")
    client_env = {}
    for line in out.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, value = line[len("export ") :].split("=", 1)
            client_env[key] = value
    assert "SLURM_CONF" in client_env, out.stdout
    try:
        yield client_env
    finally:
        stop = run(["bash", str(SLURM_DIR / "stop-local-slurm.sh"), str(state_dir)], timeout=120)
        assert stop.returncode == 0, stop.stderr
        shutil.rmtree(state_dir, ignore_errors=True)


def _sbatch(env: dict[str, str], args: list[str], cwd: Path) -> str:
    out = run(["sbatch", "--parsable", *args], cwd=cwd, env=env, timeout=30)
    assert out.returncode == 0, f"sbatch {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def _wait_gone(env: dict[str, str], job_id: str, timeout_s: float = 30) -> None:
    """Poll squeue until the job (every task of an array) has left the queue."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], env=env, timeout=10)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} still in the queue after {timeout_s} s: {out.stdout}{out.stderr}")


def _job_fields(env: dict[str, str], job_id: str) -> dict[str, str]:
    """JobState, ExitCode, Reason, ... from ``scontrol show job`` (MinJobAge keeps finished jobs)."""
    out = run(["scontrol", "-o", "show", "job", job_id], env=env, timeout=10)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    return dict(item.split("=", 1) for item in first.split() if "=" in item)


def test_wrap_hostname_completes(slurm_env: dict[str, str], tmp_path: Path):
    job = _sbatch(slurm_env, ["-o", str(tmp_path / "out-%j.txt"), "--wrap", "hostname"], tmp_path)
    _wait_gone(slurm_env, job)
    fields = _job_fields(slurm_env, job)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), fields
    assert (tmp_path / f"out-{job}.txt").read_text().strip() == socket.gethostname().split(".")[0]


def test_array_tasks_see_their_index(slurm_env: dict[str, str], tmp_path: Path):
    job = _sbatch(
        slurm_env,
        ["--array=0-1", "-o", str(tmp_path / "task-%a.txt"), "--wrap", 'echo "$SLURM_ARRAY_TASK_ID"'],
        tmp_path,
    )
    _wait_gone(slurm_env, job)
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
    job = _sbatch(env, ["--cpus-per-task=1", "-o", str(tmp_path / "dataprep-%j.out"), str(template)], tmp_path)
    _wait_gone(slurm_env, job, timeout_s=60)
    fields = _job_fields(slurm_env, job)
    log = (tmp_path / f"dataprep-{job}.out").read_text()
    assert fields["JobState"] == "COMPLETED", f"{fields['JobState']} {fields['ExitCode']}\n{log}"
    read_manifest(out_dir, "megatron-dataset")


def test_failed_parent_cancels_afterok_child(slurm_env: dict[str, str], tmp_path: Path):
    parent = _sbatch(slurm_env, ["-o", "/dev/null", "--wrap", "exit 3"], tmp_path)
    child = _sbatch(slurm_env, ["-o", "/dev/null", f"--dependency=afterok:{parent}", "--wrap", "true"], tmp_path)
    _wait_gone(slurm_env, child)
    assert _job_fields(slurm_env, parent)["JobState"] == "FAILED"
    child_fields = _job_fields(slurm_env, child)
    assert child_fields["JobState"] == "CANCELLED", child_fields
    assert child_fields["RunTime"] == "00:00:00", "the child must never have run"
