"""Megatron ``.bin``/``.idx`` files, written and read with numpy alone.

The layout (megatron/core/datasets/indexed_dataset.py, version 1)::

    .idx  b"MMIDIDX\\x00\\x00"  uint64 version=1  uint8 dtype code
          uint64 N (sequences)  uint64 D (document index entries = documents + 1)
          int32[N] sequence lengths  int64[N] byte pointers into .bin  int64[D] document index
    .bin  the tokens of every sequence, concatenated, in the dtype of the header

Everything is little-endian. Our files are byte-identical to what megatron-core's
``IndexedDatasetBuilder`` writes for the same documents (the tests check it), so
Megatron-LM, NeMo and our trainer read them unchanged, without us importing torch.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

INDEX_MAGIC = b"MMIDIDX\x00\x00"
INDEX_VERSION = 1
DTYPE_CODES = {
    np.dtype(np.uint8): 1, np.dtype(np.int8): 2, np.dtype(np.int16): 3, np.dtype(np.int32): 4,
    np.dtype(np.int64): 5, np.dtype(np.float64): 6, np.dtype(np.float32): 7, np.dtype(np.uint16): 8,
}
_HEADER = struct.Struct("<9sQBQQ")


def optimal_dtype(vocab_size: int) -> np.dtype:
    """Megatron's choice: uint16 tokens for a vocabulary under 65,500, else int32."""
    return np.dtype(np.uint16) if vocab_size < 65500 else np.dtype(np.int32)


class IndexedDatasetWriter:
    """Stream tokens into an open ``.bin`` file; write the ``.idx`` at the end.

    The caller owns the files (so it can write them under temporary names);
    the sha256 of everything written to ``.bin`` is kept for the manifest.
    """

    def __init__(self, bin_file: BinaryIO, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype).newbyteorder("<")
        if np.dtype(dtype) not in DTYPE_CODES:
            raise ValueError(f"dtype {dtype} has no Megatron code")
        self._bin = bin_file
        self._sha256 = hashlib.sha256()
        self._lengths: list[np.ndarray] = []
        self._doc_counts: list[np.ndarray] = []
        self.num_tokens = 0

    def add_documents(self, tokens: bytes, sequence_lengths: np.ndarray, doc_num_sequences: np.ndarray) -> None:
        """Append documents already encoded as ``.bin`` bytes.

        ``sequence_lengths`` has one entry per sequence; ``doc_num_sequences`` one
        per document: how many of those sequences it owns (0 for an empty one).
        """
        self._bin.write(tokens)
        self._sha256.update(tokens)
        self._lengths.append(np.asarray(sequence_lengths, dtype=np.int32))
        self._doc_counts.append(np.asarray(doc_num_sequences, dtype=np.int64))
        self.num_tokens += len(tokens) // self.dtype.itemsize

    def add_document(self, tokens: Sequence[int], sequence_lengths: Sequence[int]) -> None:
        """Append one document (megatron-core's ``add_document``)."""
        data = np.asarray(tokens, dtype=self.dtype).tobytes()
        self.add_documents(data, np.asarray(sequence_lengths), np.array([len(sequence_lengths)]))

    @property
    def sha256(self) -> str:
        """Hex sha256 of the ``.bin`` bytes written so far."""
        return self._sha256.hexdigest()

    @property
    def sequence_lengths(self) -> np.ndarray:
        return np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)

    @property
    def num_documents(self) -> int:
        return int(sum(len(c) for c in self._doc_counts))

    def write_index(self, idx_file: BinaryIO) -> None:
        """Write the ``.idx`` for every document added."""
        counts = np.concatenate(self._doc_counts) if self._doc_counts else np.zeros(0, np.int64)
        doc_index = np.zeros(len(counts) + 1, dtype="<i8")
        np.cumsum(counts, out=doc_index[1:])
        write_index(idx_file, self.dtype, self.sequence_lengths, doc_index)


def write_index(
    idx_file: BinaryIO, dtype: np.dtype, sequence_lengths: np.ndarray, document_indices: np.ndarray
) -> None:
    """Write a ``.idx``: the header, ``sequence_lengths``, byte pointers computed from them (``.bin`` in
    ``dtype``, sequences back to back) and ``document_indices`` (documents + 1 entries, starting at 0)."""
    dtype = np.dtype(dtype)
    lengths = np.asarray(sequence_lengths).astype("<i4")
    pointers = np.zeros(len(lengths), dtype="<i8")
    np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    docs = np.asarray(document_indices).astype("<i8")
    code = DTYPE_CODES[dtype.newbyteorder("=")]
    idx_file.write(_HEADER.pack(INDEX_MAGIC, INDEX_VERSION, code, len(lengths), len(docs)))
    for part in (lengths, pointers, docs):
        idx_file.write(part.tobytes())


@dataclass(frozen=True)
class IndexedDatasetReader:
    """A read-only view of a ``.bin``/``.idx`` pair (memory-mapped), for inspection and tests."""

    prefix: Path
    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    tokens: np.ndarray

    @classmethod
    def open(cls, prefix: str | Path) -> IndexedDatasetReader:
        """Open ``prefix.idx`` and ``prefix.bin``; ValueError if the index is not Megatron version 1."""
        prefix = Path(prefix)
        idx = np.memmap(f"{prefix}.idx", dtype=np.uint8, mode="r")
        if len(idx) < _HEADER.size:
            raise ValueError(f"{prefix}.idx: too short for a Megatron index")
        magic, version, code, n, d = _HEADER.unpack(bytes(idx[: _HEADER.size]))
        if magic != INDEX_MAGIC or version != INDEX_VERSION:
            raise ValueError(f"{prefix}.idx: not a Megatron version-1 index")
        dtype = {c: t for t, c in DTYPE_CODES.items()}[code].newbyteorder("<")
        off = _HEADER.size
        lengths = np.frombuffer(idx, dtype="<i4", count=n, offset=off)
        pointers = np.frombuffer(idx, dtype="<i8", count=n, offset=off + 4 * n)
        docs = np.frombuffer(idx, dtype="<i8", count=d, offset=off + 12 * n)
        size = Path(f"{prefix}.bin").stat().st_size
        tokens = np.memmap(f"{prefix}.bin", dtype=dtype, mode="r") if size else np.zeros(0, dtype)
        return cls(prefix, dtype, lengths, pointers, docs, tokens)

    @property
    def num_documents(self) -> int:
        return len(self.document_indices) - 1

    def document(self, i: int) -> np.ndarray:
        """All tokens of document ``i`` (its sequences concatenated)."""
        first, last = self.document_indices[i], self.document_indices[i + 1]
        if first == last:
            return np.zeros(0, self.dtype)
        start = self.sequence_pointers[first] // self.dtype.itemsize
        return np.asarray(self.tokens[start : start + int(self.sequence_lengths[first:last].sum())])
