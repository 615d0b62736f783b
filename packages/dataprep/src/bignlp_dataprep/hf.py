"""BERT WordPiece and any Hugging Face ``tokenizer.json``, on Hugging Face ``tokenizers`` (Rust).

``BertWordPieceTokenizer`` rebuilds the pipeline of Google's original BERT
tokenizer (the ``FullTokenizer`` Megatron's ``BertWordPieceLowerCase``/``Case``
use): clean text, split CJK characters, lower-case and strip accents only for the
lower-case variant, split on whitespace and punctuation, greedy longest-match
WordPiece with ``##`` continuations and words over 200 characters → ``[UNK]``.
Unlike ``tokenizers.BertWordPieceTokenizer`` it registers no special tokens, so
``[SEP]`` in a document is ordinary text (``[``, ``sep``, ``]``), as in Megatron.

End of document: Megatron-LM's ``_BertWordPieceTokenizer`` defines no ``eod``
(``--append-eod`` fails there; BERT data is usually made with ``--split-sentences``
and no EOD). We use ``[SEP]``, the token BERT puts at the end of every segment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bignlp_contracts import InputError

from .tokenizers import require_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer

BERT_EOD_TOKEN = "[SEP]"
HF_EOD_TOKENS = ("<|endoftext|>", "</s>")  # tried in order when --eod-token is not given


def _read_wordpiece_vocab(path: Path) -> dict[str, int]:
    """``vocab.txt``: one token per line, id = line number (as BERT's ``load_vocab``, which strips each line)."""
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"vocab file {path}: not UTF-8 text (byte {exc.start})") from None
    if lines and lines[-1] == "":
        lines.pop()
    vocab: dict[str, int] = {}
    for token in lines:
        vocab.setdefault(token.strip(), len(vocab))
    if len(vocab) != len(lines):
        raise InputError(f"vocab file {path}: {len(lines) - len(vocab)} duplicate token(s); ids would shift")
    return vocab


class _TokenizersBacked:
    """Encoding and decoding through a ``tokenizers.Tokenizer`` held in ``self._tok``."""

    _tok: Tokenizer

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids per text, without special tokens a post-processor would add ([CLS]/[SEP], BOS):
        Megatron's ``tokenize``; end of document is appended by the caller."""
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` through the tokenizer's decoder (WordPiece joins ``##`` pieces)."""
        return self._tok.decode(list(ids), skip_special_tokens=False)


class BertWordPieceTokenizer(_TokenizersBacked):
    """BERT WordPiece from a ``vocab.txt`` (Megatron's ``BertWordPieceLowerCase``/``BertWordPieceCase``)."""

    def __init__(self, vocab_file: str | os.PathLike, *, lower_case: bool) -> None:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        self.vocab_file = require_file(vocab_file, "vocab file")
        self.lower_case = lower_case
        self.type = "bert-wordpiece-lowercase" if lower_case else "bert-wordpiece-case"
        vocab = _read_wordpiece_vocab(self.vocab_file)
        for token in ("[UNK]", BERT_EOD_TOKEN):
            if token not in vocab:
                raise InputError(f"vocab file {self.vocab_file}: has no {token} token (not a BERT vocabulary?)")
        tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=200))
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=lower_case, lowercase=lower_case
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        self._tok = tok
        self.eod_id = vocab[BERT_EOD_TOKEN]
        self.vocab_size = len(vocab)  # Megatron adds [BOS]/[EOS] on top at training time (2 more ids)

    def files(self) -> dict[str, tuple[str, Path]]:
        """vocab.txt under a fixed name."""
        return {"vocab_file": ("vocab.txt", self.vocab_file)}


class HuggingFaceTokenizer(_TokenizersBacked):
    """Any Hugging Face ``tokenizer.json``; special tokens in the text are matched as the file says."""

    type = "huggingface"

    def __init__(self, tokenizer_file: str | os.PathLike, *, eod_token: str | None = None) -> None:
        from tokenizers import Tokenizer

        self.tokenizer_file = require_file(tokenizer_file, "tokenizer file")
        try:
            self._tok = Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as exc:  # tokenizers raises a bare Exception for a bad file
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(
                f"tokenizer file {self.tokenizer_file}: not a Hugging Face tokenizer.json ({reason})"
            ) from None
        vocab = self._tok.get_vocab(with_added_tokens=True)
        candidates = (eod_token,) if eod_token else HF_EOD_TOKENS
        found = [t for t in candidates if t in vocab]
        if not found:
            raise InputError(
                f"tokenizer file {self.tokenizer_file}: has no {' or '.join(candidates)} token for end of document",
                hint="name the tokenizer's end-of-document token with --eod-token TOKEN",
            )
        self.eod_token = found[0]
        self.eod_id = vocab[self.eod_token]
        self.vocab_size = max(self._tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1)

    def files(self) -> dict[str, tuple[str, Path]]:
        """tokenizer.json under a fixed name."""
        return {"tokenizer_file": ("tokenizer.json", self.tokenizer_file)}
