"""Our numpy .bin/.idx writer is byte-identical to megatron-core's IndexedDatasetBuilder."""

from __future__ import annotations

import numpy as np
import pytest
from dataprep_helpers import megatron_core_files

from bignlp_dataprep.indexed import IndexedDatasetReader, IndexedDatasetWriter, optimal_dtype


def _random_documents(rng: np.random.Generator, high: int, n: int = 60):
    docs = []
    for i in range(n):
        if i % 7 == 3:
            docs.append(([], []))  # an empty document: its index entry repeats
            continue
        lengths = [int(x) for x in rng.integers(1, 50, size=rng.integers(1, 5))]
        docs.append(([int(t) for t in rng.integers(0, high, size=sum(lengths))], lengths))
    return docs


def _ours(tmp_path, docs, dtype) -> tuple[bytes, bytes]:
    with open(tmp_path / "ours.bin", "wb") as b:
        writer = IndexedDatasetWriter(b, dtype)
        for tokens, lengths in docs:
            writer.add_document(tokens, lengths)
    with open(tmp_path / "ours.idx", "wb") as i:
        writer.write_index(i)
    return (tmp_path / "ours.bin").read_bytes(), (tmp_path / "ours.idx").read_bytes()


@pytest.mark.parametrize("vocab_size", [50257, 250000], ids=["uint16", "int32"])
def test_byte_identical_to_megatron_core(tmp_path, vocab_size):
    dtype = optimal_dtype(vocab_size)
    docs = _random_documents(np.random.default_rng(vocab_size), vocab_size)
    assert _ours(tmp_path, docs, dtype) == megatron_core_files(tmp_path / "ref", docs, dtype.type)


def test_optimal_dtype_threshold():
    assert optimal_dtype(65499) == np.uint16 and optimal_dtype(65500) == np.int32


def test_empty_dataset_matches_megatron_core(tmp_path):
    dtype = optimal_dtype(50257)
    assert _ours(tmp_path, [], dtype) == megatron_core_files(tmp_path / "ref", [], dtype.type)


def test_batched_adds_equal_single_adds(tmp_path):
    docs = _random_documents(np.random.default_rng(0), 50257)
    single = _ours(tmp_path, docs, np.uint16)
    with open(tmp_path / "b.bin", "wb") as b:
        writer = IndexedDatasetWriter(b, np.uint16)
        for part in (docs[:25], docs[25:]):
            tokens = np.array([t for d in part for t in d[0]], dtype="<u2").tobytes()
            lengths = np.array([n for d in part for n in d[1]], dtype=np.int32)
            writer.add_documents(tokens, lengths, np.array([len(d[1]) for d in part]))
    with open(tmp_path / "b.idx", "wb") as i:
        writer.write_index(i)
    assert ((tmp_path / "b.bin").read_bytes(), (tmp_path / "b.idx").read_bytes()) == single
    assert writer.num_documents == len(docs) and writer.num_tokens == sum(len(d[0]) for d in docs)


def test_reader_round_trip_and_megatron_core_reads_it(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = _random_documents(np.random.default_rng(1), 50257)
    _ours(tmp_path, docs, np.uint16)
    reader = IndexedDatasetReader.open(tmp_path / "ours")
    assert reader.num_documents == len(docs) and reader.dtype == np.uint16
    for i, (tokens, _) in enumerate(docs):
        assert reader.document(i).tolist() == tokens
    ds = IndexedDataset(str(tmp_path / "ours"))
    flat = [t for tokens, _ in docs for t in tokens]
    assert np.concatenate([ds[i] for i in range(len(ds))]).tolist() == flat
    assert ds.document_indices.tolist() == reader.document_indices.tolist()


def test_reader_refuses_garbage(tmp_path):
    (tmp_path / "x.idx").write_bytes(b"not an index at all, longer than the header")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="not a Megatron version-1 index"):
        IndexedDatasetReader.open(tmp_path / "x")
