"""T5/mT5 pretraining data: dataset artifacts with sentinels → megatron-core's span corruption → batches.

Samples come from megatron-core 0.16's ``T5MaskedWordPieceDataset`` over the same .bin/.idx files
and blends as GPT (``data.py``). A sample is consecutive sequences of one document (never across
documents), cut to ``seq_length - 2`` tokens; a share ``masked_lm_prob`` of them is masked in n-gram
spans (whole words unless ``whole_word_masking`` is off), and each span becomes one sentinel
``<extra_id_k>`` (k = 0, 1, ... in order) in the encoder input. A document stored as one sequence
(``bignlp-dataprep preprocess`` of a string) thus gives one sample per epoch, its first
``seq_length - 2`` tokens; documents stored as sentences (a list of strings per JSON key) give one
per run of sentences. A sample (each an int64 numpy array, padded on the right) holds:

- ``text_enc`` (seq_length,): the document with each masked span replaced by its sentinel, then padding.
- ``text_dec`` (seq_length_dec,): ``<bos>``, then per span its sentinel and its original tokens, then padding.
- ``labels`` (seq_length_dec,): ``text_dec`` shifted left by one: per span its sentinel and tokens, then
  ``<eos>``; megatron-core pads it with -1.
- ``loss_mask`` (seq_length_dec,): 1 at the positions of ``labels`` up to and including ``<eos>``, else 0.
- ``enc_mask`` (seq_length,), ``dec_mask`` (seq_length_dec,): 1-D padding masks, 1 at real tokens and 0 at
  padding (not 2-D attention masks: megatron-core builds those later, in ``config_attention_mask``,
  which we do not use). ``dec_mask`` equals ``loss_mask``.
- ``truncated``: 1 if the document was cut to fit.

Padding positions of ``text_enc``/``text_dec`` hold 0. :func:`t5_batch` turns a collated micro-batch
into the model's inputs (``encoder_mask``/``decoder_mask`` True at real tokens; the model builds its
attention masks from them). Sizes: ``data.split_sizes``; batches in order from a consumed-sample
count: ``data.micro_batches``.

The tokenizer is the dataset's own (``summary.tokenizer``, made with ``bignlp-dataprep ...
--num-sentinel-tokens 100``), with the roles megatron-core reads. :func:`check_t5_data` refuses,
in one line and before any process starts, what would fail inside megatron-core.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bignlp_contracts import ArtifactError, ConfigError

from .data import BlendEntry, TokenizerInfo, _megatron_datasets, _process_group

# Tokenizer types whose vocabulary says where words start (WordPiece "##", SentencePiece "▁").
T5_TOKENIZER_TYPES = ("bert-wordpiece-lowercase", "bert-wordpiece-case", "sentencepiece")
SPM_WORD_START = "\u2581"
# How many standard deviations of the span count check_t5_data plans for beyond its mean (see max_spans).
SPAN_MARGIN_SIGMAS = 10.0


class MegatronT5Tokenizer:
    """What megatron-core's T5 dataset reads of a tokenizer, for the dataset's own tokenizer.

    ``inv_vocab``: id → token; megatron-core treats a token starting with ``##`` as the
    continuation of a word (whole-word masking). WordPiece says so itself; a SentencePiece piece
    without ``▁`` (its word-start marker) continues the word before it, so such pieces get a
    ``##`` here (control pieces excepted): whole words are then whitespace-delimited, which for
    unspaced scripts (Japanese, Chinese) means long runs; the NeMo mT5 configs turn
    ``whole_word_masking`` off. ``bos``/``eos``: a BERT vocabulary has neither, so
    ``[CLS]``/``[SEP]`` stand in (NeMo's rule for BERT tokenizers); SentencePiece gets them, as
    ``pad``, from the model or appended after the sentinels. ``additional_special_tokens_ids``:
    the sentinels, in order.
    """

    def __init__(self, info: TokenizerInfo) -> None:
        from bignlp_tokenizers import tokenizer_from_summary

        if info.artifact_dir is None:
            raise ArtifactError("the dataset's tokenizer has no artifact directory to read its files from")
        self.type = info.type
        self.tokenizer = tokenizer_from_summary(info.summary, info.artifact_dir)
        tok = self.tokenizer
        self.inv_vocab = _inv_vocab(tok)
        self.vocab = {token: i for i, token in self.inv_vocab.items()}
        self.vocab_size = tok.vocab_size
        self.cls, self.sep, self.mask, self.pad = tok.cls_id, tok.sep_id, tok.mask_id, tok.pad_id
        self.bos = tok.bos_id if tok.bos_id is not None else tok.cls_id
        self.eos = tok.eos_id if tok.eos_id is not None else tok.sep_id
        self.eod = tok.eod_id
        self.additional_special_tokens_ids = list(tok.sentinel_ids)
        # Part of megatron-core's cache key (serialised with its config).
        self.unique_identifiers = {
            "class": "BigNLPT5Tokenizer", "type": info.type, "vocab_size": self.vocab_size,
            "num_sentinel_tokens": len(self.additional_special_tokens_ids), "pad": self.pad, "bos": self.bos,
            "eos": self.eos, "cls": self.cls, "sep": self.sep, "mask": self.mask,
        }

    def tokenize(self, text: str) -> list[int]:
        """Token ids of ``text`` as a document is encoded (special-token text stays text)."""
        return self.tokenizer.encode(text)

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; sentinels and other appended tokens give their text."""
        return self.tokenizer.decode(ids)


def _inv_vocab(tok: Any) -> dict[int, str]:
    """id → token text, ``##`` marking a word's continuation, for every id below ``vocab_size``."""
    out: dict[int, str] = {}
    if tok.type.startswith("bert-wordpiece"):
        from bignlp_tokenizers.wordpiece import read_wordpiece_vocab

        out = {i: token for token, i in read_wordpiece_vocab(tok.vocab_file).items()}
    elif tok.type == "sentencepiece":
        import sentencepiece

        sp = sentencepiece.SentencePieceProcessor(model_file=str(tok.model_file))
        for i in range(sp.get_piece_size()):
            piece = sp.id_to_piece(i)
            starts = piece.startswith(SPM_WORD_START) or sp.is_control(i) or sp.is_unknown(i)
            out[i] = piece if starts else "##" + piece
    else:  # check_t5_data names the supported types first
        raise ArtifactError(f"T5 data needs a WordPiece or SentencePiece tokenizer, not {tok.type}")
    out.update({i: token for token, i in tok.appended_tokens.items()})
    return out


def max_masked_tokens(seq_length: int, masked_lm_prob: float) -> int:
    """The most tokens megatron-core masks in one sample: ``floor(masked_lm_prob * (seq_length - 2))``.

    ``MaskedWordPieceDataset._create_masked_lm_predictions`` masks at most ``masked_lm_prob *
    target_length`` tokens (it asserts so), and a T5 sample's target length is at most
    ``seq_length - 2`` (``T5MaskedWordPieceDataset`` builds its sample index for that length).
    """
    return math.floor(masked_lm_prob * (seq_length - 2)) if seq_length > 2 else 0


def max_spans(data: Any, seq_length: int) -> int:
    """The masked spans (= sentinels, = decoder tokens beyond the masked ones) a sample is planned for.

    Guaranteed: each span masks at least one token, so a sample has at most M =
    ``max_masked_tokens`` spans; 1 + 2M decoder tokens always suffice, but the NeMo launcher's
    512/128 would not pass that. Planned (what ``check_t5_data`` uses): megatron-core draws a
    span's length in words as ``min(Geometric(0.2), max_ngram_size)`` (``geometric_dist``) or with
    weights 1/n over n = 1 .. ``max_ngram_size`` (reversed with ``favor_longer_ngrams``), shortened
    only to fit the rest of the budget. With one token per word (the most spans), filling M tokens
    takes about m = M/μ spans with standard deviation s = √(M·σ²/μ³) (renewal theory; μ, σ²: mean
    and variance of the span length), and we plan for m + ``SPAN_MARGIN_SIGMAS``·s, capped at M.
    Measured with megatron-core's own masking (10,000 samples of one-token words each): seq_length
    512, masked_lm_prob 0.15, 10-grams, geometric: M = 76, spans mean 18.4, sd 3.1, max 32 (m = 17.0,
    s = 2.9, planned 46); seq_length 128: M = 18, mean 4.9, sd 1.6, max 13 (planned 18 = M). A
    sample with more spans than planned still fails megatron-core's assertion.
    """
    masked = max_masked_tokens(seq_length, data.masked_lm_prob)
    if masked == 0:
        return 0
    n = np.arange(1, data.max_ngram_size + 1, dtype=np.float64)
    if data.geometric_dist:
        probs = 0.2 * 0.8 ** (n - 1)
        probs[-1] = 0.8 ** (len(n) - 1)  # everything longer is clipped to max_ngram_size
    else:
        probs = 1.0 / n
        probs = (probs[::-1] if data.favor_longer_ngrams else probs) / probs.sum()
    mean = float((n * probs).sum())
    var = float((n * n * probs).sum()) - mean**2
    planned = masked / mean + SPAN_MARGIN_SIGMAS * math.sqrt(masked * max(var, 0.0) / mean**3)
    return min(masked, math.ceil(planned - 1e-9))


def min_seq_length_dec(data: Any, seq_length: int) -> int:
    """Decoder tokens a sample is planned to need: ``<bos>`` + M masked tokens + one sentinel per span.

    megatron-core asserts ``1 + masked + spans <= seq_length_dec`` for every sample and truncates
    nothing, so one sample over it stops training; the labels (spans, then ``<eos>``) have the same
    length. Guaranteed: 1 + 2M; planned: 1 + M + ``max_spans`` (see there): 123 for seq_length 512 with
    masked_lm_prob 0.15 and geometric 10-grams, 37 (= 1 + 2M) for seq_length 128.
    """
    return 1 + max_masked_tokens(seq_length, data.masked_lm_prob) + max_spans(data, seq_length)


def check_t5_data(data: Any, *, seq_length: int, seq_length_dec: int, tokenizer: TokenizerInfo,
                  entries: Sequence[BlendEntry]) -> MegatronT5Tokenizer:
    """Refuse, in one line each, what megatron-core's T5 dataset would fail on later; return its tokenizer.

    ``data``: the ``model.data`` keys (splits_string, masked_lm_prob, short_seq_prob, max_ngram_size,
    mean_ngram_size, geometric_dist, whole_word_masking, permutation, favor_longer_ngrams,
    respect_document_boundaries). ConfigError: a key megatron-core has no equivalent for, masking
    settings it asserts against or cannot reproduce (``permutation``), fewer sentinels than
    ``max_spans``, ``seq_length_dec`` below ``min_seq_length_dec``, a split with a share but no
    non-empty document. ArtifactError: a dataset without sentinels (GPT data, or made without
    ``--num-sentinel-tokens``), a tokenizer type without word boundaries, or without distinct
    pad/bos/eos.
    """
    _check_keys(data, seq_length)
    where = entries[0].ref.prefix if entries else tokenizer.artifact_dir
    if not int(tokenizer.summary.get("num_sentinel_tokens") or 0):
        raise ArtifactError(
            f"dataset {where} has no T5 sentinels (summary.tokenizer.num_sentinel_tokens is missing): it was made "
            "for GPT, or without --num-sentinel-tokens",
            hint="preprocess it again with bignlp-dataprep preprocess ... --num-sentinel-tokens 100 (a recipe: "
                 "num_sentinel_tokens=100); the documents' token ids stay the same",
        )
    if tokenizer.type not in T5_TOKENIZER_TYPES:
        raise ArtifactError(f"dataset {where} was tokenized with {tokenizer.type}, but T5 span corruption needs "
                            "word boundaries a WordPiece or SentencePiece vocabulary marks",
                            hint="preprocess it with --tokenizer-type bert-wordpiece-case or sentencepiece")
    tok = MegatronT5Tokenizer(tokenizer)
    roles = {"pad": tok.pad, "bos": tok.bos, "eos": tok.eos}
    missing = [role for role, i in roles.items() if i is None]
    clash = len(set(roles.values())) < 3 or tok.pad == tok.eod
    sentinel_roles = [role for role, i in roles.items() if i in set(tok.additional_special_tokens_ids)]
    if missing or clash or sentinel_roles:
        raise ArtifactError(
            f"dataset {where}: its {tokenizer.type} tokenizer lacks distinct pad, bos and eos tokens, which T5 "
            f"needs (pad {tok.pad}, bos {tok.bos}, eos {tok.eos}, eod {tok.eod})",
            hint="use a BERT vocab.txt with [PAD]/[CLS]/[SEP], or a SentencePiece model (the sentinels bring the "
                 "roles it lacks)",
        )
    spans, num_sentinels = max_spans(data, seq_length), len(tok.additional_special_tokens_ids)
    if spans > num_sentinels:
        raise ConfigError(
            f"model.seq_length={seq_length} with model.data.masked_lm_prob={data.masked_lm_prob} can mask "
            f"{spans} spans in a sample, one sentinel each, but dataset {where} has {num_sentinels} sentinels",
            hint=f"lower model.seq_length or masked_lm_prob, or preprocess with --num-sentinel-tokens {spans}",
        )
    need = min_seq_length_dec(data, seq_length)
    if seq_length_dec < need:
        masked = max_masked_tokens(seq_length, data.masked_lm_prob)
        raise ConfigError(
            f"model.data.seq_length_dec={seq_length_dec} is too short for model.seq_length={seq_length}: a sample "
            f"masks up to {masked} tokens in up to {spans} spans (t5_data.max_spans), so its decoder takes <bos> + "
            f"{masked} + {spans} sentinels = {need} tokens",
            hint=f"set model.data.seq_length_dec={need} or more, or lower masked_lm_prob or model.seq_length",
        )
    _check_splits(data.splits_string, entries)
    return tok


def unsplit_datasets(entries: Sequence[BlendEntry]) -> list[str]:
    """Warnings for pairs stored one sequence per document (made without ``--split-sentences``).

    megatron-core's T5 dataset packs a document's sequences into samples: a one-sequence document
    gives one sample per epoch, its first ``seq_length - 2`` tokens, and the rest is never seen.
    """
    notes = []
    for e in entries:
        docs, seqs = int(e.ref.entry.get("num_documents", 0)), int(e.ref.entry.get("num_sequences", 0))
        if docs and seqs <= docs and not e.ref.manifest.summary.get("split_sentences"):
            notes.append(f"warning: dataset {e.ref.prefix} holds one sequence per document ({docs:,} documents): "
                         "T5 takes one sample of each per epoch and never sees the rest of a longer document; "
                         "preprocess it with bignlp-dataprep preprocess ... --split-sentences")
    return notes


def _check_keys(data: Any, seq_length: int) -> None:
    """The ``model.data`` keys megatron-core cannot honour or asserts against."""
    if getattr(data, "mean_ngram_size", None) is not None:
        raise ConfigError(f"model.data.mean_ngram_size={data.mean_ngram_size}: megatron-core's T5 masking has no "
                          "mean n-gram size", hint="set model.data.mean_ngram_size=null (max_ngram_size and "
                          "geometric_dist shape the spans)")
    if not getattr(data, "respect_document_boundaries", True):
        raise ConfigError("model.data.respect_document_boundaries=false: megatron-core's T5 samples never cross "
                          "documents", hint="set model.data.respect_document_boundaries=true")
    if data.permutation:  # (megatron-core also refuses it with geometric_dist)
        raise ConfigError("model.data.permutation=true: megatron-core 0.16 draws the permuted n-grams' sizes from "
                          "numpy's global random state, so samples would not follow from the seed (resume, data "
                          "parallelism)", hint="set model.data.permutation=false")
    if not 0.0 < data.masked_lm_prob < 1.0:
        raise ConfigError(f"model.data.masked_lm_prob must lie in (0, 1), got {data.masked_lm_prob}")
    if not 0.0 <= data.short_seq_prob <= 1.0:
        raise ConfigError(f"model.data.short_seq_prob must lie in [0, 1], got {data.short_seq_prob}")
    if data.max_ngram_size < 1:
        raise ConfigError(f"model.data.max_ngram_size must be at least 1, got {data.max_ngram_size}")
    if seq_length < 4:  # megatron-core samples seq_length - 2 tokens, and at least 2
        raise ConfigError(f"model.seq_length={seq_length} is too short for T5 samples (at least 4)")


def _check_splits(splits_string: str, entries: Sequence[BlendEntry]) -> None:
    """Each split with a share must hold a non-empty document of every dataset.

    megatron-core's T5 splits are ranges of documents: an empty range fails with an IndexError, and
    one of only empty documents spins through 2^31 epochs (seconds per document) to yield no sample.
    """
    from .data import split_bounds

    bounds = split_bounds(splits_string)
    for e in entries:
        docs = _document_sizes(e.ref.prefix)
        for name, bound in zip(("train", "valid", "test"), bounds):
            if bound is None:
                continue
            begin, end = int(round(bound[0] * len(docs))), int(round(bound[1] * len(docs)))
            if not (docs[begin:end] > 0).any():
                raise ConfigError(
                    f"model.data.splits_string={splits_string!r} leaves the {name} split of {e.ref.prefix} with no "
                    f"non-empty document (of its {len(docs)} documents: {begin}..{end})",
                    hint=f"give the {name} split a larger share, use a larger dataset, or give it 0 to drop it",
                )


def _document_sizes(prefix: Path) -> np.ndarray:
    """Sequences per document, from a Megatron .idx."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset

    dataset = IndexedDataset(str(prefix))  # held until the copy is made: its indices are a view of its mmap
    return np.diff(np.array(dataset.document_indices, dtype=np.int64))


def _t5_dataset_module():
    """megatron-core's T5 dataset module, imported quietly (as ``data._megatron_datasets``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets import t5_dataset
    return t5_dataset


def build_t5_datasets(data: Any, *, seed: int, seq_length: int, seq_length_dec: int, sizes: Sequence[int],
                      entries: Sequence[BlendEntry], tokenizer: TokenizerInfo, cache_dir: Path) -> list:
    """Train/valid/test T5 datasets (None for a split with no share), built with megatron-core.

    ``sizes``: samples per split (``data.split_sizes``); ``cache_dir``: where megatron-core keeps
    sample indices. The same seed gives the same samples.
    """
    builder_mod = _megatron_datasets()[0]
    t5 = _t5_dataset_module()
    tok = check_t5_data(data, seq_length=seq_length, seq_length_dec=seq_length_dec, tokenizer=tokenizer,
                        entries=entries)
    prefixes = [str(e.ref.prefix) for e in entries]
    weights = [e.weight for e in entries] if len(entries) > 1 else None
    config = t5.T5MaskedWordPieceDatasetConfig(
        random_seed=seed,
        sequence_length=seq_length,
        sequence_length_decoder=seq_length_dec,
        blend=(prefixes, weights),
        split=data.splits_string,
        path_to_cache=str(cache_dir),
        tokenizer=tok,
        masking_probability=data.masked_lm_prob,
        short_sequence_probability=data.short_seq_prob,
        masking_max_ngram=data.max_ngram_size,
        masking_do_full_word=data.whole_word_masking,
        masking_do_permutation=data.permutation,
        masking_use_longer_ngrams=data.favor_longer_ngrams,
        masking_use_geometric_distribution=data.geometric_dist,
    )
    builder = builder_mod.BlendedMegatronDatasetBuilder(t5.T5MaskedWordPieceDataset, list(sizes), lambda: True,
                                                        config)
    with _process_group():
        return builder.build()


def t5_batch(micro_batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A collated micro-batch of T5 samples as the model's inputs.

    ``encoder_tokens`` (b, s_enc) and ``decoder_tokens`` (b, s_dec) int64, 0 at padding;
    ``labels`` (b, s_dec) int64, 0 where ``loss_mask`` is 0 (megatron-core's -1 there would be no
    valid id); ``loss_mask`` (b, s_dec) float; ``encoder_mask`` (b, s_enc) and ``decoder_mask``
    (b, s_dec) bool, True at real (non-padding) tokens.
    """
    loss_mask = micro_batch["loss_mask"].to(torch.float32)
    labels = micro_batch["labels"].to(torch.int64)
    return {
        "encoder_tokens": micro_batch["text_enc"].to(torch.int64),
        "decoder_tokens": micro_batch["text_dec"].to(torch.int64),
        "labels": torch.where(loss_mask > 0, labels, torch.zeros_like(labels)),
        "loss_mask": loss_mask,
        "encoder_mask": micro_batch["enc_mask"].to(torch.bool),
        "decoder_mask": micro_batch["dec_mask"].to(torch.bool),
    }
