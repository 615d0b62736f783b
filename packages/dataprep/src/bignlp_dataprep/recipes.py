"""Recipes: which files make a corpus and where each goes, as frozen configs with the seed's keys.

A recipe YAML (shipped under ``configs/`` or a path) names its kind in ``dataset``
(``pile``, ``mc4`` or ``custom_dataset``, the seed's values). Each recipe turns its config
into a list of :class:`Item` (one per shard file, or per group of files for mC4: where
it comes from, where it is downloaded and extracted to, the prefix of its ``.bin/.idx``
pair) and its tokenizer files (any tokenizer type; ``tokenizer_files``), or a SentencePiece
model it trains (``train_tokenizer``, see ``recipe_tokenizer.py``); ``runner.py`` does the
rest the same way for every recipe. mC4 lives in ``mc4.py``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bignlp_contracts import ConfigError, apply_overrides, load_config, load_yaml
from bignlp_contracts.config import resolve_config_path
from bignlp_contracts.download import is_url
from bignlp_tokenizers import canonical_tokenizer_type

from .config import ON_ERROR
from .extract import extracted_name
from .shards import parse_file_numbers
from .spm_train import MODEL_TYPES

CONFIGS_DIR = Path(__file__).parent / "configs"
RAW_DIR = "raw"  # downloads and extracted files, under data_dir
PILE_URL = "https://mystic.the-eye.eu/public/AI/pile/train/"


@dataclass(frozen=True)
class Item:
    """One shard file of a corpus and everything a step needs to know about it."""

    id: str  # "00": marker names, messages, and the NN of NAME_NN
    source: str  # URL or local path
    download: Path | None  # where a URL is saved; None: a local file, nothing to download
    extract: Path | None  # where it is decompressed; None: preprocessing streams the file itself
    prefix: str  # NAME_NN: the pair is NAME_NN_<key>_document.bin/.idx
    # mC4 splits: several files (each an Item without parts) downloaded by this item and preprocessed into its pair.
    parts: tuple[Item, ...] = ()
    size: int | None = None  # bytes to fetch/read, for balancing shares by size (None: round-robin)

    @property
    def input(self) -> Path:
        """The file preprocessing reads."""
        return self.extract or self.download or Path(self.source)

    def files(self) -> tuple[Item, ...]:
        """The single-file items this item consists of (itself, unless it is a split)."""
        return self.parts or (self,)


# The files each tokenizer type is built from (TokenizerSpec fields).
TOKENIZER_FILES = {
    "gpt2-bpe": ("vocab_file", "merges_file"),
    "bert-wordpiece-lowercase": ("vocab_file",),
    "bert-wordpiece-case": ("vocab_file",),
    "sentencepiece": ("tokenizer_model",),
    "huggingface": ("tokenizer_file",),
}
TOKENIZER_DIR_NAME = "bpe"  # tokenizer files fetched by URL go to DATA_DIR/bpe (the seed's bpe_save_dir)


@dataclass(frozen=True, kw_only=True)
class RecipeBase:
    """Keys every recipe has."""

    # The dataset artifact directory: NAME_NN_text_document.bin/.idx, tokenizer/, config.yaml, manifest.json;
    # downloads go to DATA_DIR/raw, completion markers to DATA_DIR/.bignlp-done.
    data_dir: str | None = None
    # False: stop after download/extract (no .bin/.idx, no manifest).
    preprocess_data: bool = True
    # Any preprocess tokenizer (gpt2-bpe, bert-wordpiece[-case], sentencepiece, huggingface, or Megatron's names).
    tokenizer_type: str | None = "GPT2BPETokenizer"
    # sentencepiece: the .model; huggingface: a tokenizer.json. Local paths or URLs (fetched to DATA_DIR/bpe).
    tokenizer_model: str | None = None
    tokenizer_file: str | None = None
    # huggingface only: the end-of-document token (default <|endoftext|>, else </s>).
    eod_token: str | None = None
    # T5/mT5: sentinels <extra_id_0> ... appended after the vocabulary (100 for T5); document ids do not change.
    num_sentinel_tokens: int = 0
    # Pairs are named {output_name}_{NN}_<key>_document, NN the shard number (two digits).
    output_name: str = "my-gpt3"
    json_keys: tuple[str, ...] = ("text",)
    # End every document with the tokenizer's end-of-document token (GPT pre-training wants it).
    append_eod: bool = True
    # Tokenizing processes per shard file (the output does not depend on it).
    workers: int = 1
    # Bad input lines: fail (default) stops at the first one, naming FILE:LINE; skip drops malformed JSON, missing
    # keys, non-string values, invalid UTF-8 and empty documents, counted per reason in the manifest summary.
    on_error: str = "fail"
    # T5/BERT: one sequence per sentence (rule-based splitter, sequences over 512 tokens cut), as preprocess's
    # --split-sentences; False: one sequence per document (GPT).
    split_sentences: bool = False
    # Optional checksum list (sha256sum output, "<hex>  <name>" lines), URL or path; files named in it are verified.
    sha256sums_url: str | None = None
    # Download attempts after the first; attempt k waits download_backoff_s * 2**(k-1) s. Then exit 75 (requeue).
    download_retries: int = 5
    download_backoff_s: float = 1.0
    download_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise ConfigError("data_dir is not set", hint="give data_dir=DIR (the dataset artifact directory)")
        if not self.output_name or "/" in self.output_name:
            raise ConfigError(f"output_name {self.output_name!r} must be a non-empty file name prefix")
        if not self.json_keys:
            raise ConfigError("json_keys: give at least one key")
        if self.workers < 1 or self.download_retries < 0:
            raise ConfigError("workers must be >= 1 and download_retries >= 0")
        if self.num_sentinel_tokens < 0:
            raise ConfigError(f"num_sentinel_tokens must be >= 0, got {self.num_sentinel_tokens}",
                              hint="num_sentinel_tokens=100 for T5/mT5, 0 for GPT")
        if self.on_error not in ON_ERROR:
            raise ConfigError(f"on_error {self.on_error!r} is not one of {', '.join(ON_ERROR)}",
                              hint="on_error=fail (stop at the first bad line) or on_error=skip (drop and count)")
        try:
            object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(str(self.tokenizer_type)))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        self.tokenizer_files()  # a missing tokenizer key is a config error now, not after the downloads

    @property
    def root(self) -> Path:
        """``data_dir`` as a path."""
        return Path(str(self.data_dir))

    def prefix(self, number: int) -> str:
        """``{output_name}_{NN:02d}``, as the launcher names ``my-gpt3_00_text_document``."""
        return f"{self.output_name}_{number:02d}"

    def items(self) -> list[Item]:
        """The recipe's work items, in order (each becomes one .bin/.idx pair per JSON key)."""
        raise NotImplementedError

    def tokenizer_training_items(self) -> list[Item]:
        """What a trained tokenizer learns from (train_tokenizer): every item unless the recipe samples."""
        return self.items()

    def tokenizer_sources(self) -> dict[str, tuple[str, str | None]]:
        """TokenizerSpec field → (the recipe key that names it, its value: path, URL or None)."""
        return {"tokenizer_model": ("tokenizer_model", self.tokenizer_model),
                "tokenizer_file": ("tokenizer_file", self.tokenizer_file)}

    def tokenizer_files(self) -> dict[str, tuple[str | None, Path]]:
        """The files ``tokenizer_type`` needs: TokenizerSpec field → (URL to fetch or None, local path)."""
        sources = self.tokenizer_sources()
        out = {}
        for field_name in TOKENIZER_FILES[str(self.tokenizer_type)]:
            if field_name not in sources:
                raise ConfigError(f"tokenizer_type {self.tokenizer_type} needs {field_name}, which this recipe "
                                  "does not take", hint="use a tokenizer_type this recipe supports")
            key, value = sources[field_name]
            if not value:
                raise ConfigError(f"tokenizer_type {self.tokenizer_type} needs {key}", hint=f"give {key}=PATH_OR_URL")
            value = str(value)
            if is_url(value):
                out[field_name] = (value, self.root / TOKENIZER_DIR_NAME / value.rstrip("/").rsplit("/", 1)[-1])
            else:
                out[field_name] = (None, Path(value))
        return out


