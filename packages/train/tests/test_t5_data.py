"""T5/mT5 data: megatron-core's span corruption over datasets with sentinels, checked token for token.

The datasets are made here from the shipped corpora with bignlp-tokenizers, as bignlp-dataprep
``preprocess --num-sentinel-tokens 100`` makes them (stages never import each other): the BERT
WordPiece vocabulary on demo-en (T5) and our SentencePiece model on the multilingual slice (mT5).
"""

from __future__ import annotations

import gzip
import json
import shutil
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bignlp_contracts import MEGATRON_DATASET, ArtifactError, ConfigError, Producer, resolve_dataset, write_manifest
from bignlp_tokenizers import TokenizerSpec, build_tokenizer
from bignlp_train.data import BlendEntry, blend_tokenizer, micro_batches
from bignlp_train.t5_data import (
    MegatronT5Tokenizer,
    build_t5_datasets,
    check_t5_data,
    max_masked_tokens,
    max_spans,
    min_seq_length_dec,
    t5_batch,
)

with warnings.catch_warnings():  # megatron-core warns at import that Apex/TE are absent
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from megatron.core.datasets.masked_dataset import MaskedWordPieceDataset

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"
BERT_VOCAB = DATA / "bert" / "vocab.txt"
GPT2 = DATA / "gpt2"
MULTI_SPM = DATA / "spm" / "multi_unigram_8000.model"
SEQ, SEQ_DEC = 128, 40  # seq_length 128 masks up to 18 tokens: 1 + 2*18 = 37 decoder tokens always suffice


@dataclass(frozen=True)
class T5Data:
    """The ``model.data`` keys t5_data reads, with the NeMo launcher's T5 values."""

    splits_string: str = "90,5,5"
    masked_lm_prob: float = 0.15
    short_seq_prob: float = 0.0
    max_ngram_size: int = 10
    mean_ngram_size: int | None = None
    geometric_dist: bool = True
    whole_word_masking: bool = True
    permutation: bool = False
    favor_longer_ngrams: bool = False
    respect_document_boundaries: bool = True


def make_dataset(out_dir: Path, corpus: Path, spec: TokenizerSpec, *, num_docs: int) -> tuple[Path, list[list[int]]]:
    """A dataset artifact of the first ``num_docs`` documents (one sequence each, no EOD), and their ids."""
    tok = build_tokenizer(spec)
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for _, line in zip(range(num_docs), f)]
    docs = tok.encode_batch(texts)
    out_dir.mkdir(parents=True)
    prefix = out_dir / "demo_text_document"
    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.uint16 if tok.vocab_size < 65500 else np.int32)
    for ids in docs:
        builder.add_document(ids, [len(ids)] if ids else [])
    builder.finalize(f"{prefix}.idx")
    files = {}
    for key, (name, source) in tok.files().items():
        (out_dir / "tokenizer").mkdir(exist_ok=True)
        shutil.copyfile(source, out_dir / "tokenizer" / name)
        files[key] = f"tokenizer/{name}"
    write_manifest(out_dir, MEGATRON_DATASET, producer=Producer("bignlp-train-tests", "0"),
                   files=[f"{prefix.name}.bin", f"{prefix.name}.idx", *files.values()],
                   summary={"datasets": [{"prefix": prefix.name, "json_key": "text", "num_documents": len(docs),
                                          "num_sequences": sum(1 for d in docs if d),
                                          "num_tokens": sum(map(len, docs)),
                                          "dtype": "uint16" if tok.vocab_size < 65500 else "int32"}],
                            "tokenizer": tok.summary(files)})
    return prefix, docs


def entries_of(prefix: Path) -> list[BlendEntry]:
    return [BlendEntry(1.0, ref) for ref in resolve_dataset(prefix)]


@pytest.fixture(scope="module")
def t5_data(tmp_path_factory):
    """T5: uncased BERT WordPiece with 100 sentinels on 120 documents of demo-en."""
    spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB), num_sentinel_tokens=100)
    return make_dataset(tmp_path_factory.mktemp("t5") / "data", DATA / "corpus" / "demo-en.jsonl.gz", spec,
                        num_docs=120)


