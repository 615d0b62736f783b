"""Tokenizers behind one small interface, built offline from the files a user names.

GPT-2 byte-level BPE (here) runs on tiktoken's Rust BPE, whose
mergeable ranks we build from a Hugging Face ``vocab.json`` + ``merges.txt`` pair
(the layout Megatron's ``GPT2BPETokenizer`` reads), checking the two files agree
the way tiktoken's own ``data_gym_to_mergeable_bpe_ranks`` does: tiktoken merges by
rank, so a vocabulary whose ids are not in merge order would silently tokenize
differently from Megatron. BERT WordPiece and any Hugging Face ``tokenizer.json``
(``hf.py``) and SentencePiece (``spm.py``) are other classes with the same members;
each has an entry in ``TOKENIZER_TYPES`` and a branch in ``build_tokenizer``.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bignlp_contracts import ConfigError, InputError

# GPT-2's pre-tokenizer regex (tiktoken's r50k pattern, Megatron's GPT2Tokenizer pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOD_TOKEN = "<|endoftext|>"
_SPECIAL_TOKENS = (EOD_TOKEN, "<|startoftext|>")  # not mergeable BPE tokens (as in tiktoken)

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


def canonical_tokenizer_type(name: str) -> str:
    """``GPT2BPETokenizer`` → ``gpt2-bpe``; ValueError naming the accepted values otherwise."""
    try:
        return TOKENIZER_TYPES[name]
    except KeyError:
        raise ValueError(f"tokenizer_type {name!r} is not supported; use one of {', '.join(TOKENIZER_TYPES)}") from None


class Tokenizer(Protocol):
    """What preprocessing needs from a tokenizer. Instances must pickle (workers receive one)."""

    type: str
    eod_id: int
    vocab_size: int

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text; special-token text is encoded as ordinary text."""

    def decode(self, ids: Sequence[int]) -> str:
        """Text of a token sequence (invalid UTF-8 replaced)."""

    def files(self) -> dict[str, tuple[str, Path]]:
        """Files to copy into the artifact: summary key → (file name under tokenizer/, source path)."""


# The TokenizerSpec fields (and dataset summary.tokenizer keys) that name a tokenizer's files, in a fixed order.
TOKENIZER_FILE_KEYS = ("vocab_file", "merges_file", "tokenizer_model", "tokenizer_file")


@dataclass(frozen=True)
class TokenizerSpec:
    """The tokenizer part of a config: a type and the files it is built from."""

    type: str
    vocab_file: str | None = None
    merges_file: str | None = None
    tokenizer_model: str | None = None  # SentencePiece .model
    tokenizer_file: str | None = None  # Hugging Face tokenizer.json
    eod_token: str | None = None  # huggingface only: the end-of-document token's text

    def paths(self) -> list[str]:
        """The files this tokenizer is built from (what its output depends on), in a fixed order."""
        return [p for p in (getattr(self, key) for key in TOKENIZER_FILE_KEYS) if p]


def build_tokenizer(spec: TokenizerSpec) -> Tokenizer:
    """Construct the tokenizer ``spec`` names; InputError for missing or inconsistent files."""
    kind = canonical_tokenizer_type(spec.type)
    if kind == "gpt2-bpe":
        if not spec.vocab_file or not spec.merges_file:
            raise ConfigError(
                "tokenizer gpt2-bpe needs vocab_file and merges_file",
                hint="pass --vocab-file vocab.json --merges-file merges.txt",
            )
        return GPT2BPETokenizer(spec.vocab_file, spec.merges_file)
    if kind.startswith("bert-wordpiece"):
        from .hf import BertWordPieceTokenizer

        if not spec.vocab_file:
            raise ConfigError(f"tokenizer {kind} needs vocab_file", hint="pass --vocab-file vocab.txt")
        return BertWordPieceTokenizer(spec.vocab_file, lower_case=kind == "bert-wordpiece-lowercase")
    if kind == "sentencepiece":
        from .spm import SentencePieceTokenizer

        if not spec.tokenizer_model:
            raise ConfigError("tokenizer sentencepiece needs tokenizer_model", hint="pass --tokenizer-model X.model")
        return SentencePieceTokenizer(spec.tokenizer_model)
    if kind == "huggingface":
        from .hf import HuggingFaceTokenizer

        if not spec.tokenizer_file:
            raise ConfigError("tokenizer huggingface needs tokenizer_file",
                              hint="pass --tokenizer-file tokenizer.json")
        return HuggingFaceTokenizer(spec.tokenizer_file, eod_token=spec.eod_token)
    raise AssertionError(kind)  # pragma: no cover - TOKENIZER_TYPES and this function disagree


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte → printable character map, in GPT-2's byte order.

    The insertion order is also the rank order of the 256 single-byte tokens.
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    n = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + n)
            n += 1
    return mapping


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a regular file; InputError naming it otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file")
    return path


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path} is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror}") from None


