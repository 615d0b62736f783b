"""Progress lines with a rate and an ETA while lm-eval's requests run."""

from __future__ import annotations

import time
from collections.abc import Callable

from bignlp_contracts import format_duration


class Progress:
    """Counts done items of one kind of request and logs ``what: done/total (pct), rate, ETA`` lines.

    A line at most every ``every_s`` seconds, and one when the last item is done; nothing when
    ``log`` is None.
    """

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, *, every_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what, self.total, self.log, self.every_s, self.clock = what, total, log, every_s, clock
        self.done = 0
        self.start = self.last = clock()

    def update(self, n: int) -> None:
        """``n`` more items done."""
        self.done += n
        now = self.clock()
        if self.log is None or (now - self.last < self.every_s and self.done < self.total):
            return
        self.last = now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        pct = 100.0 * self.done / self.total if self.total else 100.0
        tail = f"ETA {format_duration(left)}" if self.done < self.total else f"done in {format_duration(elapsed)}"
        self.log(f"{self.what}: {self.done}/{self.total} ({pct:.0f}%), {rate:.1f}/s, {tail}")
