"""``--nproc-per-node N``: run N local copies of a command as one job, and watch them.

Each worker gets the variables torchrun would set (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT on a free local port), so a stage's workers
(training, evaluation) join the same way under this launcher, torchrun or srun. If any worker exits
non-zero (or is killed), the others are terminated — SIGTERM, then SIGKILL after a
grace period — so a dead rank never leaves its peers waiting in a collective.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence

from .errors import RetryableError

FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
RETRYABLE = RetryableError.exit_code  # a rank that stopped early and checkpointed: not a crash


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def worker_env(rank: int, nproc: int, port: int, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of local worker ``rank`` of ``nproc``."""
    env = dict(os.environ if base is None else base)
    env.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc),
               GROUP_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    return env


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N: 128 + N, as a shell says


def _stop(procs: list[subprocess.Popen], grace_s: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch_local(argv: Sequence[str], nproc: int, *, grace_s: float = 10.0, poll_s: float = 0.1) -> int:
    """Run ``argv`` as ``nproc`` ranks of one job; return 0 if all succeed, else the first failure's code.

    Exit code 75 (stopped early after a checkpoint, e.g. at trainer.max_time) is not a failure:
    the other ranks get ``grace_s`` to finish too, then the job exits 75 for the requeue.

    SIGTERM/SIGUSR1/SIGINT sent to this process are passed on to every worker
    (Slurm preemption reaches the ranks that can checkpoint).
    """
    port = free_port()
    procs: list[subprocess.Popen] = []

    def forward(signum, _frame) -> None:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED_SIGNALS}
    try:
        procs.extend(subprocess.Popen(list(argv), env=worker_env(rank, nproc, port)) for rank in range(nproc))
        retry_deadline = None  # ranks stopping early (75) leave together; rank 0 may still be printing
        while True:
            codes = [p.poll() for p in procs]
            failed = [c for c in codes if c not in (None, 0, RETRYABLE)]
            if failed:
                _stop(procs, grace_s)
                return _exit_code(failed[0])
            if all(c is not None for c in codes):
                return RETRYABLE if RETRYABLE in codes else 0
            if RETRYABLE in codes:
                retry_deadline = retry_deadline or time.monotonic() + grace_s
                if time.monotonic() > retry_deadline:
                    _stop(procs, grace_s)
                    return RETRYABLE
            time.sleep(poll_s)
    finally:
        _stop(procs, grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
