"""Timing one collective on one process group, the way nccl-tests does: warm-up calls, then
``iters`` back-to-back calls timed together; the group's time is the slowest rank's average.

The device and backend are chosen at run time (``pick_backend``): NCCL on CUDA GPUs,
gloo on CPUs. A test-only delay (``delay_s``) makes this rank sleep before each call,
standing in for a slow node so the report can be shown to name it.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.distributed as dist

from bignlp_contracts import ConfigError

from .busbw import ELEMENT_BYTES, algbw_gbps, busbw_gbps, operation_bytes

# torch 2.13 renamed the single-tensor forms (the old names warn); older torch has only the old ones.
_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


@dataclass(frozen=True)
class Measurement:
    """One collective at one size on ``num_ranks`` ranks (nccl-tests' columns)."""

    op: str
    size_bytes: int
    count: int
    num_ranks: int
    time_us: float
    algbw_gbps: float
    busbw_gbps: float

    def to_dict(self) -> dict:
        return asdict(self)


def pick_backend(requested: str = "auto") -> tuple[str, torch.device]:
    """``auto``: NCCL with this rank's GPU when CUDA is usable, else gloo on the CPU."""
    if requested == "auto":
        requested = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    if requested == "nccl":
        if not torch.cuda.is_available():
            raise ConfigError("--backend nccl needs CUDA GPUs, and this node has none visible",
                              hint="use --backend gloo (or auto) on CPU nodes")
        return "nccl", torch.device("cuda")
    return "gloo", torch.device("cpu")


class Buffers:
    """Send/receive tensors for one op and size, allocated once and reused by every call."""

    def __init__(self, op: str, size_bytes: int, num_ranks: int, device: torch.device) -> None:
        self.op = op
        self.total = size_bytes // ELEMENT_BYTES
        chunk = self.total // num_ranks
        make = lambda n: torch.ones(n, dtype=torch.float32, device=device)
        if op == "all_gather":  # S = gathered output
            self.send, self.recv = make(chunk), make(self.total)
        elif op == "reduce_scatter":  # S = input
            self.send, self.recv = make(self.total), make(chunk)
        else:
            self.send, self.recv = make(self.total), None

    def call(self, group, src: int) -> None:
        if self.op == "all_reduce":
            dist.all_reduce(self.send, group=group)
        elif self.op == "all_gather":
            _ALL_GATHER(self.recv, self.send, group=group)
        elif self.op == "reduce_scatter":
            _REDUCE_SCATTER(self.recv, self.send, group=group)
        elif self.op == "broadcast":
            dist.broadcast(self.send, src=src, group=group)
        else:
            raise ValueError(f"unknown collective {self.op!r}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    op: str,
    size_bytes: int,
    *,
    group=None,
    ranks: list[int],
    device: torch.device,
    warmup: int,
    iters: int,
    delay_s: float = 0.0,
    with_waits: bool = False,
) -> tuple[Measurement, list[float] | None]:
    """Time ``op`` on ``group`` (global ranks ``ranks``); every member must call it with the same arguments.

    With ``with_waits`` also returns every rank's average time *inside* the call, in
    ``ranks`` order (microseconds): a rank that arrives late finds its peers already
    waiting and spends little time inside, so the shortest wait points at a straggler.
    On GPUs it is the collective kernel's time (CUDA events), on CPUs the blocking call's.
    """
    n = len(ranks)
    size = operation_bytes(size_bytes, n)
    buffers = Buffers(op, size, n, device)
    src = ranks[0]
    for _ in range(warmup):
        buffers.call(group, src)
    _sync(device)
    dist.barrier(group=group)
    # CUDA events only when the waits are asked for: the sweep's timed loop records none.
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(iters)] if with_waits and device.type == "cuda" else []
    inside = 0.0
    start = time.perf_counter()
    for i in range(iters):
        if delay_s:
            time.sleep(delay_s)
        if events:
            events[i][0].record()
            buffers.call(group, src)
            events[i][1].record()
        else:
            t0 = time.perf_counter()
            buffers.call(group, src)
            inside += time.perf_counter() - t0
    _sync(device)
    elapsed = torch.tensor([(time.perf_counter() - start) / iters], dtype=torch.float64, device=device)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX, group=group)
    t = float(elapsed.item())
    waits = None
    if with_waits:
        if events:
            inside = sum(b.elapsed_time(e) for b, e in events) / 1000  # ms -> s
        mine = torch.tensor([inside / iters * 1e6], dtype=torch.float64, device=device)
        found = [torch.zeros_like(mine) for _ in range(n)]
        dist.all_gather(found, mine, group=group)
        waits = [float(x.item()) for x in found]
    measurement = Measurement(
        op=op,
        size_bytes=size,
        count=size // ELEMENT_BYTES,
        num_ranks=n,
        time_us=t * 1e6,
        algbw_gbps=algbw_gbps(size, t),
        busbw_gbps=busbw_gbps(op, size, t, n),
    )
    return measurement, waits
