"""``run --local --nproc N``: N worker processes on this machine, each its own "node".

Each worker gets the variables torchrun would set on a free local port, and a node
name ``local<rank>``, so the pair tests and the report treat every process as a node.
If a worker dies, the others get a grace period to notice and are then terminated, so
none is left waiting in a collective.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence

NODE_NAME_ENV = "BIGNLP_CSP_VALIDATE_NODE_NAME"


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local_env(rank: int, nproc: int, port: int) -> dict[str, str]:
    """Worker ``rank``'s environment."""
    env = dict(os.environ)
    env.update(RANK=str(rank), WORLD_SIZE=str(nproc), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(nproc),
               MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **{NODE_NAME_ENV: f"local{rank}"})
    return env


def launch_local(worker_args: Sequence[str], nproc: int, *, grace_s: float = 30.0) -> int:
    """Run the workers; return rank 0's exit code (the verdict), or the first crash's."""
    port = free_port()
    cmd = [sys.executable, "-m", "bignlp_csp_validate", "worker", *worker_args]
    procs = [subprocess.Popen(cmd, env=local_env(rank, nproc, port)) for rank in range(nproc)]
    try:
        deadline = None
        while any(p.poll() is None for p in procs):
            crashed = [p for p in procs if p.poll() not in (None, 0)]
            if crashed and deadline is None:
                deadline = time.monotonic() + grace_s
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    codes = [p.returncode for p in procs]
    code = codes[0]
    if code in (0, 1) and any(c not in (0,) for c in codes[1:]):  # a non-zero worker besides the verdict
        code = next(c for c in codes[1:] if c != 0)
    return 128 - code if code < 0 else code
