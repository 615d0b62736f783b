"""Per-rank memory of one training step, as ``memory`` records in ``metrics.jsonl``.

On the optimizer step ``trainer.memory_step`` (default 2: the first with AdamW's state already
made; 0: never) every rank counts what it holds and rank 0 writes one record per rank:

- ``memory/params_bytes``: the parameters this rank holds (its FSDP/TP/pipeline shards; local
  tensors, unique storages);
- ``memory/grads_bytes``: the most gradient bytes held at once: the gradients the update reads,
  or, accumulating over micro-batches under FSDP without a reduce-scatter (no_sync), the
  unsharded gradients seen when a micro-batch starts;
- ``memory/optimizer_bytes``: AdamW's state after the update (moments and step counts);
- ``memory/activations_peak_bytes``: the most bytes saved for backward alive at once during the
  step's forwards and backwards (``saved_tensors_hooks``; unique storages, parameters and
  FSDP's gathered copies of them left out; a recomputed module's kept inputs counted, the
  activations it recomputes in backward are not seen);
- ``memory/total_peak_bytes``: the four summed (each part's peak, so an upper bound);
- ``memory/cuda_peak_allocated_bytes``: ``torch.cuda.max_memory_allocated`` over the step, on GPUs.

This is the accounting ``bignlp-hptool``'s memory model predicts. Hooks are installed for that
one step only, so the others run as before.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

EVENT = "memory"
PARTS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_peak_bytes")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t._local_tensor if isinstance(t, DTensor) else t


def storage_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (their local shards; None skipped)."""
    seen: dict[int, int] = {}
    for t in tensors:
        if t is None:
            continue
        storage = _local(t).untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _fsdp_params(parts: list[nn.Module]) -> Iterator:
    from torch.distributed.fsdp import FSDPModule

    for part in parts:
        for module in part.modules():
            if isinstance(module, FSDPModule):
                group = module._get_fsdp_state()._fsdp_param_group
                yield from (group.fsdp_params if group is not None else ())


def gradient_tensors(parts: list[nn.Module]) -> list[torch.Tensor | None]:
    """Every gradient a rank holds: the parameters' ``.grad`` and FSDP's unsharded accumulators (no_sync)."""
    grads = [p.grad for part in parts for p in part.parameters()]
    for fsdp_param in _fsdp_params(parts):
        grads.append(getattr(fsdp_param, "unsharded_accumulated_grad", None))
        unsharded = getattr(fsdp_param, "_unsharded_param", None)
        grads.append(None if unsharded is None else unsharded.grad)
    return grads


def optimizer_tensors(optimizer) -> list[torch.Tensor]:
    """Every tensor of the optimizers' state (AdamW: ``exp_avg``, ``exp_avg_sq``, ``step``)."""
    opts = getattr(optimizer, "optimizers", [optimizer])
    return [v for opt in opts for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)]


class _SavedPeak:
    """Live bytes of the tensors autograd saves (unique storages), and their peak."""

    def __init__(self) -> None:
        self.refs: dict[int, int] = {}  # storage data_ptr -> saved references alive
        self.sizes: dict[int, int] = {}
        self.live = 0
        self.peak = 0
        self.weights: list[set[int]] = []  # the storages of the running modules' parameters, innermost last

    def pack(self, t: torch.Tensor) -> object:
        storage = _local(t).untyped_storage()
        ptr = storage.data_ptr()
        if storage.nbytes() == 0 or isinstance(t, nn.Parameter) or any(ptr in w for w in self.weights):
            return t
        return _Saved(self, t, ptr, storage.nbytes())

    @staticmethod
    def unpack(packed: object) -> torch.Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def add(self, ptr: int, nbytes: int) -> None:
        if self.refs.get(ptr, 0) == 0:
            self.sizes[ptr] = nbytes
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self.refs[ptr] = self.refs.get(ptr, 0) + 1

    def drop(self, ptr: int) -> None:
        self.refs[ptr] -= 1
        if self.refs[ptr] == 0:
            del self.refs[ptr]
            self.live -= self.sizes.pop(ptr)


