"""file_numbers, the (rank, world_size) split, completion markers and streaming extraction."""

from __future__ import annotations

import gzip

import pytest
import zstandard

from bignlp_contracts import ConfigError, InputError
from bignlp_dataprep.extract import extract, extracted_name
from bignlp_dataprep.shards import (
    marker_path,
    parse_file_numbers,
    rank_from_env,
    read_marker,
    shard_of,
    write_marker,
)

TEXT = b"".join(b'{"text": "line %d"}\n' % i for i in range(5000))


@pytest.mark.parametrize("spec, expected", [
    ("0-29", tuple(range(30))), ("0", (0,)), (0, (0,)), ("0,3,5-7", (0, 3, 5, 6, 7)), (" 7 , 1-2,2 ", (1, 2, 7)),
])
def test_file_numbers(spec, expected):
    assert parse_file_numbers(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("0-", "cannot parse '0-'"), ("a", "cannot parse 'a'"), ("1,,2", "cannot parse ''"), ("5-3", "runs backwards"),
])
def test_bad_file_numbers(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_file_numbers(spec)


def test_shard_of_round_robin_and_balanced():
    items = list("abcdefg")
    shares = [shard_of(items, r, 3) for r in range(3)]
    assert shares == [["a", "d", "g"], ["b", "e"], ["c", "f"]]
    sizes = [10, 1, 1, 1, 9, 2, 5]
    balanced = [shard_of(items, r, 2, sizes=sizes) for r in range(2)]
    assert sorted(sum(balanced, [])) == items
    assert [sum(sizes[items.index(i)] for i in s) for s in balanced] == [15, 14]
    with pytest.raises(ConfigError, match="rank 3 is not in 0..2"):
        shard_of(items, 3, 3)


def test_rank_from_slurm_array_env():
    assert rank_from_env({}) == (0, 1)
    env = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_MIN": "5", "SLURM_ARRAY_TASK_COUNT": "3"}
    assert rank_from_env(env) == (2, 3)
    no_count = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3"}
    assert rank_from_env(no_count) == (1, 4)
    with pytest.raises(ConfigError, match="outside 5..7"):
        rank_from_env({**env, "SLURM_ARRAY_TASK_ID": "9"})


def test_markers(tmp_path):
    assert read_marker(tmp_path, "extract", "03") is None
    write_marker(tmp_path, "extract", "03", {"size": 5})
    assert marker_path(tmp_path, "extract", "03") == tmp_path / ".bignlp-done/extract/03.json"
    assert read_marker(tmp_path, "extract", "03") == {"step": "extract", "item": "03", "size": 5}


@pytest.mark.parametrize("suffix, pack", [(".zst", zstandard.ZstdCompressor().compress), (".gz", gzip.compress)])
def test_extract_streams_and_rejects_truncated_input(tmp_path, suffix, pack):
    src = tmp_path / f"00.jsonl{suffix}"
    src.write_bytes(pack(TEXT))
    assert extracted_name(src) == "00.jsonl"
    assert extract(src, tmp_path / "out.jsonl") == len(TEXT)
    assert (tmp_path / "out.jsonl").read_bytes() == TEXT
    bad = tmp_path / f"bad.jsonl{suffix}"
    bad.write_bytes(pack(TEXT)[:-200])
    with pytest.raises(InputError, match=rf"bad.jsonl\{suffix}: truncated or corrupt"):
        extract(bad, tmp_path / "bad.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, "out.jsonl", bad.name])
