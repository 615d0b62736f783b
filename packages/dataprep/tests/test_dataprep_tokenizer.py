"""The GPT-2 BPE tokenizer built offline from vocab.json + merges.txt, against independent encoders."""

from __future__ import annotations

import json
import pickle

import pytest
from dataprep_helpers import EDGE_TEXTS, MERGES, VOCAB, demo_lines, hf_encoder, openai_encoder

from bignlp_contracts import ConfigError, InputError
from bignlp_tokenizers import GPT2BPETokenizer, TokenizerSpec, build_tokenizer, canonical_tokenizer_type
from bignlp_tokenizers.gpt2 import bytes_to_unicode


@pytest.fixture(scope="module")
def tok() -> GPT2BPETokenizer:
    return GPT2BPETokenizer(VOCAB, MERGES)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [json.loads(line)["text"] for line in demo_lines(40)] + EDGE_TEXTS


def test_sizes_and_eod(tok):
    assert (tok.vocab_size, tok.eod_id, tok.type) == (50257, 50256, "gpt2-bpe")
    assert {k: p.name for k, (_, p) in tok.files().items()} == {"vocab_file": "vocab.json", "merges_file": "merges.txt"}


def test_matches_hugging_face_tokenizers(tok, texts):
    assert tok.encode_batch(texts) == hf_encoder()(texts)


def test_matches_tiktoken_gpt2_from_openai_files(tok, texts, tmp_path):
    reference = openai_encoder(tmp_path)
    if reference is None:
        pytest.skip("OpenAI's GPT-2 files (shared/data/gpt2-openai) are not on this machine")
    assert tok.encode_batch(texts) == reference(texts)


def test_special_token_text_is_ordinary_text(tok):
    (ids,) = tok.encode_batch(["a<|endoftext|>b"])
    assert tok.eod_id not in ids
    assert tok.decode(ids) == "a<|endoftext|>b"


def test_roundtrip_and_pickle(tok, texts):
    clone = pickle.loads(pickle.dumps(tok))
    ids = clone.encode_batch(texts)
    assert ids == tok.encode_batch(texts)
    assert [tok.decode(i) for i in ids] == texts


def test_byte_order_is_gpt2s():
    order = list(bytes_to_unicode())
    assert len(order) == 256 and order[:3] == [ord("!"), ord('"'), ord("#")] and order[-1] == 173
    assert bytes_to_unicode()[32] == "Ġ"


@pytest.mark.parametrize("name", ["gpt2-bpe", "GPT2BPETokenizer"])
def test_aliases(name):
    assert canonical_tokenizer_type(name) == "gpt2-bpe"


def test_unknown_type_and_missing_files():
    with pytest.raises(ValueError, match="BertWordPiece"):
        canonical_tokenizer_type("BertWordPiece")
    with pytest.raises(ConfigError, match="needs merges_file"):
        build_tokenizer(TokenizerSpec("gpt2-bpe", str(VOCAB), None))
    with pytest.raises(ConfigError, match="needs vocab_file and merges_file"):
        build_tokenizer(TokenizerSpec("gpt2-bpe"))
    with pytest.raises(InputError, match="nope.json does not exist"):
        GPT2BPETokenizer("nope.json", MERGES)
    with pytest.raises(InputError, match="nope.txt does not exist"):
        GPT2BPETokenizer(VOCAB, "nope.txt")


def test_merges_out_of_order_are_refused(tmp_path):
    lines = MERGES.read_text(encoding="utf-8").split("\n")
    lines[1], lines[2] = lines[2], lines[1]  # swap the first two merges
    merges = tmp_path / "merges.txt"
    merges.write_text("\n".join(lines), encoding="utf-8")
    with pytest.raises(InputError, match="disagree: token b' a' has id 257 in the vocabulary but rank 256 from"):
        GPT2BPETokenizer(VOCAB, merges)


def test_truncated_merges_are_refused(tmp_path):
    merges = tmp_path / "merges.txt"
    merges.write_text("\n".join(MERGES.read_text(encoding="utf-8").split("\n")[:1000]), encoding="utf-8")
    with pytest.raises(InputError, match="come from no merge"):
        GPT2BPETokenizer(VOCAB, merges)


@pytest.mark.parametrize(
    "vocab, message",
    [
        ("{not json", "malformed JSON"),
        ('["a"]', "expected a JSON object"),
        ('{"a": 0}', "has no <|endoftext|> token"),
        ('{"<|endoftext|>": 1, "a b": 0}', "token 'a b' is not in GPT-2 byte-level form"),
        ('{"<|endoftext|>": 1, "\\u4e00": 0}', "is not in GPT-2 byte-level form"),
    ],
)
def test_bad_vocab_files(tmp_path, vocab, message):
    path = tmp_path / "vocab.json"
    path.write_text(vocab, encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("|", r"\|")):
        GPT2BPETokenizer(path, MERGES)


def test_malformed_merge_line(tmp_path):
    merges = tmp_path / "merges.txt"
    merges.write_text("#version: 0.2\nĠ t\nĠ a x\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"merges.txt:3: expected two tokens"):
        GPT2BPETokenizer(VOCAB, merges)