@dataclass(frozen=True, kw_only=True)
class PileConfig(RecipeBase):
    """The Pile (seed: ``download_gpt3_pile.yaml``, ``t5/download_t5_pile.yaml``): ``00.jsonl.zst`` … ``29``."""

    dataset: Literal["pile"] = "pile"
    download_the_pile: bool = True
    # Base URL holding 00.jsonl.zst ... 29.jsonl.zst. The seed's host is gone: set your mirror.
    the_pile_url: str = PILE_URL
    # Which shards: "0-29", "0", "0,3,5-7".
    file_numbers: str = "0-29"
    # gpt2-bpe: vocab.json + merges.txt; bert-wordpiece: vocab.txt (no merges). null: already in the save dirs.
    download_vocab_url: str | None = None
    download_merges_url: str | None = None
    vocab_save_dir: str | None = None  # default DATA_DIR/bpe
    merges_save_dir: str | None = None  # default DATA_DIR/bpe
    # Delete NN.jsonl.zst once NN.jsonl is extracted, and NN.jsonl once it is preprocessed.
    rm_downloaded: bool = True
    rm_extracted: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_file_numbers(self.file_numbers)

    def items(self) -> list[Item]:
        """One item per shard number."""
        raw = self.root / RAW_DIR
        out = []
        for n in parse_file_numbers(self.file_numbers):
            name = f"{n:02d}.jsonl.zst"
            url = f"{self.the_pile_url.rstrip('/')}/{name}"
            out.append(Item(f"{n:02d}", url if self.download_the_pile else str(raw / name),
                            raw / name if self.download_the_pile else None, raw / extracted_name(name),
                            self.prefix(n)))
        return out

    def tokenizer_files(self) -> dict[str, tuple[str | None, Path]]:
        """vocab/merges from the download URLs into the save dirs; a model or tokenizer.json as in every recipe."""
        if self.tokenizer_type not in ("gpt2-bpe", "bert-wordpiece-lowercase", "bert-wordpiece-case"):
            return super().tokenizer_files()
        bpe = self.root / TOKENIZER_DIR_NAME
        vocab_name = "vocab.json" if self.tokenizer_type == "gpt2-bpe" else "vocab.txt"
        out = {"vocab_file": (self.download_vocab_url, Path(self.vocab_save_dir or bpe) / vocab_name)}
        if self.tokenizer_type == "gpt2-bpe":
            out["merges_file"] = (self.download_merges_url, Path(self.merges_save_dir or bpe) / "merges.txt")
        return out


