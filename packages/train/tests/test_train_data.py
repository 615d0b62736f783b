"""Data: blends, tokenizer agreement, split checks, the sequential sampler, megatron-core datasets."""

from __future__ import annotations

import pytest
from train_helpers import make_dataset, tiny_overrides

from bignlp_contracts import ArtifactError, ConfigError
from bignlp_train.config import load_train_config
from bignlp_train.data import (
    SequentialSampler,
    blend_tokenizer,
    build_datasets,
    check_splits,
    micro_batches,
    resolve_blend,
    split_sizes,
)


def test_sampler_is_sequential_and_restartable():
    assert list(SequentialSampler(12, 0, 4)) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    assert list(SequentialSampler(12, 4, 4)) == [[4, 5, 6, 7], [8, 9, 10, 11]]
    assert len(SequentialSampler(13, 0, 4)) == 3
    # data-parallel arithmetic is Megatron's: each rank takes its slice of every mbs × dp indices
    assert list(SequentialSampler(8, 0, 2, data_parallel_rank=1, data_parallel_size=2)) == [[2, 3], [6, 7]]


def test_single_dataset_by_prefix_and_by_directory(dataset, tmp_path):
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, tmp_path))
    (entry,) = resolve_blend(cfg.model)
    assert entry.weight == 1.0 and entry.ref.prefix == dataset
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(str(dataset.parent), tmp_path))
    (entry,) = resolve_blend(cfg.model)
    assert entry.ref.prefix == dataset
    assert blend_tokenizer([entry]).vocab_size == 512


def test_blend_weights_are_normalised(dataset, other_dataset, tmp_path):
    blend = f"[1,{dataset},3,{other_dataset}]"
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(blend, tmp_path))
    entries = resolve_blend(cfg.model)
    assert [e.weight for e in entries] == [0.25, 0.75]
    train, valid, test = build_datasets(cfg, entries, blend_tokenizer(entries), tmp_path / "cache")
    sizes = split_sizes(cfg)
    assert len(train) >= sizes[0] and len(valid) >= sizes[1] and len(test) >= sizes[2]
    ids = {int(train[i]["dataset_id"]) for i in range(len(train))}
    assert ids == {0, 1}


def test_blend_with_different_tokenizers_is_refused(dataset, tmp_path):
    odd = make_dataset(tmp_path / "odd", name="odd", vocab_size=1000)
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(f"[0.5,{dataset},0.5,{odd}]", tmp_path))
    with pytest.raises(ArtifactError, match="were tokenized differently"):
        blend_tokenizer(resolve_blend(cfg.model))


def test_missing_dataset_names_path_and_producer(tmp_path):
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(tmp_path / "nope" / "x_text_document", tmp_path))
    with pytest.raises(ArtifactError) as err:
        resolve_blend(cfg.model)
    assert str(tmp_path / "nope") in err.value.one_line() and "bignlp-dataprep preprocess" in err.value.one_line()


def test_split_without_documents_is_caught(dataset, tmp_path):
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, tmp_path, "model.data.splits_string=99990,8,2"))
    with pytest.raises(ConfigError, match="leaves the valid split"):
        check_splits(cfg, resolve_blend(cfg.model))
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, tmp_path, "model.data.splits_string=100,0,0"))
    with pytest.raises(ConfigError, match="gives the valid split no share"):
        check_splits(cfg, resolve_blend(cfg.model))


def test_megatron_samples_and_micro_batches(dataset, tmp_path):
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, tmp_path))
    entries = resolve_blend(cfg.model)
    train, _, _ = build_datasets(cfg, entries, blend_tokenizer(entries), tmp_path / "cache")
    sample = train[0]
    assert sample["tokens"].shape == (16,) and sample["labels"].shape == (16,)
    assert (sample["tokens"][1:] == sample["labels"][:-1]).all()
    batches = list(micro_batches(train, start=4, num_samples=8, micro_batch_size=2))
    assert len(batches) == 4 and batches[0]["tokens"].shape == (2, 16)
    assert (batches[0]["tokens"][0] == train[4]["tokens"]).all()
    with pytest.raises(ArtifactError, match="samples"):
        next(micro_batches(train, start=len(train), num_samples=4, micro_batch_size=2))
