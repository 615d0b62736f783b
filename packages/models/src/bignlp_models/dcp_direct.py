"""Reading tensors out of a ``torch.distributed.checkpoint`` directory straight into their destinations.

``dcp.load`` plans every read, deserialises each stored item with ``torch.load`` into a new
tensor, then copies it into the destination: every byte is copied twice and the planner's cost
is paid per call, which dominates when a converter reads a layer at a time. The layout it reads is
simple, though: ``.metadata`` lists, per tensor, its chunks (offsets and sizes in the whole tensor)
and, per chunk, a byte range of a ``__N_M.distcp`` file holding a ``torch.save`` archive (a zip with
``data.pkl`` and one ``data/<key>`` record per storage, stored uncompressed). So a chunk can be
read with one ``readinto`` from the file into the destination's memory, after parsing its few-KB
``data.pkl`` for the storage key, offset and strides.

Anything outside that layout (a storage transform such as compression, a non-contiguous saved
view, another serialisation, a device destination) is left to ``dcp.load``: ``read_direct``
returns the names it did not read.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}


class _Unsupported(Exception):
    """This item is not in the plain layout: let ``dcp.load`` read it."""


class _Range(io.RawIOBase):
    """The byte range ``[start, start + length)`` of an open file, as a seekable file of its own (for ``zipfile``)."""

    def __init__(self, f, start: int, length: int) -> None:
        self._f, self._start, self._length, self._pos = f, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._length}[whence]
        self._pos = max(0, min(self._length, base + pos))
        return self._pos

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self._length - self._pos)
        if n <= 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(buffer)[:n])
        self._pos += got
        return got


class _StorageRef:
    def __init__(self, key: str, dtype: torch.dtype, numel: int) -> None:
        self.key, self.dtype, self.numel = key, dtype, numel


class _TensorRef:
    def __init__(self, storage: _StorageRef, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _StorageType:
    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype


def _rebuild(storage, offset, size, stride, *_rest) -> _TensorRef:
    if not isinstance(storage, _StorageRef):
        raise _Unsupported("tensor without a storage")
    return _TensorRef(storage, int(offset), size, stride)


class _Unpickler(pickle.Unpickler):
    """``data.pkl`` of one saved tensor, read for where its bytes are; nothing is executed or loaded."""

    def find_class(self, module: str, name: str):
        if (module, name) in (("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor_v3")):
            return _rebuild
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        raise _Unsupported(f"{module}.{name}")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise _Unsupported(f"persistent id {pid!r}")
        _, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType):
            raise _Unsupported(f"storage type {storage_type!r}")
        return _StorageRef(str(key), storage_type.dtype, int(numel))


def _locate(f, start: int, length: int) -> tuple[_TensorRef, int]:
    """The saved tensor of the ``torch.save`` archive at ``[start, start + length)`` and its data's file offset."""
    try:
        with zipfile.ZipFile(_Range(f, start, length)) as zf:
            names = zf.namelist()
            pkl = next((n for n in names if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if pkl is None:
                raise _Unsupported("no data.pkl")
            ref = _Unpickler(io.BytesIO(zf.read(pkl))).load()
            if not isinstance(ref, _TensorRef):
                raise _Unsupported("not a tensor")
            info = zf.getinfo(pkl[: -len("data.pkl")] + f"data/{ref.storage.key}")
            if info.compress_type != zipfile.ZIP_STORED:
                raise _Unsupported("compressed record")
            f.seek(start + info.header_offset)
            header = f.read(30)
            if len(header) != 30 or header[:4] != b"PK\x03\x04":
                raise _Unsupported("bad local header")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            return ref, start + info.header_offset + 30 + name_len + extra_len
    except (zipfile.BadZipFile, KeyError, pickle.UnpicklingError, EOFError, ValueError, struct.error) as exc:
        raise _Unsupported(str(exc)) from None


def _contiguous_strides(size: tuple) -> tuple:
    strides, acc = [], 1
    for dim in reversed(size):
        strides.append(acc)
        acc *= dim
    return tuple(reversed(strides))


def _read_chunk(f, ref: _TensorRef, data_start: int, offsets: tuple, sizes: tuple, dest: torch.Tensor) -> None:
    """Copy the chunk (at ``offsets`` of the whole tensor, ``sizes`` long) into ``dest``, the part inside it."""
    if ref.size != tuple(sizes) or (ref.size and ref.stride != _contiguous_strides(ref.size)):
        raise _Unsupported("saved view is not the whole chunk, contiguous")
    if ref.storage.dtype != dest.dtype:
        raise _Unsupported("dtype differs")
    # the part of the chunk inside the destination (the destination may drop padded vocabulary rows)
    keep = [max(0, min(s, d - o)) for o, s, d in zip(offsets, sizes, dest.shape)]
    if any(k == 0 for k in keep) and keep:
        return
    item = dest.element_size()
    base = data_start + ref.offset * item
    # rows of the destination whole (offset 0 and full width in every other dim): one read into place
    whole_rows = all(o == 0 and s == d for o, s, d in zip(offsets[1:], sizes[1:], dest.shape[1:]))
    if whole_rows:
        target = dest[offsets[0]:offsets[0] + keep[0]] if keep else dest
        if target.is_contiguous():
            f.seek(base)
            _readinto(f, target)
            return
    # a chunk split inside its rows (tensor-parallel): through a buffer of the kept rows
    buf = torch.empty((keep[0], *sizes[1:]), dtype=dest.dtype)
    f.seek(base)
    _readinto(f, buf)
    region = dest
    for dim, (o, k) in enumerate(zip(offsets, keep)):
        region = region.narrow(dim, o, k)
    src = buf
    for dim, k in enumerate(keep[1:], start=1):
        src = src.narrow(dim, 0, k)
    region.copy_(src)


def _readinto(f, tensor: torch.Tensor) -> None:
    view = memoryview(tensor.reshape(-1).view(torch.uint8).numpy()) if tensor.numel() else memoryview(b"")
    done = 0
    while done < len(view):
        got = f.readinto(view[done:])
        if not got:
            raise _Unsupported("file ends inside a tensor")
        done += got


def read_direct(dcp_dir: Path, saved: Mapping[str, Any], storage: Mapping[Any, Any],
                tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Fill ``tensors`` (dcp key → CPU destination) from ``dcp_dir``; the keys it could not read this way.

    ``saved``: ``Metadata.state_dict_metadata``; ``storage``: ``Metadata.storage_data``. A
    destination may have fewer rows than the saved tensor (padded vocabulary): the rest is not read.
    """
    by_fqn: dict[str, dict[tuple, Any]] = {}
    for index, info in storage.items():
        by_fqn.setdefault(index.fqn, {})[tuple(index.offset or ())] = info
    left, handles = [], {}
    try:
        for key, dest in tensors.items():
            meta = saved.get(key)
            chunks = getattr(meta, "chunks", None)
            if (chunks is None or dest.device.type != "cpu" or not dest.is_contiguous()
                    or dest.dim() != len(meta.size) or tuple(dest.shape[1:]) != tuple(meta.size[1:])
                    or (dest.dim() and dest.shape[0] > meta.size[0])):
                left.append(key)
                continue
            try:
                for chunk in chunks:
                    info = by_fqn.get(key, {}).get(tuple(chunk.offsets))
                    if info is None or getattr(info, "transform_descriptors", None):
                        raise _Unsupported("no plain storage entry")
                    path = os.fspath(dcp_dir / info.relative_path)
                    f = handles.get(path)
                    if f is None:
                        f = handles[path] = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below
                    ref, data_start = _locate(f, int(info.offset), int(info.length))
                    _read_chunk(f, ref, data_start, tuple(chunk.offsets), tuple(chunk.sizes), dest)
            except _Unsupported:
                left.append(key)
    finally:
        for f in handles.values():
            f.close()
    return left
