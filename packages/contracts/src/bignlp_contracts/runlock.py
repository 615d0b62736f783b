"""One writer per run directory: an exclusive lock, held for the run's life by one process.

Every command that writes a run directory (``bignlp-train pretrain`` today; fine-tuning and
prompt learning run through the same engine) calls ``lock_run_dir`` from one process (rank 0)
before it writes anything there, and keeps the lock until it is done. The lock is an
``fcntl.flock`` on ``RUN_DIR/run.lock``, which the kernel releases when its holder exits however
it dies (kill -9, OOM killer, a node's processes ended by Slurm). The file holds one JSON line
naming the holder (host, pid, Slurm job, start time, command), so a second run can say whose
directory it is:

- held: ``RunDirBusyError`` (exit 2) naming the holder;
- free but naming a holder: that run ended without releasing it (killed, or its node failed); the
  lock is taken over with one notice line;
- held by an earlier attempt of this very Slurm job (a requeue): on a shared filesystem a dead
  node's lock lives until its lease expires (NFSv4: 90 s), so the new attempt waits for it, up to
  ``requeue_wait_s``.

A normal exit empties the file and unlocks it; the file itself stays (deleting it would let two
processes lock two different files of the same name). On a filesystem without working ``flock``
(Lustre mounted without ``-o flock``, NFS without a lock manager) the record alone decides: a
holder on this host whose process is gone, or an earlier attempt of this Slurm job, is taken over;
anything else is treated as busy. One line says so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .errors import ConfigError

LOCK_NAME = "run.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_RECORD_WAIT_S = 2.0  # a holder writes its record right after locking: give it that long
_ORPHAN_WAIT_S = 30.0  # PyTorch's data loader workers notice a dead parent within 5 s


class RunDirBusyError(ConfigError):
    """Another run holds the run directory. Exit code 2 (a config error: choose another directory)."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds (or held) a run directory's lock."""

    host: str
    pid: int
    command: str
    started_at: str  # UTC, ISO 8601
    slurm_job_id: str | None = None
    slurm_restart_count: int | None = None

    def describe(self) -> str:
        """``bignlp-train pretrain (pid 123 on node7, Slurm job 45, since 2026-11-24T10:00:00+00:00)``."""
        job = f", Slurm job {self.slurm_job_id}" if self.slurm_job_id else ""
        return f"{self.command} (pid {self.pid} on {self.host}{job}, since {self.started_at})"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True) + "\n"

    @classmethod
    def from_text(cls, text: str) -> LockHolder | None:
        """The holder a lock file names; None for an empty (released) or unreadable one."""
        try:
            data = json.loads(text)
            return cls(host=str(data["host"]), pid=int(data["pid"]), command=str(data["command"]),
                       started_at=str(data["started_at"]), slurm_job_id=data.get("slurm_job_id"),
                       slurm_restart_count=data.get("slurm_restart_count"))
        except (ValueError, KeyError, TypeError):
            return None


def this_process(command: str, environ: Mapping[str, str] | None = None) -> LockHolder:
    """The record this process writes into a lock it takes."""
    env = os.environ if environ is None else environ
    restarts = env.get("SLURM_RESTART_COUNT", "")
    return LockHolder(
        host=socket.gethostname(), pid=os.getpid(), command=command,
        started_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        slurm_job_id=env.get("SLURM_JOB_ID") or env.get("SLURM_JOBID") or None,
        slurm_restart_count=int(restarts) if restarts.isdigit() else None,
    )


class RunLock:
    """A held run-directory lock; ``release()`` (or leaving the ``with`` block) gives it up."""

    def __init__(self, path: Path, fd: int | None, holder: LockHolder, previous: LockHolder | None) -> None:
        self.path = path
        self.holder = holder
        self.previous = previous  # the dead holder taken over, if any
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Empty the record, then unlock (an empty file means "free, and nobody died holding it")."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError:
            pass  # the flock still goes with the descriptor
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> str:
    # Read through the held descriptor: on NFS flock is a POSIX lock underneath, and closing any
    # other descriptor of the file would release it.
    chunks, offset = [], 0
    while chunk := os.pread(fd, 4096, offset):
        chunks.append(chunk)
        offset += len(chunk)
    return b"".join(chunks).decode("utf-8", errors="replace")


def _write(fd: int, holder: LockHolder) -> None:
    data = holder.to_json().encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)
    os.fsync(fd)


def _busy(run_dir: Path, holder: LockHolder | None, hint: str | None) -> RunDirBusyError:
    who = holder.describe() if holder else "another process (its lock record is not written yet)"
    return RunDirBusyError(f"run directory {run_dir} is in use by {who}",
                           hint=hint or "wait for that run to end or stop it, or write to another run directory")


def _holder_when_busy(fd: int) -> LockHolder | None:
    deadline = time.monotonic() + _RECORD_WAIT_S
    while (holder := LockHolder.from_text(_read(fd))) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return holder


