"""Streaming decompression of downloaded shards: ``.zst`` / ``.gz`` → ``.jsonl``.

The output is written to a temporary sibling and renamed when the whole input
has been decompressed, so ``NN.jsonl`` exists only complete. Memory stays at one
chunk whatever the file size; a truncated or corrupt input is an InputError
naming the file, and leaves no output.
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import zstandard

from bignlp_contracts import InputError, atomic_output_file

from .readers import compression_of, zstd_chunks

_CHUNK = 1 << 20


def extracted_name(path: str | os.PathLike) -> str:
    """``00.jsonl.zst`` → ``00.jsonl``; a name without a compression suffix is kept."""
    name = Path(path).name
    for suffix in (".zst", ".zstd", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def extract(src: str | os.PathLike, dest: str | os.PathLike) -> int:
    """Decompress ``src`` (zstd, gzip or plain, by its magic bytes) into ``dest``; return the bytes written."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise InputError(f"file to extract {src} does not exist")
    with open(src, "rb") as f:
        kind = compression_of(src, f.read(4))
    written = 0
    try:
        with open(src, "rb") as raw, atomic_output_file(dest) as out:
            for chunk in _chunks(raw, kind):
                out.write(chunk)
                written += len(chunk)
            os.fchmod(out.fileno(), 0o666 & ~_umask())
    except (EOFError, zlib.error, zstandard.ZstdError, gzip.BadGzipFile) as exc:
        reason = (str(exc) or exc.__class__.__name__).splitlines()[0]
        raise InputError(f"{src}: truncated or corrupt {kind} data ({reason})",
                         hint="delete it and download it again") from None
    return written


def _chunks(raw: BinaryIO, kind: str) -> Iterator[bytes]:
    if kind == "zstd":
        yield from zstd_chunks(raw)
    elif kind == "gzip":
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            while chunk := stream.read(_CHUNK):
                yield chunk
    else:
        while chunk := raw.read(_CHUNK):
            yield chunk


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
