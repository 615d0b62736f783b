"""``bignlp-evaluate download`` against a local HTTP server: plain, resumed, and a checksum that does not match."""

from __future__ import annotations

import hashlib
import json
import urllib.request

from click.testing import CliRunner

from bignlp_evaluate.cli import main
from bignlp_evaluate.tasks import STANDARD_TASKS


def _log(server: str) -> list[list]:
    with urllib.request.urlopen(f"{server}/_log") as resp:
        return json.loads(resp.read())


def _run(*args: str):
    return CliRunner().invoke(main, ["download", *args])


def test_all_tasks_from_a_url_base(task_server, tmp_path):
    server, www = task_server
    result = _run("--tasks", "all_tasks", "--data-dir", str(tmp_path), "--url-base", f"{server}/files")
    assert result.exit_code == 0, result.output
    for name in STANDARD_TASKS:
        assert (tmp_path / f"{name}.jsonl").read_bytes() == (www / f"{name}.jsonl").read_bytes()
    assert not list(tmp_path.glob("*.part"))
    before = len(_log(server))  # a second run finds the files there and fetches nothing
    assert _run("--tasks", "lambada", "--data-dir", str(tmp_path), "--url-base", f"{server}/files").exit_code == 0
    assert len(_log(server)) == before + 1  # only our /_log request


def test_a_cut_download_resumes_with_range(task_server, tmp_path):
    server, www = task_server
    urls = tmp_path / "urls.yaml"
    sha = hashlib.sha256((www / "race.jsonl").read_bytes()).hexdigest()
    urls.write_text(f"race: {{url: {server}/cut/1/race.jsonl, sha256: {sha}}}\n")
    result = _run("--tasks", "race", "--data-dir", str(tmp_path / "d"), "--urls-config", str(urls))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "d" / "race.jsonl").read_bytes() == (www / "race.jsonl").read_bytes()
    ranges = [r for p, r in _log(server) if p == "/cut/1/race.jsonl"]
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"


def test_a_partial_file_left_by_a_killed_run_is_resumed(task_server, tmp_path):
    server, www = task_server
    full = (www / "piqa.jsonl").read_bytes()
    (tmp_path / "piqa.jsonl.part").write_bytes(full[:100])
    result = _run("--tasks", "piqa", "--data-dir", str(tmp_path), "--url-base", f"{server}/files")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "piqa.jsonl").read_bytes() == full
    assert [r for p, r in _log(server) if p == "/files/piqa.jsonl"][-1] == "bytes=100-"


def test_a_bad_checksum_is_one_line_and_leaves_no_file(task_server, tmp_path):
    server, _ = task_server
    urls = tmp_path / "urls.yaml"
    wrong = "0" * 64  # quoted below: YAML would read the digits as a number
    urls.write_text(f"boolq: {{url: {server}/files/boolq.jsonl, sha256: '{wrong}'}}\n")
    result = _run("--tasks", "boolq", "--data-dir", str(tmp_path / "d"), "--urls-config", str(urls))
    assert result.exit_code == 4
    line, = [x for x in result.stderr.splitlines() if x.startswith("bignlp-evaluate: error:")]
    assert "sha256 mismatch" in line and "boolq.jsonl" in line
    assert not (tmp_path / "d" / "boolq.jsonl").exists() and not (tmp_path / "d" / "boolq.jsonl.part").exists()


def test_no_url_and_a_missing_file_are_one_line(task_server, tmp_path):
    server, _ = task_server
    result = _run("--tasks", "lambada", "--data-dir", str(tmp_path))
    assert result.exit_code == 2 and "no URL for task lambada" in result.stderr
    result = _run("--tasks", "lambada", "--data-dir", str(tmp_path), "--url-base", f"{server}/files/nowhere")
    assert result.exit_code == 4 and "HTTP 404" in result.stderr
    assert len([x for x in result.stderr.splitlines() if "error" in x]) == 1