@dataclass(frozen=True, kw_only=True)
class TrainTokenizerArgs:
    """The seed's ``train_tokenizer_args``: SentencePiece trainer options (github.com/google/sentencepiece)."""

    # Files to train on (paths); null: the recipe's raw_dataset_files (their json_keys text).
    input: tuple[str, ...] | None = None
    # How ``input`` files are read: text (one sentence a line) or jsonl (the recipe's json_keys).
    input_format: Literal["text", "jsonl"] = "text"
    model_prefix: str = "custom_sp_tokenizer"  # writes {bpe_save_dir}/{model_prefix}.model and .vocab
    model_type: str = "bpe"  # unigram, bpe, word or char
    vocab_size: int = 8000
    character_coverage: float = 0.9995  # 1.0 for small alphabets; 0.9995 for CJK-rich text
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3  # preprocessing's end of document
    pad_id: int = 0
    # Sentences (lines) sampled for training; 0 = all. Large corpora want ~1e7.
    input_sentence_size: int = 0
    # Lines longer than this many bytes are cut at spaces to fit (the trainer would drop them).
    max_sentence_length: int = 4192

    def __post_init__(self) -> None:
        if not self.model_prefix or "/" in self.model_prefix:
            raise ConfigError(f"train_tokenizer_args.model_prefix {self.model_prefix!r} must be a file name prefix")
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"train_tokenizer_args.model_type {self.model_type!r} is not one of "
                              f"{', '.join(MODEL_TYPES)}")


