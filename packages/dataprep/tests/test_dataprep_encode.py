"""Megatron's per-document encoding, in process and in a spawn worker pool."""

from __future__ import annotations

import json

import pytest
from dataprep_helpers import EOD, MERGES, VOCAB, hf_encoder, slice_file

from bignlp_contracts import InputError
from bignlp_dataprep.encode import EncodeOptions, encode_batch, encode_batches
from bignlp_dataprep.readers import InputFile, LineBatch
from bignlp_dataprep.tokenizers import GPT2BPETokenizer

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