@pytest.fixture(scope="module")
def mt5_data(tmp_path_factory):
    """mT5: the 8,000-piece SentencePiece model (pad 0, eos 1, unk 2, no bos) on the multilingual slice."""
    spec = TokenizerSpec("sentencepiece", tokenizer_model=str(MULTI_SPM), num_sentinel_tokens=100)
    return make_dataset(tmp_path_factory.mktemp("mt5") / "data", DATA / "corpus" / "demo-multi.jsonl.gz", spec,
                        num_docs=155)


def build(prefix: Path, cache: Path, data: T5Data = T5Data(), *, seed: int = 1234, sizes=(64, 8, 8)):
    entries = entries_of(prefix)
    return build_t5_datasets(data, seed=seed, seq_length=SEQ, seq_length_dec=SEQ_DEC, sizes=list(sizes),
                             entries=entries, tokenizer=blend_tokenizer(entries), cache_dir=cache)


def reconstruct(sample: dict, tok: MegatronT5Tokenizer) -> tuple[list[int], list[list[int]], list[int]]:
    """The document segment from the encoder input and the labels; also the spans and their start positions."""
    sentinels = tok.additional_special_tokens_ids
    enc = sample["text_enc"][sample["enc_mask"] == 1].tolist()
    labels = sample["labels"][sample["loss_mask"] == 1].tolist()
    assert labels[-1] == tok.eos
    spans: list[list[int]] = []
    for t in labels[:-1]:
        if t in sentinels:
            assert t == sentinels[len(spans)]  # sentinels in order
            spans.append([])
        else:
            spans[-1].append(t)
    out, starts = [], []
    for t in enc:
        if t in sentinels:
            assert t == sentinels[len(starts)]
            starts.append(len(out))
            out += spans[len(starts) - 1]
        else:
            out.append(t)
    assert len(starts) == len(spans) and all(spans)
    return out, spans, starts


def original(dataset, idx: int, docs: list[list[int]]) -> list[int]:
    """What megatron-core's sample index says sample ``idx`` is cut from: documents' ids, truncated."""
    begin, end, target = (int(x) for x in dataset.sample_index[idx])
    return [t for d in range(begin, end) for t in docs[d]][:target]


# --- samples ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["t5", "mt5"])
def test_samples_are_span_corruption_of_the_documents(which, t5_data, mt5_data, tmp_path):
    prefix, docs = t5_data if which == "t5" else mt5_data
    train, valid, test = build(prefix, tmp_path / "cache")
    tok = train.config.tokenizer
    assert len(train) >= 64 and len(valid) >= 8 and len(test) >= 8
    inv = tok.inv_vocab
    word_start = [not inv[i].startswith("##") for i in range(tok.vocab_size)]
    for idx in range(len(train)):
        s = train[idx]
        assert s["text_enc"].shape == (SEQ,) and s["text_dec"].shape == s["labels"].shape == (SEQ_DEC,)
        assert all(s[k].dtype == np.int64 for k in ("text_enc", "text_dec", "labels", "loss_mask", "enc_mask"))
        n_dec = int(s["loss_mask"].sum())
        assert (s["dec_mask"] == s["loss_mask"]).all()  # 1-D padding masks, not attention masks
        assert s["text_dec"][0] == tok.bos and s["text_dec"][1] == tok.additional_special_tokens_ids[0]
        assert s["labels"][n_dec - 1] == tok.eos
        assert (s["text_dec"][1:n_dec] == s["labels"][: n_dec - 1]).all()  # decoder input = labels shifted right
        assert (s["text_dec"][n_dec:] == 0).all() and (s["text_enc"][s["enc_mask"] == 0] == 0).all()
        assert (s["labels"][n_dec:] == -1).all()  # what t5_batch replaces
        assert ((s["labels"][:n_dec] >= 0) & (s["labels"][:n_dec] < tok.vocab_size)).all()
        segment, spans, starts = reconstruct(s, tok)
        assert segment == original(train, idx, docs)  # the strong check: nothing lost, moved or changed
        masked = sum(map(len, spans))
        assert 0 < masked <= max_masked_tokens(SEQ, 0.15) and len(spans) <= max_spans(T5Data(), SEQ)
        assert n_dec == 1 + masked + len(spans)
        for start, span in zip(starts, spans):  # whole words: a span starts a word and the next token does too
            end = start + len(span)
            assert word_start[segment[start]] and (end == len(segment) or word_start[segment[end]])


