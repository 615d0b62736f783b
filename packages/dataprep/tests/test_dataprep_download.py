"""download(): resume, retries, 4xx, checksums, against the local HTTP fixture server (a subprocess)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from bignlp_contracts import InputError, RetryableError
from bignlp_contracts.download import download, fetch_sha256sums, parse_sha256sums

FAST = {"backoff_s": 0.01, "timeout_s": 10, "progress": False}


def _log(server: str) -> list[list]:
    with urllib.request.urlopen(f"{server}/_log") as resp:
        return json.loads(resp.read())


def test_plain_download_and_skip_when_complete(server, www, tmp_path):
    dest = download(f"{server}/files/pile/00.jsonl.zst", tmp_path / "00.jsonl.zst", **FAST)
    assert dest.read_bytes() == (www / "pile/00.jsonl.zst").read_bytes()
    assert not (tmp_path / "00.jsonl.zst.part").exists()
    before = len(_log(server))
    download(f"{server}/files/pile/00.jsonl.zst", dest, size=dest.stat().st_size, **FAST)
    assert len(_log(server)) == before + 1  # only our /_log request: the complete file was not fetched again


@pytest.mark.parametrize("route", ["flaky/1", "flaky/3"])
def test_cut_connection_is_resumed_with_range(server, www, tmp_path, route):
    url = f"{server}/{route}/pile/01.jsonl.zst"
    dest = download(url, tmp_path / "01.jsonl.zst", retries=3, **FAST)
    assert dest.read_bytes() == (www / "pile/01.jsonl.zst").read_bytes()
    ranges = [r for p, r in _log(server) if p == f"/{route}/pile/01.jsonl.zst"]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:])


def test_resume_from_a_partial_file_and_server_ignoring_range(server, www, tmp_path):
    full = (www / "pile/02.jsonl.zst").read_bytes()
    for route in ("files", "norange"):
        dest = tmp_path / route / "02.jsonl.zst"
        dest.parent.mkdir()
        Path(f"{dest}.part").write_bytes(full[:1000])  # as a killed earlier run leaves it
        download(f"{server}/{route}/pile/02.jsonl.zst", dest, **FAST)
        assert dest.read_bytes() == full


def test_retries_exhausted_is_retryable(server, tmp_path):
    with pytest.raises(RetryableError, match=r"failed after 3 attempts: HTTP Error 503"):
        download(f"{server}/status/503/x", tmp_path / "x", retries=2, **FAST)
    with pytest.raises(RetryableError, match="after 2 attempts"):
        download(f"{server}/flaky/5/pile/00.jsonl.zst", tmp_path / "y", retries=1, **FAST)
    assert (tmp_path / "y.part").stat().st_size > 0  # kept for the requeued run to resume


@pytest.mark.parametrize("code", [404, 403, 410])
def test_client_errors_fail_at_once(server, tmp_path, code):
    before = len(_log(server))
    with pytest.raises(InputError, match=rf"/status/{code}/x failed: HTTP {code}"):
        download(f"{server}/status/{code}/x", tmp_path / "x", retries=5, **FAST)
    assert len(_log(server)) == before + 2  # one request and this /_log: not retried


def test_size_and_sha256_are_verified(server, www, tmp_path):
    with pytest.raises(InputError, match="sha256 mismatch: got [0-9a-f]{64}, expected 0{64}"):
        download(f"{server}/files/pile/00.jsonl.zst", tmp_path / "a", sha256="0" * 64, **FAST)
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.part").exists()
    sums = fetch_sha256sums(f"{server}/files/pile/sha256sums.txt", tmp_path, **FAST)
    assert set(sums) == {"00.jsonl.zst", "01.jsonl.zst", "02.jsonl.zst"}
    size = (www / "pile/00.jsonl.zst").stat().st_size
    download(f"{server}/files/pile/00.jsonl.zst", tmp_path / "b", sha256=sums["00.jsonl.zst"], size=size, **FAST)


def test_parse_sha256sums():
    assert parse_sha256sums(f"# comment\n{'A' * 64}  dir/x.zst\n{'b' * 64} *y\n") == {"x.zst": "a" * 64, "y": "b" * 64}
    with pytest.raises(InputError, match="sums:2: expected"):
        parse_sha256sums(f"{'a' * 64}  x\nnot a line\n", "sums")
