"""BERT WordPiece, SentencePiece and tokenizer.json tokenizers, each against an independent reference."""

from __future__ import annotations

import json
import pickle
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from dataprep_helpers import EDGE_TEXTS, MERGES, VOCAB, config, demo_lines, slice_file, texts_of

from bignlp_contracts import ConfigError, InputError, read_manifest
from bignlp_dataprep.config import PreprocessConfig
from bignlp_dataprep.indexed import IndexedDatasetReader, optimal_dtype
from bignlp_dataprep.preprocess import preprocess
from bignlp_tokenizers import GPT2BPETokenizer, TokenizerSpec, build_tokenizer, canonical_tokenizer_type

BERT_VOCAB = Path(__file__).resolve().parents[3] / "tests" / "data" / "bert" / "vocab.txt"
SPM_MODEL = Path(__file__).with_name("data") / "botchan_en_unigram_1000.model"
needs_bert = pytest.mark.skipif(not BERT_VOCAB.is_file(), reason="tests/data/bert/vocab.txt is missing")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [json.loads(line)["text"][:2000] for line in demo_lines(20)] + EDGE_TEXTS + ["a [SEP] b [CLS]"]


@pytest.mark.parametrize("name, canonical", [
    ("bert-wordpiece", "bert-wordpiece-lowercase"), ("BertWordPieceLowerCase", "bert-wordpiece-lowercase"),
    ("BertWordPieceCase", "bert-wordpiece-case"), ("SentencePieceTokenizer", "sentencepiece"),
    ("huggingface", "huggingface"),
])
def test_aliases(name, canonical):
    assert canonical_tokenizer_type(name) == canonical


# --- BERT WordPiece against Google's algorithm, written out again in plain Python --------------------------------


