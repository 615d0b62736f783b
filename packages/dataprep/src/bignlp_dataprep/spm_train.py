"""Training a SentencePiece model from JSONL (or plain text) files: a dataprep step.

The documents' lines are streamed out of JSONL (plain, .gz, .zst) into ``SentencePieceTrainer``
through ``sentence_iterator``, so no text file is written, and ``PREFIX.model``/``PREFIX.vocab``
are saved atomically. Encoding with a model is ``bignlp_tokenizers.SentencePieceTokenizer``.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import ConfigError, InputError, atomic_write_bytes, atomic_write_text
from bignlp_tokenizers import require_file

from .readers import InputFile

MODEL_TYPES = ("bpe", "unigram", "word", "char")


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