def load_gpt2_bpe(
    vocab_file: str | os.PathLike, merges_file: str | os.PathLike
) -> tuple[dict[bytes, int], dict[str, int]]:
    """Mergeable ranks (token bytes → id) and special tokens from HF-layout GPT-2 files.

    Raises InputError unless the ids in ``vocab_file`` are exactly the 256 byte
    tokens in GPT-2 byte order followed by one token per merge, in merge order.
    """
    vocab_file, merges_file = Path(vocab_file), Path(merges_file)
    try:
        vocab = json.loads(_read_text(vocab_file, "vocab file"))
    except json.JSONDecodeError as exc:
        raise InputError(f"vocab file {vocab_file}: malformed JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise InputError(f"vocab file {vocab_file}: expected a JSON object of token → integer id")
    specials = {tok: vocab.pop(tok) for tok in _SPECIAL_TOKENS if tok in vocab}
    if EOD_TOKEN not in specials:
        raise InputError(f"vocab file {vocab_file}: has no {EOD_TOKEN} token (GPT-2 BPE uses it as end of document)")

    ranks = {bytes([b]): i for i, b in enumerate(bytes_to_unicode())}
    lines = _read_text(merges_file, "merges file").split("\n")
    pairs = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or (lineno == 1 and line.startswith("#")):
            continue  # "#version: 0.2" header (tiktoken drops the first line too)
        pair = line.split()
        if len(pair) != 2:
            raise InputError(f"merges file {merges_file}:{lineno}: expected two tokens separated by a space")
        pairs += pair
    merged = _tokens_to_bytes(pairs, f"merges file {merges_file}")
    for rank, i in enumerate(range(0, len(merged), 2), start=len(ranks)):
        ranks[merged[i] + merged[i + 1]] = rank

    decoded = dict(zip(_tokens_to_bytes(list(vocab), f"vocab file {vocab_file}"), vocab.values()))
    if decoded != ranks:
        raise InputError(
            f"vocab file {vocab_file} and merges file {merges_file} disagree: {_first_difference(decoded, ranks)}"
        )
    return ranks, specials


def _translation_table() -> dict[int, str]:
    # Byte-level characters → the latin-1 character of their byte; every other character
    # below 512 → U+FFFF, which latin-1 cannot encode.
    table = dict.fromkeys(range(512), "\uffff")
    table.update({ord(ch): chr(b) for b, ch in bytes_to_unicode().items()})
    return table


_TO_LATIN1 = _translation_table()


def _tokens_to_bytes(tokens: list[str], where: str) -> list[bytes]:
    """GPT-2 byte-level strings → their bytes, all at once (one character is one byte)."""
    joined = "".join(tokens).translate(_TO_LATIN1)
    ends = list(itertools.accumulate(map(len, tokens)))
    try:
        data = joined.encode("latin-1")
    except UnicodeEncodeError as exc:
        bad = tokens[bisect.bisect_right(ends, exc.start)]
        raise InputError(f"{where}: token {bad!r} is not in GPT-2 byte-level form") from None
    return [data[a:b] for a, b in zip([0, *ends[:-1]], ends)]


def _first_difference(vocab: dict[bytes, int], ranks: dict[bytes, int]) -> str:
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if token not in vocab:
            return f"token {token!r} (rank {rank} from the merges) is missing from the vocabulary"
        if vocab[token] != rank:
            return f"token {token!r} has id {vocab[token]} in the vocabulary but rank {rank} from the merges"
    extra = sorted(set(vocab) - set(ranks), key=vocab.__getitem__)
    return f"{len(extra)} vocabulary tokens (first {extra[0]!r}) come from no merge"


class GPT2BPETokenizer:
    """GPT-2 byte-level BPE on tiktoken, from HF ``vocab.json`` + ``merges.txt``."""

    type = "gpt2-bpe"

    def __init__(self, vocab_file: str | os.PathLike, merges_file: str | os.PathLike) -> None:
        import tiktoken

        self.vocab_file, self.merges_file = Path(vocab_file), Path(merges_file)
        ranks, specials = load_gpt2_bpe(self.vocab_file, self.merges_file)
        self._encoding = tiktoken.Encoding(
            name="bignlp-gpt2-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
        self.eod_id = specials[EOD_TOKEN]
        self.vocab_size = len(ranks) + len(specials)  # Megatron: len(vocab.json)

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode_ordinary`` per text: ``<|endoftext|>`` inside a document is plain text, as in Megatron."""
        encode = self._encoding.encode_ordinary
        return [encode(text) for text in texts]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; bytes that are not valid UTF-8 become U+FFFD."""
        return self._encoding.decode(list(ids), errors="replace")

    def files(self) -> dict[str, tuple[str, Path]]:
        """vocab.json and merges.txt under fixed names, whatever the user called them."""
        return {"vocab_file": ("vocab.json", self.vocab_file), "merges_file": ("merges.txt", self.merges_file)}
