"""Writing safetensors files a tensor at a time.

``safetensors.torch.save_file`` takes the whole state dict at once; a converter holds one layer.
The format allows streaming when the header is known first: 8 bytes (little-endian header length),
a JSON header of every tensor's dtype, shape and byte range, then the bytes in that order. The
plan (names, shapes, dtypes) comes from the meta model, so the header is written before any weight
is read and each tensor's bytes are appended as it is produced. Hashing and writing run on a
thread of their own (both release the GIL), so they overlap reading and renaming the next layer;
at most ``max_pending`` bytes wait for it.
"""

from __future__ import annotations

import hashlib
import json
import queue
import struct
import threading
from collections.abc import Sequence
from pathlib import Path

import torch

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def tensor_bytes(shape: Sequence[int], dtype: torch.dtype) -> int:
    return int(torch.Size(shape).numel()) * dtype.itemsize


class SafetensorsWriter:
    """One ``.safetensors`` file whose tensors (name, shape, dtype) are declared up front, then written in order."""

    def __init__(self, path: Path, plan: Sequence[tuple[str, torch.Size, torch.dtype]],
                 metadata: dict[str, str] | None = None, *, max_pending_chunks: int = 4) -> None:
        header: dict = {"__metadata__": dict(metadata or {"format": "pt"})}
        offset = 0
        for name, shape, dtype in plan:
            size = tensor_bytes(shape, dtype)
            header[name] = {"dtype": DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
        self.path, self.total = path, offset
        self._order = [(name, tuple(shape), dtype) for name, shape, dtype in plan]
        self._next = 0
        self._f = open(path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        # hashed as written: the manifest's sha256 without reading the file back
        self._sha = hashlib.sha256()
        self._pending: queue.Queue = queue.Queue()
        self._room = threading.Semaphore(max_pending_chunks)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name=f"write {path.name}", daemon=True)
        self._thread.start()
        self._put(struct.pack("<Q", len(raw)) + raw)

    def _drain(self) -> None:
        while (item := self._pending.get()) is not None:
            data, _keepalive = item
            try:
                if self._error is None:
                    self._sha.update(data)
                    view = memoryview(data).cast("B")
                    done = 0
                    while done < len(view):
                        done += self._f.write(view[done:])
            except BaseException as exc:  # reported by the next write or close
                self._error = exc
            finally:
                self._room.release()

    def _put(self, data, keepalive=None) -> None:
        if self._error is not None:
            raise self._error
        self._room.acquire()
        self._pending.put((data, keepalive))

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Append ``tensor``, which must be the next one the plan declared."""
        want = self._order[self._next]
        got = (name, tuple(tensor.shape), tensor.dtype)
        if got != want:
            raise RuntimeError(f"safetensors plan out of step: expected {want}, got {got}")
        if tensor.numel():
            t = tensor.detach().cpu().contiguous()
            self._put(t.reshape(-1).view(torch.uint8).numpy().data, t)  # t lives until written
        self._next += 1

    def close(self) -> None:
        self._pending.put(None)
        self._thread.join()
        self._f.close()
        if self._error is not None:
            raise self._error
        if self._next != len(self._order):
            raise RuntimeError(f"{self.path}: {len(self._order) - self._next} declared tensors were never written")
