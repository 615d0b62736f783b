"""A private local Slurm cluster for tests (tests/slurm/start-local-slurm.sh) and job helpers.

Needs root and either Slurm installed or apt-get to install it; otherwise the fixture skips
with one line saying why. Jobs are polled with ``squeue -h -j ID`` every 0.2 s
(``sbatch --wait`` polls every 2 to 10 s; see ../shared/SLURM-NOTES.md).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

from support import REPO, run

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


def local_slurm_cluster():
    """Start a private 2-node cluster; yield the client env; stop it by PID (a generator for fixtures)."""
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


def sbatch(env: dict[str, str], args: list[str], cwd: Path) -> str:
    out = run(["sbatch", "--parsable", *args], cwd=cwd, env=env, timeout=30)
    assert out.returncode == 0, f"sbatch {' '.join(args)} failed: {out.stderr}"
    return out.stdout.strip().split(";")[0]


def wait_gone(env: dict[str, str], job_id: str, timeout_s: float = 30) -> None:
    """Poll squeue until the job (every task of an array) has left the queue."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = run(["squeue", "-h", "-j", job_id, "-o", "%i %T"], env=env, timeout=10)
        if out.returncode == 0 and not out.stdout.strip():
            return
        time.sleep(POLL_S)
    pytest.fail(f"job {job_id} still in the queue after {timeout_s} s: {out.stdout}{out.stderr}")


def job_fields(env: dict[str, str], job_id: str) -> dict[str, str]:
    """JobState, ExitCode, Reason, ... from ``scontrol show job`` (MinJobAge keeps finished jobs)."""
    out = run(["scontrol", "-o", "show", "job", job_id], env=env, timeout=10)
    assert out.returncode == 0, out.stderr
    first = out.stdout.splitlines()[0]
    return dict(item.split("=", 1) for item in first.split() if "=" in item)
