"""Recipes: which files make a corpus and where each goes, as frozen configs with the seed's keys.

A recipe YAML (shipped under ``configs/`` or a path) names its kind in ``dataset``
(``pile`` or ``custom_dataset``, the seed's values). Each recipe turns its config
into a list of :class:`Item` (one per shard file: where it comes from, where it is
downloaded and extracted to, the prefix of its ``.bin/.idx`` pair) and a tokenizer;
``runner.py`` does the rest the same way for every recipe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bignlp_contracts import ConfigError, apply_overrides, load_config, load_yaml
from bignlp_contracts.config import resolve_config_path

from .download import is_url
from .extract import extracted_name
from .shards import parse_file_numbers
from .tokenizers import canonical_tokenizer_type

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

    @property
    def input(self) -> Path:
        """The file preprocessing reads."""
        return self.extract or self.download or Path(self.source)


@dataclass(frozen=True, kw_only=True)
class RecipeBase:
    """Keys every recipe has."""

    # The dataset artifact directory: NAME_NN_text_document.bin/.idx, tokenizer/, config.yaml, manifest.json;
    # downloads go to DATA_DIR/raw, completion markers to DATA_DIR/.bignlp-done.
    data_dir: str | None = None
    # False: stop after download/extract (no .bin/.idx, no manifest).
    preprocess_data: bool = True
    tokenizer_type: str = "GPT2BPETokenizer"
    # Pairs are named {output_name}_{NN}_<key>_document, NN the shard number (two digits).
    output_name: str = "my-gpt3"
    json_keys: tuple[str, ...] = ("text",)
    # End every document with <|endoftext|> (GPT pre-training wants it).
    append_eod: bool = True
    # Tokenizing processes per shard file (the output does not depend on it).
    workers: int = 1
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
        try:
            object.__setattr__(self, "tokenizer_type", canonical_tokenizer_type(self.tokenizer_type))
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.tokenizer_type != "gpt2-bpe":
            raise ConfigError(f"tokenizer_type {self.tokenizer_type}: recipes run GPT-2 BPE only so far",
                              hint="tokenize with bignlp-dataprep preprocess --tokenizer-type ... instead")

    @property
    def root(self) -> Path:
        """``data_dir`` as a path."""
        return Path(str(self.data_dir))

    def prefix(self, number: int) -> str:
        """``{output_name}_{NN:02d}``, as the launcher names ``my-gpt3_00_text_document``."""
        return f"{self.output_name}_{number:02d}"


@dataclass(frozen=True, kw_only=True)
class PileConfig(RecipeBase):
    """The Pile (seed: ``download_gpt3_pile.yaml``): 30 shards ``00.jsonl.zst`` … ``29.jsonl.zst``."""

    dataset: Literal["pile"] = "pile"
    download_the_pile: bool = True
    # Base URL holding 00.jsonl.zst ... 29.jsonl.zst. The seed's host is gone: set your mirror.
    the_pile_url: str = PILE_URL
    # Which shards: "0-29", "0", "0,3,5-7".
    file_numbers: str = "0-29"
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
        """vocab_file/merges_file → (URL to fetch or None, local path)."""
        bpe = self.root / "bpe"
        return {
            "vocab_file": (self.download_vocab_url, Path(self.vocab_save_dir or bpe) / "vocab.json"),
            "merges_file": (self.download_merges_url, Path(self.merges_save_dir or bpe) / "merges.txt"),
        }


@dataclass(frozen=True, kw_only=True)
class CustomConfig(RecipeBase):
    """Your own corpus (seed: ``generic/custom_dataset.yaml``) with an existing GPT-2 BPE tokenizer."""

    dataset: Literal["custom_dataset"] = "custom_dataset"
    # Local paths or http(s) URLs of .json/.jsonl files (one JSON object per line), plain, .gz or .zst.
    raw_dataset_files: tuple[str, ...] = ()
    # GPT-2 vocab.json / merges.txt: local paths or URLs (fetched to DATA_DIR/bpe).
    vocab_file: str | None = None
    merge_file: str | None = None
    # Delete a downloaded file once it is preprocessed.
    rm_downloaded: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.raw_dataset_files or any(not f for f in self.raw_dataset_files):
            raise ConfigError("raw_dataset_files: give one or more files",
                              hint="raw_dataset_files=[a.jsonl,b.jsonl.gz]")
        if not self.vocab_file or not self.merge_file:
            raise ConfigError("custom_dataset needs vocab_file and merge_file (GPT-2 BPE)",
                              hint="vocab_file=PATH_OR_URL merge_file=PATH_OR_URL")

    def items(self) -> list[Item]:
        """One item per raw dataset file, numbered in list order."""
        out = []
        for n, source in enumerate(self.raw_dataset_files):
            name = f"{n:02d}-{source.rstrip('/').rsplit('/', 1)[-1]}"
            download = self.root / RAW_DIR / name if is_url(source) else None
            out.append(Item(f"{n:02d}", source, download, None, self.prefix(n)))
        return out

    def tokenizer_files(self) -> dict[str, tuple[str | None, Path]]:
        """vocab_file/merges_file → (URL to fetch or None, local path)."""
        out = {}
        for key, value in (("vocab_file", self.vocab_file), ("merges_file", self.merge_file)):
            value = str(value)
            out[key] = (value, self.root / "bpe" / value.rsplit("/", 1)[-1]) if is_url(value) else (None, Path(value))
        return out


RECIPES: dict[str, type[RecipeBase]] = {"pile": PileConfig, "custom_dataset": CustomConfig}
Recipe = PileConfig | CustomConfig


def load_recipe(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> Recipe:
    """A shipped recipe name (``gpt3/download_gpt3_pile``) or a YAML path, with ``key=value`` overrides."""
    path = resolve_config_path(str(name_or_path), CONFIGS_DIR)
    data = apply_overrides(load_yaml(path), overrides)
    kind = data.get("dataset")
    if kind not in RECIPES:
        raise ConfigError(f"{path}: dataset: {kind!r} is not a recipe this tool runs",
                          hint=f"dataset must be one of {', '.join(RECIPES)}")
    for key in ("json_keys", "raw_dataset_files"):
        if isinstance(data.get(key), str):
            data[key] = [data[key]]
    return load_config(RECIPES[kind], data)  # type: ignore[return-value]


def shipped_recipes() -> list[str]:
    """Names of the recipes that ship with the package."""
    return sorted(str(p.relative_to(CONFIGS_DIR).with_suffix("")) for p in CONFIGS_DIR.rglob("*.yaml"))
