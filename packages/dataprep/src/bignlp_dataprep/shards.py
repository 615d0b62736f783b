"""Work split for clusters: which items a ``(rank, world_size)`` shard owns, and what is done.

Every heavy step is a pure function of ``(rank, world_size)`` (as in datatrove):
a Slurm array task, a node of a multi-node job or one local process run the same
code on their share. Each finished item leaves a completion marker
``DATA_DIR/.bignlp-done/<step>/<item>.json``, written atomically after the
item's output is complete, so a re-run (a requeued task, a re-run after kill -9)
skips what is done and redoes only the item that was cut short.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from bignlp_contracts import ConfigError, atomic_write_text, slurm_job_record

T = TypeVar("T")
MARKERS_DIR = ".bignlp-done"


def parse_file_numbers(spec: str | int) -> tuple[int, ...]:
    """The seed's ``file_numbers`` syntax: ``"0-29"``, ``"0,3,5-7"`` → sorted unique numbers."""
    text = str(spec).strip()
    numbers: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ConfigError(
                f"file_numbers {text!r}: cannot parse {part.strip()!r}",
                hint='use numbers and ranges separated by commas, e.g. file_numbers="0,3,5-7"',
            )
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"file_numbers {text!r}: range {lo}-{hi} runs backwards", hint=f"write {hi}-{lo}")
        numbers.update(range(lo, hi + 1))
    return tuple(sorted(numbers))


def shard_of(items: Sequence[T], rank: int, world_size: int, *, sizes: Sequence[int] | None = None) -> list[T]:
    """The items ``rank`` of ``world_size`` owns, in input order.

    Without ``sizes``: round-robin by index (item ``i`` → rank ``i % world_size``).
    With ``sizes``: greedy byte balancing (largest first, to the least-loaded rank,
    ties to the lower rank), deterministic for the same inputs.
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..{world_size - 1} (world size {world_size})")
    if sizes is None:
        return [item for i, item in enumerate(items) if i % world_size == rank]
    if len(sizes) != len(items):
        raise ValueError("sizes and items differ in length")
    loads = [0] * world_size
    owner = [0] * len(items)
    for i in sorted(range(len(items)), key=lambda i: (-sizes[i], i)):
        r = min(range(world_size), key=lambda r: (loads[r], r))
        owner[i] = r
        loads[r] += sizes[i]
    return [item for i, item in enumerate(items) if owner[i] == rank]


def rank_from_env(environ: Mapping[str, str]) -> tuple[int, int]:
    """``(rank, world_size)`` of a Slurm array task (``--array=3-5`` → ranks 0..2 of 3), else ``(0, 1)``."""
    if "SLURM_ARRAY_TASK_ID" not in environ:
        return 0, 1
    try:
        task = int(environ["SLURM_ARRAY_TASK_ID"])
        first = int(environ.get("SLURM_ARRAY_TASK_MIN", "0"))
        count = int(environ.get("SLURM_ARRAY_TASK_COUNT") or int(environ["SLURM_ARRAY_TASK_MAX"]) - first + 1)
    except (KeyError, ValueError):
        raise ConfigError(
            "SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT/_MIN are missing or not integers",
            hint="pass --rank R --world-size W explicitly",
        ) from None
    rank = task - first
    if not 0 <= rank < count:
        raise ConfigError(
            f"array task {task} is outside {first}..{first + count - 1}: use a contiguous --array=0-{count - 1}",
            hint="or pass --rank R --world-size W explicitly",
        )
    return rank, count


def marker_path(data_dir: str | os.PathLike, step: str, item: str) -> Path:
    """``DATA_DIR/.bignlp-done/<step>/<item>.json``."""
    return Path(data_dir) / MARKERS_DIR / step / f"{item}.json"


def read_marker(data_dir: str | os.PathLike, step: str, item: str) -> dict[str, Any] | None:
    """The marker's content, or None if the item has not finished ``step`` (or its marker is unreadable)."""
    path = marker_path(data_dir, step, item)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def write_marker(data_dir: str | os.PathLike, step: str, item: str, content: Mapping[str, Any]) -> None:
    """Record that ``item`` finished ``step``; call only after its output is complete on disk.

    Under Slurm the marker also names the job (array task) that did the work (``slurm``).
    """
    record = {"step": step, "item": item, **content}
    job = slurm_job_record()
    if job is not None:
        record["slurm"] = job
    atomic_write_text(marker_path(data_dir, step, item), json.dumps(record, indent=2, sort_keys=True) + "\n")


def remove_stale_temporaries(path: Path) -> None:
    """Delete the ``.NAME.*.tmp`` files a killed writer of ``path`` left behind (only its owner calls this)."""
    if path.parent.is_dir():
        for tmp in path.parent.glob(f".{path.name}.*.tmp"):
            tmp.unlink(missing_ok=True)
