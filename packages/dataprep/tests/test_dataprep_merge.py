"""``bignlp-dataprep merge``: per-partition datasets merged equal one run over all the text, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import DATA, config, demo_lines

from bignlp_contracts import read_manifest, resolve_dataset
from bignlp_dataprep.cli import main
from bignlp_dataprep.preprocess import preprocess

BERT_VOCAB = DATA / "bert" / "vocab.txt"


def _partitions(tmp_path: Path, n: int = 3) -> list[Path]:
    lines = demo_lines(120)
    # a document with a title and an empty text, so the two keys' indexes differ
    parts = []
    for i in range(n):
        path = tmp_path / f"part-{i}.jsonl"
        chunk = lines[i * 40 : (i + 1) * 40]
        path.write_text("".join(line.replace('{"text"', f'{{"title": "part {i} doc {j}", "text"', 1)
                                for j, line in enumerate(chunk)) + '{"title": "empty", "text": ""}\n')
        parts.append(path)
    return parts


def _pair(prefix: Path) -> tuple[bytes, bytes]:
    return Path(f"{prefix}.bin").read_bytes(), Path(f"{prefix}.idx").read_bytes()


def test_merged_partitions_equal_one_run_and_megatron_reads_them(tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    parts = _partitions(tmp_path)
    keys = ("text", "title")
    single = preprocess(config(parts, tmp_path / "single" / "corpus", json_keys=keys))
    for i, part in enumerate(parts):
        preprocess(config([part], tmp_path / "parts" / f"p{i}" / "corpus", json_keys=keys))
    # directories (both keys) for the first two, one prefix per key would also do: mix the forms
    res = CliRunner().invoke(main, ["merge", "--input", str(tmp_path / "parts" / "p0"), str(tmp_path / "parts" / "p1"),
                                    "--input", str(tmp_path / "parts" / "p2"),
                                    "--output-prefix", str(tmp_path / "merged" / "corpus")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "merged 6 pair(s): 123 documents" in res.stdout
    for key in keys:
        name = f"corpus_{key}_document"
        assert _pair(tmp_path / "merged" / name) == _pair(tmp_path / "single" / name), key
    manifest = read_manifest(tmp_path / "merged", verify="sha256")
    assert manifest.summary["num_tokens"] == single.summary["num_tokens"]
    assert manifest.summary["datasets"] == single.summary["datasets"]
    assert manifest.summary["tokenizer"] == single.summary["tokenizer"]
    merged_vocab = tmp_path / "merged" / "tokenizer" / "vocab.json"
    assert merged_vocab.read_bytes() == (DATA / "gpt2" / "vocab.json").read_bytes()
    ref = resolve_dataset(tmp_path / "merged" / "corpus_text_document")[0]
    ds = IndexedDataset(str(ref.prefix))
    assert len(ds.document_indices) - 1 == 123 and ds[0].tolist()[-1] == 50256

    # one key only, by prefix
    res = CliRunner().invoke(main, ["merge", "--input", *(str(tmp_path / "parts" / f"p{i}" / "corpus_title_document")
                                                          for i in range(3)),
                                    "--output-prefix", str(tmp_path / "titles" / "corpus")])
    assert res.exit_code == 0, res.output
    assert [r.prefix.name for r in resolve_dataset(tmp_path / "titles")] == ["corpus_title_document"]
    assert _pair(tmp_path / "titles" / "corpus_title_document") == _pair(tmp_path / "single" / "corpus_title_document")


@pytest.mark.parametrize("other, message", [
    ("bert", "tokenized with another tokenizer than"),
    ("int32", "holds int32 tokens but"),
])
def test_mismatches_are_refused_with_one_line(tmp_path, other, message):
    from bignlp_dataprep.indexed import IndexedDatasetWriter

    part = _partitions(tmp_path, 1)[0]
    preprocess(config([part], tmp_path / "a" / "corpus"))
    if other == "bert":
        from bignlp_dataprep.config import PreprocessConfig

        preprocess(PreprocessConfig(input=(str(part),), output_prefix=str(tmp_path / "b" / "corpus"),
                                    tokenizer_type="bert-wordpiece", vocab_file=str(BERT_VOCAB)))
    else:  # same tokenizer, but the pair rewritten as int32 tokens (manifest updated to match)
        import json

        import numpy as np

        from bignlp_dataprep.indexed import IndexedDatasetReader

        preprocess(config([part], tmp_path / "b" / "corpus"))
        prefix = tmp_path / "b" / "corpus_text_document"
        reader = IndexedDatasetReader.open(prefix)
        tokens = np.asarray(reader.tokens, dtype="<i4").tobytes()
        lengths, counts = np.array(reader.sequence_lengths), np.diff(reader.document_indices)
        with open(f"{prefix}.bin", "wb") as b, open(f"{prefix}.idx", "wb") as i:
            w = IndexedDatasetWriter(b, np.int32)
            w.add_documents(tokens, lengths, counts)
            w.write_index(i)
        mf = json.loads((tmp_path / "b" / "manifest.json").read_text())
        mf["summary"]["datasets"][0]["dtype"] = "int32"
        for rel, meta in mf["files"].items():
            if rel.startswith("corpus_text_document"):
                meta["size"] = (tmp_path / "b" / rel).stat().st_size
                meta.pop("sha256", None)
        (tmp_path / "b" / "manifest.json").write_text(json.dumps(mf))
    out = tmp_path / "m"
    res = CliRunner().invoke(main, ["merge", "--input", str(tmp_path / "a"), str(tmp_path / "b"),
                                    "--output-prefix", str(out / "corpus")])
    assert res.exit_code == 4, res.output
    (line,) = res.stderr.strip().splitlines()
    assert message in line and line.startswith("bignlp-dataprep: error: merge: ")
    assert not out.exists() or not any(out.iterdir())


def test_a_run_recipe_artifact_merges_into_one_pair(tmp_path):
    """custom_dataset writes one pair per file (custom_00, custom_01); merging the directory equals one run."""
    from dataprep_helpers import MERGES, VOCAB

    parts = _partitions(tmp_path, 2)
    data_dir = tmp_path / "data"
    res = CliRunner().invoke(main, ["run", "--config", "generic/custom_dataset", f"data_dir={data_dir}",
                                    f"raw_dataset_files=[{parts[0]},{parts[1]}]", f"vocab_file={VOCAB}",
                                    f"merge_file={MERGES}"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(main, ["merge", "--input", str(data_dir), "--output-prefix", str(tmp_path / "m" / "all")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    preprocess(config(parts, tmp_path / "single" / "all"))
    assert _pair(tmp_path / "m" / "all_text_document") == _pair(tmp_path / "single" / "all_text_document")
    assert read_manifest(tmp_path / "m").summary["merged_from"] == [
        str((data_dir / f"custom_0{i}_text_document").resolve()) for i in range(2)]


def test_other_json_keys_are_refused(tmp_path):
    part = _partitions(tmp_path, 1)[0]
    preprocess(config([part], tmp_path / "a" / "corpus"))
    preprocess(config([part], tmp_path / "b" / "corpus", json_keys=("text", "title")))
    res = CliRunner().invoke(main, ["merge", "--input", str(tmp_path / "a"), str(tmp_path / "b"),
                                    "--output-prefix", str(tmp_path / "m" / "corpus")])
    assert res.exit_code == 4
    assert f"merge: {tmp_path / 'b'} has JSON key(s) text, title, but {tmp_path / 'a'} has text" in res.stderr
    assert not (tmp_path / "m").exists()
