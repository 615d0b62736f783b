"""SentencePiece: encoding with a ``.model`` file, and training one from JSONL text.

Encoding follows Megatron-LM's ``GPTSentencePieceTokenizer``: plain
``encode_as_ids`` (text that looks like ``</s>`` is ordinary text) and the model's
EOS id as end of document. Training streams the documents' lines out of JSONL
(plain, .gz, .zst) into ``SentencePieceTrainer`` through ``sentence_iterator``, so
no text file is written, and saves ``PREFIX.model``/``PREFIX.vocab`` atomically.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import ConfigError, InputError, atomic_write_bytes, atomic_write_text

from .readers import InputFile
from .tokenizers import require_file

MODEL_TYPES = ("bpe", "unigram", "word", "char")


class SentencePieceTokenizer:
    """A SentencePiece ``.model``; batches are encoded on ``num_threads`` threads by the library."""

    type = "sentencepiece"

    def __init__(self, model_file: str | os.PathLike, *, num_threads: int | None = None) -> None:
        self.model_file = require_file(model_file, "tokenizer model")
        self.num_threads = num_threads or min(os.cpu_count() or 1, 8)
        self._load(self.model_file.read_bytes())

    def _load(self, proto: bytes) -> None:
        import sentencepiece

        self._proto = proto
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
        except (RuntimeError, OSError) as exc:
            raise InputError(f"tokenizer model {self.model_file}: not a SentencePiece model ({exc})") from None
        self.vocab_size = self._sp.get_piece_size()
        eos = self._sp.eos_id()
        if eos < 0:  # trained with eos_id=-1: fall back to a </s> piece
            eos = self._sp.piece_to_id("</s>")
            if self._sp.id_to_piece(eos) != "</s>":
                raise InputError(f"tokenizer model {self.model_file}: has no EOS id and no </s> piece for end of "
                                 "document", hint="train it with an eos_id (e.g. --eos-id 3)")
        self.eod_id = eos
        try:
            self._numpy_out = len(self._sp.encode(["a"], out_type="numpy")) == 1
        except (ValueError, TypeError):  # sentencepiece < 0.2.1: no numpy output
            self._numpy_out = False

    def __getstate__(self) -> dict:
        return {"model_file": self.model_file, "num_threads": self.num_threads, "proto": self._proto}

    def __setstate__(self, state: dict) -> None:
        self.model_file, self.num_threads = state["model_file"], state["num_threads"]
        self._load(state["proto"])

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode_as_ids`` of every text (Megatron's ``GPTSentencePieceTokenizer.tokenize``)."""
        return self._sp.encode(list(texts), num_threads=self.num_threads)

    def encode_batch_flat(self, texts: Sequence[str]):
        """The same ids as ``encode_batch``, as (every id concatenated, ids per text): numpy arrays.

        SentencePiece ≥ 0.2.1 returns int32 buffers (``out_type="numpy"``), so no Python int
        is made per token; older versions go through lists.
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

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        return self._sp.decode([int(i) for i in ids])

    def files(self) -> dict[str, tuple[str, Path]]:
        """The .model under its own name (the launcher's configs name it, e.g. mt5_tokenizer.model)."""
        return {"tokenizer_model": (self.model_file.name, self.model_file)}


@dataclass(frozen=True, kw_only=True)
class TrainTokenizerConfig:
    """The seed's ``train_tokenizer_args`` (SentencePiece trainer options), plus where the text comes from."""

    input: tuple[str, ...] = ()
    json_keys: tuple[str, ...] = ("text",)
    # jsonl: the json_keys text of one JSON object per line; text: every line is a sentence.
    input_format: str = "jsonl"
    model_prefix: str = "custom_sp_tokenizer"
    model_type: str = "bpe"  # unigram, bpe, word or char
    vocab_size: int = 8000
    character_coverage: float = 0.9995  # 1.0 for small alphabets; 0.9995 for CJK-rich text
    # The seed's ids (SentencePiece's own defaults are unk 0, bos 1, eos 2, pad -1); -1 disables one.
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    # Sentences (lines) sampled for training; 0 = all. Large corpora want ~1e7.
    input_sentence_size: int = 0
    # Lines longer than this many bytes are skipped by the trainer.
    max_sentence_length: int = 4192

    def __post_init__(self) -> None:
        if not self.input:
            raise ConfigError("train-tokenizer: no input files", hint="give --input FILE [FILE...]")
        if self.input_format not in ("jsonl", "text"):
            raise ConfigError(f"input_format {self.input_format!r} is not jsonl or text")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model_type {self.model_type!r} is not one of {', '.join(MODEL_TYPES)}")
        if self.vocab_size < 1 or not 0 < self.character_coverage <= 1:
            raise ConfigError("vocab_size must be >= 1 and character_coverage in (0, 1]")
        if not self.model_prefix or self.model_prefix.endswith(("/", os.sep)):
            raise ConfigError(f"model_prefix {self.model_prefix!r}: give DIR/NAME (writes NAME.model, NAME.vocab)")


def split_long_line(line: str, max_chars: int) -> Iterator[str]:
    """``line`` in pieces of at most ``max_chars`` characters, cut at the last space where there is one.

    The trainer silently drops a sentence longer than ``max_sentence_length`` bytes, which
    would lose every one-line document (a book chapter, a web page) of a JSONL corpus.
    """
    while len(line) > max_chars:
        cut = line.rfind(" ", 1, max_chars + 1)
        cut = cut if cut > 0 else max_chars
        yield line[:cut]
        line = line[cut:]
    if line.strip():
        yield line


def iter_training_lines(files: Sequence[str], json_keys: Sequence[str], max_bytes: int = 4192, *,
                        text_format: bool = False) -> Iterator[str]:
    """The non-blank lines of every document's ``json_keys`` values, long ones split to fit ``max_bytes``.

    With ``text_format`` the files are plain text (plain, .gz or .zst): every line is a sentence.
    Malformed lines are InputErrors naming file and line.
    """
    max_chars = max(1, max_bytes // 4)  # UTF-8: at most 4 bytes a character
    for path in files:
        for batch in InputFile(path).batches(1 << 20):
            for lineno, raw in enumerate(batch.data.split(b"\n"), start=batch.first_line):
                if not raw.strip():
                    continue
                if text_format:
                    try:
                        yield from split_long_line(raw.decode("utf-8").rstrip("\r"), max_chars)
                    except UnicodeDecodeError as exc:
                        raise InputError(f"{batch.source}:{lineno}: invalid UTF-8 ({exc.reason})") from None
                    continue
                try:
                    doc = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise InputError(f"{batch.source}:{lineno}: malformed JSON or UTF-8 ({exc})") from None
                if not isinstance(doc, dict):
                    raise InputError(f"{batch.source}:{lineno}: expected a JSON object")
                for key in json_keys:
                    value = doc.get(key)
                    for text in value if isinstance(value, list) else [value]:
                        if isinstance(text, str):
                            for line in text.split("\n"):
                                if line.strip():
                                    yield from split_long_line(line, max_chars)


def train_sentencepiece(cfg: TrainTokenizerConfig) -> tuple[Path, Path]:
    """Train a SentencePiece model on ``cfg.input``; write ``PREFIX.model`` and ``PREFIX.vocab`` atomically."""
    import sentencepiece

    files = [str(require_file(p, "input file")) for p in cfg.input]
    model = io.BytesIO()
    num_lines = 0

    def lines() -> Iterator[str]:
        nonlocal num_lines
        for line in iter_training_lines(files, cfg.json_keys, cfg.max_sentence_length,
                                        text_format=cfg.input_format == "text"):
            num_lines += 1
            yield line

    try:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=lines(), model_writer=model, model_type=cfg.model_type, vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage, pad_id=cfg.pad_id, unk_id=cfg.unk_id, bos_id=cfg.bos_id,
            eos_id=cfg.eos_id, input_sentence_size=cfg.input_sentence_size,
            shuffle_input_sentence=cfg.input_sentence_size > 0, max_sentence_length=cfg.max_sentence_length,
            num_threads=min(os.cpu_count() or 1, 16), minloglevel=2,
        )
    except RuntimeError as exc:  # e.g. "Vocabulary size too high (9000). Please set it to a value <= 1234."
        if num_lines == 0:
            raise InputError(f"train-tokenizer: no text under key(s) {', '.join(cfg.json_keys)} in the input") from None
        raise ConfigError(f"SentencePiece training failed: {str(exc).strip().splitlines()[-1]}") from None
    proto = model.getvalue()
    sp = sentencepiece.SentencePieceProcessor(model_proto=proto)
    # SentencePiece's own .vocab format: "piece<TAB>score" per id.
    vocab = "".join(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n" for i in range(sp.get_piece_size()))
    model_path, vocab_path = Path(f"{cfg.model_prefix}.model"), Path(f"{cfg.model_prefix}.vocab")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(model_path, proto)
    atomic_write_text(vocab_path, vocab)
    return model_path, vocab_path
