"""Find a ``tritonserver``, give its Python stub our environment, start it on 127.0.0.1, wait, stop it.

The server is the user's (``--tritonserver PATH``) or the one the ``nvidia-pytriton==0.7.0`` wheel
ships, installed in its own venv (``make triton-env`` → ``.venv-triton``: the wheel pins numpy < 2,
which the stub also needs to decode BYTES tensors). That venv holds torch and our libraries, and
its ``bin`` goes first on the server's PATH: the Python stub runs the models with the first
``python3`` there (it ignores PYTHONPATH). The wheel's backend directory lacks the stub binary
itself; ``find_triton`` copies the one for the venv's Python version into place, once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import ConfigError, InputError

ENV_VAR = "BIGNLP_TRITON_ENV"
SOURCE_ROOT = Path(__file__).resolve().parents[4]  # the repository root of an editable install


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and what it needs to run our Python-backend models."""

    binary: Path
    backend_dir: Path
    python_env: Path | None  # a venv whose bin/ goes first on PATH (the stub's interpreter)
    library_dirs: tuple[Path, ...] = ()


def _default_envs() -> list[Path]:
    found = [Path(os.environ[ENV_VAR])] if os.environ.get(ENV_VAR) else []
    return found + [Path.cwd() / ".venv-triton", SOURCE_ROOT / ".venv-triton"]


def find_triton(tritonserver: str | Path | None = None, triton_env: str | Path | None = None) -> TritonInstall:
    """The server to run: ``tritonserver`` if given (its ``../backends``), else the pytriton wheel's in the
    Triton venv (``triton_env``, $BIGNLP_TRITON_ENV, ./.venv-triton, or the source tree's .venv-triton).

    Raises ConfigError, one line saying how to get one, when there is none.
    """
    envs = [Path(triton_env)] if triton_env else _default_envs()
    env = next((e for e in envs if (e / "bin" / "python").exists()), None)
    if triton_env and env is None:
        raise ConfigError(f"--triton-env {triton_env}: not a virtual environment (no bin/python)",
                          hint="create it with: make triton-env")
    if tritonserver:
        binary = Path(tritonserver)
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            raise ConfigError(f"--tritonserver {binary}: not an executable file")
        backends = binary.resolve().parent.parent / "backends"
        return TritonInstall(binary=binary, backend_dir=backends, python_env=env,
                             library_dirs=_python_libdir(env) if env is not None else ())
    root = None
    if env is not None:
        root = next(iter(sorted(env.glob("lib/python3*/site-packages/pytriton/tritonserver"))), None)
    if root is None or not (root / "bin" / "tritonserver").exists():
        where = ", ".join(str(e) for e in envs)
        raise ConfigError(f"no tritonserver found (looked for nvidia-pytriton's in {where})",
                          hint="run `make triton-env`, or give --tritonserver PATH")
    _install_stub(root, env)
    return TritonInstall(binary=root / "bin" / "tritonserver", backend_dir=root / "backends", python_env=env,
                         library_dirs=(*_python_libdir(env), root.parent.parent / "nvidia_pytriton.libs"))


def _python_libdir(env: Path) -> tuple[Path, ...]:
    """The venv's own libpython directory: the stub links libpython3.X.so, and one from another build of the
    same version (the system's) fails on the venv's extension modules (undefined symbols)."""
    try:
        out = subprocess.run([str(env / "bin" / "python"), "-c",
                              "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
                             capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ()
    return (Path(out),) if out and any(Path(out).glob("libpython3*.so*")) else ()


def _install_stub(root: Path, env: Path) -> None:
    """Copy the Python stub for the venv's Python into backends/python (the wheel keeps them aside)."""
    target = root / "backends" / "python" / "triton_python_backend_stub"
    if target.exists():
        return
    version = root.parents[2].name.removeprefix("python")  # lib/python3.11/site-packages/pytriton/tritonserver
    source = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not source.exists():
        raise ConfigError(f"{source}: no Python backend stub for Python {version} in nvidia-pytriton",
                          hint="make the Triton venv with Python 3.8-3.13: make triton-env")
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copy2(source, partial)
    os.replace(partial, target)


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


class TritonServer:
    """One running ``tritonserver`` (its own process group), started by ``start``."""

    def __init__(self, install: TritonInstall, repository: str | Path, *, host: str = "127.0.0.1",
                 ports: Ports | None = None, log_file: str | Path | None = None, exit_timeout_s: int = 5,
                 extra_args: tuple[str, ...] = ()):
        self.install, self.repository = install, Path(repository)
        self.host, self.ports = host, ports or Ports()
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = extra_args
        # how long the server waits on open client connections and in-flight requests when told to stop
        self.exit_timeout_s = exit_timeout_s
        self.process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.ports.http}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.ports.metrics}/metrics"

    def command(self) -> list[str]:
        p = self.ports
        return [str(self.install.binary), "--model-repository", str(self.repository.resolve()),
                "--backend-directory", str(self.install.backend_dir),
                "--http-address", self.host, "--http-port", str(p.http),
                "--grpc-address", self.host, "--grpc-port", str(p.grpc),
                "--metrics-address", self.host, "--metrics-port", str(p.metrics),
                "--allow-cpu-metrics", "true", "--exit-timeout-secs", str(self.exit_timeout_s), *self.extra_args]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.install.python_env is not None:
            venv = self.install.python_env.resolve()
            env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
            env["VIRTUAL_ENV"] = str(venv)
        libs = [str(d) for d in self.install.library_dirs]
        if libs:
            env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [env.get("LD_LIBRARY_PATH", "")]).rstrip(os.pathsep)
        env.pop("PYTHONPATH", None)
        return env

    def start(self) -> None:
        """Start the server in a new process group; its output goes to ``log_file``."""
        if self.log_file is None:
            self.log_file = Path(os.environ.get("TMPDIR", "/tmp")) / f"tritonserver-{os.getpid()}-{self.ports.http}.log"
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                            env=self.environment(), start_new_session=True)

    def wait_ready(self, timeout_s: float = 300.0) -> float:
        """Seconds until ``/v2/health/ready``; InputError with the log's last error when it dies or times out."""
        start = time.monotonic()
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() - start < timeout_s:
            if self.process is None or self.process.poll() is not None:
                raise InputError(f"tritonserver exited with status {self.process.returncode if self.process else '?'} "
                                 f"before it was ready: {self.last_error()} (log: {self.log_file})")
            try:
                with urllib.request.urlopen(url, timeout=2) as reply:
                    if reply.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            time.sleep(0.25)
        self.stop()
        raise InputError(f"tritonserver not ready after {timeout_s:.0f} s: {self.last_error()} (log: {self.log_file})")

    def last_error(self) -> str:
        """The log's last line that reports an error (else its last line)."""
        try:
            lines = [ln.strip() for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        except (OSError, AttributeError):
            return "no log"
        errors = [ln for ln in lines if ln.startswith("E") or "error" in ln.lower()]
        return (errors or lines or ["empty log"])[-1][:600]

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM to the server's process group (its stubs too), SIGKILL after ``timeout_s`` (default: the exit
        timeout + 20 s); its exit status."""
        proc = self.process
        timeout_s = self.exit_timeout_s + 20.0 if timeout_s is None else timeout_s
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        try:  # stubs left behind in the group
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return proc.returncode