def test_samples_are_deterministic_given_the_seed(t5_data, tmp_path):
    prefix, _ = t5_data
    first = build(prefix, tmp_path / "a")[0]
    again = build(prefix, tmp_path / "b")[0]  # a fresh index, built again
    other = build(prefix, tmp_path / "c", seed=99)[0]
    same = [all((first[i][k] == again[i][k]).all() for k in ("text_enc", "labels")) for i in range(len(first))]
    assert all(same)
    assert any((first[i]["text_enc"] != other[i]["text_enc"]).any() for i in range(len(first)))


def test_mt5_without_whole_words_masks_pieces(mt5_data, tmp_path):
    """mT5's setting (whole_word_masking false): spans may start inside a word; CJK text gets masked too."""
    prefix, docs = mt5_data
    train = build(prefix, tmp_path / "cache", replace(T5Data(), whole_word_masking=False))[0]
    tok = train.config.tokenizer
    inside = 0
    for idx in range(len(train)):
        segment, _spans, starts = reconstruct(train[idx], tok)
        assert segment == original(train, idx, docs)
        inside += sum(tok.inv_vocab[segment[s]].startswith("##") for s in starts)
    assert inside > 0


def test_tokenizer_roles(t5_data, mt5_data):
    wp = MegatronT5Tokenizer(blend_tokenizer(entries_of(t5_data[0])))
    # a BERT vocabulary has no bos/eos: [CLS]/[SEP] stand in, as NeMo's tokenizer does
    assert (wp.pad, wp.bos, wp.eos, wp.cls, wp.sep, wp.mask, wp.eod) == (0, 101, 102, 101, 102, 103, 102)
    assert wp.additional_special_tokens_ids == list(range(30522, 30622)) and wp.vocab_size == 30622
    assert wp.inv_vocab[30522] == "<extra_id_0>" and wp.vocab["##s"] == 2015
    sp = MegatronT5Tokenizer(blend_tokenizer(entries_of(mt5_data[0])))
    # pad 0 and eos 1 are the model's; <cls>, <sep>, <mask>, <bos> follow the 100 sentinels
    assert (sp.pad, sp.eos, sp.cls, sp.sep, sp.mask, sp.bos) == (0, 1, 8100, 8101, 8102, 8103)
    assert sp.additional_special_tokens_ids == list(range(8000, 8100)) and sp.vocab_size == 8104
    assert sp.inv_vocab[1] == "</s>" and sp.inv_vocab[sp.vocab["▁Debian"]] == "▁Debian"
    assert sp.detokenize(sp.tokenize("Debian es libre.")) == "Debian es libre."
    assert all(sp.inv_vocab[i].startswith("##") for i in sp.tokenize("Debian")[1:])  # continuation pieces
    json.dumps(sp.unique_identifiers)  # part of megatron-core's cache key


def test_t5_batch(t5_data, tmp_path):
    prefix, _ = t5_data
    train = build(prefix, tmp_path / "cache")[0]
    (batch,) = list(micro_batches(train, start=4, num_samples=3, micro_batch_size=3))
    out = t5_batch(batch)
    assert list(out) == ["encoder_tokens", "decoder_tokens", "labels", "loss_mask", "encoder_mask", "decoder_mask"]
    assert out["encoder_tokens"].shape == out["encoder_mask"].shape == (3, SEQ)
    assert all(out[k].shape == (3, SEQ_DEC) for k in ("decoder_tokens", "labels", "loss_mask", "decoder_mask"))
    assert out["encoder_tokens"].dtype == out["decoder_tokens"].dtype == out["labels"].dtype == torch.int64
    assert out["loss_mask"].dtype == torch.float32 and out["encoder_mask"].dtype == torch.bool
    assert (out["encoder_mask"] == (batch["enc_mask"] == 1)).all() and out["decoder_mask"].dtype == torch.bool
    assert (out["labels"][out["loss_mask"] == 0] == 0).all()
    assert (out["labels"] == torch.where(batch["loss_mask"] == 1, batch["labels"], 0)).all()
    assert (out["decoder_mask"] == (out["loss_mask"] > 0)).all()


# --- the bounds ----------------------------------------------------------------------------------------------


