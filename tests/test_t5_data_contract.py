"""Producer/consumer contract for T5 data: ``bignlp-dataprep preprocess --num-sentinel-tokens`` → train's t5_data.

The real console script writes the dataset (the mT5 case: the shipped multilingual slice and its
SentencePiece model); train's T5 data reads its manifest, rebuilds the tokenizer from it and cuts
span-corruption samples whose encoder input and labels give back the stored document tokens.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from bignlp_contracts import resolve_dataset
from bignlp_train.data import BlendEntry, blend_tokenizer
from bignlp_train.t5_data import build_t5_datasets, check_t5_data
from support import DATA, console_script, run

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from megatron.core.datasets.indexed_dataset import IndexedDataset

MT5_DATA = SimpleNamespace(splits_string="90,5,5", masked_lm_prob=0.15, short_seq_prob=0.0, max_ngram_size=10,
                           mean_ngram_size=None, geometric_dist=True, whole_word_masking=False, permutation=False,
                           favor_longer_ngrams=False, respect_document_boundaries=True)


@pytest.fixture(scope="module")
def mt5_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("mt5") / "multi"
    res = run([console_script("bignlp-dataprep"), "preprocess", "--input", str(DATA / "corpus" / "demo-multi.jsonl.gz"),
               "--output-prefix", str(out), "--tokenizer-type", "sentencepiece",
               "--tokenizer-model", str(DATA / "spm" / "multi_unigram_8000.model"), "--num-sentinel-tokens", "100"])
    assert res.returncode == 0, res.stderr
    return out.parent / "multi_text_document"


def test_dataprep_sentinels_are_what_t5_data_reads(mt5_dataset, tmp_path):
    entries = [BlendEntry(1.0, ref) for ref in resolve_dataset(mt5_dataset)]
    info = blend_tokenizer(entries)
    assert info.summary["num_sentinel_tokens"] == 100 and info.vocab_size == 8000 + 104
    tok = check_t5_data(MT5_DATA, seq_length=512, seq_length_dec=128, tokenizer=info, entries=entries)
    assert tok.additional_special_tokens_ids == list(range(8000, 8100)) and (tok.pad, tok.eos) == (0, 1)
    train, valid, test = build_t5_datasets(MT5_DATA, seed=7, seq_length=512, seq_length_dec=128, sizes=[16, 4, 4],
                                           entries=entries, tokenizer=info, cache_dir=tmp_path / "cache")
    stored = IndexedDataset(str(mt5_dataset))
    sentinels = tok.additional_special_tokens_ids
    for idx in range(len(train)):
        s = train[idx]
        labels = s["labels"][s["loss_mask"] == 1].tolist()
        spans, out = [], []
        for t in labels[:-1]:
            if t in sentinels:
                spans.append([])
            else:
                spans[-1].append(t)
        for t in s["text_enc"][s["enc_mask"] == 1].tolist():
            out += spans[sentinels.index(t)] if t in sentinels else [t]
        begin, end, target = (int(x) for x in train.sample_index[idx])
        assert out == [int(t) for i in range(begin, end) for t in stored[i]][:target]
        assert labels[-1] == tok.eos and s["text_dec"][0] == tok.bos == 8103