def _same_job_attempt(holder: LockHolder | None, me: LockHolder) -> bool:
    """The holder is an earlier attempt of this Slurm job (requeued: SLURM_RESTART_COUNT differs)."""
    return (holder is not None and me.slurm_job_id is not None and holder.slurm_job_id == me.slurm_job_id
            and holder.slurm_restart_count != me.slurm_restart_count)


def _worth_waiting(run_dir: Path, holder: LockHolder | None, me: LockHolder,
                   requeue_wait_s: float) -> tuple[float, str] | None:
    """How long to wait for a held lock, and the line saying so; None: it is another live run's."""
    if holder is None:
        return None
    if _same_job_attempt(holder, me):
        return requeue_wait_s, (f"run directory {run_dir}: waiting up to {requeue_wait_s:.0f} s for the lock of the "
                                f"previous attempt of Slurm job {me.slurm_job_id} ({holder.describe()}) to expire")
    if holder.host == me.host and not _pid_alive(holder.pid):
        # the holder died but a process it forked (a data loader worker) shares the lock until it notices
        return _ORPHAN_WAIT_S, (f"run directory {run_dir}: its lock holder {holder.describe()} is gone; waiting up "
                                f"to {_ORPHAN_WAIT_S:.0f} s for the processes it started to exit")
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_run_dir(
    run_dir: str | os.PathLike,
    *,
    command: str,
    hint: str | None = None,
    log: Callable[[str], None] | None = None,
    requeue_wait_s: float = 120.0,
    environ: Mapping[str, str] | None = None,
) -> RunLock:
    """Take ``RUN_DIR/run.lock`` for this process (creating the directory); return the held lock.

    ``command`` names the holder in other runs' errors (``"bignlp-train pretrain"``). Raises
    ``RunDirBusyError`` when another run holds it; ``hint`` says how to get around that. ``log``
    gets the one-line notices (a dead holder taken over, waiting for an earlier attempt of this
    Slurm job, a filesystem without locks).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    me = this_process(command, environ)
    say = log or (lambda _line: None)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline, waiting = None, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _holder_when_busy(fd)
                wait = _worth_waiting(run_dir, holder, me, requeue_wait_s)
                if wait is None:
                    raise _busy(run_dir, holder, hint) from None
                limit_s, line = wait
                deadline = deadline or time.monotonic() + limit_s
                if time.monotonic() >= deadline:
                    raise _busy(run_dir, holder, hint) from None
                if not waiting:
                    say(line)
                    waiting = True
                time.sleep(0.5)
            except OSError as exc:
                if exc.errno not in _UNSUPPORTED:
                    raise
                return _record_only_lock(run_dir, path, fd, me, say, hint, exc)
        previous = LockHolder.from_text(_read(fd))
        if previous is not None:
            say(f"run directory {run_dir}: taking over the lock of {previous.describe()}, which ended without "
                "releasing it (killed, or its node failed)")
        _write(fd, me)
    except BaseException:
        os.close(fd)
        raise
    return RunLock(path, fd, me, previous)


def _record_only_lock(run_dir: Path, path: Path, fd: int, me: LockHolder, say: Callable[[str], None],
                      hint: str | None, exc: OSError) -> RunLock:
    """No flock on this filesystem: decide from the record (see the module docstring)."""
    previous = LockHolder.from_text(_read(fd))
    say(f"run directory {run_dir}: the filesystem refuses file locks ({exc.strerror or exc}); relying on "
        f"{LOCK_NAME}'s record alone")
    if previous is not None:
        dead_here = previous.host == me.host and not _pid_alive(previous.pid)
        if not (dead_here or _same_job_attempt(previous, me)):
            os.close(fd)
            raise _busy(run_dir, previous, (hint or "wait for that run to end or stop it")
                        + f"; if it is gone, delete {path}")
        say(f"run directory {run_dir}: taking over the lock of {previous.describe()}, which is gone")
    _write(fd, me)
    return RunLock(path, fd, me, previous)


def probe_run_lock(run_dir: str | os.PathLike, *, hint: str | None = None) -> None:
    """Raise ``RunDirBusyError`` if another run holds ``RUN_DIR/run.lock``; write nothing.

    For a launcher that starts the workers: one error line before any worker starts. The
    worker that takes the lock (``lock_run_dir``) still decides: another run may start between.
    """
    path = Path(run_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR)  # writable: on NFS an exclusive lock needs it (nothing is written)
    except (FileNotFoundError, PermissionError):
        return  # no lock yet, or not ours to probe: the worker decides
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(Path(run_dir), _holder_when_busy(fd), hint) from None
        except OSError as exc:
            if exc.errno not in _UNSUPPORTED:
                raise
            return  # the worker decides from the record
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def read_lock_holder(run_dir: str | os.PathLike) -> LockHolder | None:
    """The holder ``RUN_DIR/run.lock`` names (a live run, or one that died holding it); None if free."""
    try:
        return LockHolder.from_text((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None