def _is_punct(ch: str) -> bool:
    cp = ord(ch)
    return 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126 or \
        unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(a <= cp <= b for a, b in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                                         (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def reference_wordpiece(vocab: dict[str, int], text: str, lower: bool) -> list[int]:
    """Google BERT's BasicTokenizer + WordpieceTokenizer (tokenization.py), no special-token handling."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ord(ch) in (0, 0xFFFD) or (ch not in "\t\n\r" and cat.startswith("C")):
            continue
        ch = " " if ch in " \t\n\r" or cat == "Zs" else ch
        out.append(f" {ch} " if _is_cjk(ord(ch)) else ch)
    words = []
    for token in "".join(out).split():
        if lower:
            token = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn")
        word = ""
        for ch in token:
            if _is_punct(ch):
                words += [w for w in (word, ch) if w]
                word = ""
            else:
                word += ch
        if word:
            words.append(word)
    ids = []
    for word in words:
        if len(word) > 200:
            ids.append(vocab["[UNK]"])
            continue
        start, pieces = 0, []
        while start < len(word):
            end = len(word)
            while end > start and ("##" if start else "") + word[start:end] not in vocab:
                end -= 1
            if end == start:
                pieces = [vocab["[UNK]"]]
                break
            pieces.append(vocab[("##" if start else "") + word[start:end]])
            start = end
        ids += pieces
    return ids


@needs_bert
@pytest.mark.parametrize("kind", ["BertWordPieceLowerCase", "BertWordPieceCase"])
def test_bert_wordpiece_matches_reference(kind, texts):
    tok = build_tokenizer(TokenizerSpec(kind, vocab_file=str(BERT_VOCAB)))
    vocab = {t: i for i, t in enumerate(BERT_VOCAB.read_text(encoding="utf-8").split("\n")[:-1])}
    lower = kind == "BertWordPieceLowerCase"
    assert tok.encode_batch(texts) == [reference_wordpiece(vocab, t, lower) for t in texts]
    assert (tok.vocab_size, tok.eod_id) == (30522, vocab["[SEP]"])
    (ids,) = tok.encode_batch(["x [SEP] y"])
    assert tok.eod_id not in ids  # special-token text is ordinary text, as in Megatron
    assert pickle.loads(pickle.dumps(tok)).encode_batch(texts) == tok.encode_batch(texts)
    assert tok.decode(tok.encode_batch(["hello world"])[0]) == "hello world"


@needs_bert
def test_bert_preprocess_artifact(tmp_path):
    out = tmp_path / "ds" / "x"
    cfg = PreprocessConfig(input=(str(slice_file(10)),), output_prefix=str(out), tokenizer_type="bert-wordpiece",
                           vocab_file=str(BERT_VOCAB), append_eod=True)
    manifest = preprocess(cfg)
    assert manifest.summary["tokenizer"] == {"type": "bert-wordpiece-lowercase", "vocab_file": "tokenizer/vocab.txt",
                                             "vocab_size": 30522, "eod_id": 102}
    assert (tmp_path / "ds" / "tokenizer" / "vocab.txt").read_bytes() == BERT_VOCAB.read_bytes()
    ds = IndexedDatasetReader.open(tmp_path / "ds" / "x_text_document")
    assert ds.dtype == np.uint16 and ds.document(0)[-1] == 102
    from bignlp_dataprep.inspect_dataset import inspect_dataset

    (shown,) = inspect_dataset(tmp_path / "ds", num_show=1)["datasets"][0]["shown"]
    assert shown.startswith(texts_of(slice_file(10))[0][:30].lower())


# --- SentencePiece ------------------------------------------------------------------------------------------------


def test_sentencepiece_matches_the_library(texts):
    import sentencepiece

    tok = build_tokenizer(TokenizerSpec("SentencePieceTokenizer", tokenizer_model=str(SPM_MODEL)))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPM_MODEL))
    assert tok.encode_batch(texts) == [sp.encode(t) for t in texts]
    assert (tok.vocab_size, tok.eod_id) == (1000, sp.eos_id()) == (1000, 2)
    assert pickle.loads(pickle.dumps(tok)).encode_batch(texts) == tok.encode_batch(texts)
    assert tok.decode(sp.encode("Hello world.")) == "Hello world."


def test_sentencepiece_library_threads_report_the_bad_line(tmp_path):
    path = tmp_path / "in.jsonl"
    good = "".join(demo_lines(12))
    path.write_text(good + '{"text": broken\n' + good)
    cfg = PreprocessConfig(input=(str(path),), output_prefix=str(tmp_path / "o" / "x"), tokenizer_type="sentencepiece",
                           tokenizer_model=str(SPM_MODEL), workers=2, batch_mb=0.005)
    with pytest.raises(InputError, match=r"in\.jsonl:13: malformed JSON"):
        preprocess(cfg)
    assert list((tmp_path / "o").iterdir()) == []  # no manifest, no partial pair, no temporary file


def test_sentencepiece_preprocess_any_workers(tmp_path, monkeypatch):
    import sentencepiece

    from bignlp_dataprep import encode

    sp = sentencepiece.SentencePieceProcessor(model_file=str(SPM_MODEL))
    pairs = []
    # 1: no pool; 2: two library threads in this process; "2-pool": two worker processes, one thread each
    for name, workers, threaded_max in (("w1", 1, 8), ("w2", 2, 8), ("w2-pool", 2, 1)):
        monkeypatch.setattr(encode, "THREADED_MAX_WORKERS", threaded_max)
        out = tmp_path / name / "x"
        cfg = PreprocessConfig(input=(str(slice_file(30)),), output_prefix=str(out), tokenizer_type="sentencepiece",
                               tokenizer_model=str(SPM_MODEL), append_eod=True, workers=workers, batch_mb=0.005)
        manifest = preprocess(cfg)
        pairs.append([(out.parent / f"x_text_document{e}").read_bytes() for e in (".bin", ".idx")])
    assert pairs[0] == pairs[1] == pairs[2]
    assert manifest.summary["tokenizer"] == {"type": "sentencepiece", "tokenizer_model": f"tokenizer/{SPM_MODEL.name}",
                                             "vocab_size": 1000, "eod_id": 2}
    from bignlp_dataprep.inspect_dataset import inspect_dataset

    (shown,) = inspect_dataset(tmp_path / "w2", num_show=1)["datasets"][0]["shown"]
    assert shown.startswith(texts_of(slice_file(30))[0][:50])
    ds = IndexedDatasetReader.open(tmp_path / "w2" / "x_text_document")
    for i, text in enumerate(texts_of(slice_file(30))):
        ids = sp.encode(text)
        assert ds.document(i).tolist() == ([*ids, 2] if ids else []), i


def test_train_tokenizer_then_preprocess(tmp_path):
    from click.testing import CliRunner

    from bignlp_dataprep.cli import main

    res = CliRunner().invoke(main, ["train-tokenizer", "--input", str(slice_file(60, "gzip")), "--model-prefix",
                                    str(tmp_path / "bpe" / "sp"), "--vocab-size", "500", "--model-type", "bpe",
                                    "--character-coverage", "1.0"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    model = tmp_path / "bpe" / "sp.model"
    vocab = (tmp_path / "bpe" / "sp.vocab").read_text(encoding="utf-8").split("\n")[:-1]
    assert len(vocab) == 500 and vocab[:4] == ["<pad>\t0", "<unk>\t0", "<s>\t0", "</s>\t0"]
    assert not list((tmp_path / "bpe").glob(".*.tmp"))
    res = CliRunner().invoke(main, ["preprocess", "--input", str(slice_file(5)), "--output-prefix",
                                    str(tmp_path / "ds" / "x"), "--tokenizer-type", "sentencepiece",
                                    "--tokenizer-model", str(model), "--append-eod"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    summary = read_manifest(tmp_path / "ds").summary
    assert summary["tokenizer"]["eod_id"] == 3 and summary["tokenizer"]["vocab_size"] == 500
    tok = build_tokenizer(TokenizerSpec("sentencepiece", tokenizer_model=str(model)))
    text = texts_of(slice_file(5))[0]
    doc = IndexedDatasetReader.open(tmp_path / "ds" / "x_text_document").document(0).tolist()
    assert doc[-1] == 3 and tok.decode(doc[:-1]) == text


def test_train_tokenizer_errors(tmp_path):
    from bignlp_dataprep.spm_train import TrainTokenizerConfig, split_long_line, train_sentencepiece

    with pytest.raises(ConfigError, match="model_type 'x'"):
        TrainTokenizerConfig(input=("a",), model_type="x")
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"body": "x"}\n')
    with pytest.raises(InputError, match="no text under key"):
        train_sentencepiece(TrainTokenizerConfig(input=(str(empty),), model_prefix=str(tmp_path / "m"), vocab_size=50))
    assert list(split_long_line("aa bb cc", 5)) == ["aa bb", " cc"]
    assert list(split_long_line("abcdefgh", 3)) == ["abc", "def", "gh"]
    assert not list(tmp_path.glob("m.*"))


# --- any tokenizer.json -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_tokenizer_json(tmp_path_factory) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    ByteLevelBPETokenizer(str(VOCAB), str(MERGES), add_prefix_space=False).save(str(path))
    return path


def test_tokenizer_json_equals_gpt2_bpe(gpt2_tokenizer_json, texts, tmp_path):
    tok = build_tokenizer(TokenizerSpec("huggingface", tokenizer_file=str(gpt2_tokenizer_json)))
    assert tok.encode_batch(texts) == GPT2BPETokenizer(VOCAB, MERGES).encode_batch(texts)
    assert (tok.vocab_size, tok.eod_id) == (50257, 50256)
    assert pickle.loads(pickle.dumps(tok)).encode_batch(texts[:3]) == tok.encode_batch(texts[:3])
    ref = preprocess(config([slice_file(20)], tmp_path / "ref" / "x"))
    hf = preprocess(PreprocessConfig(input=(str(slice_file(20)),), output_prefix=str(tmp_path / "hf" / "x"),
                                     tokenizer_type="huggingface", tokenizer_file=str(gpt2_tokenizer_json),
                                     append_eod=True))
    for ext in (".bin", ".idx"):
        assert (tmp_path / "hf" / f"x_text_document{ext}").read_bytes() == \
            (tmp_path / "ref" / f"x_text_document{ext}").read_bytes()
    assert hf.summary["tokenizer"] == {"type": "huggingface", "tokenizer_file": "tokenizer/tokenizer.json",
                                       "vocab_size": 50257, "eod_id": 50256, "eod_token": "<|endoftext|>"}
    assert ref.summary["datasets"][0]["num_tokens"] == hf.summary["datasets"][0]["num_tokens"]
    from bignlp_dataprep.inspect_dataset import inspect_dataset

    (shown,) = inspect_dataset(tmp_path / "hf", num_show=1)["datasets"][0]["shown"]
    assert shown == texts_of(slice_file(20))[0] + "<|endoftext|>"
    with pytest.raises(InputError, match="has no <x> token"):
        build_tokenizer(TokenizerSpec("huggingface", tokenizer_file=str(gpt2_tokenizer_json), eod_token="<x>"))


def test_large_vocabulary_is_int32(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(70_000)} | {"<unk>": 70_000, "</s>": 70_001}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.save(str(tmp_path / "tokenizer.json"))
    inp = tmp_path / "in.jsonl"
    inp.write_text('{"text": "w1 w69999 nope"}\n{"text": "w65535"}\n')
    cfg = PreprocessConfig(input=(str(inp),), output_prefix=str(tmp_path / "o" / "x"), tokenizer_type="huggingface",
                           tokenizer_file=str(tmp_path / "tokenizer.json"), append_eod=True)
    manifest = preprocess(cfg)
    assert manifest.summary["datasets"][0]["dtype"] == "int32"
    assert manifest.summary["tokenizer"]["vocab_size"] == 70_002 and manifest.summary["tokenizer"]["eod_id"] == 70_001
    ds = IndexedDatasetReader.open(tmp_path / "o" / "x_text_document")
    assert ds.document(0).tolist() == [1, 69999, 70000, 70001] and ds.document(1).tolist() == [65535, 70001]
    assert optimal_dtype(65_499) == np.uint16 and optimal_dtype(65_500) == np.int32


@pytest.mark.parametrize("spec, error, match", [
    (TokenizerSpec("sentencepiece"), ConfigError, "needs tokenizer_model"),
    (TokenizerSpec("huggingface"), ConfigError, "needs tokenizer_file"),
    (TokenizerSpec("bert-wordpiece"), ConfigError, "needs vocab_file"),
    (TokenizerSpec("sentencepiece", tokenizer_model="nope.model"), InputError, "nope.model does not exist"),
    (TokenizerSpec("sentencepiece", tokenizer_model=str(VOCAB)), InputError, "not a SentencePiece model"),
    (TokenizerSpec("huggingface", tokenizer_file=str(MERGES)), InputError, "not a Hugging Face tokenizer.json"),
    (TokenizerSpec("bert-wordpiece", vocab_file=str(MERGES)), InputError, r"has no \[UNK\] token"),
])
def test_missing_and_bad_tokenizer_files(spec, error, match):
    with pytest.raises(error, match=match):
        build_tokenizer(spec)

