"""BERT WordPiece from a ``vocab.txt``, on Hugging Face ``tokenizers`` (Rust).

``BertWordPieceTokenizer`` rebuilds the pipeline of Google's original BERT tokenizer (the
``FullTokenizer`` Megatron's ``BertWordPieceLowerCase``/``Case`` use): clean text, split CJK
characters, lower-case and strip accents only for the lower-case variant, split on whitespace
and punctuation, greedy longest-match WordPiece with ``##`` continuations and words over 200
characters → ``[UNK]``. Unlike ``tokenizers.BertWordPieceTokenizer`` it registers no special
tokens with the library, so ``[SEP]`` in a document is ordinary text (``[``, ``sep``, ``]``), as
in Megatron; ``encode(..., allow_special=True)`` matches them as Hugging Face's BertTokenizer does.

End of document: Megatron-LM's ``_BertWordPieceTokenizer`` defines no ``eod`` (``--append-eod``
fails there; BERT data is usually made with ``--split-sentences`` and no EOD). We use ``[SEP]``,
the token BERT puts at the end of every segment.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bignlp_contracts import InputError

from .base import require_file
from .hf import TokenizersBacked

BERT_EOD_TOKEN = "[SEP]"
BERT_ROLE_TOKENS = {"pad": ("[PAD]",), "unk": ("[UNK]",), "cls": ("[CLS]",), "sep": ("[SEP]",), "mask": ("[MASK]",)}


def read_wordpiece_vocab(path: Path) -> dict[str, int]:
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


class BertWordPieceTokenizer(TokenizersBacked):
    """BERT WordPiece from a ``vocab.txt`` (Megatron's ``BertWordPieceLowerCase``/``BertWordPieceCase``)."""

    def __init__(self, vocab_file: str | os.PathLike, *, lower_case: bool, num_sentinel_tokens: int = 0,
                 additional_special_tokens: Sequence[str] = ()) -> None:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

        self.vocab_file = require_file(vocab_file, "vocab file")
        self.lower_case = lower_case
        self.type = "bert-wordpiece-lowercase" if lower_case else "bert-wordpiece-case"
        vocab = read_wordpiece_vocab(self.vocab_file)
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
        specials = self._find_roles(BERT_ROLE_TOKENS)
        # Megatron adds [BOS]/[EOS] on top at training time (2 more ids); Hugging Face's BERT has neither.
        self._finish(len(vocab), specials, num_sentinel_tokens=num_sentinel_tokens,
                     additional_special_tokens=additional_special_tokens)

    _rendered_separator = " "  # words and special tokens are joined by spaces, as BERT's decode does

    def files(self) -> dict[str, tuple[str, Path]]:
        """vocab.txt under a fixed name."""
        return {"vocab_file": ("vocab.txt", self.vocab_file)}
