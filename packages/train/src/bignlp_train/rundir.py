"""A run directory that defends itself: one writer, and a resume that loads only an intact checkpoint.

``hold_run_dir``: rank 0 takes the run directory's lock (``bignlp_contracts.lock_run_dir``)
before any rank writes there, and tells the others whether it got it, so a second run on a busy
directory ends on every rank at once (exit 2) instead of leaving ranks waiting in a collective.
It is called right after the process group forms, before anything is written; every task that
writes a run directory calls it (pretraining now; fine-tuning and prompt learning with the loop).

``choose_resume_checkpoint``: the candidates (``latest``, then older ones) are checked in turn,
every rank the same way: sizes and presence everywhere, the sha256 of its share of the files
(``exp_manager.verify_checkpoints``), the verdicts gathered so all ranks agree. A damaged
candidate is named in one line and moved to ``checkpoints/damaged/`` by rank 0; the newest intact
one is resumed and ``latest`` points at it again. When none is intact nothing is moved and the run
stops with one line listing what was tried (exit 3).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch.distributed as dist

from bignlp_contracts import (
    ArtifactError,
    RunDirBusyError,
    RunLock,
    checkpoint_problem,
    lock_run_dir,
    move_aside_checkpoint,
    read_checkpoint,
    resume_candidates,
    set_latest_checkpoint,
)
from bignlp_contracts.layout import CHECKPOINTS_DIR

COMMAND = "bignlp-train pretrain"
BUSY_HINT = ("wait for that run to end or stop it, or give this one another exp_manager.explicit_log_dir "
             "(or exp_manager.exp_dir/exp_manager.name)")
PROGRESS_MIN_BYTES = 1 << 30  # a rank hashing at least this much says how far it is
PROGRESS_EVERY_S = 10.0


def _distributed() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _from_rank0(value: Any) -> Any:
    if not _distributed():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _gather(value: Any) -> list[Any]:
    if not _distributed():
        return [value]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return out


def hold_run_dir(run_dir: Path, *, rank: int, log: Callable[[str], None], command: str = COMMAND) -> RunLock | None:
    """Rank 0 takes ``RUN_DIR/run.lock`` and keeps it (the returned lock; None on other ranks).

    Collective: every rank learns the outcome, and when another run holds the directory (or it cannot
    be locked at all: not writable) every rank raises ``RunDirBusyError`` (exit 2) saying so, before
    anything is written.
    """
    lock, failed = None, None
    if rank == 0:
        try:
            lock = lock_run_dir(run_dir, command=command, hint=BUSY_HINT, log=log)
        except RunDirBusyError as exc:
            failed = (exc.message, exc.hint)  # an exception with keyword arguments does not pickle whole
        except OSError as exc:  # not writable, not a directory, ...
            failed = (f"cannot lock run directory {run_dir} ({type(exc).__name__}: {exc.strerror or exc})",
                      "give a writable exp_manager.explicit_log_dir (or exp_manager.exp_dir)")
    failed = _from_rank0(failed)
    if failed is not None:
        raise RunDirBusyError(failed[0], hint=failed[1])
    return lock


def choose_resume_checkpoint(run_dir: Path, *, verify: bool, rank: int, world_size: int,
                             log: Callable[[str], None]) -> Path:
    """The newest intact checkpoint (see the module docstring); ``ArtifactError`` when none is.

    Collective: every rank calls it; ``log`` is rank 0's (the others pass a no-op).
    """
    tried: list[tuple[Path, str]] = []
    for candidate in resume_candidates(run_dir):
        problem, verified = _verdict(candidate, verify=verify, rank=rank, world_size=world_size, log=log)
        if problem is None:
            if tried and rank == 0:
                for damaged, why in tried:
                    aside = move_aside_checkpoint(damaged)
                    log(f"warning: checkpoint {damaged.name} is damaged ({why}); moved it to "
                        f"{aside.relative_to(run_dir)}, resuming from {candidate.name}")
                set_latest_checkpoint(run_dir, candidate)
            if verified:
                log(verified)
            _barrier()  # nobody reads checkpoints/ while rank 0 renames
            return candidate
        tried.append((candidate, problem))
    listed = "; ".join(f"{path.name}: {why}" for path, why in tried) or "none found"
    raise ArtifactError(
        f"{run_dir / CHECKPOINTS_DIR}: no intact checkpoint to resume from (tried {listed})",
        hint="restore a good copy, or move the damaged ones away to start afresh; "
             "exp_manager.verify_checkpoints=false skips the sha256 check for storage you trust",
    )


def _barrier() -> None:
    if _distributed():
        dist.barrier()


def _verdict(path: Path, *, verify: bool, rank: int, world_size: int,
             log: Callable[[str], None]) -> tuple[str | None, str | None]:
    """What is wrong with ``path`` as any rank saw it (the lowest rank's finding), the same on every rank;
    for an intact one, the line saying what was verified."""
    started = time.monotonic()
    progress = _Progress(path, world_size, log) if verify else None
    problem = checkpoint_problem(path, sha256=verify, share=(rank, world_size),
                                 on_progress=progress.update if progress else None)
    found = next((p for p in _gather(problem) if p is not None), None)
    if found is not None or not verify:
        return found, None
    _, manifest = read_checkpoint(path, verify="none")
    total = sum(int(meta.get("size") or 0) for meta in manifest.files.values())
    ranks = f" over {world_size} ranks" if world_size > 1 else ""
    return None, (f"checkpoint {path.name} verified: sha256 of {len(manifest.files)} files, {total / 1e6:,.1f} MB"
                  f"{ranks} in {time.monotonic() - started:.1f} s")


class _Progress:
    """Rank 0's share stands for the whole (the shares are balanced by bytes): a line every 10 s."""

    def __init__(self, path: Path, world_size: int, log: Callable[[str], None]) -> None:
        self.path, self.world_size, self.log = path, world_size, log
        self.started = self.last = time.monotonic()

    def update(self, done: int, total: int) -> None:
        now = time.monotonic()
        if total < PROGRESS_MIN_BYTES or now - self.last < PROGRESS_EVERY_S:
            return
        self.last = now
        rate = done / max(now - self.started, 1e-9)
        left = (total - done) / max(rate, 1.0)
        self.log(f"verifying checkpoint {self.path.name}: {100 * done / total:.0f}% of about "
                 f"{total * self.world_size / 1e9:,.1f} GB, {rate * self.world_size / 1e6:,.0f} MB/s, "
                 f"about {left:.0f} s left")