class _Saved:
    """A saved tensor and its place in the count; autograd dropping it (after its backward) uncounts it."""

    __slots__ = ("counter", "tensor", "ptr")

    def __init__(self, counter: _SavedPeak, tensor: torch.Tensor, ptr: int, nbytes: int) -> None:
        self.counter, self.tensor, self.ptr = counter, tensor, ptr
        counter.add(ptr, nbytes)

    def __del__(self) -> None:
        self.counter.drop(self.ptr)


class MemoryProbe:
    """Counts one step's memory on this rank (``result``: the ``memory/*`` values, None until measured)."""

    def __init__(self, parts: list[nn.Module], optimizer, device: torch.device) -> None:
        self.parts, self.optimizer, self.device = parts, optimizer, device
        self.result: dict[str, int] | None = None

    @contextlib.contextmanager
    def step(self) -> Iterator[None]:
        """Run one optimizer step inside: its activations, gradients and optimizer state are counted."""
        saved = _SavedPeak()
        grads_peak = [0]
        optimizer_bytes = [0]
        handles = []

        def push(module, _args) -> None:  # after FSDP's pre-forward (prepended): its gathered copies included
            # the whole subtree's: a model reads its submodules' weights directly (GPT's tied output layer)
            saved.weights.append({_local(p).untyped_storage().data_ptr() for p in module.parameters()})

        def pop(_module, _args, _out) -> None:
            saved.weights.pop()

        def micro_batch_starts(_module, _args) -> None:  # gradients accumulated so far (no_sync included)
            grads_peak[0] = max(grads_peak[0], storage_bytes(gradient_tensors(self.parts)))

        for part in self.parts:
            handles.append(part.register_forward_pre_hook(micro_batch_starts))
            for module in part.modules():
                if next(module.parameters(), None) is not None:
                    handles.append(module.register_forward_pre_hook(push))
                    handles.append(module.register_forward_hook(pop, always_call=True))
        update = self.optimizer.step

        def counted_update() -> None:
            grads_peak[0] = max(grads_peak[0], storage_bytes(gradient_tensors(self.parts)))
            update()
            optimizer_bytes[0] = storage_bytes(optimizer_tensors(self.optimizer))

        self.optimizer.step = counted_update  # this instance, for this step only
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        try:
            with torch.autograd.graph.saved_tensors_hooks(saved.pack, saved.unpack):
                yield
        finally:
            del self.optimizer.step
            for h in handles:
                h.remove()
        params = storage_bytes(p for part in self.parts for p in part.parameters())
        self.result = {"params_bytes": params, "grads_bytes": grads_peak[0], "optimizer_bytes": optimizer_bytes[0],
                       "activations_peak_bytes": saved.peak}
        self.result["total_peak_bytes"] = sum(self.result[k] for k in PARTS)
        if cuda:
            torch.cuda.synchronize(self.device)
            self.result["cuda_peak_allocated_bytes"] = torch.cuda.max_memory_allocated(self.device)


@contextlib.contextmanager
def measure_step(parts: list[nn.Module], optimizer, device: torch.device, *,
                 enabled: bool) -> Iterator[MemoryProbe | None]:
    """A ``MemoryProbe`` counting the step run inside when ``enabled``; else None, and nothing installed."""
    if not enabled:
        yield None
        return
    probe = MemoryProbe(parts, optimizer, device)
    with probe.step():
        yield probe


def record_memory(progress, step: int, values: dict[str, int], *, distributed: bool) -> None:
    """Every rank's values (a collective when ``distributed``), one ``memory`` record per rank from rank 0."""
    per_rank = [values]
    if distributed and dist.is_initialized():
        per_rank = [None] * dist.get_world_size()
        dist.all_gather_object(per_rank, values)
    for rank, vals in enumerate(per_rank):
        progress.record(EVENT, step=step, rank=rank, **{f"memory/{k}": v for k, v in vals.items()})
