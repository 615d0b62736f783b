"""Fixtures of the tokenizer tests: the repository's GPT-2 and BERT files, text, tiny SentencePiece models."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path

import pytest

from bignlp_tokenizers import BertWordPieceTokenizer, GPT2BPETokenizer

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"
GPT2_VOCAB = DATA / "gpt2" / "vocab.json"
GPT2_MERGES = DATA / "gpt2" / "merges.txt"
BERT_VOCAB = DATA / "bert" / "vocab.txt"

# Texts that stress pre-tokenizers: contractions, digits, whitespace runs, unicode, special-token text.
EDGE_TEXTS = [
    "Hello world! It's 2024, isn't it? We'll see; they've gone.",
    "  leading and trailing spaces  ",
    "tabs\tand\nnewlines\r\nand CRLF\n\n\nruns",
    "ünïcödé, 日本語のテキスト, emoji 😀👍🏽",
    "special <|endoftext|> and [SEP] and </s> text inside a document",
    "1234567890 3.14159 1e-5 0x1F",
    " ",
    "",
]


def demo_texts(n: int) -> list[str]:
    """The first ``n`` documents of the shipped demo corpus."""
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n), f)]


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return demo_texts(20) + EDGE_TEXTS


@pytest.fixture(scope="session")
def gpt2() -> GPT2BPETokenizer:
    return GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)


@pytest.fixture(scope="session")
def bert() -> BertWordPieceTokenizer:
    return BertWordPieceTokenizer(BERT_VOCAB, lower_case=True)


@pytest.fixture(scope="session")
def train_spm(tmp_path_factory):
    """``train_spm(name, **trainer_options)`` → a tiny SentencePiece .model trained on the demo corpus (cached)."""
    import sentencepiece

    lines = [line for text in demo_texts(60) for line in text.split("\n") if line.strip()]
    root = tmp_path_factory.mktemp("spm")
    made: dict[str, Path] = {}

    def train(name: str, **options) -> Path:
        if name not in made:
            model = io.BytesIO()
            sentencepiece.SentencePieceTrainer.train(
                sentence_iterator=iter(lines), model_writer=model, vocab_size=400, model_type="unigram",
                character_coverage=1.0, num_threads=1, minloglevel=2, **options)
            made[name] = root / f"{name}.model"
            made[name].write_bytes(model.getvalue())
        return made[name]

    return train


@pytest.fixture(scope="session")
def spm_seed(train_spm) -> Path:
    """Ids as dataprep's train-tokenizer makes them (the seed's): pad 0, unk 1, bos 2, eos 3."""
    return train_spm("seed", pad_id=0, unk_id=1, bos_id=2, eos_id=3)


@pytest.fixture(scope="session")
def spm_plain(train_spm) -> Path:
    """SentencePiece's own defaults: unk 0, bos 1, eos 2, no pad."""
    return train_spm("plain")
