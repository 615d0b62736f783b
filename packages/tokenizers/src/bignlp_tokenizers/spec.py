"""Naming a tokenizer: its type and files (``TokenizerSpec``), building it, and the artifact summary round trip.

Dataprep builds one from a config (``build_tokenizer``) and writes ``Tokenizer.summary()`` into its
dataset manifest as ``summary.tokenizer`` beside copies of the files under ``tokenizer/``; train
copies both into every checkpoint. Whoever reads such an artifact gets the very same tokenizer
back with ``tokenizer_from_summary(manifest.summary["tokenizer"], artifact_dir)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bignlp_contracts import ArtifactError, ConfigError

from .base import Tokenizer

# Accepted --tokenizer-type values → canonical name (Megatron's class names are aliases).
# "bert-wordpiece" means lower-casing, as Megatron's BertWordPieceLowerCase (and bert-base-uncased).
TOKENIZER_TYPES = {
    "gpt2-bpe": "gpt2-bpe", "GPT2BPETokenizer": "gpt2-bpe",
    "bert-wordpiece": "bert-wordpiece-lowercase", "bert-wordpiece-lowercase": "bert-wordpiece-lowercase",
    "BertWordPieceLowerCase": "bert-wordpiece-lowercase",
    "bert-wordpiece-case": "bert-wordpiece-case", "BertWordPieceCase": "bert-wordpiece-case",
    "sentencepiece": "sentencepiece", "SentencePieceTokenizer": "sentencepiece",
    "GPTSentencePieceTokenizer": "sentencepiece",
    "huggingface": "huggingface", "HuggingFaceTokenizer": "huggingface",
}

# The TokenizerSpec fields (and summary.tokenizer keys) that name a tokenizer's files, in a fixed order.
TOKENIZER_FILE_KEYS = ("vocab_file", "merges_file", "tokenizer_model", "tokenizer_file")

# The files each canonical type is built from, with the CLI flag that names each.
REQUIRED_FILES = {
    "gpt2-bpe": {"vocab_file": "--vocab-file vocab.json", "merges_file": "--merges-file merges.txt"},
    "bert-wordpiece-lowercase": {"vocab_file": "--vocab-file vocab.txt"},
    "bert-wordpiece-case": {"vocab_file": "--vocab-file vocab.txt"},
    "sentencepiece": {"tokenizer_model": "--tokenizer-model X.model"},
    "huggingface": {"tokenizer_file": "--tokenizer-file tokenizer.json"},
}


def canonical_tokenizer_type(name: str) -> str:
    """``GPT2BPETokenizer`` → ``gpt2-bpe``; ValueError naming the accepted values otherwise."""
    try:
        return TOKENIZER_TYPES[name]
    except KeyError:
        raise ValueError(f"tokenizer_type {name!r} is not supported; use one of {', '.join(TOKENIZER_TYPES)}") from None


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer part of a config: a type, the files it is built from and the tokens appended to it."""

    type: str
    vocab_file: str | None = None
    merges_file: str | None = None
    tokenizer_model: str | None = None  # SentencePiece .model
    tokenizer_file: str | None = None  # Hugging Face tokenizer.json
    eod_token: str | None = None  # huggingface only: the end-of-document token's text
    # T5/mT5: <extra_id_0> ... appended after the vocabulary (NeMo's tokenizer.num_sentinel_tokens).
    num_sentinel_tokens: int = 0
    additional_special_tokens: tuple[str, ...] = ()  # appended after the sentinels

    def paths(self) -> list[str]:
        """The files this tokenizer is built from (what its output depends on), in a fixed order."""
        return [p for p in (getattr(self, key) for key in TOKENIZER_FILE_KEYS) if p]


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Construct the tokenizer ``spec`` names; ConfigError for a missing file setting, InputError for
    missing or inconsistent files."""
    kind = canonical_tokenizer_type(spec.type)
    missing = [key for key in REQUIRED_FILES[kind] if not getattr(spec, key)]
    if missing:
        raise ConfigError(f"tokenizer {kind} needs {' and '.join(missing)}",
                          hint="pass " + " ".join(REQUIRED_FILES[kind][key] for key in missing))
    extra: dict[str, Any] = {"num_sentinel_tokens": spec.num_sentinel_tokens,
                             "additional_special_tokens": tuple(spec.additional_special_tokens)}
    if kind == "gpt2-bpe":
        from .gpt2 import GPT2BPETokenizer

        return GPT2BPETokenizer(spec.vocab_file, spec.merges_file, **extra)
    if kind.startswith("bert-wordpiece"):
        from .wordpiece import BertWordPieceTokenizer

        return BertWordPieceTokenizer(spec.vocab_file, lower_case=kind == "bert-wordpiece-lowercase", **extra)
    if kind == "sentencepiece":
        from .sentencepiece import SentencePieceTokenizer

        return SentencePieceTokenizer(spec.tokenizer_model, **extra)
    if kind == "huggingface":
        from .hf import HuggingFaceTokenizer

        return HuggingFaceTokenizer(spec.tokenizer_file, eod_token=spec.eod_token, **extra)
    raise AssertionError(kind)  # pragma: no cover - TOKENIZER_TYPES and this function disagree


def tokenizer_from_summary(summary: Mapping[str, Any], base_dir: str | Path) -> Tokenizer:
    """The tokenizer an artifact carries, from its manifest's ``summary["tokenizer"]``.

    File keys (``vocab_file``, ``merges_file``, ``tokenizer_model``, ``tokenizer_file``) are relative
    to ``base_dir``, the artifact directory (a dataset, or a checkpoint's step directory). The
    result must have the ``vocab_size`` and ``eod_id`` the summary records. ArtifactError, one line
    naming the file or key, when the summary and the files do not make that tokenizer.
    """
    base_dir = Path(base_dir)
    if not isinstance(summary, Mapping) or not isinstance(summary.get("type"), str):
        raise ArtifactError(f"{base_dir}: summary.tokenizer has no type (the tokenizer the artifact was made with)")
    try:
        kind = canonical_tokenizer_type(summary["type"])
    except ValueError:
        raise ArtifactError(f"{base_dir}: summary.tokenizer.type {summary['type']!r} is not a tokenizer type "
                            f"this bignlp-tokenizers knows ({', '.join(sorted(set(TOKENIZER_TYPES.values())))})",
                            hint="read the artifact with the bignlp version that wrote it") from None
    files: dict[str, str] = {}
    for key in TOKENIZER_FILE_KEYS:
        rel = summary.get(key)
        if rel is None:
            if key in REQUIRED_FILES[kind]:
                raise ArtifactError(f"{base_dir}: summary.tokenizer of type {kind} names no {key}")
            continue
        path = base_dir / str(rel)
        if not path.is_file():
            raise ArtifactError(f"{base_dir}: tokenizer {key} {path} is missing",
                                hint="copy the artifact again with its tokenizer/ directory")
        files[key] = str(path)
    eod_token = summary.get("eod_token")
    if kind == "huggingface" and eod_token is None and isinstance(summary.get("eod_id"), int):
        eod_token = _hf_token_of(files["tokenizer_file"], summary["eod_id"])  # summaries before eod_token
    spec = TokenizerSpec(kind, **files, eod_token=eod_token,
                         num_sentinel_tokens=int(summary.get("num_sentinel_tokens") or 0),
                         additional_special_tokens=tuple(summary.get("additional_special_tokens") or ()))
    tokenizer = build_tokenizer(spec)
    for key in ("vocab_size", "eod_id"):
        recorded = summary.get(key)
        if recorded is not None and recorded != getattr(tokenizer, key):
            raise ArtifactError(f"{base_dir}: summary.tokenizer.{key} is {recorded} but its files make a tokenizer "
                                f"with {key} {getattr(tokenizer, key)}",
                                hint="the tokenizer files were replaced; restore the artifact's own")
    return tokenizer


def _hf_token_of(tokenizer_file: str, token_id: int) -> str | None:
    """The text of ``token_id`` in a ``tokenizer.json`` (None when it has no such id)."""
    from tokenizers import Tokenizer as HFTokenizer

    try:
        return HFTokenizer.from_file(tokenizer_file).id_to_token(token_id)
    except Exception:  # a bad file: HuggingFaceTokenizer names it when it loads it
        return None
