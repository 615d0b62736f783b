"""Each tokenizer type: round trips, special-token ids by role, pickling, against its own library."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from bignlp_contracts import ConfigError, InputError
from bignlp_tokenizers import (
    ROLES,
    BertWordPieceTokenizer,
    HuggingFaceTokenizer,
    SentencePieceTokenizer,
    TokenizerSpec,
    build_tokenizer,
)

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
GPT2_VOCAB, GPT2_MERGES = DATA / "gpt2" / "vocab.json", DATA / "gpt2" / "merges.txt"
BERT_VOCAB = DATA / "bert" / "vocab.txt"


def roles(tok) -> dict:
    return {role: getattr(tok, f"{role}_id") for role in ROLES}


# --- GPT-2 BPE ----------------------------------------------------------------------------------------------------


def test_gpt2_round_trip_and_special_ids(gpt2, texts):
    assert (gpt2.type, gpt2.vocab_size) == ("gpt2-bpe", 50257)
    assert roles(gpt2) == {"eod": 50256, "pad": None, "bos": 50256, "eos": 50256, "cls": None, "sep": None,
                           "mask": None, "unk": None}
    ids = gpt2.encode_batch(texts)
    assert [gpt2.decode(i) for i in ids] == texts  # byte-level BPE: exact
    assert ids == [gpt2.encode(t) for t in texts]
    assert gpt2.sentinel_ids == [] and gpt2.special_tokens == {"<|endoftext|>": 50256}


def test_gpt2_special_text_is_ordinary_unless_allowed(gpt2):
    ids = gpt2.encode("a<|endoftext|>b")
    assert 50256 not in ids and gpt2.decode(ids) == "a<|endoftext|>b"
    allowed = gpt2.encode("a<|endoftext|>b", allow_special=True)
    assert allowed == [*gpt2.encode("a"), 50256, *gpt2.encode("b")]
    assert gpt2.decode(allowed) == "a<|endoftext|>b"
    assert gpt2.decode(allowed, skip_special_tokens=True) == "ab"


# --- BERT WordPiece -----------------------------------------------------------------------------------------------


def test_bert_special_ids_and_round_trip(bert):
    assert (bert.type, bert.vocab_size) == ("bert-wordpiece-lowercase", 30522)
    assert roles(bert) == {"eod": 102, "pad": 0, "bos": None, "eos": None, "cls": 101, "sep": 102, "mask": 103,
                           "unk": 100}
    ids = bert.encode("Hello, World! Tokenization works.")
    assert bert.decode(ids) == "hello, world! tokenization works."


def test_bert_special_text_is_ordinary_unless_allowed(bert):
    assert 102 not in bert.encode("a [SEP] b")  # [, sep, ] as Megatron
    ids = bert.encode("[CLS] a [SEP] b [MASK] [PAD]", allow_special=True)
    assert ids == [101, *bert.encode("a"), 102, *bert.encode("b"), 103, 0]
    assert bert.decode(ids) == "[CLS] a [SEP] b [MASK] [PAD]"
    assert bert.decode(ids, skip_special_tokens=True) == "a b"


def test_bert_cased_keeps_case():
    tok = build_tokenizer(TokenizerSpec("BertWordPieceCase", vocab_file=str(BERT_VOCAB)))
    assert isinstance(tok, BertWordPieceTokenizer) and tok.type == "bert-wordpiece-case"
    assert tok.encode("Hello") == [100]  # an uncased vocabulary has no "Hello": [UNK]


# --- SentencePiece ------------------------------------------------------------------------------------------------


def test_sentencepiece_matches_the_library(spm_seed, texts):
    import sentencepiece

    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_seed))
    tok = SentencePieceTokenizer(spm_seed)
    assert tok.vocab_size == sp.get_piece_size() == 400
    assert roles(tok) == {"eod": 3, "pad": 0, "bos": 2, "eos": 3, "cls": None, "sep": None, "mask": None, "unk": 1}
    assert tok.encode_batch(texts) == sp.encode(texts)
    ids = tok.encode(texts[0])
    assert tok.decode(ids) == sp.decode(ids)
    flat, lengths = tok.encode_batch_flat(texts[:3])
    assert flat.tolist() == [i for ids in sp.encode(texts[:3]) for i in ids] and lengths.tolist() == [
        len(i) for i in sp.encode(texts[:3])]


def test_sentencepiece_keeps_or_skips_control_tokens(spm_seed):
    tok = SentencePieceTokenizer(spm_seed)
    ids = [tok.bos_id, *tok.encode("In the beginning"), tok.eos_id]
    # The library's decoder drops them; after one, a piece's "▁" is a space again (as Hugging Face's legacy T5/Llama).
    assert tok.decode(ids) == "<s> In the beginning</s>"
    assert tok.decode(ids, skip_special_tokens=True) == "In the beginning"
    assert tok.encode("</s>") != [tok.eos_id] and tok.encode("</s>", allow_special=True) == [tok.eos_id]


def test_sentencepiece_defaults_have_no_pad(spm_plain):
    tok = SentencePieceTokenizer(spm_plain)
    assert roles(tok) == {"eod": 2, "pad": None, "bos": 1, "eos": 2, "cls": None, "sep": None, "mask": None,
                          "unk": 0}
    assert tok.vocab_size == 400  # nothing appended without sentinels


def test_sentencepiece_without_eos_uses_a_closing_piece(train_spm):
    tok = SentencePieceTokenizer(train_spm("noeos", eos_id=-1, user_defined_symbols=["</s>"]))
    assert tok.eos_id is None and tok.eod_id == tok.token_to_id("</s>")
    with pytest.raises(InputError, match="has no EOS id and no </s> piece"):
        SentencePieceTokenizer(train_spm("noeos-nopiece", eos_id=-1))


# --- tokenizer.json -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_json(tmp_path_factory) -> Path:
    """GPT-2 saved as a tokenizer.json by Hugging Face tokenizers (<|endoftext|> an ordinary vocabulary entry)."""
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    ByteLevelBPETokenizer(str(GPT2_VOCAB), str(GPT2_MERGES), add_prefix_space=False).save(str(path))
    return path


@pytest.fixture(scope="module")
def word_json(tmp_path_factory) -> Path:
    """A word-level tokenizer.json with <pad> <s> </s> <unk> <mask> as added special tokens."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "<mask>", "hello", "world", "!"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "<s>", "</s>", "<unk>", "<mask>")])
    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    tok.save(str(path))
    return path


