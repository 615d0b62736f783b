"""Message sizes and the bandwidth figures nccl-tests reports (its doc/PERFORMANCE.md).

* ``algbw = S / t``: the size of the operation over its time.
* ``busbw = algbw * factor(op, n)``: a figure that does not depend on the number of
  ranks ``n`` and can be compared with the hardware's link speed:
  all_reduce ``2(n-1)/n``; all_gather and reduce_scatter ``(n-1)/n``; broadcast ``1``.

Size convention (nccl-tests'): for all_reduce and broadcast ``S`` is the buffer each
rank holds; for all_gather ``S`` is the gathered output (each rank sends ``S/n``);
for reduce_scatter ``S`` is the input (each rank keeps ``S/n``). GB means 1e9 bytes.
"""

from __future__ import annotations

from bignlp_contracts import ConfigError

COLLECTIVES = ("all_reduce", "all_gather", "reduce_scatter", "broadcast")
ELEMENT_BYTES = 4  # float32, as nccl-tests' default data type

KB = 1024
MB = 1024 * KB
GB = 1024 * MB


def check_collective(op: str) -> None:
    """One-line ConfigError unless ``op`` is one of :data:`COLLECTIVES`."""
    if op not in COLLECTIVES:
        raise ConfigError(f"unknown collective {op!r}; known: {', '.join(COLLECTIVES)}")


def bus_factor(op: str, num_ranks: int) -> float:
    """The busbw/algbw ratio of ``op`` on ``num_ranks`` ranks."""
    check_collective(op)
    n = num_ranks
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter"):
        return (n - 1) / n
    return 1.0  # broadcast


def algbw_gbps(size_bytes: int, time_s: float) -> float:
    """Algorithm bandwidth in GB/s (1e9 bytes per second)."""
    return size_bytes / time_s / 1e9


def busbw_gbps(op: str, size_bytes: int, time_s: float, num_ranks: int) -> float:
    """Bus bandwidth in GB/s as nccl-tests reports it."""
    return algbw_gbps(size_bytes, time_s) * bus_factor(op, num_ranks)


def operation_bytes(size_bytes: int, num_ranks: int) -> int:
    """Round a requested size down to a whole number of float32 elements per rank (at least one each).

    all_gather and reduce_scatter split ``S`` into ``n`` equal chunks, so every
    collective uses a size that is a multiple of ``n * 4`` bytes (nccl-tests rounds the same way).
    """
    unit = ELEMENT_BYTES * num_ranks
    return max(unit, size_bytes // unit * unit)


def message_sizes(min_bytes: int, max_bytes: int, factor: int = 2) -> list[int]:
    """``min_bytes, min*factor, ...`` up to ``max_bytes`` (always included), like nccl-tests' ``-b/-e/-f``."""
    if min_bytes <= 0 or max_bytes < min_bytes:
        raise ConfigError(f"message sizes need 0 < --min-bytes <= --max-bytes, got {min_bytes} and {max_bytes}")
    sizes, size = [], min_bytes
    while size < max_bytes:
        sizes.append(size)
        size *= factor
    sizes.append(max_bytes)
    return sizes


def parse_size(text: str) -> int:
    """``1K``, ``4M``, ``1G``, ``512`` (binary units, as nccl-tests' -b/-e) → bytes."""
    raw = text.strip().upper().removesuffix("B")
    mult = {"K": KB, "M": MB, "G": GB}.get(raw[-1:], 1)
    digits = raw[:-1] if raw[-1:] in "KMG" and raw[-1:] else raw
    try:
        value = int(digits) * mult
    except ValueError:
        raise ConfigError(f"cannot read size {text!r}; use bytes or a K/M/G suffix, e.g. 1K, 4M, 1G") from None
    if value <= 0:
        raise ConfigError(f"size {text!r} must be positive")
    return value


def human_size(num_bytes: int) -> str:
    """1024 → ``1K``, 3 MiB → ``3M``; odd sizes stay in bytes."""
    for unit, name in ((GB, "G"), (MB, "M"), (KB, "K")):
        if num_bytes >= unit and num_bytes % unit == 0:
            return f"{num_bytes // unit}{name}"
    return str(num_bytes)