@dataclass(frozen=True, kw_only=True)
class CustomConfig(RecipeBase):
    """Your own corpus (seed: ``generic/custom_dataset.yaml``), with any tokenizer or a SentencePiece model
    trained on it first."""

    dataset: Literal["custom_dataset"] = "custom_dataset"
    # Local paths or http(s) URLs of .json/.jsonl files (one JSON object per line), plain, .gz or .zst.
    raw_dataset_files: tuple[str, ...] = ()
    # null: sentencepiece when train_tokenizer or tokenizer_model is given, gpt2-bpe when vocab_file is.
    tokenizer_type: str | None = None
    # gpt2-bpe: vocab.json + merges.txt; bert-wordpiece: vocab.txt. Local paths or URLs (fetched to DATA_DIR/bpe).
    vocab_file: str | None = None
    merge_file: str | None = None
    # Train a SentencePiece model on the corpus (once, before preprocessing) and preprocess with it.
    train_tokenizer: bool = False
    train_tokenizer_args: TrainTokenizerArgs = TrainTokenizerArgs()
    bpe_save_dir: str | None = None  # where the trained model goes; default DATA_DIR/bpe
    # Delete a downloaded file once it is preprocessed.
    rm_downloaded: bool = False

    def __post_init__(self) -> None:
        if self.tokenizer_type is None:
            inferred = "sentencepiece" if self.train_tokenizer or self.tokenizer_model else (
                "gpt2-bpe" if self.vocab_file else None)
            if inferred is None:
                raise ConfigError("custom_dataset needs a tokenizer",
                                  hint="train_tokenizer=True, tokenizer_model=X.model, or tokenizer_type=... with "
                                       "its files (vocab_file/merge_file, tokenizer_file)")
            object.__setattr__(self, "tokenizer_type", inferred)
        if self.train_tokenizer:
            if canonical_tokenizer_type(str(self.tokenizer_type)) != "sentencepiece":
                raise ConfigError(f"train_tokenizer trains a SentencePiece model, but tokenizer_type is "
                                  f"{self.tokenizer_type}", hint="set tokenizer_type=SentencePieceTokenizer")
            if self.tokenizer_model and Path(self.tokenizer_model) != self.trained_model_path():
                raise ConfigError(f"tokenizer_model {self.tokenizer_model} is not where train_tokenizer writes the "
                                  f"model ({self.trained_model_path()})",
                                  hint="leave tokenizer_model unset (or set bpe_save_dir and model_prefix)")
        super().__post_init__()
        if not self.raw_dataset_files or any(not f for f in self.raw_dataset_files):
            raise ConfigError("raw_dataset_files: give one or more files",
                              hint="raw_dataset_files=[a.jsonl,b.jsonl.gz]")

    def trained_model_path(self) -> Path:
        """``{bpe_save_dir}/{model_prefix}.model`` (the seed's tokenizer_model of a trained tokenizer)."""
        save_dir = Path(self.bpe_save_dir) if self.bpe_save_dir else self.root / TOKENIZER_DIR_NAME
        return save_dir / f"{self.train_tokenizer_args.model_prefix}.model"

    def items(self) -> list[Item]:
        """One item per raw dataset file, numbered in list order."""
        out = []
        for n, source in enumerate(self.raw_dataset_files):
            name = f"{n:02d}-{source.rstrip('/').rsplit('/', 1)[-1]}"
            download = self.root / RAW_DIR / name if is_url(source) else None
            out.append(Item(f"{n:02d}", source, download, None, self.prefix(n)))
        return out

    def tokenizer_sources(self) -> dict[str, tuple[str, str | None]]:
        """vocab_file/merge_file besides the common keys; a trained model where training writes it."""
        model = str(self.trained_model_path()) if self.train_tokenizer else self.tokenizer_model
        return {"vocab_file": ("vocab_file", self.vocab_file), "merges_file": ("merge_file", self.merge_file),
                "tokenizer_model": ("tokenizer_model", model),
                "tokenizer_file": ("tokenizer_file", self.tokenizer_file)}


Recipe = RecipeBase  # PileConfig, CustomConfig or mc4.Mc4Config


def recipe_classes() -> dict[str, type[RecipeBase]]:
    """``dataset`` value → recipe class."""
    from .mc4 import Mc4Config

    return {"pile": PileConfig, "custom_dataset": CustomConfig, "mc4": Mc4Config}


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """A shipped recipe name (``gpt3/download_gpt3_pile``) or a YAML path, with ``key=value`` overrides."""
    path = resolve_config_path(str(name_or_path), CONFIGS_DIR)
    data = apply_overrides(load_yaml(path), overrides)
    kind = data.get("dataset")
    recipes = recipe_classes()
    if kind not in recipes:
        raise ConfigError(f"{path}: dataset: {kind!r} is not a recipe this tool runs",
                          hint=f"dataset must be one of {', '.join(recipes)}")
    for key in ("json_keys", "raw_dataset_files"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    args = data.get("train_tokenizer_args")
    if isinstance(args, dict) and isinstance(args.get("input"), str):
        data["train_tokenizer_args"] = {**args, "input": [args["input"]]}
    if isinstance(data.get("languages"), (list, tuple)):  # mc4: [cs, da] as well as "cs,da"
        data["languages"] = ",".join(str(x) for x in data["languages"])
    return load_config(recipes[kind], data)


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with the package."""
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))
