"""What every tokenizer shares: one interface, special-token ids by role, tokens appended after the vocabulary.

A concrete tokenizer (``gpt2.py``, ``wordpiece.py``, ``hf.py``, ``sentencepiece.py``) loads its
files, encodes and decodes ordinary text through its library, says which of its vocabulary's
tokens are special, then calls ``_finish``. Everything else lives here, once for every type:

- ``encode``/``encode_batch``: text is ordinary text by default, as Megatron encodes documents
  (``<|endoftext|>`` or ``<extra_id_0>`` inside a document are not special). With
  ``allow_special=True`` every special token's text (the vocabulary's and the appended ones)
  becomes its single id, the text between them is encoded as usual (Hugging Face's rule).
- ``decode(ids, skip_special_tokens=False)``: appended tokens give their text.
- Tokens appended after the vocabulary, as NeMo 1.x does for T5/mT5: ``num_sentinel_tokens``
  sentinels ``<extra_id_0>`` ... first (ids ``V`` ... ``V+n-1`` for a vocabulary of ``V``), then the
  roles a T5 SentencePiece model lacks, then ``additional_special_tokens``. A token the vocabulary
  already holds as one token keeps its id (NeMo does the same), so a T5 ``tokenizer.json`` that
  carries its sentinels is not extended twice.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from bignlp_contracts import ConfigError, InputError
from bignlp_contracts.layout import TOKENIZER_DIR

# Special-token roles a tokenizer exposes as ``<role>_id`` (None when it has no such token).
ROLES = ("eod", "pad", "bos", "eos", "cls", "sep", "mask", "unk")
# The text NeMo gives a role a T5 SentencePiece model lacks, in the order NeMo appends them.
T5_ROLE_TOKENS = (("cls", "<cls>"), ("sep", "<sep>"), ("mask", "<mask>"), ("pad", "<pad>"),
                  ("bos", "<bos>"), ("eos", "<eos>"))


def sentinel_tokens(num_sentinel_tokens: int) -> list[str]:
    """T5's span-corruption sentinels ``<extra_id_0>`` ... ``<extra_id_{n-1}>``, in id order."""
    return [f"<extra_id_{i}>" for i in range(num_sentinel_tokens)]


