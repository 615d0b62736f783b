"""``bignlp-dataprep inspect``: the token-length histogram as text and as a PNG."""

from __future__ import annotations

import json
import sys

from click.testing import CliRunner
from dataprep_helpers import config

from bignlp_dataprep.cli import main
from bignlp_dataprep.inspect_dataset import histogram_bins
from bignlp_dataprep.preprocess import preprocess

# "a a a ..." is one GPT-2 token per word; with the EOD a document of n words has n + 1 tokens
WORDS = [1, 2, 7, 99, 40]


def _dataset(tmp_path):
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"text": " ".join(["a"] * n)}) for n in WORDS] + ['{"text": ""}']
    path.write_text("\n".join(lines) + "\n")
    preprocess(config([path], tmp_path / "ds" / "x"))
    return tmp_path / "ds"


def test_histogram_buckets():
    assert histogram_bins([0, 2, 3, 8, 100, 41]) == [
        (0, 0, 1), (2, 3, 2), (4, 7, 0), (8, 15, 1), (16, 31, 0), (32, 63, 1), (64, 127, 1)]
    assert histogram_bins([]) == [] and histogram_bins([1, 1]) == [(1, 1, 2)]


def test_inspect_prints_the_histogram_and_writes_a_png(tmp_path):
    ds = _dataset(tmp_path)
    png = tmp_path / "plots" / "lengths.png"
    res = CliRunner().invoke(main, ["inspect", str(ds), "--histogram-png", str(png)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert "x_text_document: 6 documents, 5 sequences, 154 tokens, uint16" in lines
    rows = [ln.split() for ln in lines if " tokens " in ln and ln.startswith("  ") and "%" in ln]
    assert [(r[0], int(r[2].replace(",", ""))) for r in rows] == [
        ("0", 1), ("2-3", 2), ("4-7", 0), ("8-15", 1), ("16-31", 0), ("32-63", 1), ("64-127", 1)]
    assert rows[1][4] == "#" * 40 and rows[0][4] == "#" * 20  # bars scale to the largest bucket
    assert "  min 0, median 6, mean 25.7, p99 97, max 100 tokens per document" in lines
    assert f"histogram: {png}" in lines
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[:2] == (450, 800)
    res = CliRunner().invoke(main, ["inspect", str(ds), "--no-histogram"])
    assert res.exit_code == 0 and "tokens per document" not in res.stdout


def test_png_without_matplotlib_is_one_line(tmp_path, monkeypatch):
    ds = _dataset(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    res = CliRunner().invoke(main, ["inspect", str(ds), "--histogram-png", str(tmp_path / "h.png")])
    assert res.exit_code == 2
    (line,) = res.stderr.strip().splitlines()
    assert "--histogram-png needs matplotlib" in line and "bignlp-dataprep[plot]" in line
    assert not (tmp_path / "h.png").exists()
