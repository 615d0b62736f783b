"""preprocess(): Megatron-compatible output, worker/format independence, the artifact contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from dataprep_helpers import (
    EOD,
    MERGES,
    VOCAB,
    config,
    hf_encoder,
    megatron_core_files,
    megatron_documents,
    openai_encoder,
    slice_file,
    texts_of,
)

from bignlp_contracts import ArtifactError, read_manifest, resolve_dataset, sha256_file
from bignlp_dataprep.config import load_preprocess_config
from bignlp_dataprep.preprocess import preprocess

N_DOCS = 50


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, object]:
    out = tmp_path_factory.mktemp("built") / "ds" / "demo"
    manifest = preprocess(config([slice_file(N_DOCS)], out, workers=1))
    return out.parent, manifest


def _pair(prefix: Path) -> tuple[bytes, bytes]:
    return Path(f"{prefix}.bin").read_bytes(), Path(f"{prefix}.idx").read_bytes()


def test_megatron_core_reads_reference_tokens(built, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    artifact, _ = built
    ds = IndexedDataset(str(artifact / "demo_text_document"))
    texts = texts_of(slice_file(N_DOCS))
    assert len(ds) == len(texts)
    references = [hf_encoder()]
    if (openai := openai_encoder(tmp_path)) is not None:
        references.append(openai)
    for encode in references:
        for i, ids in enumerate(encode(texts)):
            expected = [*ids, EOD] if ids else []
            assert ds[i].tolist() == expected, f"document {i}"


def test_byte_identical_to_megatron_core_builder(built, tmp_path):
    artifact, _ = built
    docs = megatron_documents(texts_of(slice_file(N_DOCS)), hf_encoder(), append_eod=True)
    assert _pair(artifact / "demo_text_document") == megatron_core_files(tmp_path, docs, np.uint16)


def test_workers_and_compression_do_not_change_the_output(built, tmp_path):
    artifact, _ = built
    reference = _pair(artifact / "demo_text_document")
    runs = {
        "workers2": ([slice_file(N_DOCS)], {"workers": 2, "batch_mb": 0.02}),
        "gzip": ([slice_file(N_DOCS, "gzip")], {"batch_mb": 0.05}),
        "zstd": ([slice_file(N_DOCS, "zstd")], {"workers": 2, "batch_mb": 0.01}),
    }
    for name, (inputs, kw) in runs.items():
        preprocess(config(inputs, tmp_path / name / "demo", **kw))
        assert _pair(tmp_path / name / "demo_text_document") == reference, name


def test_small_inputs_skip_the_worker_pool(tmp_path):
    from bignlp_dataprep.preprocess import plan_workers
    from bignlp_dataprep.readers import InputFile

    plain, gz = InputFile(slice_file(N_DOCS)), InputFile(slice_file(N_DOCS, "gzip"))
    assert plain.size > 100_000
    assert plan_workers(8, [plain], 1_000_000) == 1
    assert plan_workers(8, [plain], plain.size // 8) == 2
    assert plan_workers(2, [plain, plain], 1_000) == 2
    assert plan_workers(8, [gz], gz.size) == 1


def test_manifest_is_the_contract(built):
    artifact, manifest = built
    on_disk = read_manifest(artifact, "megatron-dataset", verify="sha256")
    assert on_disk.kind == manifest.kind == "megatron-dataset"
    assert on_disk.producer.package == "bignlp-dataprep"
    assert set(on_disk.files) == {
        "demo_text_document.bin", "demo_text_document.idx", "tokenizer/vocab.json", "tokenizer/merges.txt",
        "config.yaml",
    }
    assert on_disk.files["demo_text_document.bin"]["sha256"] == sha256_file(artifact / "demo_text_document.bin")
    s = on_disk.summary
    (entry,) = s["datasets"]
    n = len(texts_of(slice_file(N_DOCS)))
    tokens = (artifact / "demo_text_document.bin").stat().st_size // 2
    assert entry == {"prefix": "demo_text_document", "json_key": "text", "num_documents": n,
                     "num_sequences": n, "num_tokens": tokens, "dtype": "uint16"}
    assert s["tokenizer"] == {"type": "gpt2-bpe", "vocab_file": "tokenizer/vocab.json",
                              "merges_file": "tokenizer/merges.txt", "vocab_size": 50257, "eod_id": 50256}
    assert s["num_documents"] == n and s["num_tokens"] == tokens
    assert s["input_bytes"] == slice_file(N_DOCS).stat().st_size
    assert s["elapsed_s"] > 0 and s["mb_per_s"] > 0
    (inp,) = on_disk.inputs
    assert inp["sha256"] == sha256_file(slice_file(N_DOCS)) and inp["size"] == slice_file(N_DOCS).stat().st_size
    assert (artifact / "tokenizer" / "vocab.json").read_bytes() == VOCAB.read_bytes()
    assert (artifact / "tokenizer" / "merges.txt").read_bytes() == MERGES.read_bytes()
    (ref,) = resolve_dataset(artifact)
    assert ref.prefix == artifact / "demo_text_document" and ref.tokenizer_file("vocab_file").is_file()
    assert resolve_dataset(artifact / "demo_text_document.bin")[0].prefix == ref.prefix
    saved = load_preprocess_config(artifact / "config.yaml")
    assert saved.append_eod is True and saved.tokenizer_type == "gpt2-bpe"
    assert on_disk.config == yaml.safe_load((artifact / "config.yaml").read_text())
    assert not list(artifact.glob(".*.tmp"))


def test_sentence_lists_empty_documents_and_several_keys(tmp_path):
    docs = [
        {"text": ["First sentence.", "", " Second one.", "Third"], "title": "A title"},
        {"text": "", "title": ""},
        {"text": ["", ""], "title": "Only a title"},
        {"text": "plain text", "title": ["t1", "t2"]},
    ]
    inp = tmp_path / "docs.jsonl"
    inp.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    for append_eod in (True, False):
        out = tmp_path / f"eod{append_eod}" / "x"
        manifest = preprocess(config([inp], out, json_keys=("text", "title"), append_eod=append_eod))
        assert [d["prefix"] for d in manifest.summary["datasets"]] == ["x_text_document", "x_title_document"]
        for key in ("text", "title"):
            expected = megatron_documents([d[key] for d in docs], hf_encoder(), append_eod=append_eod)
            got = _pair(out.parent / f"x_{key}_document")
            assert got == megatron_core_files(tmp_path / f"ref-{key}-{append_eod}", expected, np.uint16), key
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(tmp_path / "eodTrue" / "x_text_document"))
    assert ds.document_indices.tolist() == [0, 3, 3, 3, 4]  # empty documents repeat the index
    assert ds.sequence_lengths.tolist()[:3] == [3, 3, 2]  # "Third" + EOD


def test_rerun_overwrites_and_other_dataset_is_refused(tmp_path):
    inp = slice_file(3)
    first = preprocess(config([inp], tmp_path / "a" / "x"))
    again = preprocess(config([inp], tmp_path / "a" / "x", workers=1))
    assert again.files == first.files
    with pytest.raises(ArtifactError, match="already holds dataset x_text_document"):
        preprocess(config([inp], tmp_path / "a" / "y"))
    assert (tmp_path / "a" / "manifest.json").is_file()  # the refusal touched nothing


def test_many_files_read_in_order(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.json"
    a.write_text('{"text": "one"}\n{"text": "two"}', encoding="utf-8")  # no final newline
    b.write_text('\n{"text": "three"}\n\n', encoding="utf-8")  # blank lines are skipped
    manifest = preprocess(config([a, b], tmp_path / "o" / "x"))
    assert manifest.summary["num_documents"] == 3
    docs = megatron_documents(["one", "two", "three"], hf_encoder(), append_eod=True)
    assert _pair(tmp_path / "o" / "x_text_document") == megatron_core_files(tmp_path / "r", docs, np.uint16)
    assert [i["path"] for i in manifest.inputs] == [str(a.resolve()), str(b.resolve())]