def require_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a regular file; InputError naming it otherwise."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{what} {path} does not exist")
    if not path.is_file():
        raise InputError(f"{what} {path} is not a regular file")
    return path


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a tokenizer file; one-line InputError naming the file otherwise."""
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


class Tokenizer:
    """The tokenizer an artifact carries. Instances pickle (dataprep's worker processes receive one).

    ``vocab_size`` counts the appended tokens; ``<role>_id`` for each of ``ROLES`` is an id or None;
    ``sentinel_ids`` are the T5 sentinels' ids in order; ``special_tokens`` maps every special
    token's text to its id.
    """

    type: str
    vocab_size: int
    eod_id: int
    pad_id: int | None = None
    bos_id: int | None = None
    eos_id: int | None = None
    cls_id: int | None = None
    sep_id: int | None = None
    mask_id: int | None = None
    unk_id: int | None = None

    # --- what each type provides -------------------------------------------------------------
    def _encode_ordinary(self, texts: Sequence[str]) -> list[list[int]]:
        """Ids of each text through the library, no special token matched (beyond the library's own)."""
        raise NotImplementedError

    def _decode_ordinary(self, ids: list[int]) -> str:
        """Text of ids of the base vocabulary through the library."""
        raise NotImplementedError

    def _lookup(self, token: str) -> int | None:
        """The id of ``token`` if the base vocabulary holds it as one token."""
        raise NotImplementedError

    # How ``decode`` joins the text of appended tokens and of the runs of ids between them: the
    # library decodes each run on its own, so a run after an appended token may need its leading space.
    _rendered_separator = ""

    def _decode_continuation(self, ids: list[int]) -> str:
        """Text of a run of ids that follows an appended token (default: as at the start)."""
        return self._decode_ordinary(ids)

    def files(self) -> dict[str, tuple[str, Path]]:
        """Files to copy into an artifact: summary key → (file name under tokenizer/, source path)."""
        raise NotImplementedError

    # --- shared --------------------------------------------------------------------------------
    def _finish(self, base_vocab_size: int, base_specials: Mapping[str, int], *, num_sentinel_tokens: int = 0,
                additional_special_tokens: Sequence[str] = (), t5_roles: bool = False,
                rendered: Mapping[int, str] | None = None) -> None:
        """Append the extra tokens after ``base_vocab_size`` ids and index every special token.

        ``base_specials``: the vocabulary's special tokens (text → id); ``t5_roles``: append the
        T5 role tokens this tokenizer lacks (NeMo does for SentencePiece when it has sentinels);
        ``rendered``: ids the library's decoder drops that ``decode`` should spell out.
        """
        if isinstance(additional_special_tokens, str):  # one token given bare would become its characters
            additional_special_tokens = (additional_special_tokens,)
        if num_sentinel_tokens < 0:
            raise ConfigError(f"num_sentinel_tokens must be >= 0, got {num_sentinel_tokens}")
        bad = [t for t in additional_special_tokens if not isinstance(t, str) or not t]
        if bad:
            raise ConfigError(f"additional_special_tokens must be non-empty strings, got {bad[0]!r}")
        self.base_vocab_size = base_vocab_size
        self.num_sentinel_tokens = num_sentinel_tokens
        self.additional_special_tokens = tuple(additional_special_tokens)
        specials = dict(base_specials)
        self.appended_tokens: dict[str, int] = {}

        def add(token: str) -> int:
            if token not in specials:
                found = self._lookup(token)
                if found is None:
                    found = base_vocab_size + len(self.appended_tokens)
                    self.appended_tokens[token] = found
                specials[token] = found
            return specials[token]

        self.sentinel_ids = [add(t) for t in sentinel_tokens(num_sentinel_tokens)]
        if t5_roles and num_sentinel_tokens:
            for role, token in T5_ROLE_TOKENS:
                if getattr(self, f"{role}_id") is None:
                    setattr(self, f"{role}_id", add(token))
        for token in self.additional_special_tokens:
            add(token)
        self.vocab_size = base_vocab_size + len(self.appended_tokens)
        self.special_tokens = specials
        self._rendered = {**(rendered or {}), **{i: t for t, i in self.appended_tokens.items()}}
        roles = {getattr(self, f"{role}_id") for role in ROLES}
        self._skip = frozenset(specials.values()) | {i for i in roles if i is not None}
        # Longest first, so that "<extra_id_10>" is not read as "<extra_id_1>" + "0>".
        alternatives = "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True))
        self._special_re = re.compile(f"({alternatives})") if specials else None

    def encode(self, text: str, *, allow_special: bool = False) -> list[int]:
        """Token ids of ``text``; special-token text is ordinary text unless ``allow_special``."""
        return self.encode_batch([text], allow_special=allow_special)[0]

    def encode_batch(self, texts: Sequence[str], *, allow_special: bool = False) -> list[list[int]]:
        """``encode`` of each text, the batch through the library at once."""
        if not allow_special or self._special_re is None:
            return self._encode_ordinary(texts)
        splits = [self._special_re.split(t) for t in texts]  # odd positions: special tokens
        encoded = iter(self._encode_ordinary([p for parts in splits for p in parts[0::2] if p]))
        out = []
        for parts in splits:
            ids: list[int] = []
            for i, part in enumerate(parts):
                if i % 2:
                    ids.append(self.special_tokens[part])
                elif part:
                    ids += next(encoded)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of ``ids``; appended tokens give their text; ``skip_special_tokens`` drops every special id."""
        ids = [int(i) for i in ids]
        if ids and not 0 <= min(ids) <= max(ids) < self.vocab_size:
            bad = next(i for i in ids if not 0 <= i < self.vocab_size)
            raise ValueError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        if skip_special_tokens:
            ids = [i for i in ids if i not in self._skip]
        if not any(i in self._rendered for i in ids):
            return self._decode_ordinary(ids)
        text: list[str] = []
        run: list[int] = []
        for i in [*ids, None]:  # None: the end, which flushes the last run
            if i is not None and i not in self._rendered:
                run.append(i)
                continue
            if run:
                text.append(self._decode_ordinary(run) if not text else self._decode_continuation(run))
                run = []
            if i is not None:
                text.append(self._rendered[i])
        return self._rendered_separator.join(text)

    def token_to_id(self, token: str) -> int | None:
        """The id of ``token`` as one token (special, appended or of the vocabulary), else None."""
        found = self.special_tokens.get(token)
        return found if found is not None else self._lookup(token)

    def summary(self, files: Mapping[str, str] | None = None) -> dict:
        """The ``summary.tokenizer`` dict of an artifact that carries this tokenizer.

        ``files``: summary key → path relative to the artifact; by default ``tokenizer/<name>``
        for each of ``files()``, where dataprep and train put them. ``tokenizer_from_summary``
        builds this tokenizer again from the dict.
        """
        if files is None:
            files = {key: f"{TOKENIZER_DIR}/{name}" for key, (name, _source) in self.files().items()}
        out = {"type": self.type, **files, "vocab_size": self.vocab_size, "eod_id": self.eod_id}
        out.update(self._summary_extra())
        if self.num_sentinel_tokens:
            out["num_sentinel_tokens"] = self.num_sentinel_tokens
        if self.additional_special_tokens:
            out["additional_special_tokens"] = list(self.additional_special_tokens)
        return out

    def _summary_extra(self) -> dict:
        """Type-specific settings ``tokenizer_from_summary`` needs besides the files."""
        return {}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.type} vocab_size={self.vocab_size} eod_id={self.eod_id}>"