def test_tokenizer_json_gpt2_equals_gpt2_bpe(gpt2_json, gpt2, texts):
    tok = HuggingFaceTokenizer(gpt2_json)
    assert tok.encode_batch(texts) == gpt2.encode_batch(texts)
    assert (tok.vocab_size, tok.eod_token) == (50257, "<|endoftext|>")
    assert roles(tok) == roles(gpt2)
    assert tok.decode(tok.encode(texts[0])) == texts[0]


def test_tokenizer_json_roles_come_from_its_tokens(word_json):
    tok = HuggingFaceTokenizer(word_json)
    assert roles(tok) == {"eod": 2, "pad": 0, "bos": 1, "eos": 2, "cls": None, "sep": None, "mask": 4, "unk": 3}
    ids = tok.encode("<s> hello world ! </s>")  # added tokens are matched as the file says
    assert ids == [1, 5, 6, 7, 2]
    assert tok.decode(ids, skip_special_tokens=True) == "hello world !"
    assert HuggingFaceTokenizer(word_json, eod_token="<mask>").eod_id == 4


# --- every type ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def every_type(gpt2, bert, spm_seed, gpt2_json) -> list:
    return [gpt2, bert, SentencePieceTokenizer(spm_seed), HuggingFaceTokenizer(gpt2_json)]


def test_every_type_pickles(every_type, texts):
    for tok in every_type:
        clone = pickle.loads(pickle.dumps(tok))
        assert clone.encode_batch(texts) == tok.encode_batch(texts), tok
        assert (roles(clone), clone.vocab_size, clone.type) == (roles(tok), tok.vocab_size, tok.type)


def test_decode_refuses_ids_outside_the_vocabulary(every_type):
    for tok in every_type:
        with pytest.raises(ValueError, match=f"token id {tok.vocab_size} is outside the vocabulary"):
            tok.decode([0, tok.vocab_size])
        assert tok.decode([]) == ""


@pytest.mark.parametrize("spec, error, match", [
    (TokenizerSpec("gpt2-bpe", vocab_file=str(GPT2_VOCAB)), ConfigError, "needs merges_file"),
    (TokenizerSpec("sentencepiece"), ConfigError, "needs tokenizer_model"),
    (TokenizerSpec("gpt2-bpe", vocab_file="nope.json", merges_file=str(GPT2_MERGES)), InputError,
     "nope.json does not exist"),
    (TokenizerSpec("bert-wordpiece", vocab_file=str(GPT2_MERGES)), InputError, r"has no \[UNK\] token"),
    (TokenizerSpec("huggingface", tokenizer_file=str(GPT2_MERGES)), InputError, "not a Hugging Face tokenizer.json"),
    (TokenizerSpec("sentencepiece", tokenizer_model=str(GPT2_VOCAB)), InputError, "not a SentencePiece model"),
])
def test_bad_specs_are_one_line_errors(spec, error, match):
    with pytest.raises(error, match=match) as info:
        build_tokenizer(spec)
    assert "\n" not in str(info.value)


def test_unknown_type():
    with pytest.raises(ValueError, match="'wordpiece' is not supported; use one of gpt2-bpe"):
        build_tokenizer(TokenizerSpec("wordpiece"))
