"""Checking an artifact's files against its manifest: sizes (cheap) and sha256 (the content), in parallel.

The manifest records the size and sha256 of every file (``write_manifest``). ``check_files`` compares
what is on disk: every size first (one ``stat`` each), then the sha256 of the files whose size is
right, several files at a time in threads (``hashlib`` and file reads release the GIL). In a
multi-process job each process checks its share: ``share_files`` splits the list by bytes the same
way in every process, and the caller combines the problems found (bignlp-train gathers them over
its process group, so every rank reaches the same verdict).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_CHUNK = 8 << 20
MAX_THREADS = 8  # more rarely helps: a node's ranks verify at the same time, each with its own


@dataclass(frozen=True)
class FileProblem:
    """One file that does not match the manifest: its path (relative to the artifact) and why."""

    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path} {self.reason}"


def default_num_threads() -> int:
    """Threads for hashing: the CPUs this process may run on, at most ``MAX_THREADS``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cpus))


def share_files(sizes: Mapping[str, int], num_shares: int, index: int) -> list[str]:
    """Share ``index`` of ``num_shares`` of the files (name → bytes), balanced by bytes.

    Largest file first, each to the share holding the fewest bytes so far (ties: the lower index):
    every process computes the same split from the same manifest, with no communication.
    """
    if not 0 <= index < num_shares:
        raise ValueError(f"share {index} of {num_shares}")
    loads = [0] * num_shares
    mine: list[str] = []
    for name in sorted(sizes, key=lambda n: (-int(sizes[n] or 0), n)):
        target = min(range(num_shares), key=lambda i: (loads[i], i))
        loads[target] += int(sizes[name] or 0)
        if target == index:
            mine.append(name)
    return sorted(mine)


def sha256_of(path: str | os.PathLike, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, read in 8 MiB chunks into one reused buffer; ``on_bytes(n)`` after each chunk."""
    digest = hashlib.sha256()
    view = memoryview(bytearray(_CHUNK))
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)  # a larger read-ahead window
        while n := f.readinto(view):
            digest.update(view[:n])
            if on_bytes is not None:
                on_bytes(n)
    return digest.hexdigest()


def check_files(
    root: str | os.PathLike,
    files: Mapping[str, Mapping[str, Any]],
    *,
    sha256: bool = True,
    num_threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[FileProblem]:
    """Compare files under ``root`` with their manifest entries (``{"size": ..., "sha256": ...}``).

    Returns the problems, sorted by path (empty: all match): a file missing, of another size
    (truncated or modified), or, with ``sha256``, of other content. ``on_progress(done, total)``
    is called (from the hashing threads, under a lock) with the bytes hashed so far.
    """
    root = Path(root)
    problems: list[FileProblem] = []
    to_hash: list[tuple[str, Path, int]] = []
    for rel, meta in files.items():
        path = root / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(FileProblem(rel, "is missing"))
            continue
        if not path.is_file():
            problems.append(FileProblem(rel, "is not a file"))
        elif size != meta.get("size"):
            problems.append(FileProblem(rel, f"is {size} bytes, the manifest says {meta.get('size')} "
                                             "(truncated or modified after it was written)"))
        elif sha256:
            to_hash.append((rel, path, size))
    if to_hash:
        problems += _hash_all(to_hash, files, num_threads or default_num_threads(), on_progress)
    return sorted(problems, key=lambda p: p.path)


def _hash_all(items: list[tuple[str, Path, int]], files: Mapping[str, Mapping[str, Any]], num_threads: int,
              on_progress: Callable[[int, int], None] | None) -> list[FileProblem]:
    total = sum(size for _, _, size in items)
    done = 0
    lock = threading.Lock()

    def count(n: int) -> None:
        nonlocal done
        with lock:
            done += n
            on_progress(done, total)

    def one(item: tuple[str, Path, int]) -> FileProblem | None:
        rel, path, _ = item
        try:
            got = sha256_of(path, count if on_progress is not None else None)
        except OSError as exc:
            return FileProblem(rel, f"cannot be read ({exc.strerror or exc})")
        if got != files[rel].get("sha256"):
            return FileProblem(rel, "does not match its sha256 in the manifest (corrupt)")
        return None

    items = sorted(items, key=lambda item: -item[2])  # the largest first: the threads finish together
    with ThreadPoolExecutor(max_workers=min(num_threads, len(items))) as pool:
        return [p for p in pool.map(one, items) if p is not None]