def test_bounds_hold_for_megatron_cores_own_masking():
    """Spans and masked tokens of megatron-core's masking (one token per word: the most spans) stay in bounds."""
    for seq_length, data in ((SEQ, T5Data()), (64, T5Data(geometric_dist=False)), (64, T5Data(max_ngram_size=1))):
        inv = {i: f"t{i}" for i in range(1000)}
        config = SimpleNamespace(
            tokenizer=SimpleNamespace(inv_vocab=inv, cls=-1, sep=-1), masking_probability=data.masked_lm_prob,
            masking_max_ngram=data.max_ngram_size, masking_do_full_word=True, masking_do_permutation=False,
            masking_use_longer_ngrams=False, masking_use_geometric_distribution=data.geometric_dist)
        fake = SimpleNamespace(config=config, _get_token_mask=lambda rng: 0)
        rng = np.random.RandomState(0)
        counts = []
        for trial in range(400):
            tokens = rng.randint(0, 1000, size=seq_length - 2).tolist()
            result = MaskedWordPieceDataset._create_masked_lm_predictions(
                fake, tokens, seq_length - 2, np.random.RandomState(trial))
            counts.append((len(result[1]), len(result[4])))
        masked, spans = map(max, zip(*counts))
        assert masked == max_masked_tokens(seq_length, data.masked_lm_prob)
        assert spans <= max_spans(data, seq_length) <= masked
        assert 1 + masked + spans <= min_seq_length_dec(data, seq_length)
    assert (max_spans(T5Data(), 512), min_seq_length_dec(T5Data(), 512)) == (46, 123)  # NeMo's 512/128 passes
    assert min_seq_length_dec(T5Data(), 128) == 37 == 1 + 2 * max_masked_tokens(128, 0.15)


# --- bad input: one line each ------------------------------------------------------------------------------------


def _check(prefix: Path, data: T5Data = T5Data(), seq_length: int = SEQ, seq_length_dec: int = SEQ_DEC):
    entries = entries_of(prefix)
    return check_t5_data(data, seq_length=seq_length, seq_length_dec=seq_length_dec,
                         tokenizer=blend_tokenizer(entries), entries=entries)


def _one_line(err) -> str:
    text = err.value.one_line()
    assert "\n" not in text and err.value.hint
    return text


@pytest.mark.parametrize("spec", [
    TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB)),
    TokenizerSpec("gpt2-bpe", vocab_file=str(GPT2 / "vocab.json"), merges_file=str(GPT2 / "merges.txt")),
], ids=["without-sentinels", "gpt"])
def test_dataset_without_sentinels(spec, tmp_path):
    prefix, _ = make_dataset(tmp_path / "d", DATA / "corpus" / "demo-en.jsonl.gz", spec, num_docs=20)
    with pytest.raises(ArtifactError) as err:
        _check(prefix)
    assert "has no T5 sentinels" in _one_line(err) and "--num-sentinel-tokens 100" in _one_line(err)


def test_tokenizer_without_word_boundaries_or_roles(tmp_path):
    gpt = TokenizerSpec("gpt2-bpe", vocab_file=str(GPT2 / "vocab.json"), merges_file=str(GPT2 / "merges.txt"),
                        num_sentinel_tokens=100)
    prefix, _ = make_dataset(tmp_path / "gpt", DATA / "corpus" / "demo-en.jsonl.gz", gpt, num_docs=20)
    with pytest.raises(ArtifactError) as err:
        _check(prefix)
    assert "tokenized with gpt2-bpe" in _one_line(err)
    vocab = tmp_path / "vocab.txt"  # a BERT vocabulary without [PAD] and [CLS]
    vocab.write_text("\n".join(t for t in BERT_VOCAB.read_text().split("\n")[1:] if t != "[CLS]"))
    spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(vocab), num_sentinel_tokens=100)
    prefix, _ = make_dataset(tmp_path / "nopad", DATA / "corpus" / "demo-en.jsonl.gz", spec, num_docs=20)
    with pytest.raises(ArtifactError) as err:
        _check(prefix)
    assert "lacks distinct pad, bos and eos" in _one_line(err) and "pad None, bos None" in _one_line(err)


