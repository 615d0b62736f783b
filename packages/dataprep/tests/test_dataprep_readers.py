"""Streaming readers: whole lines, correct line numbers, every compression, hashes while reading."""

from __future__ import annotations

import gzip
import hashlib

import pytest
import zstandard

from bignlp_contracts import InputError
from bignlp_dataprep.readers import InputFile

LINES = [f'{{"text": "{"x" * (i % 37)}"}}' for i in range(500)] + ['{"text": "' + "long " * 3000 + '"}']
DATA = ("\n".join(LINES) + "\n").encode()


def _check(path, data=DATA, batch_bytes=1000):
    f = InputFile(path)
    batches = list(f.batches(batch_bytes))
    assert b"".join(b.data for b in batches) == data
    for b in batches[:-1]:
        assert b.data.endswith(b"\n") and (len(b.data) >= batch_bytes)
    line = 1
    for b in batches:
        assert b.first_line == line
        line += b.data.count(b"\n")
    assert sum(b.raw_bytes for b in batches) == path.stat().st_size == f.size
    assert f.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() and f.text_bytes == len(data)
    return f, batches


@pytest.mark.parametrize("kind", ["plain", "gzip", "zstd", "zstd-frames", "gzip-members"])
def test_batches_are_whole_lines_with_line_numbers(tmp_path, kind):
    half = len(DATA) // 2
    cut = DATA.index(b"\n", half) + 1
    zstd = zstandard.ZstdCompressor().compress
    payload = {
        "plain": DATA,
        "gzip": gzip.compress(DATA),
        "zstd": zstd(DATA),
        "zstd-frames": zstd(DATA[:cut]) + zstd(DATA[cut:]),
        "gzip-members": gzip.compress(DATA[:cut]) + gzip.compress(DATA[cut:]),
    }[kind]
    path = tmp_path / {"plain": "a.jsonl"}.get(kind, "a.jsonl.gz" if "gzip" in kind else "a.jsonl.zst")
    path.write_bytes(payload)
    f, _ = _check(path)
    assert f.compression == {"plain": "none"}.get(kind, "gzip" if "gzip" in kind else "zstd")


def test_last_line_without_newline_and_empty_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_bytes(DATA[:-1])
    _check(path, DATA[:-1], batch_bytes=10_000)
    empty = tmp_path / "e.jsonl"
    empty.write_bytes(b"")
    f, batches = _check(empty, b"")
    assert batches == [] and f.sha256 == hashlib.sha256(b"").hexdigest()


def test_one_batch_when_batches_are_large(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_bytes(DATA)
    _, batches = _check(path, batch_bytes=10_000_000)
    assert len(batches) == 1


def test_missing_and_directory_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        InputFile(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="not a regular file"):
        InputFile(tmp_path)
