"""mC4 for mT5 (seed: ``mt5/download_mc4.yaml``): per-language ``json.gz`` files, balanced by size.

The files are laid out as in the ``allenai/c4`` repository: ``multilingual/c4-{lang}.tfrecord-{index:05d}-of-
{count:05d}.json.gz`` per language and, for cleaned English, ``en/c4-train.{index:05d}-of-01024.json.gz``
(both URL templates are keys). A language's files are grouped, in order, into splits of at most
``max_split_size`` GB; a split is one work item (its files downloaded and preprocessed into one pair) and
the splits are dealt to the ``(rank, world_size)`` shares by size, largest first to the least loaded
(``shards.shard_of``), as the seed's download/preprocess worker mappings do. Sizes come from a
``sizes_file`` (``<bytes>  <file name>`` lines) or HTTP HEAD, cached in ``DATA_DIR/raw/sizes.json`` so every
share computes the same mapping. The SentencePiece model is either downloaded (``download_tokenizer_url``)
or trained by our own trainer on the first ``spm_train_files`` file(s) of every language.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bignlp_contracts import ConfigError, InputError, atomic_write_text
from bignlp_contracts.download import content_length, file_lock, is_url

from .recipes import RAW_DIR, TOKENIZER_DIR_NAME, Item, RecipeBase, TrainTokenizerArgs

HF_C4_URL = "https://huggingface.co/datasets/allenai/c4/resolve/main"
# The languages of mC4 (TFDS c4/multilingual; "und" = undetermined, "-Latn" = romanized).
MC4_LANGUAGES = (
    "af", "am", "ar", "az", "be", "bg", "bg-Latn", "bn", "ca", "ceb", "co", "cs", "cy", "da", "de", "el", "el-Latn",
    "en", "eo", "es", "et", "eu", "fa", "fi", "fil", "fr", "fy", "ga", "gd", "gl", "gu", "ha", "haw", "hi",
    "hi-Latn", "hmn", "ht", "hu", "hy", "id", "ig", "is", "it", "iw", "ja", "ja-Latn", "jv", "ka", "kk", "km", "kn",
    "ko", "ku", "ky", "la", "lb", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne",
    "nl", "no", "ny", "pa", "pl", "ps", "pt", "ro", "ru", "ru-Latn", "sd", "si", "sk", "sl", "sm", "sn", "so", "sq",
    "sr", "st", "su", "sv", "sw", "ta", "te", "tg", "th", "tr", "uk", "und", "ur", "uz", "vi", "xh", "yi", "yo",
    "zh", "zh-Latn", "zu",
)
CLEANED_ENGLISH_FILES = 1024
SIZES_NAME = "sizes.json"


@dataclass(frozen=True, kw_only=True)
class Mc4Config(RecipeBase):
    """mC4 (seed: ``mt5/download_mc4.yaml``): one dataset per language (``{lang}_text_document``)."""

    dataset: Literal["mc4"] = "mc4"
    tokenizer_type: str | None = "SentencePieceTokenizer"
    download_mc4: bool = True  # False: the files are already in DATA_DIR/raw under their own names
    mc4_url: str = HF_C4_URL  # base URL of the allenai/c4 layout (a mirror, or a local fixture server)
    url_template: str = "{mc4_url}/multilingual/c4-{lang}.tfrecord-{index:05d}-of-{count:05d}.json.gz"
    cleaned_english_template: str = "{mc4_url}/en/c4-train.{index:05d}-of-{count:05d}.json.gz"
    # "cs,da,de" or "all" (every language of MC4_LANGUAGES).
    languages: str = "cs,da,de,el,en,es,fi,fr,hi,hu,it,ja,ko,lt,lv,nl,no,pl,pt,ro,ru,sk,sv,zh"
    use_cleaned_english: bool = True  # en from en/c4-train.* (C4 cleaned English) instead of multilingual/c4-en.*
    # Files per language (the {count} of the names); cleaned English has 1024.
    num_files: dict[str, int] | None = None
    # Take only the first N files of each language (a reduced run); null: all.
    max_files_per_language: int | None = None
    # GB per split: a language's files are grouped into splits of at most this size, each preprocessed as one item.
    max_split_size: float = 200.0
    # Optional "<bytes>  <file name>" list (URL or path); otherwise sizes come from HTTP HEAD Content-Length.
    sizes_file: str | None = None
    # The mT5 SentencePiece model: downloaded from download_tokenizer_url, or trained (train_tokenizer: True).
    download_tokenizer_url: str | None = None
    tokenizer_save_dir: str | None = None  # default DATA_DIR/bpe
    train_tokenizer: bool = False
    train_tokenizer_args: TrainTokenizerArgs = TrainTokenizerArgs(model_prefix="mt5_tokenizer")
    spm_train_files: int = 1  # files per language the tokenizer is trained on
    rm_downloaded: bool = False
    append_eod: bool = False  # T5 span corruption needs no end-of-document token

    def __post_init__(self) -> None:
        super().__post_init__()
        langs = self.language_list()
        unknown = [lang for lang in langs if lang not in MC4_LANGUAGES]
        if unknown:
            raise ConfigError(f"languages: {', '.join(unknown)} not in mC4",
                              hint="see bignlp_dataprep.mc4.MC4_LANGUAGES")
        missing = [lang for lang in langs if self._count(lang) is None]
        if missing:
            example = ", ".join(f"{lang}: N" for lang in missing)
            raise ConfigError(f"num_files: no file count for {', '.join(missing)}",
                              hint=f"'num_files={{{example}}}' (the -of-N in names)")
        if self.max_split_size <= 0 or self.spm_train_files < 1 or (self.max_files_per_language or 1) < 1:
            raise ConfigError("max_split_size must be > 0, spm_train_files and max_files_per_language >= 1")
        if self.tokenizer_type != "sentencepiece":
            raise ConfigError(f"mc4 uses a SentencePiece model, not {self.tokenizer_type}")
        if self.train_tokenizer and self.download_tokenizer_url:
            raise ConfigError("train_tokenizer and download_tokenizer_url are both set",
                              hint="set download_tokenizer_url=null to train, or train_tokenizer=False")

    def language_list(self) -> list[str]:
        """``languages`` as a list (``all`` expanded)."""
        if self.languages.strip() == "all":
            return list(MC4_LANGUAGES)
        return [lang.strip() for lang in self.languages.split(",") if lang.strip()]

    def _count(self, lang: str) -> int | None:
        if lang == "en" and self.use_cleaned_english:
            return (self.num_files or {}).get(lang, CLEANED_ENGLISH_FILES)
        return (self.num_files or {}).get(lang)

    def trained_model_path(self) -> Path:
        """``{tokenizer_save_dir}/{model_prefix}.model`` (the seed's tokenizer_model)."""
        save_dir = Path(self.tokenizer_save_dir) if self.tokenizer_save_dir else self.root / TOKENIZER_DIR_NAME
        return save_dir / f"{self.train_tokenizer_args.model_prefix}.model"

    def tokenizer_sources(self) -> dict[str, tuple[str, str | None]]:
        """The model: trained, downloaded from download_tokenizer_url, or an existing tokenizer_model."""
        if self.train_tokenizer:
            return {"tokenizer_model": ("tokenizer_model", str(self.trained_model_path()))}
        if self.download_tokenizer_url:
            return {"tokenizer_model": ("download_tokenizer_url", self.download_tokenizer_url)}
        return {"tokenizer_model": ("tokenizer_model", self.tokenizer_model)}

    def tokenizer_files(self) -> dict[str, tuple[str | None, Path]]:
        """A downloaded model is saved as the trained one would be (``mt5_tokenizer.model``)."""
        if self.download_tokenizer_url and not self.train_tokenizer:
            return {"tokenizer_model": (self.download_tokenizer_url, self.trained_model_path())}
        return super().tokenizer_files()

    def file_items(self, lang: str) -> list[Item]:
        """The files of one language, as single-file items (ids ``{lang}-{index:05d}``)."""
        count = self._count(lang)
        assert count is not None
        cleaned = lang == "en" and self.use_cleaned_english
        template = self.cleaned_english_template if cleaned else self.url_template
        out = []
        for index in range(min(count, self.max_files_per_language or count)):
            url = template.format(mc4_url=self.mc4_url.rstrip("/"), lang=lang, index=index, count=count)
            dest = self.root / RAW_DIR / url.rsplit("/", 1)[-1]
            out.append(Item(f"{lang}-{index:05d}", url if self.download_mc4 else str(dest),
                            dest if self.download_mc4 else None, None, lang))
        return out

    def items(self) -> list[Item]:
        """Per language, its files grouped into splits of at most ``max_split_size`` GB, with sizes."""
        files = {lang: self.file_items(lang) for lang in self.language_list()}
        sizes = self._sizes([f for fs in files.values() for f in fs])
        limit = self.max_split_size * 1e9
        out = []
        for lang, items in files.items():
            groups: list[list[Item]] = []
            for item in items:
                if not groups or sum(sizes[f.source] for f in groups[-1]) + sizes[item.source] > limit:
                    groups.append([])
                groups[-1].append(item)
            for k, group in enumerate(groups):
                prefix = lang if len(groups) == 1 else f"{lang}_{k:02d}"
                parts = tuple(Item(f.id, f.source, f.download, None, prefix) for f in group)
                source = f"{group[0].source} (+{len(group) - 1} more)" if len(group) > 1 else group[0].source
                out.append(Item(f"{lang}-s{k:02d}", source, None, None, prefix, parts=parts,
                                size=sum(sizes[f.source] for f in group)))
        return out

    def tokenizer_training_items(self) -> list[Item]:
        """The first ``spm_train_files`` file(s) of every language."""
        return [f for lang in self.language_list() for f in self.file_items(lang)[: self.spm_train_files]]

    def _sizes(self, files: list[Item]) -> dict[str, int]:
        """Bytes of every file: local files by stat, else the sizes list, else HEAD (cached for every share)."""
        if not self.download_mc4:
            return {f.source: Path(f.source).stat().st_size if Path(f.source).is_file() else 0 for f in files}
        cache = self.root / RAW_DIR / SIZES_NAME
        listed = self._listed_sizes()
        with file_lock(cache):
            known = json.loads(cache.read_text(encoding="utf-8")) if cache.is_file() else {}
            missing = [f.source for f in files if f.source not in known]
            for url in missing:
                name = url.rsplit("/", 1)[-1]
                known[url] = listed[name] if name in listed else content_length(
                    url, timeout_s=self.download_timeout_s, retries=self.download_retries)
            if missing:
                atomic_write_text(cache, json.dumps(known, indent=1, sort_keys=True) + "\n")
        return {f.source: known[f.source] for f in files}

    def _listed_sizes(self) -> dict[str, int]:
        if not self.sizes_file:
            return {}
        if is_url(self.sizes_file):
            import urllib.request

            with urllib.request.urlopen(self.sizes_file, timeout=self.download_timeout_s) as resp:
                text = resp.read().decode("utf-8")
        else:
            text = Path(self.sizes_file).read_text(encoding="utf-8")
        sizes = {}
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip() and not line.startswith("#"):
                m = re.fullmatch(r"\s*(\d+)\s+(\S+)\s*", line)
                if not m:
                    raise InputError(f"{self.sizes_file}:{lineno}: expected '<bytes>  <file name>'")
                sizes[m.group(2).rsplit("/", 1)[-1]] = int(m.group(1))
        return sizes
