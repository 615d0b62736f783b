"""The bignlp-dataprep command line: help, option parsing, config layering, one-line failures."""

from __future__ import annotations

import gzip
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest
import zstandard
from click.testing import CliRunner
from dataprep_helpers import MERGES, VOCAB, slice_file

from bignlp_contracts import ConfigError
from bignlp_dataprep import __version__
from bignlp_dataprep.cli import expand_greedy, main
from bignlp_dataprep.config import PreprocessConfig, load_preprocess_config

GOOD = '{"text": "fine"}\n'


def _invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def _preprocess_args(inputs: list[Path], out: Path, *extra: str) -> list[str]:
    return ["preprocess", "--input", *map(str, inputs), "--output-prefix", str(out / "x"), "--vocab-file", str(VOCAB),
            "--merges-file", str(MERGES), "--append-eod", *extra]


# --- help -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [[], ["preprocess"], ["inspect"], ["train-tokenizer"], ["merge"]],
                         ids=["group", "preprocess", "inspect", "train-tokenizer", "merge"])
def test_help_has_an_example_and_documents_every_option(path):
    res = _invoke(*path, "--help")
    assert res.exit_code == 0 and "Example:" in res.output
    command = main if not path else main.commands[path[0]]
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"{param.name} has no help"


def test_python_dash_m_and_version():
    res = subprocess.run([sys.executable, "-m", "bignlp_dataprep", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "preprocess" in res.stdout
    assert __version__ in _invoke("--version").output


# --- option parsing and config layering ---------------------------------------------------------------------------


def test_greedy_options_take_several_values():
    args = ["--input", "a.jsonl", "b.jsonl.gz", "--json-keys", "text", "title", "workers=2", "--input=c", "d"]
    assert expand_greedy(args, ("--input", "--json-keys")) == [
        "--input", "a.jsonl", "--input", "b.jsonl.gz", "--json-keys", "text", "--json-keys", "title",
        "workers=2", "--input=c", "--input", "d",
    ]
    assert expand_greedy(["--input", "-", "x", "--", "y"], ("--input",)) == ["--input", "-", "--input", "x", "--", "y"]


def test_config_file_overrides_then_flags(tmp_path):
    cfg_file = tmp_path / "dp.yaml"
    cfg_file.write_text("input: a.jsonl\noutput_prefix: out/x\nworkers: 3\njson_keys: [body]\n")
    cfg = load_preprocess_config(cfg_file, ["workers=5", "append_eod=true"], {"json_keys": ("text",), "workers": None})
    assert cfg == PreprocessConfig(input=("a.jsonl",), output_prefix="out/x", workers=5, json_keys=("text",),
                                   append_eod=True)
    assert load_preprocess_config(cfg_file, ["tokenizer_type=GPT2BPETokenizer"]).tokenizer_type == "gpt2-bpe"
    with pytest.raises(ConfigError, match="unknown config key wrkers.*did you mean workers"):
        load_preprocess_config(cfg_file, ["wrkers=2"])
    with pytest.raises(ConfigError, match="workers must be >= 1"):
        load_preprocess_config(cfg_file, ["workers=0"])
    with pytest.raises(ConfigError, match="no input files"):
        load_preprocess_config(None, [], {"output_prefix": "o/x"})
    with pytest.raises(ConfigError, match="is a directory"):
        load_preprocess_config(None, [], {"input": ("a",), "output_prefix": str(tmp_path)})
    with pytest.raises(ConfigError, match="json_keys: text given more than once"):
        load_preprocess_config(cfg_file, ["json_keys=[text,text]"])


def test_cli_end_to_end_with_two_inputs_two_keys_and_overrides(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl.gz"
    a.write_text('{"text": "hello", "title": "t"}\n')
    b.write_bytes(gzip.compress(b'{"text": "world", "title": "u"}\n'))
    res = _invoke(*_preprocess_args([a, b], tmp_path / "out"), "--json-keys", "text", "title", "workers=1")
    assert res.exit_code == 0, res.output
    assert "2 documents" in res.stdout and "x_title_document.idx" in res.stdout
    assert (tmp_path / "out" / "manifest.json").is_file()
    res = _invoke("inspect", str(tmp_path / "out"), "--show", "1")
    assert res.exit_code == 0 and "x_text_document: 2 documents" in res.stdout and "'hello<|endoftext|>'" in res.stdout


def test_cli_demo_slice_with_two_workers(tmp_path):
    res = _invoke(*_preprocess_args([slice_file(20, "gzip")], tmp_path), "--workers", "2", "--batch-mb", "0.02")
    assert res.exit_code == 0, res.output
    assert "28 documents" in res.stdout and res.stderr == ""


@pytest.mark.parametrize("extra, needle", [(["stray"], "overrides are KEY=VALUE"), (["--workers", "0"], "0")])
def test_flag_misuse_is_a_usage_error(tmp_path, extra, needle):
    res = _invoke(*_preprocess_args([slice_file(1)], tmp_path), *extra)
    assert res.exit_code == 2 and "Usage:" in res.stderr and needle in res.stderr
    assert not (tmp_path / "manifest.json").exists()


# --- bad input: one line on stderr, non-zero exit, no manifest, no temporary files ---------------------------------


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _truncated_zst() -> bytes:
    data = zstandard.ZstdCompressor().compress(GOOD.encode() * 2000)
    return data[: len(data) - 5]


def _corrupt_gz() -> bytes:
    data = bytearray(gzip.compress(GOOD.encode() * 2000))
    data[-6] ^= 0xFF  # inside the CRC32 trailer
    return bytes(data)


BAD_INPUTS = {
    "malformed-json": ("bad.jsonl", (GOOD * 2 + '{"text": broken\n').encode(), r"bad\.jsonl:3: malformed JSON \("),
    "missing-key": ("k.jsonl", (GOOD + '{"body": "b", "id": 1}\n').encode(),
                    r"k\.jsonl:2: no key 'text' \(has: 'body', 'id'\)"),
    "not-an-object": ("l.jsonl", (GOOD + "[1, 2]\n").encode(), r"l\.jsonl:2: expected a JSON object"),
    "not-a-string": ("n.jsonl", (GOOD + '{"text": 5}\n').encode(), r"n\.jsonl:2: key 'text' must be a string"),
    "invalid-utf8": ("u.jsonl", GOOD.encode() + b'{"text": "caf\xe9"}\n', r"u\.jsonl:2: invalid UTF-8"),
    "truncated-gz": ("t.jsonl.gz", gzip.compress(GOOD.encode() * 2000)[:-20],
                     r"t\.jsonl\.gz: truncated or corrupt gzip"),
    "corrupt-gz": ("c.jsonl.gz", _corrupt_gz(), r"c\.jsonl\.gz: truncated or corrupt gzip"),
    "truncated-zst": ("t.jsonl.zst", _truncated_zst(), r"t\.jsonl\.zst: truncated or corrupt zstd"),
    "fake-gz": ("f.jsonl.gz", GOOD.encode(), r"f\.jsonl\.gz: named like a gzip file but is not"),
}


def _assert_one_line_failure(res, out: Path, pattern: str) -> None:
    assert res.exit_code not in (0, None)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("bignlp-dataprep: error: ") and re.search(pattern, lines[0]), lines[0]
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".*.tmp")) and not list(out.glob("*.bin")), list(out.iterdir())


# Every case in-process; with a worker pool, errors raised in a worker (JSON, UTF-8) and in the reader.
WORKER_CASES = [(case, 1) for case in BAD_INPUTS] + [(case, 2) for case in ("malformed-json", "invalid-utf8",
                                                                            "truncated-zst")]


@pytest.mark.parametrize("case, workers", WORKER_CASES, ids=[f"{c}-w{w}" for c, w in WORKER_CASES])
def test_bad_input_fails_in_one_line(tmp_path, case, workers):
    name, data, pattern = BAD_INPUTS[case]
    inp = _write(tmp_path, name, data)
    # tiny batches, so that the pool is not skipped as not worth starting for a small input
    res = _invoke(*_preprocess_args([inp], tmp_path / "out"), "--workers", str(workers), "--batch-mb", "0.000001")
    assert res.exit_code == 4
    _assert_one_line_failure(res, tmp_path / "out", pattern)


@pytest.mark.parametrize("which", ["input", "vocab", "merges"])
def test_missing_files_fail_in_one_line(tmp_path, which):
    args = _preprocess_args([slice_file(1)], tmp_path / "out")
    missing = str(tmp_path / f"nope-{which}")
    args[{"input": 2, "vocab": 6, "merges": 8}[which]] = missing
    res = _invoke(*args)
    assert res.exit_code == 4
    _assert_one_line_failure(res, tmp_path / "out", re.escape(missing) + " does not exist")


def test_failed_rerun_leaves_no_manifest(tmp_path):
    assert _invoke(*_preprocess_args([slice_file(2)], tmp_path / "out")).exit_code == 0
    bad = _write(tmp_path, "bad.jsonl", b'{"text": "ok"}\n{oops\n')
    res = _invoke(*_preprocess_args([bad], tmp_path / "out"))
    assert res.exit_code == 4 and not (tmp_path / "out" / "manifest.json").exists()
    assert not list((tmp_path / "out").glob(".*.tmp"))


def test_config_error_is_one_line_exit_2(tmp_path):
    res = _invoke(*_preprocess_args([slice_file(1)], tmp_path / "out"), "wrkers=2")
    assert res.exit_code == 2 and res.stderr.count("\n") == 1 and "did you mean workers" in res.stderr


def test_inspect_incomplete_artifact_exit_3(tmp_path):
    res = _invoke("inspect", str(tmp_path))
    assert res.exit_code == 3 and "manifest.json is missing" in res.stderr



def test_readme_names_every_option_of_every_command():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param, click.Option):
                for opt in param.opts + param.secondary_opts:
                    assert opt in readme, f"{name} {opt} is not in packages/dataprep/README.md"