def test_too_few_sentinels_and_too_short_decoder(t5_data, tmp_path):
    spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB), num_sentinel_tokens=10)
    prefix, _ = make_dataset(tmp_path / "ten", DATA / "corpus" / "demo-en.jsonl.gz", spec, num_docs=20)
    with pytest.raises(ConfigError) as err:
        _check(prefix)  # 128 tokens: up to 18 spans
    assert "can mask 18 spans" in _one_line(err) and "has 10 sentinels" in _one_line(err)
    _check(t5_data[0], seq_length=1024, seq_length_dec=229)  # 75 spans planned: 100 sentinels are enough
    with pytest.raises(ConfigError) as err:
        _check(t5_data[0], seq_length=2048, seq_length_dec=1000)  # 126 planned
    assert "can mask 126 spans" in _one_line(err) and "--num-sentinel-tokens 126" in _one_line(err)
    with pytest.raises(ConfigError) as err:
        _check(t5_data[0], seq_length_dec=32)  # NeMo's tiny T5: 128/32
    assert "model.data.seq_length_dec=32 is too short" in _one_line(err) and "seq_length_dec=37" in _one_line(err)
    assert _check(t5_data[0], seq_length=512, seq_length_dec=128).eos == 102


@pytest.mark.parametrize(("change", "message"), [
    ({"mean_ngram_size": 3}, "mean_ngram_size=3: megatron-core's T5 masking has no mean n-gram size"),
    ({"respect_document_boundaries": False}, "respect_document_boundaries=false"),
    ({"permutation": True, "geometric_dist": False}, "numpy's global random state"),
    ({"splits_string": "998,1,1"}, "leaves the valid split of"),  # 120 documents: none for valid
])
def test_config_keys_megatron_core_cannot_honour(t5_data, change, message):
    with pytest.raises(ConfigError) as err:
        _check(t5_data[0], replace(T5Data(), **change))
    assert message in err.value.one_line() and "\n" not in err.value.one_line()


def test_split_of_only_empty_documents(tmp_path):
    """megatron-core would spin through 2^31 epochs building such a split's index (15 s a document here), then
    give an empty split."""
    corpus = tmp_path / "c.jsonl.gz"
    corpus.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in ["some words"] * 8 + [""] * 2)
                                     .encode()))
    spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB), num_sentinel_tokens=100)
    prefix, docs = make_dataset(tmp_path / "d", corpus, spec, num_docs=10)
    assert docs[8] == docs[9] == []
    with pytest.raises(ConfigError) as err:
        _check(prefix, replace(T5Data(), splits_string="8,1,1"))
    assert "leaves the valid split" in _one_line(err) and "no non-empty document" in _one_line(err)
    _check(prefix, replace(T5Data(), splits_string="7,3,0"))


def test_one_sequence_per_document_is_warned_about(t5_data, tmp_path):
    """Unsplit data trains, with a warning naming the fix; sentence-split data (several sequences) gets none."""
    from bignlp_train.t5_data import unsplit_datasets

    prefix, docs = t5_data
    (note,) = unsplit_datasets(entries_of(prefix))
    assert str(prefix) in note and f"({len(docs):,} documents)" in note and "--split-sentences" in note
    spec = TokenizerSpec("bert-wordpiece-lowercase", vocab_file=str(BERT_VOCAB), num_sentinel_tokens=100)
    tok = build_tokenizer(spec)
    split_dir = tmp_path / "split"
    split_dir.mkdir()
    split = split_dir / "demo_text_document"
    builder = IndexedDatasetBuilder(f"{split}.bin", dtype=np.uint16)
    sentences = [tok.encode("The first sentence."), tok.encode(" And the second one.")]
    builder.add_document([i for s in sentences for i in s], [len(s) for s in sentences])
    builder.finalize(f"{split}.idx")
    shutil.copytree(prefix.parent / "tokenizer", split_dir / "tokenizer")
    files = {"vocab_file": "tokenizer/" + BERT_VOCAB.name}
    write_manifest(split_dir, MEGATRON_DATASET, producer=Producer("bignlp-train-tests", "0"),
                   files=[f"{split.name}.bin", f"{split.name}.idx", *files.values()],
                   summary={"datasets": [{"prefix": split.name, "json_key": "text", "num_documents": 1,
                                          "num_sequences": 2, "num_tokens": sum(map(len, sentences)),
                                          "dtype": "uint16"}],
                            "tokenizer": tok.summary(files)})
    assert unsplit_datasets(entries_of(split)) == []
