"""GPT-2 byte-level BPE on tiktoken's Rust BPE, from a Hugging Face ``vocab.json`` + ``merges.txt``.

tiktoken's mergeable ranks are built from the pair of files Megatron's ``GPT2BPETokenizer``
reads, checking the two agree the way tiktoken's own ``data_gym_to_mergeable_bpe_ranks``
does: tiktoken merges by rank, so a vocabulary whose ids are not in merge order would
silently tokenize differently from Megatron.
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
from collections.abc import Sequence
from pathlib import Path

from bignlp_contracts import InputError

from .base import Tokenizer, read_text

# GPT-2's pre-tokenizer regex (tiktoken's r50k pattern, Megatron's GPT2Tokenizer pattern).
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
EOD_TOKEN = "<|endoftext|>"
_SPECIAL_TOKENS = (EOD_TOKEN, "<|startoftext|>")  # not mergeable BPE tokens (as in tiktoken)


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


def load_gpt2_bpe(
    vocab_file: str | os.PathLike, merges_file: str | os.PathLike
) -> tuple[dict[bytes, int], dict[str, int]]:
    """Mergeable ranks (token bytes → id) and special tokens from HF-layout GPT-2 files.

    Raises InputError unless the ids in ``vocab_file`` are exactly the 256 byte
    tokens in GPT-2 byte order followed by one token per merge, in merge order.
    """
    vocab_file, merges_file = Path(vocab_file), Path(merges_file)
    try:
        vocab = json.loads(read_text(vocab_file, "vocab file"))
    except json.JSONDecodeError as exc:
        raise InputError(f"vocab file {vocab_file}: malformed JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(vocab, dict) or not all(isinstance(v, int) for v in vocab.values()):
        raise InputError(f"vocab file {vocab_file}: expected a JSON object of token → integer id")
    specials = {tok: vocab.pop(tok) for tok in _SPECIAL_TOKENS if tok in vocab}
    if EOD_TOKEN not in specials:
        raise InputError(f"vocab file {vocab_file}: has no {EOD_TOKEN} token (GPT-2 BPE uses it as end of document)")

    ranks = {bytes([b]): i for i, b in enumerate(bytes_to_unicode())}
    lines = read_text(merges_file, "merges file").split("\n")
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


class GPT2BPETokenizer(Tokenizer):
    """GPT-2 byte-level BPE on tiktoken. ``<|endoftext|>`` is end of document, BOS and EOS (Megatron, HF)."""

    type = "gpt2-bpe"

    def __init__(self, vocab_file: str | os.PathLike, merges_file: str | os.PathLike, *,
                 num_sentinel_tokens: int = 0, additional_special_tokens: Sequence[str] = ()) -> None:
        import tiktoken

        self.vocab_file, self.merges_file = Path(vocab_file), Path(merges_file)
        ranks, specials = load_gpt2_bpe(self.vocab_file, self.merges_file)
        self._encoding = tiktoken.Encoding(
            name="bignlp-gpt2-bpe", pat_str=GPT2_PATTERN, mergeable_ranks=ranks, special_tokens=specials
        )
        self.eod_id = self.bos_id = self.eos_id = specials[EOD_TOKEN]
        self._finish(len(ranks) + len(specials), specials,  # Megatron's vocab_size: len(vocab.json)
                     num_sentinel_tokens=num_sentinel_tokens, additional_special_tokens=additional_special_tokens)

    def _encode_ordinary(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_ordinary per text: <|endoftext|> inside a document is plain text, as in Megatron
        encode = self._encoding.encode_ordinary
        return [encode(text) for text in texts]

    def _decode_ordinary(self, ids: list[int]) -> str:
        return self._encoding.decode(ids, errors="replace")  # bytes that are not UTF-8 become U+FFFD

    def _lookup(self, token: str) -> int | None:
        try:
            return self._encoding.encode_single_token(token)
        except KeyError:
            return None

    def files(self) -> dict[str, tuple[str, Path]]:
        """vocab.json and merges.txt under fixed names, whatever the user called them."""
        return {"vocab_file": ("vocab.json", self.vocab_file), "merges_file": ("merges.txt", self.merges_file)}
