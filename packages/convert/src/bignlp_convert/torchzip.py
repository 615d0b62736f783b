"""Writing a ``torch.save`` file (a state dict of tensors) one tensor at a time.

``torch.save`` needs the whole state dict in memory; a ``.nemo`` rank file of a large model does
not fit twice. The format is a zip (PyTorch's ``PyTorchFileWriter``): ``data.pkl`` (the pickled
structure, whose tensors point at storages by key), then one ``data/<key>`` record per storage.
The structure is known from the plan (names, shapes, dtypes), so ``data.pkl`` is written first
and each tensor's bytes follow as they are produced. ``torch.load`` (``weights_only=True`` and
``mmap=True`` too) reads the result as it reads ``torch.save``'s.
"""

from __future__ import annotations

import collections
import io
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

_STORAGE_TYPES = {torch.float32: "FloatStorage", torch.float16: "HalfStorage", torch.bfloat16: "BFloat16Storage",
                  torch.float64: "DoubleStorage", torch.int64: "LongStorage", torch.int32: "IntStorage",
                  torch.uint8: "ByteStorage", torch.bool: "BoolStorage"}


class _Storage:
    def __init__(self, key: str, dtype: torch.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel


class _Tensor:
    """Pickles as ``torch.save`` pickles a contiguous tensor over its own storage."""

    def __init__(self, storage: _Storage, shape: Sequence[int]) -> None:
        self.storage, self.shape = storage, tuple(shape)

    def __reduce_ex__(self, protocol):
        stride, acc = [], 1
        for dim in reversed(self.shape):
            stride.append(acc)
            acc *= dim
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, 0, self.shape, tuple(reversed(stride)), False, collections.OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", getattr(torch, _STORAGE_TYPES[obj.dtype]), obj.key, "cpu", obj.numel)
        return None


class _Counter:
    """A sink that only counts what is written (sizing an archive before writing it)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self.size += n
        return n

    def flush(self) -> None:
        pass


class TorchSaveWriter:
    """A ``torch.save``d dict ``{name: tensor}`` whose entries are declared up front and written in order.

    ``target``: a path, or an object with ``write(buffer)`` (the bytes arrive in order).
    """

    def __init__(self, target, plan: Sequence[tuple[str, torch.Size, torch.dtype]], *,
                 compute_crc32: bool = True) -> None:
        self._order = [(name, tuple(shape), dtype) for name, shape, dtype in plan]
        state = collections.OrderedDict()
        for i, (name, shape, dtype) in enumerate(self._order):
            state[name] = _Tensor(_Storage(str(i), dtype, int(torch.Size(shape).numel())), shape)
        buf = io.BytesIO()
        _Pickler(buf, protocol=2).dump(state)
        self._zip = torch._C.PyTorchFileWriter(str(target) if isinstance(target, Path) else target, compute_crc32)
        data = buf.getvalue()
        self._zip.write_record("data.pkl", data, len(data))
        self._zip.write_record(".format_version", "1", 1)
        self._zip.write_record("byteorder", sys.byteorder, len(sys.byteorder))
        self._next = 0
        self.path = target if isinstance(target, Path) else None

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want = self._order[self._next]
        got = (name, tuple(tensor.shape), tensor.dtype)
        if got != want:
            raise RuntimeError(f"torch.save plan out of step: expected {want}, got {got}")
        t = tensor.detach().cpu().contiguous()
        # a view (a tensor-parallel chunk) is written from its bytes in the larger storage, without a copy
        start = t.storage_offset() * t.element_size()
        storage = t.untyped_storage()[start:start + t.numel() * t.element_size()]
        self._zip.write_record(f"data/{self._next}", storage, storage.nbytes())
        self._next += 1

    def close(self) -> None:
        if self._next != len(self._order):
            raise RuntimeError(f"{self.path}: {len(self._order) - self._next} declared tensors were never written")
        self._zip.write_end_of_file()


def torch_save_size(plan: Sequence[tuple[str, torch.Size, torch.dtype]]) -> int:
    """The exact size of the file ``TorchSaveWriter`` writes for ``plan`` (a dry run that writes nowhere).

    The zip layout depends on names and sizes only, so the records are written from one scratch
    buffer (never read: no CRC is computed) into a counter.
    """
    largest = max((int(torch.Size(shape).numel()) * dtype.itemsize for _, shape, dtype in plan), default=0)
    scratch = torch.empty(largest, dtype=torch.uint8).untyped_storage() if largest else None
    counter = _Counter()
    writer = TorchSaveWriter(counter, plan, compute_crc32=False)
    for i, (_, shape, dtype) in enumerate(writer._order):
        size = int(torch.Size(shape).numel()) * dtype.itemsize
        writer._zip.write_record(f"data/{i}", scratch[:size] if size else b"", size)
    writer._next = len(writer._order)
    writer.close()
    return counter.size
