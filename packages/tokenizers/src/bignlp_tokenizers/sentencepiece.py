"""SentencePiece: encoding and decoding with a ``.model`` file.

Encoding follows Megatron-LM's ``GPTSentencePieceTokenizer``: plain ``encode_as_ids`` (text that
looks like ``</s>`` is ordinary text) and the model's EOS id as end of document. PAD, BOS, EOS
and UNK are the model's own ids; ``<cls>``, ``<sep>``, ``<mask>`` are used where the model has
such pieces. With T5 sentinels, the roles the model lacks are appended after them as NeMo 1.x
does (``<cls>``, ``<sep>``, ``<mask>``, ``<pad>``, ``<bos>``, ``<eos>``, each only if missing).
Training a model is a dataprep step (``bignlp_dataprep.spm_train``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from bignlp_contracts import InputError

from .base import Tokenizer, require_file

SPM_ROLE_PIECES = {"cls": "<cls>", "sep": "<sep>", "mask": "<mask>"}


class SentencePieceTokenizer(Tokenizer):
    """A SentencePiece ``.model``; batches are encoded on ``num_threads`` threads by the library."""

    type = "sentencepiece"

    def __init__(self, model_file: str | os.PathLike, *, num_threads: int | None = None,
                 num_sentinel_tokens: int = 0, additional_special_tokens: Sequence[str] = ()) -> None:
        self.model_file = require_file(model_file, "tokenizer model")
        self.num_threads = num_threads or min(os.cpu_count() or 1, 8)
        self._load(self.model_file.read_bytes())
        sp = self._sp
        for role, piece_id in (("pad", sp.pad_id()), ("bos", sp.bos_id()), ("eos", sp.eos_id()),
                               ("unk", sp.unk_id())):
            setattr(self, f"{role}_id", piece_id if piece_id >= 0 else None)
        for role, piece in SPM_ROLE_PIECES.items():
            setattr(self, f"{role}_id", self._lookup(piece))
        eod = self.eos_id
        if eod is None:  # trained with eos_id=-1: fall back to a </s> piece
            eod = self._lookup("</s>")
            if eod is None:
                raise InputError(f"tokenizer model {self.model_file}: has no EOS id and no </s> piece for end of "
                                 "document", hint="train it with an eos_id (e.g. --eos-id 3)")
        self.eod_id = eod
        # Control pieces (<s>, </s>, <pad>) are special; the library's decoder drops them, ours spells them out.
        control = {i: sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.is_control(i)}
        specials = {piece: i for i, piece in control.items()}
        for role in ("unk", *SPM_ROLE_PIECES):
            if (role_id := getattr(self, f"{role}_id")) is not None:
                specials[sp.id_to_piece(role_id)] = role_id
        self._finish(sp.get_piece_size(), specials, num_sentinel_tokens=num_sentinel_tokens,
                     additional_special_tokens=additional_special_tokens, t5_roles=True, rendered=control)

    def _load(self, proto: bytes) -> None:
        import sentencepiece

        self._proto = proto
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError) as exc:
            raise InputError(f"tokenizer model {self.model_file}: not a SentencePiece model ({exc})") from None
        try:
            self._numpy_out = len(self._sp.encode(["a"], out_type="numpy")) == 1
        except (ValueError, TypeError, ImportError):  # sentencepiece < 0.2.1 or no numpy: lists
            self._numpy_out = False

    def __getstate__(self) -> dict:
        # The processor is a SWIG object that does not pickle; its model bytes do.
        return {k: v for k, v in self.__dict__.items() if k != "_sp"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._load(state["_proto"])

    def _encode_ordinary(self, texts: Sequence[str]) -> list[list[int]]:
        # encode_as_ids of every text (Megatron's GPTSentencePieceTokenizer.tokenize)
        return self._sp.encode(list(texts), num_threads=self.num_threads)

    def _decode_ordinary(self, ids: list[int]) -> str:
        return self._sp.decode(ids)

    def _decode_continuation(self, ids: list[int]) -> str:
        # SentencePiece drops the leading space of the first piece (its dummy prefix); mid-text it is a space.
        text = self._sp.decode(ids)
        return f" {text}" if self._sp.id_to_piece(ids[0]).startswith("\u2581") else text

    def _lookup(self, token: str) -> int | None:
        piece_id = self._sp.piece_to_id(token)  # the unknown id for a piece the model lacks
        return piece_id if self._sp.id_to_piece(piece_id) == token else None

    def encode_batch_flat(self, texts: Sequence[str]):
        """The same ids as ``encode_batch``, as (every id concatenated, ids per text): numpy arrays.

        SentencePiece ≥ 0.2.1 returns int32 buffers (``out_type="numpy"``), so no Python int
        is made per token; older versions go through lists. Needs numpy (dataprep has it).
        """
        import numpy as np

        texts = list(texts)
        if self._numpy_out:
            arrays = self._sp.encode(texts, num_threads=self.num_threads, out_type="numpy")
        else:
            arrays = [np.asarray(ids, dtype=np.int32) for ids in self.encode_batch(texts)]
        lengths = np.fromiter(map(len, arrays), dtype=np.int64, count=len(arrays))
        flat = np.concatenate(arrays) if arrays else np.zeros(0, np.int32)
        return flat, lengths

    def set_num_threads(self, num_threads: int) -> None:
        """Threads the library encodes a batch on (1 in each worker process of a pool)."""
        self.num_threads = max(1, num_threads)

    def files(self) -> dict[str, tuple[str, Path]]:
        """The .model under its own name (the launcher's configs name it, e.g. mt5_tokenizer.model)."""
        return {"tokenizer_model": (self.model_file.name, self.model_file)}
