"""Tokens appended after the vocabulary (NeMo 1.x T5/mT5): sentinels, T5 roles, additional special tokens."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bignlp_contracts import ConfigError
from bignlp_tokenizers import (
    BertWordPieceTokenizer,
    GPT2BPETokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    sentinel_tokens,
)

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
GPT2_VOCAB, GPT2_MERGES = DATA / "gpt2" / "vocab.json", DATA / "gpt2" / "merges.txt"
BERT_VOCAB = DATA / "bert" / "vocab.txt"


@pytest.fixture(scope="module")
def t5_gpt2() -> GPT2BPETokenizer:
    return GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES, num_sentinel_tokens=12, additional_special_tokens=["<extra_id_r>"])


def test_sentinels_follow_the_vocabulary_in_order(t5_gpt2):
    assert t5_gpt2.sentinel_ids == list(range(50257, 50269))
    assert t5_gpt2.token_to_id("<extra_id_r>") == 50269 and t5_gpt2.vocab_size == 50270
    assert [t5_gpt2.decode([i]) for i in t5_gpt2.sentinel_ids] == sentinel_tokens(12)
    assert t5_gpt2.decode([50269]) == "<extra_id_r>"
    assert t5_gpt2.appended_tokens == {**{f"<extra_id_{k}>": 50257 + k for k in range(12)}, "<extra_id_r>": 50269}
    # the base vocabulary is untouched
    assert t5_gpt2.eod_id == 50256 and t5_gpt2.encode("plain text") == GPT2BPETokenizer(
        GPT2_VOCAB, GPT2_MERGES).encode("plain text")


def test_appended_tokens_are_text_unless_allowed(t5_gpt2):
    text = "The <extra_id_0> walks in <extra_id_11> park<extra_id_1>"
    plain = t5_gpt2.encode(text)
    assert max(plain) < 50257 and t5_gpt2.decode(plain) == text
    ids = t5_gpt2.encode(text, allow_special=True)
    assert [i for i in ids if i >= 50257] == [50257, 50268, 50258]  # <extra_id_11> is not <extra_id_1> + "1>"
    assert t5_gpt2.decode(ids) == text  # byte-level BPE: exact around appended tokens too
    assert t5_gpt2.decode(ids, skip_special_tokens=True) == "The  walks in  park"
    batch = t5_gpt2.encode_batch([text, "", "<extra_id_3>"], allow_special=True)
    assert batch == [ids, [], [50260]]


def test_bert_sentinels_and_spaces():
    tok = BertWordPieceTokenizer(BERT_VOCAB, lower_case=True, num_sentinel_tokens=2)
    assert tok.sentinel_ids == [30522, 30523] and tok.vocab_size == 30524
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id) == (101, 102, 103, 0)  # BERT has them: none appended
    ids = tok.encode("Hello <extra_id_1> world [SEP]", allow_special=True)
    assert ids == [*tok.encode("hello"), 30523, *tok.encode("world"), 102]
    assert tok.decode(ids) == "hello <extra_id_1> world [SEP]"


def test_sentencepiece_t5_appends_the_roles_it_lacks(spm_plain):
    """NeMo's T5 on a SentencePiece model with no pad/cls/sep/mask: sentinels, then <cls> <sep> <mask> <pad>."""
    tok = SentencePieceTokenizer(spm_plain, num_sentinel_tokens=3)
    assert tok.sentinel_ids == [400, 401, 402]
    assert (tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id) == (403, 404, 405, 406)
    assert (tok.bos_id, tok.eos_id, tok.unk_id, tok.eod_id) == (1, 2, 0, 2)  # the model's own
    assert tok.vocab_size == 407
    assert [tok.decode([i]) for i in range(400, 407)] == [*sentinel_tokens(3), "<cls>", "<sep>", "<mask>", "<pad>"]
    ids = tok.encode("In the <extra_id_0> beginning<mask>", allow_special=True)
    assert 400 in ids and ids[-1] == 405
    assert tok.decode(ids, skip_special_tokens=True) == "In the beginning"


def test_sentencepiece_t5_keeps_the_roles_it_has(spm_seed, train_spm):
    tok = SentencePieceTokenizer(spm_seed, num_sentinel_tokens=2)
    assert tok.pad_id == 0 and (tok.cls_id, tok.sep_id, tok.mask_id) == (402, 403, 404) and tok.vocab_size == 405
    with_pieces = train_spm("t5-pieces", pad_id=0, unk_id=1, bos_id=2, eos_id=3,
                            control_symbols=["<cls>", "<sep>", "<mask>"])
    tok = SentencePieceTokenizer(with_pieces, num_sentinel_tokens=2)
    assert (tok.cls_id, tok.sep_id, tok.mask_id) == (4, 5, 6)
    assert tok.sentinel_ids == [400, 401] and tok.vocab_size == 402
    assert SentencePieceTokenizer(with_pieces).cls_id == 4  # a role the model has is there without sentinels too


def test_a_token_the_vocabulary_holds_keeps_its_id(tmp_path):
    """A T5 tokenizer.json that carries its sentinels is not extended twice (NeMo checks the same)."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", "a", "b", "<extra_id_0>"])}
    hf = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "</s>", "<unk>", "<extra_id_0>")])
    hf.save(str(tmp_path / "tokenizer.json"))
    tok = HuggingFaceTokenizer(tmp_path / "tokenizer.json", num_sentinel_tokens=2)
    assert tok.sentinel_ids == [5, 6] and tok.vocab_size == 7 and tok.appended_tokens == {"<extra_id_1>": 6}
    assert tok.decode([3, 5, 4, 6]) == "a <extra_id_0> b<extra_id_1>"


def test_appended_tokens_survive_pickling(t5_gpt2, spm_plain):
    for tok in (t5_gpt2, SentencePieceTokenizer(spm_plain, num_sentinel_tokens=3)):
        clone = pickle.loads(pickle.dumps(tok))
        text = "x <extra_id_2> y"
        assert clone.encode(text, allow_special=True) == tok.encode(text, allow_special=True)
        assert (clone.sentinel_ids, clone.vocab_size, clone.pad_id) == (tok.sentinel_ids, tok.vocab_size, tok.pad_id)


@pytest.mark.parametrize("kwargs, match", [
    ({"num_sentinel_tokens": -1}, "num_sentinel_tokens must be >= 0"),
    ({"additional_special_tokens": ["<ok>", ""]}, "must be non-empty strings"),
])
def test_bad_appended_tokens(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES, **kwargs)
