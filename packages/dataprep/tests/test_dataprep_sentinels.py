"""``num_sentinel_tokens``: T5/mT5 sentinels in a dataset's tokenizer, without changing the documents' ids."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from dataprep_helpers import DATA, demo_lines

from bignlp_contracts import ConfigError, read_manifest
from bignlp_dataprep.cli import main
from bignlp_dataprep.config import PreprocessConfig, load_preprocess_config
from bignlp_dataprep.indexed import IndexedDatasetReader
from bignlp_dataprep.preprocess import preprocess
from bignlp_dataprep.recipe_tokenizer import ensure_tokenizer
from bignlp_dataprep.recipes import load_recipe
from bignlp_tokenizers import tokenizer_from_summary

BERT_VOCAB = DATA / "bert" / "vocab.txt"  # 30,522 entries
SPM_MODEL = Path(__file__).parent / "data" / "botchan_en_unigram_1000.model"  # unk 0, bos 1, eos 2, no pad
# Sentinel text inside a document is ordinary text, as Megatron and NeMo encode documents.
TRICKY = "a T5 <extra_id_0> inside a document, <extra_id_99> and <extra_id_10>, [SEP] [MASK] <pad> </s> <bos>"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("in") / "in.jsonl"
    path.write_text("".join(demo_lines(20)) + json.dumps({"text": TRICKY}) + "\n", encoding="utf-8")
    return path


def _preprocess(corpus: Path, out: Path, *extra: str) -> Path:
    res = CliRunner().invoke(main, ["preprocess", "--input", str(corpus), "--output-prefix", str(out / "x"), *extra],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return out


def _tokens(artifact: Path) -> np.ndarray:
    return IndexedDatasetReader.open(artifact / "x_text_document").tokens[:]


@pytest.mark.parametrize("tokenizer", ["wordpiece", "sentencepiece"])
def test_sentinels_extend_the_vocabulary_not_the_documents(corpus, tmp_path, tokenizer):
    files = (["--tokenizer-type", "bert-wordpiece", "--vocab-file", str(BERT_VOCAB)] if tokenizer == "wordpiece"
             else ["--tokenizer-type", "sentencepiece", "--tokenizer-model", str(SPM_MODEL)])
    plain = _preprocess(corpus, tmp_path / "plain", *files)
    t5 = _preprocess(corpus, tmp_path / "t5", *files, "--num-sentinel-tokens", "100")
    for ext in (".bin", ".idx"):  # the same ids, byte for byte
        assert (t5 / f"x_text_document{ext}").read_bytes() == (plain / f"x_text_document{ext}").read_bytes()
    base = 30522 if tokenizer == "wordpiece" else 1000
    # WordPiece has its own [PAD]/[CLS]/[SEP]/[MASK]; the SentencePiece model lacks <cls>, <sep>, <mask>, <pad>
    # (it has unk, bos, eos), which NeMo appends after the sentinels.
    appended = 100 if tokenizer == "wordpiece" else 104
    summary = read_manifest(t5).summary["tokenizer"]
    assert summary["num_sentinel_tokens"] == 100 and summary["vocab_size"] == base + appended
    assert "num_sentinel_tokens" not in read_manifest(plain).summary["tokenizer"]
    tok = tokenizer_from_summary(summary, t5)
    assert tok.sentinel_ids == list(range(base, base + 100))
    assert tok.decode(tok.sentinel_ids[:2]).replace(" ", "") == "<extra_id_0><extra_id_1>"
    ids = _tokens(t5)
    assert int(ids.max()) < base  # no document token is a sentinel (or another appended token)
    tricky_ids = tok.encode(TRICKY)
    assert not set(tricky_ids) & set(tok.sentinel_ids) and ids[-len(tricky_ids):].tolist() == tricky_ids
    if tokenizer == "sentencepiece":
        assert (tok.pad_id, tok.cls_id, tok.sep_id, tok.mask_id) == (1103, 1100, 1101, 1102)
        assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert "num_sentinel_tokens: 100" in (t5 / "config.yaml").read_text()


def test_inspect_a_dataset_with_sentinels(corpus, tmp_path):
    data = _preprocess(corpus, tmp_path / "t5", "--tokenizer-type", "bert-wordpiece", "--vocab-file", str(BERT_VOCAB),
                       "--num-sentinel-tokens", "100")
    res = CliRunner().invoke(main, ["inspect", str(data), "--show", "21", "--max-chars", "1000"])
    assert res.exit_code == 0, res.output
    assert "tokenizer: bert-wordpiece-lowercase (vocab_size 30622, eod_id 102, 100 sentinels)" in res.output
    assert "< extra _ id _ 0 > inside a document" in res.output  # the text, not a sentinel


def test_config_key_and_flag(corpus, tmp_path):
    assert PreprocessConfig(input=("a",), output_prefix="o/x").num_sentinel_tokens == 0
    cfg = load_preprocess_config(None, ["num_sentinel_tokens=100"], {"input": (str(corpus),), "output_prefix": "o/x"})
    assert cfg.num_sentinel_tokens == 100 and cfg.tokenizer.num_sentinel_tokens == 100
    with pytest.raises(ValueError, match="num_sentinel_tokens must be >= 0"):
        PreprocessConfig(input=("a",), output_prefix="o/x", num_sentinel_tokens=-1)
    res = CliRunner().invoke(main, ["preprocess", "--input", str(corpus), "--output-prefix", str(tmp_path / "x"),
                                    "--num-sentinel-tokens", "-1"])
    assert res.exit_code == 2 and "--num-sentinel-tokens" in res.output
    # a GPT-2 dataset with sentinels is allowed (the T5 data check in train decides what it can use)
    manifest = preprocess(PreprocessConfig(input=(str(corpus),), output_prefix=str(tmp_path / "g" / "x"),
                                           vocab_file=str(DATA / "gpt2" / "vocab.json"),
                                           merges_file=str(DATA / "gpt2" / "merges.txt"), num_sentinel_tokens=3))
    assert manifest.summary["tokenizer"]["vocab_size"] == 50257 + 3


def test_recipes_pass_num_sentinel_tokens_to_the_tokenizer(tmp_path):
    keys = [f"data_dir={tmp_path}", "download_vocab_url=null", f"vocab_save_dir={BERT_VOCAB.parent}"]
    t5 = load_recipe("t5/download_t5_pile", keys)
    assert t5.num_sentinel_tokens == 100 and ensure_tokenizer(t5, train=False).num_sentinel_tokens == 100
    assert load_recipe("t5/download_t5_pile", [*keys, "num_sentinel_tokens=0"]).num_sentinel_tokens == 0
    assert load_recipe("gpt3/download_gpt3_pile", [f"data_dir={tmp_path}"]).num_sentinel_tokens == 0
    with pytest.raises(ConfigError, match="num_sentinel_tokens must be >= 0"):
        load_recipe("t5/download_t5_pile", [*keys, "num_sentinel_tokens=-1"])
