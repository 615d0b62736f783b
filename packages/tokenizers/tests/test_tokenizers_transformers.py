"""GPT-2 and BERT ids and special-token ids against transformers' own tokenizers built from the same files.

Skipped where transformers is not installed (Pants' python-default resolve has none; the venv has it).
``allow_special=True`` is the comparison's rule: transformers matches special-token text by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[3] / "tests" / "data"


@pytest.fixture(scope="module")
def hf_gpt2():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never ask the Hub
    transformers = pytest.importorskip("transformers")
    return transformers.GPT2Tokenizer.from_pretrained(str(DATA / "gpt2"))


@pytest.fixture(scope="module")
def hf_bert():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizer.from_pretrained(str(DATA / "bert"), do_lower_case=True)


def test_gpt2_ids_equal_transformers(gpt2, hf_gpt2, texts):
    assert [gpt2.encode(t, allow_special=True) for t in texts] == [hf_gpt2.encode(t) for t in texts]
    assert (gpt2.eos_id, gpt2.bos_id, gpt2.vocab_size) == (hf_gpt2.eos_token_id, hf_gpt2.bos_token_id, len(hf_gpt2))
    ids = gpt2.encode(texts[0] + "<|endoftext|>", allow_special=True)
    for skip in (False, True):
        assert gpt2.decode(ids, skip_special_tokens=skip) == hf_gpt2.decode(ids, skip_special_tokens=skip)


def test_bert_ids_equal_transformers(bert, hf_bert, texts):
    texts = [*texts, "[CLS] Who was Jim Henson ? [SEP] Jim [MASK] was a puppeteer [SEP]"]
    ours = [bert.encode(t, allow_special=True) for t in texts]
    assert ours == [hf_bert.encode(t, add_special_tokens=False) for t in texts]
    assert {role: getattr(bert, f"{role}_id") for role in ("pad", "cls", "sep", "mask", "unk")} == {
        "pad": hf_bert.pad_token_id, "cls": hf_bert.cls_token_id, "sep": hf_bert.sep_token_id,
        "mask": hf_bert.mask_token_id, "unk": hf_bert.unk_token_id}
    assert bert.vocab_size == len(hf_bert)
    for skip in (False, True):
        assert bert.decode(ours[-1], skip_special_tokens=skip) == hf_bert.decode(ours[-1], skip_special_tokens=skip)
