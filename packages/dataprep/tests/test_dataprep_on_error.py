"""on_error: fail stops at the first bad line; skip drops it and counts it by reason, whatever --workers.

Also a full disk while writing .bin/.idx: one line, no manifest, no partial files.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import MERGES, VOCAB, config, slice_file

from bignlp_contracts import ConfigError, InputError, read_manifest
from bignlp_dataprep import preprocess as preprocess_module
from bignlp_dataprep.cli import main
from bignlp_dataprep.config import load_preprocess_config
from bignlp_dataprep.preprocess import preprocess

GOOD = [b'{"text": "first good document"}', b'{"text": ["two", " sentences"]}', b'{"text": "last one"}']
BAD = {
    "malformed_json": [b'{"text": broken', b"[1, 2]"],
    "missing_key": [b'{"body": "no text key"}'],
    "bad_value": [b'{"text": 5}'],
    "invalid_utf8": [b'{"text": "caf\xe9"}'],
    "empty_document": [b'{"text": ""}', b'{"text": ["", ""]}'],
}


def _mixed(tmp_path: Path) -> Path:
    lines = [GOOD[0], *BAD["malformed_json"], GOOD[1], *BAD["missing_key"], *BAD["bad_value"],
             *BAD["invalid_utf8"], b"", *BAD["empty_document"], GOOD[2]]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _pair(prefix: Path) -> tuple[bytes, bytes]:
    return Path(f"{prefix}.bin").read_bytes(), Path(f"{prefix}.idx").read_bytes()


def test_skip_drops_and_counts_every_reason_for_any_workers(tmp_path):
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"\n".join(GOOD) + b"\n")
    preprocess(config([clean], tmp_path / "ref" / "x"))
    expected = {reason: len(lines) for reason, lines in BAD.items()}
    # one batch for the whole file (invalid UTF-8 found inside it), and one line per batch in 1 or 2 processes
    for workers, batch_mb in ((1, 1.0), (1, 0.00001), (2, 0.00001)):
        out = tmp_path / f"w{workers}-{batch_mb}" / "x"
        manifest = preprocess(config([_mixed(tmp_path)], out, on_error="skip", workers=workers, batch_mb=batch_mb))
        assert manifest.summary["skipped"] == expected
        assert manifest.summary["num_documents"] == len(GOOD)
        assert _pair(out.parent / "x_text_document") == _pair(tmp_path / "ref" / "x_text_document"), workers
    assert read_manifest(out.parent).config["on_error"] == "skip"


@pytest.mark.parametrize("reason", [r for r in BAD if r != "empty_document"])
def test_fail_stops_at_the_bad_line(tmp_path, reason):
    path = tmp_path / "in.jsonl"
    path.write_bytes(GOOD[0] + b"\n" + BAD[reason][0] + b"\n")
    with pytest.raises(InputError, match=r"in\.jsonl:2: "):
        preprocess(config([path], tmp_path / "o" / "x"))
    assert not (tmp_path / "o" / "manifest.json").exists()
    manifest = preprocess(config([path], tmp_path / "s" / "x", on_error="skip"))
    assert manifest.summary["skipped"][reason] == 1 and manifest.summary["num_documents"] == 1


def test_fail_keeps_empty_documents_as_megatron_does(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"\n".join([GOOD[0], *BAD["empty_document"], GOOD[2]]) + b"\n")
    manifest = preprocess(config([path], tmp_path / "o" / "x"))
    assert manifest.summary["num_documents"] == 4 and not any(manifest.summary["skipped"].values())
    # a document is empty only if every key is: one non-empty key keeps it
    both = tmp_path / "both.jsonl"
    both.write_text('{"text": "", "title": "t"}\n')
    kept = preprocess(config([both], tmp_path / "b" / "x", json_keys=("text", "title"), on_error="skip"))
    assert kept.summary["num_documents"] == 1


def test_cli_on_error_skip_prints_the_counts(tmp_path):
    res = CliRunner().invoke(main, ["preprocess", "--input", str(_mixed(tmp_path)), "--output-prefix",
                                    str(tmp_path / "o" / "x"), "--vocab-file", str(VOCAB), "--merges-file",
                                    str(MERGES), "--on-error", "skip"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert ("skipped 7 line(s): malformed_json 2, missing_key 1, bad_value 1, invalid_utf8 1, empty_document 2"
            in res.stdout)
    with pytest.raises(ConfigError, match="on_error must be one of fail, skip"):
        load_preprocess_config(None, ["on_error=ignore"], {"input": ("a",), "output_prefix": "o/x"})


def test_disk_full_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    real_open = preprocess_module._open_output

    class FullDisk:
        def __init__(self, f):
            self.f, self.left = f, 20_000

        def write(self, data):
            self.left -= len(data)
            if self.left < 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self.f.write(data)

    monkeypatch.setattr(preprocess_module, "_open_output",
                        lambda stack, path, mode: FullDisk(real_open(stack, path, mode)))
    out = tmp_path / "o"
    res = CliRunner().invoke(main, ["preprocess", "--input", str(slice_file(20)), "--output-prefix", str(out / "x"),
                                    "--vocab-file", str(VOCAB), "--merges-file", str(MERGES), "--batch-mb", "0.01"],
                             catch_exceptions=False)
    assert res.exit_code == 1
    (line,) = res.stderr.strip().splitlines()
    assert f"no space left on device writing {out / 'x_text_document.bin'}: 0.0 MB of tokens written, about" in line
    assert "MB free; the partial files were removed" in line
    assert not (out / "manifest.json").exists() and list(out.iterdir()) == []


@pytest.mark.parametrize("recipe", ["gpt3/download_gpt3_pile", "t5/download_t5_pile", "mt5/download_mc4",
                                    "generic/custom_dataset"])
def test_every_recipe_takes_on_error(tmp_path, recipe):
    from bignlp_dataprep.recipes import load_recipe

    extra = {"mt5/download_mc4": ["languages=de", "num_files={de: 1}"],
             "generic/custom_dataset": ["raw_dataset_files=[a.jsonl]", f"vocab_file={VOCAB}", f"merge_file={MERGES}"]}
    base = [f"data_dir={tmp_path}", *extra.get(recipe, [])]
    assert load_recipe(recipe, base).on_error == "fail"
    assert load_recipe(recipe, [*base, "on_error=skip"]).on_error == "skip"
    with pytest.raises(ConfigError, match="on_error 'ignore' is not one of fail, skip"):
        load_recipe(recipe, [*base, "on_error=ignore"])


def test_recipe_run_skips_bad_lines_and_finalize_sums_the_counts(tmp_path):
    """custom_dataset in 2 array shares: each file's skips land in its marker; finalize sums them per reason."""
    first = _mixed(tmp_path)
    second = tmp_path / "second.jsonl"
    second.write_bytes(b"\n".join([GOOD[0], *BAD["missing_key"], *BAD["malformed_json"][:1], GOOD[1]]) + b"\n")
    data_dir = tmp_path / "data"
    args = ["run", "--config", "generic/custom_dataset", f"data_dir={data_dir}",
            f"raw_dataset_files=[{first},{second}]", f"vocab_file={VOCAB}", f"merge_file={MERGES}"]
    res = CliRunner().invoke(main, args)  # on_error: fail (the default) stops at the first bad line
    assert res.exit_code == 4 and f"{first}:2: malformed JSON" in res.stderr
    assert not (data_dir / "manifest.json").exists()

    for rank in (0, 1):
        res = CliRunner().invoke(main, [*args, "on_error=skip", "--rank", str(rank), "--world-size", "2"],
                                 catch_exceptions=False)
        assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, [*args, "on_error=skip", "--step", "finalize"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    expected = {reason: len(lines) for reason, lines in BAD.items()}
    expected["missing_key"] += 1
    expected["malformed_json"] += 1
    manifest = read_manifest(data_dir)
    assert manifest.summary["skipped"] == expected
    assert manifest.summary["num_documents"] == len(GOOD) + 2
    assert "skipped 9 line(s): malformed_json 3, missing_key 2, bad_value 1, invalid_utf8 1, empty_document 2" \
        in res.stdout
    # the pair of the mixed file equals preprocessing its good lines alone
    clean = tmp_path / "clean.jsonl"
    clean.write_bytes(b"\n".join(GOOD) + b"\n")
    preprocess(config([clean], tmp_path / "ref" / "x"))
    assert _pair(data_dir / "custom_00_text_document") == _pair(tmp_path / "ref" / "x_text_document")
