"""A recipe's tokenizer: its files fetched by URL, or a SentencePiece model trained once for every share.

Training (``train_tokenizer: True``) happens at most once per settings, whichever
process gets there first: under a file lock on the model, a process that finds
the ``DATA_DIR/.bignlp-done/tokenizer/model.json`` marker (same trainer options,
same inputs, model unchanged) uses the model; otherwise it fetches the training
inputs (under the same per-file locks as the download step), trains, writes the
model atomically and then the marker. Array tasks started together therefore
wait for one training instead of racing, and a re-run after a kill retrains only
if no marker was written.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from bignlp_contracts import ArtifactError, to_dict
from bignlp_contracts.download import download, file_lock
from bignlp_contracts.manifest import sha256_file
from bignlp_tokenizers import TokenizerSpec

from .recipes import Item, Recipe
from .shards import read_marker, remove_stale_temporaries, write_marker

MODEL_MARKER = "model"  # .bignlp-done/tokenizer/model.json


def download_options(cfg: Recipe, *, progress: bool) -> dict:
    """The recipe's retry policy as ``download()`` keywords."""
    return {"retries": cfg.download_retries, "backoff_s": cfg.download_backoff_s,
            "timeout_s": cfg.download_timeout_s, "progress": progress}


def fetch_item(cfg: Recipe, item: Item, expected_sha256: str | None, *, progress: bool) -> Path:
    """Download one item's URL and write its marker; under a lock when the tokenizer step may fetch it too."""
    assert item.download is not None
    with file_lock(item.download) if needs_training(cfg) else contextlib.nullcontext():
        remove_stale_temporaries(item.download)
        path = download(item.source, item.download, sha256=expected_sha256, **download_options(cfg, progress=progress))
        write_marker(cfg.root, "download", item.id, {
            "source": item.source, "file": str(path), "size": path.stat().st_size, "sha256_verified": expected_sha256,
        })
    return path


def needs_training(cfg: Recipe) -> bool:
    """True if the recipe trains its own SentencePiece model."""
    return bool(getattr(cfg, "train_tokenizer", False))


def training_settings(cfg: Recipe) -> dict:
    """What the trained model depends on: the trainer options, the inputs and the JSON keys."""
    args = cfg.train_tokenizer_args  # type: ignore[union-attr]
    inputs = list(args.input) if args.input else [f.source for i in cfg.tokenizer_training_items() for f in i.files()]
    return {"args": to_dict(args), "inputs": inputs, "json_keys": list(cfg.json_keys)}


def trained_model_ready(cfg: Recipe) -> bool:
    """True if the model exists and its marker matches the recipe's current training settings."""
    model = cfg.trained_model_path()  # type: ignore[union-attr]
    marker = read_marker(cfg.root, "tokenizer", MODEL_MARKER)
    return (marker is not None and marker.get("settings") == training_settings(cfg) and model.is_file()
            and marker.get("sha256") == sha256_file(model))


def train_recipe_tokenizer(cfg: Recipe, sums: dict[str, str] | None = None, *, progress: bool = False) -> bool:
    """Train the recipe's SentencePiece model unless a matching one exists; True if it was trained now."""
    from .spm_train import TrainTokenizerConfig, train_sentencepiece

    args = cfg.train_tokenizer_args  # type: ignore[union-attr]
    model = cfg.trained_model_path()  # type: ignore[union-attr]
    with file_lock(model):
        if trained_model_ready(cfg):
            return False
        if args.input:
            files, input_format = list(args.input), args.input_format
        else:  # the corpus itself: URLs are fetched (and marked downloaded) here, local files read in place
            files, input_format = [], "jsonl"
            for item in (f for i in cfg.tokenizer_training_items() for f in i.files()):
                if item.download is not None:
                    fetch_item(cfg, item, (sums or {}).get(item.download.name), progress=progress)
                files.append(str(item.download or item.source))
        train_cfg = TrainTokenizerConfig(
            input=tuple(files), json_keys=cfg.json_keys, input_format=input_format,
            model_prefix=str(model.with_suffix("")), model_type=args.model_type, vocab_size=args.vocab_size,
            character_coverage=args.character_coverage, pad_id=args.pad_id, unk_id=args.unk_id, bos_id=args.bos_id,
            eos_id=args.eos_id, input_sentence_size=args.input_sentence_size,
            max_sentence_length=args.max_sentence_length,
        )
        train_sentencepiece(train_cfg)
        write_marker(cfg.root, "tokenizer", MODEL_MARKER, {
            "model": str(model), "sha256": sha256_file(model), "settings": training_settings(cfg),
        })
    return True


def ensure_tokenizer(cfg: Recipe, sums: dict[str, str] | None = None, *, progress: bool = False,
                     train: bool = True) -> TokenizerSpec:
    """The recipe's tokenizer as local files: trained (``train``) or checked, downloaded once under a lock."""
    if needs_training(cfg):
        if train:
            train_recipe_tokenizer(cfg, sums, progress=progress)
        elif not trained_model_ready(cfg):
            raise ArtifactError(f"{cfg.root}: the SentencePiece model is not trained (or was, with other settings)",
                                hint="run the tokenizer step first (--step tokenizer, or the whole recipe)")
    paths = {}
    for key, (url, path) in cfg.tokenizer_files().items():
        if url:
            with file_lock(path):
                download(url, path, sha256=(sums or {}).get(path.name), **download_options(cfg, progress=progress))
        paths[key] = str(path)
    return TokenizerSpec(str(cfg.tokenizer_type), eod_token=cfg.eod_token, num_sentinel_tokens=cfg.num_sentinel_tokens,
                         **paths)
