"""``Tokenizer.summary()`` and ``tokenizer_from_summary``: the tokenizer an artifact carries, back from its manifest."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bignlp_contracts import MEGATRON_DATASET, ArtifactError, Producer, read_manifest, write_manifest
from bignlp_tokenizers import (
    GPT2BPETokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    TokenizerSpec,
    build_tokenizer,
    tokenizer_from_summary,
)

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
GPT2_VOCAB, GPT2_MERGES = DATA / "gpt2" / "vocab.json", DATA / "gpt2" / "merges.txt"
BERT_VOCAB = DATA / "bert" / "vocab.txt"


def carry(tok, artifact_dir: Path) -> dict:
    """Copy the tokenizer's files the way dataprep does (``tokenizer/<name>``); its summary."""
    for _key, (name, source) in tok.files().items():
        (artifact_dir / "tokenizer").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, artifact_dir / "tokenizer" / name)
    return tok.summary()


def test_gpt2_summary_has_dataprep_keys(gpt2):
    assert gpt2.summary() == {"type": "gpt2-bpe", "vocab_file": "tokenizer/vocab.json",
                              "merges_file": "tokenizer/merges.txt", "vocab_size": 50257, "eod_id": 50256}
    assert gpt2.summary({"vocab_file": "a/v.json", "merges_file": "a/m.txt"})["vocab_file"] == "a/v.json"


def test_dataset_manifest_round_trip(gpt2, tmp_path, texts):
    """A megatron-dataset manifest as dataprep writes it, read back with contracts, gives the same tokenizer."""
    summary = carry(gpt2, tmp_path)
    (tmp_path / "x_text_document.bin").write_bytes(b"")
    (tmp_path / "x_text_document.idx").write_bytes(b"")
    files = ["x_text_document.bin", "x_text_document.idx", "tokenizer/vocab.json", "tokenizer/merges.txt"]
    write_manifest(tmp_path, MEGATRON_DATASET, producer=Producer("test", "0"), files=files,
                   summary={"datasets": [{"prefix": "x_text_document"}], "tokenizer": summary})
    tok = tokenizer_from_summary(read_manifest(tmp_path).summary["tokenizer"], tmp_path)
    assert isinstance(tok, GPT2BPETokenizer) and tok.encode_batch(texts) == gpt2.encode_batch(texts)
    assert tok.vocab_file == tmp_path / "tokenizer" / "vocab.json"


def test_checkpoint_summary(gpt2, tmp_path):
    """train copies tokenizer/ into each step directory and keeps the dataset's summary (paths under tokenizer/)."""
    dataset, step = tmp_path / "data", tmp_path / "run" / "step-00000010"
    summary = carry(gpt2, dataset)
    shutil.copytree(dataset / "tokenizer", step / "tokenizer")
    tok = tokenizer_from_summary(summary, step)
    assert (tok.vocab_size, tok.eod_id) == (50257, 50256)


@pytest.mark.parametrize("kind", ["gpt2-bpe", "bert-wordpiece-case", "sentencepiece", "huggingface"])
def test_every_type_round_trips_with_appended_tokens(kind, tmp_path, spm_plain, gpt2):
    files = {"gpt2-bpe": {"vocab_file": str(GPT2_VOCAB), "merges_file": str(GPT2_MERGES)},
             "bert-wordpiece-case": {"vocab_file": str(BERT_VOCAB)},
             "sentencepiece": {"tokenizer_model": str(spm_plain)},
             "huggingface": {"tokenizer_file": str(_gpt2_json(tmp_path / "src"))}}[kind]
    tok = build_tokenizer(TokenizerSpec(kind, **files, num_sentinel_tokens=4, additional_special_tokens=("<x>",)))
    summary = carry(tok, tmp_path / "artifact")
    assert summary["num_sentinel_tokens"] == 4 and summary["additional_special_tokens"] == ["<x>"]
    back = tokenizer_from_summary(summary, tmp_path / "artifact")
    assert type(back) is type(tok) and back.summary() == summary
    assert (back.sentinel_ids, back.vocab_size, back.pad_id, back.cls_id) == (
        tok.sentinel_ids, tok.vocab_size, tok.pad_id, tok.cls_id)
    text = "one <extra_id_3> two <x>"
    assert back.encode(text, allow_special=True) == tok.encode(text, allow_special=True)


def _gpt2_json(directory: Path, *extra: str) -> Path:
    from tokenizers import AddedToken, ByteLevelBPETokenizer

    directory.mkdir(parents=True, exist_ok=True)
    hf = ByteLevelBPETokenizer(str(GPT2_VOCAB), str(GPT2_MERGES))
    hf.add_special_tokens([AddedToken(t, special=True) for t in extra])
    hf.save(str(directory / "tokenizer.json"))
    return directory / "tokenizer.json"


def test_huggingface_eod_token(tmp_path):
    tok = HuggingFaceTokenizer(_gpt2_json(tmp_path / "src", "<|im_end|>"), eod_token="<|im_end|>")
    summary = carry(tok, tmp_path)
    assert (summary["eod_token"], summary["eod_id"]) == ("<|im_end|>", 50257)
    assert tokenizer_from_summary(summary, tmp_path).eod_token == "<|im_end|>"
    del summary["eod_token"]  # dataprep before 0.4.2 kept it in config.yaml only: found again from eod_id
    assert tokenizer_from_summary(summary, tmp_path).eod_id == 50257


def test_sentencepiece_model_keeps_its_name(spm_seed, tmp_path):
    summary = carry(SentencePieceTokenizer(spm_seed), tmp_path)
    assert summary["tokenizer_model"] == "tokenizer/seed.model"
    assert tokenizer_from_summary(summary, tmp_path).pad_id == 0


def test_legacy_type_names_are_read(tmp_path, gpt2):
    summary = {**carry(gpt2, tmp_path), "type": "GPT2BPETokenizer"}
    assert tokenizer_from_summary(summary, tmp_path).type == "gpt2-bpe"


def _bad(summary: dict, base: Path, match: str) -> None:
    with pytest.raises(ArtifactError, match=match) as info:
        tokenizer_from_summary(summary, base)
    assert "\n" not in str(info.value) and info.value.exit_code == 3


def test_bad_summaries_are_one_line_artifact_errors(gpt2, tmp_path):
    summary = carry(gpt2, tmp_path)
    (tmp_path / "tokenizer" / "merges.txt").unlink()
    _bad(summary, tmp_path, r"tokenizer merges_file .*tokenizer/merges\.txt is missing")
    _bad(summary, tmp_path / "elsewhere", r"tokenizer vocab_file .*elsewhere/tokenizer/vocab\.json is missing")
    _bad({k: v for k, v in summary.items() if k != "merges_file"}, tmp_path, "of type gpt2-bpe names no merges_file")
    _bad({"vocab_size": 3}, tmp_path, "summary.tokenizer has no type")
    _bad({"type": "word2vec"}, tmp_path, "'word2vec' is not a tokenizer type")


def test_files_that_make_another_tokenizer_are_refused(gpt2, tmp_path):
    summary = carry(gpt2, tmp_path)
    _bad({**summary, "vocab_size": 50258}, tmp_path, "vocab_size is 50258 but its files make a tokenizer with "
                                                     "vocab_size 50257")
    _bad({**summary, "eod_id": 0}, tmp_path, "eod_id is 0")
