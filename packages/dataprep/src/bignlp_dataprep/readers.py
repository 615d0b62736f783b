"""Streaming JSONL readers: plain, gzip or zstd, cut into batches of whole lines.

Nothing here holds a whole file in memory. Each batch carries the file name and
the number of its first line, so whoever parses it (the parent or a worker
process) can report ``FILE:LINE`` for a bad line. While reading, each input's
raw bytes are hashed, so the manifest's input hashes cost no second pass.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import zstandard

from bignlp_contracts import InputError

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_READ_SIZE = 1 << 20


@dataclass(frozen=True)
class LineBatch:
    """Whole lines of one file; ``first_line`` is the 1-based number of the first."""

    source: str
    first_line: int
    data: bytes
    raw_bytes: int  # bytes of the (possibly compressed) file consumed since the previous batch


class _HashingReader:
    """A raw file that hashes and counts every byte read through it."""

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self.sha256 = hashlib.sha256()
        self.num_bytes = 0

    def read(self, size: int = -1) -> bytes:
        data = self._f.read(size)
        self.sha256.update(data)
        self.num_bytes += len(data)
        return data

    def drain(self) -> None:
        """Read (and hash) whatever the decompressor left, e.g. trailing padding."""
        while self.read(_READ_SIZE):
            pass


def compression_of(path: Path, head: bytes) -> str:
    """``gzip``, ``zstd`` or ``none``, from the magic bytes; a suffix that lies is an error."""
    kind = "gzip" if head.startswith(GZIP_MAGIC) else "zstd" if head.startswith(ZSTD_MAGIC) else "none"
    claimed = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}.get(path.suffix.lower())
    if claimed and claimed != kind and head:
        raise InputError(f"{path}: named like a {claimed} file but is not {claimed}-compressed")
    return kind


class InputFile:
    """One JSONL input, opened for streaming; ``sha256``/``size`` are final after ``batches()``."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"input file {self.path} does not exist")
        if not self.path.is_file():
            raise InputError(f"input {self.path} is not a regular file")
        with open(self.path, "rb") as f:
            self.compression = compression_of(self.path, f.read(4))
        self.size = self.path.stat().st_size
        self.sha256: str | None = None
        self.text_bytes = 0  # uncompressed bytes

    def _chunks(self, raw: _HashingReader) -> Iterator[bytes]:
        if self.compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
            while chunk := stream.read(_READ_SIZE):
                yield chunk
        elif self.compression == "zstd":
            yield from zstd_chunks(raw)
        else:
            while chunk := raw.read(_READ_SIZE):
                yield chunk

    def batches(self, batch_bytes: int) -> Iterator[LineBatch]:
        """Yield batches of about ``batch_bytes`` uncompressed bytes, cut after a newline."""
        name = str(self.path)
        with open(self.path, "rb") as f:
            raw = _HashingReader(f)
            reported = 0
            line = 1
            pending = bytearray()
            try:
                for chunk in self._chunks(raw):
                    self.text_bytes += len(chunk)
                    pending += chunk
                    while len(pending) >= batch_bytes:
                        # the first line end at or after batch_bytes; none yet: a long line, read on
                        cut = pending.find(b"\n", batch_bytes - 1) + 1
                        if cut == 0:
                            break
                        data = bytes(pending[:cut])
                        del pending[:cut]
                        yield LineBatch(name, line, data, raw.num_bytes - reported)
                        reported = raw.num_bytes
                        line += data.count(b"\n")
                raw.drain()
            except (EOFError, OSError, zlib.error, zstandard.ZstdError) as exc:
                raise InputError(f"{name}: truncated or corrupt {self.compression} data ({_reason(exc)})") from None
            if pending or raw.num_bytes > reported:
                yield LineBatch(name, line, bytes(pending), raw.num_bytes - reported)
            self.sha256 = raw.sha256.hexdigest()


def zstd_chunks(raw: BinaryIO | _HashingReader) -> Iterator[bytes]:
    """Decompress every frame, and notice a stream cut short (zstandard's stream_reader does not)."""
    dctx = zstandard.ZstdDecompressor()
    obj = dctx.decompressobj()
    mid_frame = False
    while data := raw.read(_READ_SIZE):
        while data:
            out = obj.decompress(data)
            mid_frame = True
            if out:
                yield out
            if obj.eof:
                data = obj.unused_data
                obj = dctx.decompressobj()
                mid_frame = False
            else:
                data = b""
    if mid_frame:
        raise EOFError("the stream ends inside a zstd frame")


def _reason(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0]


def iter_batches(files: list[InputFile], batch_bytes: int) -> Iterator[LineBatch]:
    """Every batch of every file, in order."""
    for f in files:
        yield from f.batches(batch_bytes)
