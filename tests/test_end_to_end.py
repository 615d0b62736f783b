"""Raw text → Megatron dataset → trained GPT, through the real console scripts."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from bignlp_contracts import read_checkpoint, read_manifest, resolve_dataset
from support import SHARED_DATA, console_script, run

TRAIN_STEPS = ["trainer.max_steps=16", "trainer.val_check_interval=8", "trainer.limit_val_batches=4"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, demo_corpus, gpt2_files) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "data"
    vocab, merges = gpt2_files
    res = run([
        console_script("bignlp-dataprep"), "preprocess", "--input", str(demo_corpus),
        "--output-prefix", str(out / "demo"), "--json-keys", "text", "--tokenizer-type", "gpt2-bpe",
        "--vocab-file", str(vocab), "--merges-file", str(merges), "--append-eod", "--workers", "2",
    ])
    assert res.returncode == 0, res.stderr
    return out


def pretrain(data_prefix: Path, run_dir: Path, *overrides: str):
    """Run ``bignlp-train pretrain --config gpt3/tiny-cpu`` on one dataset."""
    return run([
        console_script("bignlp-train"), "pretrain", "--config", "gpt3/tiny-cpu",
        f"model.data.data_prefix=[1.0,{data_prefix}]", f"exp_manager.explicit_log_dir={run_dir}", *overrides,
    ])


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    res = pretrain(dataset / "demo_text_document", run_dir, *TRAIN_STEPS)
    assert res.returncode == 0, res.stderr[-3000:]
    return run_dir, res.stdout + res.stderr


def _reference_encoder():
    """An encoder independent of ours: tiktoken's own gpt2 loader, else HF tokenizers."""
    openai = SHARED_DATA / "gpt2-openai"
    if (openai / "encoder.json").exists():
        import os
        import tempfile

        import tiktoken

        cache = Path(tempfile.mkdtemp())
        (cache / "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6").write_bytes((openai / "encoder.json").read_bytes())
        (cache / "6d1cbeee0f20b3d9449abfede4726ed8212e3aee").write_bytes((openai / "vocab.bpe").read_bytes())
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        enc = tiktoken.get_encoding("gpt2")
        return lambda texts: enc.encode_ordinary_batch(texts)
    from tokenizers import ByteLevelBPETokenizer

    data = Path(__file__).parent / "data" / "gpt2"
    tok = ByteLevelBPETokenizer(str(data / "vocab.json"), str(data / "merges.txt"))
    return lambda texts: [e.ids for e in tok.encode_batch(texts)]


def test_dataset_is_read_by_megatron_core_with_reference_tokens(dataset, demo_corpus):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    (ref,) = resolve_dataset(dataset)
    ds = IndexedDataset(str(ref.prefix))
    with gzip.open(demo_corpus, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    assert len(ds) == len(texts) == ref.entry["num_documents"]
    expected = _reference_encoder()(texts)
    for i, tokens in enumerate(expected):
        assert np.array_equal(ds[i], np.array([*tokens, 50256])), f"document {i} differs"
    assert ds.sequence_lengths.sum() == ref.entry["num_tokens"]


def test_dataset_artifact_is_complete(dataset):
    manifest = read_manifest(dataset, "megatron-dataset", verify="sha256")
    assert manifest.producer.package == "bignlp-dataprep"
    assert manifest.summary["tokenizer"]["eod_id"] == 50256
    assert (dataset / "tokenizer" / "vocab.json").is_file() and (dataset / "config.yaml").is_file()


def test_training_lowers_validation_loss_and_writes_a_checkpoint(trained, dataset):
    run_dir, log = trained
    losses = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [m["val_loss"] for m in losses if "val_loss" in m]
    assert len(val) >= 2 and val[-1] < val[0] - 1.0, val
    ckpt, manifest = read_checkpoint(run_dir)
    assert manifest.summary["step"] == 16
    assert any(i.get("kind") == "megatron-dataset" for i in manifest.inputs)
    assert (ckpt / "tokenizer").is_dir() and (run_dir / "config.yaml").is_file()


def test_resume_continues_from_latest_checkpoint(trained, dataset):
    run_dir, _ = trained
    res = pretrain(dataset / "demo_text_document", run_dir, "exp_manager.resume_if_exists=true",
                   *TRAIN_STEPS, "trainer.max_steps=20")
    assert res.returncode == 0, res.stderr[-3000:]
    steps = [json.loads(line).get("step") for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert 17 in steps and 20 in steps
    _, manifest = read_checkpoint(run_dir)
    assert manifest.summary["step"] == 20


def _assert_one_line_error(res, *needles: str) -> None:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert re.search(needle, lines[0]), f"{needle!r} not in {lines[0]!r}"


def _preprocess(tmp_path: Path, inp: Path, gpt2_files, key: str = "text"):
    vocab, merges = gpt2_files
    return run([
        console_script("bignlp-dataprep"), "preprocess", "--input", str(inp), "--output-prefix",
        str(tmp_path / "out" / "x"), "--json-keys", key, "--tokenizer-type", "gpt2-bpe",
        "--vocab-file", str(vocab), "--merges-file", str(merges), "--append-eod",
    ])


def test_bad_input_missing_file(tmp_path, gpt2_files):
    res = _preprocess(tmp_path, tmp_path / "nope.jsonl", gpt2_files)
    _assert_one_line_error(res, "nope.jsonl")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_input_malformed_json_names_file_and_line(tmp_path, gpt2_files):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": "fine"}\n{"text": broken\n')
    res = _preprocess(tmp_path, bad, gpt2_files)
    _assert_one_line_error(res, r"bad\.jsonl:3")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_input_missing_json_key(tmp_path, gpt2_files):
    bad = tmp_path / "k.jsonl"
    bad.write_text('{"text": "a"}\n{"body": "b"}\n')
    res = _preprocess(tmp_path, bad, gpt2_files)
    _assert_one_line_error(res, r"k\.jsonl:2", "text")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_bad_config_key_is_one_line(tmp_path, dataset):
    res = pretrain(dataset, tmp_path / "r", "model.optim.lrr=0.1")
    _assert_one_line_error(res, "model.optim.lrr", "model.optim.lr")
    assert res.returncode == 2


def test_vocabulary_that_does_not_fit_the_model(tmp_path, dataset):
    res = pretrain(dataset, tmp_path / "r", "model.tokenizer.vocab_size=1000")
    _assert_one_line_error(res, "50257", "1000")
    assert not list((tmp_path / "r").glob("checkpoints/*/manifest.json"))


def test_incomplete_dataset_is_refused(tmp_path, dataset):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in dataset.glob("demo_text_document.*"):
        (broken / f.name).write_bytes(f.read_bytes())
    res = pretrain(broken / "demo_text_document", tmp_path / "r")
    _assert_one_line_error(res, "manifest.json is missing", "bignlp-dataprep")
    assert res.returncode == 3
