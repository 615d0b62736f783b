"""Pretraining data keys (``model.data.*``): which Megatron datasets to read and how to cut samples."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from bignlp_contracts import ConfigError


class _Blend:
    """``data_prefix`` read as a blend: what every task reading Megatron datasets shares."""

    data_prefix: Any
    num_workers: int
    splits_string: str

    def _check_blend(self) -> None:
        if self.data_prefix is not None:
            self.blend()  # validates the form
        if self.num_workers < 0:
            raise ConfigError(f"model.data.num_workers must be 0 or more, got {self.num_workers}")
        weights = [float(w) for w in re.findall(r"[.0-9]+", self.splits_string)]
        if not weights or len(weights) > 3 or sum(weights) <= 0:
            raise ConfigError(f"model.data.splits_string={self.splits_string!r} must be up to 3 weights like '98,2,0'")

    def blend(self) -> list[tuple[float, str]]:
        """``data_prefix`` as (weight, path) pairs; a single path gets weight 1.0."""
        prefix, key = self.data_prefix, "model.data.data_prefix"
        if prefix is None:
            raise ConfigError(
                f"{key} is not set",
                hint=f"add {key}=[1.0,DIR/NAME_text_document] (a dataset made by bignlp-dataprep preprocess)",
            )
        if isinstance(prefix, str) and prefix:
            return [(1.0, prefix)]
        if isinstance(prefix, (list, tuple)) and len(prefix) == 1 and isinstance(prefix[0], str):
            return [(1.0, prefix[0])]
        form = f"{key} must be a path or a list [weight1, path1, weight2, path2, ...]"
        if not isinstance(prefix, (list, tuple)) or not prefix or len(prefix) % 2:
            raise ConfigError(f"{form}, got {prefix!r}")
        pairs = []
        for weight, path in zip(prefix[0::2], prefix[1::2]):
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not isinstance(path, str):
                raise ConfigError(f"{form}; {weight!r}, {path!r} is not a (weight, path) pair")
            if weight <= 0:
                raise ConfigError(f"{key}: weight {weight} of {path} must be positive")
            pairs.append((float(weight), path))
        return pairs


@dataclass(frozen=True, kw_only=True)
class DataConfig(_Blend):
    """Which Megatron datasets to read and how to cut samples from them (GPT pretraining)."""

    data_prefix: Any = None  # DIR/NAME_text_document, a dataset dir, or [w1, path1, w2, path2, ...]
    splits_string: str = "99990,8,2"  # train,valid,test weights over each dataset's documents
    seq_length: int | None = None  # null: model.encoder_seq_length
    num_workers: int = 0  # DataLoader worker processes
    index_mapping_dir: str | None = None  # where sample indices are cached; null: RUN_DIR/index_cache
    reset_position_ids: bool = False
    reset_attention_mask: bool = False
    eod_mask_loss: bool = False
    data_impl: Literal["mmap"] = "mmap"  # compatibility: the only format there is
    skip_warmup: bool = True  # compatibility: no effect
    dataloader_type: Literal["single"] = "single"  # Megatron's sequential sampler

    def __post_init__(self) -> None:
        self._check_blend()


@dataclass(frozen=True, kw_only=True)
class T5DataConfig(_Blend):
    """T5 span corruption on Megatron datasets (the NeMo launcher's T5/mT5 ``model.data`` keys).

    megatron-core's ``T5MaskedWordPieceDataset`` cuts samples of ``seq_length`` tokens, masks
    ``masked_lm_prob`` of them in n-gram spans replaced by sentinels; the decoder predicts the spans.
    """

    data_prefix: Any = None  # DIR/NAME_text_document, a dataset dir, or [w1, path1, w2, path2, ...]
    index_mapping_dir: str | None = None  # where sample indices are cached; null: RUN_DIR/index_cache
    data_impl: Literal["mmap"] = "mmap"  # compatibility: the only format there is
    splits_string: str = "999982,9,9"  # train,valid,test weights over each dataset's documents
    seq_length: int | None = None  # encoder tokens per sample; null: model.seq_length
    seq_length_dec: int = 128  # decoder tokens per sample (the masked spans, their sentinels, bos/eos)
    skip_warmup: bool = True  # compatibility: no effect
    num_workers: int = 0  # DataLoader worker processes
    dataloader_type: Literal["single"] = "single"  # Megatron's sequential sampler
    masked_lm_prob: float = 0.15  # share of the encoder tokens masked
    dataset_type: Literal["t5"] = "t5"
    short_seq_prob: float = 0.0  # share of samples cut shorter than seq_length
    max_ngram_size: int = 10  # longest masked span
    mean_ngram_size: int | None = None  # compatibility: megatron-core has no such setting (must stay null)
    geometric_dist: bool = True  # span lengths drawn geometrically (SpanBERT), else uniformly
    permutation: bool = False  # permute n-grams of the encoder input (megatron-core seeds it globally: must stay false)
    whole_word_masking: bool = True  # never split a word (WordPiece "##" continuations)
    favor_longer_ngrams: bool = False  # weigh long spans more (uniform draw)
    respect_document_boundaries: bool = True  # compatibility: megatron-core always does (must stay true)

    def __post_init__(self) -> None:
        self._check_blend()
        if not 0.0 < self.masked_lm_prob < 1.0:
            raise ConfigError(f"model.data.masked_lm_prob must lie in (0, 1), got {self.masked_lm_prob}")
        if not 0.0 <= self.short_seq_prob <= 1.0:
            raise ConfigError(f"model.data.short_seq_prob must lie in [0, 1], got {self.short_seq_prob}")
        if self.max_ngram_size < 1:
            raise ConfigError(f"model.data.max_ngram_size must be at least 1, got {self.max_ngram_size}")
        if self.seq_length_dec < 1:
            raise ConfigError(f"model.data.seq_length_dec must be positive, got {self.seq_length_dec}")
