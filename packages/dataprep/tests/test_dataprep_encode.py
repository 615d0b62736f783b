"""Megatron's per-document encoding, in process and in a spawn worker pool."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dataprep_helpers import EOD, MERGES, VOCAB, hf_encoder, slice_file

from bignlp_contracts import InputError
from bignlp_dataprep.encode import EncodeOptions, encode_batch, encode_batches
from bignlp_dataprep.readers import InputFile, LineBatch
from bignlp_tokenizers import GPT2BPETokenizer

OPTIONS = EncodeOptions(("text",), True, "H")


@pytest.fixture(scope="module")
def tok() -> GPT2BPETokenizer:
    return GPT2BPETokenizer(VOCAB, MERGES)


def _batch(lines: list[str], first_line: int = 1) -> LineBatch:
    return LineBatch("f.jsonl", first_line, "".join(line + "\n" for line in lines).encode(), 0)


def test_encode_batch_follows_megatron(tok):
    docs = [{"text": "Hello world"}, {"text": ""}, {"text": ["A.", "", "B."]}]
    out = encode_batch(_batch([json.dumps(d) for d in docs]), tok, OPTIONS)
    hello, a, b = hf_encoder()(["Hello world", "A.", "B."])
    part = out.keys["text"]
    assert out.num_documents == 3
    assert list(part.sequence_lengths) == [len(hello) + 1, len(a), len(b) + 1]
    assert list(part.doc_num_sequences) == [1, 0, 2]
    import array

    assert list(array.array("H", part.tokens)) == [*hello, EOD, *a, *b, EOD]


def test_pool_results_equal_in_process_results_in_order(tok):
    batches = list(InputFile(slice_file(20)).batches(5_000))
    assert len(batches) > 4
    local = list(encode_batches(batches, tok, OPTIONS, workers=1))
    pooled = list(encode_batches(batches, tok, OPTIONS, workers=2))
    assert [b.keys["text"].tokens for b in pooled] == [b.keys["text"].tokens for b in local]


def test_worker_errors_name_file_and_line(tok):
    batches = [_batch(['{"text": "ok"}'] * 3), _batch(['{"text": "ok"}', '{"text": oops}'], first_line=4)]
    with pytest.raises(InputError, match=r"^f\.jsonl:5: malformed JSON"):
        list(encode_batches(batches, tok, OPTIONS, workers=2))


def test_a_pool_worker_runs_its_tokenizer_on_one_thread(monkeypatch):
    import os
    import signal

    from bignlp_dataprep import encode
    from bignlp_tokenizers import SentencePieceTokenizer

    monkeypatch.setattr(signal, "signal", lambda *a: None)
    for name in encode.SINGLE_THREAD_ENV:  # setenv first, so that teardown restores what was there (or nothing)
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setattr(encode, "_WORKER", None)
    tok = SentencePieceTokenizer(Path(__file__).with_name("data") / "botchan_en_unigram_1000.model", num_threads=4)
    encode._init_worker(tok, encode.EncodeOptions(("text",), True, "H"))
    assert tok.num_threads == 1
    assert os.environ["TOKENIZERS_PARALLELISM"] == "false" and os.environ["RAYON_NUM_THREADS"] == "1"


@pytest.mark.parametrize("append_eod, typecode", [(True, "H"), (False, "H"), (True, "i")])
def test_sentencepiece_flat_arrays_pack_like_the_list_path(append_eod, typecode):
    """encode_batch_flat (numpy, no int per token) gives the bytes of the per-document list path."""
    from bignlp_tokenizers import SentencePieceTokenizer

    tok = SentencePieceTokenizer(Path(__file__).with_name("data") / "botchan_en_unigram_1000.model")

    class ListsOnly:  # the same tokenizer without encode_batch_flat
        eod_id, vocab_size, encode_batch = tok.eod_id, tok.vocab_size, tok.encode_batch

    docs = [{"text": "Hello world."}, {"text": ""}, {"text": ["", "two", "", " sentences"]}, {"text": []},
            {"text": ["", ""]}, {"text": "last"}, {"text": "\u00e9t\u00e9 \u65e5\u672c"}]
    batch = LineBatch("x.jsonl", 1, "".join(json.dumps(d) + "\n" for d in docs).encode(), 0)
    options = EncodeOptions(("text",), append_eod, typecode)
    flat, lists = encode_batch(batch, tok, options).keys["text"], encode_batch(batch, ListsOnly(), options).keys["text"]
    assert flat.tokens == lists.tokens and len(flat.tokens) > 20
    assert list(flat.sequence_lengths) == list(lists.sequence_lengths)
    assert list(flat.doc_num_sequences) == list(lists.doc_num_sequences) == [1, 0, 2, 0, 0, 1, 1]
