"""Any Hugging Face ``tokenizer.json``, on Hugging Face ``tokenizers`` (Rust); the base of BERT WordPiece too.

Special tokens in the text are matched as the file says (its added tokens), as the library does.
End of document is ``--eod-token``, else ``<|endoftext|>``, else ``</s>``. The other roles are the
well-known texts below, looked up in the vocabulary (a ``tokenizer.json`` records no roles: those
live in a ``tokenizer_config.json`` we do not read).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bignlp_contracts import InputError

from .base import Tokenizer, require_file

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

HF_EOD_TOKENS = ("<|endoftext|>", "</s>")  # tried in order when --eod-token is not given
# Role → candidate texts, first found wins. <|endoftext|> last for BOS and EOS: GPT-2's one token for both.
HF_ROLE_TOKENS = {
    "bos": ("<s>", "<|begin_of_text|>", "<bos>", "[BOS]", "<|startoftext|>", "<|endoftext|>"),
    "eos": ("</s>", "<|end_of_text|>", "<eos>", "[EOS]", "<|endoftext|>"),
    "pad": ("<pad>", "[PAD]", "<|pad|>", "<|padding|>"),
    "unk": ("<unk>", "[UNK]", "<|unk|>"),
    "cls": ("<cls>", "[CLS]"),
    "sep": ("<sep>", "[SEP]"),
    "mask": ("<mask>", "[MASK]"),
}


class TokenizersBacked(Tokenizer):
    """Encoding and decoding through a ``tokenizers.Tokenizer`` held in ``self._tok``."""

    _tok: HFTokenizer

    def _encode_ordinary(self, texts: Sequence[str]) -> list[list[int]]:
        # Without what a post-processor would add ([CLS]/[SEP], BOS): Megatron's ``tokenize``; end of
        # document is appended by the caller.
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def _decode_ordinary(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=False)  # WordPiece's decoder joins ## pieces

    def _lookup(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def _find_roles(self, candidates: dict[str, Sequence[str]]) -> dict[str, int]:
        """Set ``<role>_id`` to the first candidate text the vocabulary holds; those tokens, text → id."""
        found: dict[str, int] = {}
        for role, texts in candidates.items():
            for text in texts:
                token_id = self._lookup(text)
                if token_id is not None:
                    setattr(self, f"{role}_id", token_id)
                    found[text] = token_id
                    break
        return found


class HuggingFaceTokenizer(TokenizersBacked):
    """Any Hugging Face ``tokenizer.json``; special tokens in the text are matched as the file says."""

    type = "huggingface"

    def __init__(self, tokenizer_file: str | os.PathLike, *, eod_token: str | None = None,
                 num_sentinel_tokens: int = 0, additional_special_tokens: Sequence[str] = ()) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.tokenizer_file = require_file(tokenizer_file, "tokenizer file")
        try:
            self._tok = HFTokenizer.from_file(str(self.tokenizer_file))
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
        specials = self._find_roles(HF_ROLE_TOKENS)
        specials[self.eod_token] = self.eod_id
        specials.update({t.content: i for i, t in self._tok.get_added_tokens_decoder().items() if t.special})
        self._finish(max(self._tok.get_vocab_size(with_added_tokens=True), max(vocab.values()) + 1), specials,
                     num_sentinel_tokens=num_sentinel_tokens, additional_special_tokens=additional_special_tokens)

    def _summary_extra(self) -> dict:
        return {"eod_token": self.eod_token}

    def files(self) -> dict[str, tuple[str, Path]]:
        """tokenizer.json under a fixed name."""
        return {"tokenizer_file": ("tokenizer.json", self.tokenizer_file)}
