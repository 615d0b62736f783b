"""Reading a checkpoint a layer at a time, with a progress line.

Converters never hold a model: they read one group of tensors (one transformer layer, or one other
tensor such as an embedding), rename/split/merge it, write it, and drop it. ``layer_groups`` makes
the groups from the family's layer stacks; ``Progress`` prints bytes done, speed and ETA.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from bignlp_models import CheckpointReader, FamilySpec


def mmap_large_buffers(threshold: int = 1 << 20) -> None:
    """Serve allocations of ``threshold`` bytes and up from their own mappings, returned to the OS when freed.

    glibc raises its mmap threshold after each large free (up to 32 MB), after which layer-sized
    buffers come from the heap, which fragments and does not shrink: a converter's resident memory
    then grows with every layer though it holds one at a time. Fixing the threshold (``mallopt``)
    keeps peak memory at the largest group. Elsewhere than glibc this does nothing.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-3, int(threshold))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


def layer_groups(names: Iterable[str], spec: FamilySpec) -> list[list[str]]:
    """``names`` in groups: every layer of every stack of ``spec`` one group, every other tensor its own.

    Groups keep the order in which their first name comes in ``names``.
    """
    pattern = re.compile(r"^(" + "|".join(re.escape(s) for s in spec.layer_stacks) + r")\.(\d+)\.")
    groups: dict[str, list[str]] = {}
    for name in names:
        m = pattern.match(name)
        groups.setdefault(m.group(0) if m else name, []).append(name)
    return list(groups.values())


def iter_groups(reader: CheckpointReader, *, dtype: torch.dtype | None = None,
                progress: Progress | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """The checkpoint's weights one group at a time (``layer_groups``), unpadded, cast to ``dtype`` if given."""
    for names in layer_groups(reader.shapes, reader.family):
        tensors = reader.read(names, dtype=dtype)
        yield tensors
        if progress is not None:
            progress.update(sum(t.numel() * t.element_size() for t in tensors.values()))


def nbytes(shapes: Mapping[str, tuple[torch.Size, torch.dtype]], dtype: torch.dtype | None = None) -> int:
    """Bytes of the tensors ``shapes`` describes (``CheckpointReader.shapes``), in ``dtype`` if given."""
    total = 0
    for shape, saved in shapes.values():
        total += shape.numel() * (dtype or saved).itemsize
    return total


class Progress:
    """``label: 1.2/4.8 GB (25%), 310 MB/s, ETA 0:00:12`` at most every ``every_s`` seconds, and a last line."""

    def __init__(self, label: str, total_bytes: int, *, log: Callable[[str], None] | None = None,
                 every_s: float = 2.0) -> None:
        self.label, self.total = label, max(int(total_bytes), 1)
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.every_s = every_s
        self.done = 0
        self.start = self._last = time.monotonic()

    def update(self, nbytes: int) -> None:
        self.done += int(nbytes)
        now = time.monotonic()
        if now - self._last >= self.every_s and self.done < self.total:
            self._last = now
            self.log(self.line(now))

    def line(self, now: float | None = None) -> str:
        elapsed = max((now or time.monotonic()) - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total
        return (f"{self.label}: {self.done / 1e9:.2f}/{self.total / 1e9:.2f} GB ({pct:.0f}%), "
                f"{rate / 1e6:.0f} MB/s, ETA {_clock(left)}")

    def finish(self) -> str:
        """The closing line (also logged): bytes, time, speed."""
        elapsed = max(time.monotonic() - self.start, 1e-9)
        line = f"{self.label}: {self.done / 1e9:.2f} GB in {elapsed:.1f} s ({self.done / elapsed / 1e6:.0f} MB/s)"
        self.log(line)
        return line


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"
