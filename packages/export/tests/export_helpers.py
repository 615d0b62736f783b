"""`bignlp-export serve` as a subprocess on free 127.0.0.1 ports, every wait bounded, stopped by its PID."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    http: str
    grpc: str
    metrics: str
    process: subprocess.Popen
    log: Path


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def served(repo: Path, workdir: Path):
    ports = [free_port() for _ in range(3)]
    log = workdir / "tritonserver.log"
    out = open(workdir / "serve.out", "w+")  # noqa: SIM115 (open for the whole life of the server)
    proc = subprocess.Popen([sys.executable, "-m", "bignlp_export", "serve", "--repository", str(repo),
                             "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                             "--metrics-port", str(ports[2]), "--log-file", str(log),
                             "--ready-timeout", str(READY_TIMEOUT_S)],
                            stdout=out, stderr=subprocess.STDOUT, text=True)
    server = Served(f"127.0.0.1:{ports[0]}", f"127.0.0.1:{ports[1]}", f"127.0.0.1:{ports[2]}", proc, log)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S + 10
        while not (_ready(server.http) and "metrics" in (workdir / "serve.out").read_text()):
            if proc.poll() is not None or time.monotonic() > deadline:
                out.seek(0)
                raise RuntimeError(f"bignlp-export serve did not come up: {out.read()[-2000:]}")
            time.sleep(0.5)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # this one process, by its PID: serve stops its server's group
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        out.close()
    # serve's own exit after SIGTERM: 0 once tritonserver (its whole process group) is gone
    if proc.returncode != 0 or _ready(server.http):
        raise AssertionError(f"serve exited {proc.returncode} after SIGTERM, server still up: {_ready(server.http)}; "
                             f"{(workdir / 'serve.out').read_text()[-1000:]}")
