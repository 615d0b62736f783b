"""Agreed directory layouts: how a consumer finds things inside a producer's artifact.

Dataset artifact (kind ``megatron-dataset``), made by ``bignlp-dataprep``::

    DIR/
      NAME_text_document.bin / .idx   one pair per JSON key (Megatron format)
      tokenizer/                      copies of the tokenizer files
      config.yaml                     resolved preprocessing config
      manifest.json                   written last

Its ``summary`` holds ``datasets`` (one entry per pair: prefix, json_key,
num_documents, num_tokens, dtype) and ``tokenizer`` (type, file paths relative
to DIR, vocab_size, eod_id).

Checkpoint artifact (kind ``gpt-checkpoint``), made by ``bignlp-train``::

    RUN_DIR/checkpoints/
      step-00000100/                  one artifact per saved step
        dcp/                          torch.distributed.checkpoint files
        config.yaml                   resolved training config
        tokenizer/                    tokenizer files, copied from the dataset
        manifest.json                 written last
      latest                          text: the name of the newest complete step dir
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import ArtifactError
from .kinds import GPT_CHECKPOINT, MEGATRON_DATASET
from .manifest import MANIFEST_NAME, Manifest, read_manifest

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
TOKENIZER_DIR = "tokenizer"


def dataset_prefix_name(output_name: str, json_key: str) -> str:
    """Megatron's naming: ``<name>_<json_key>_document``."""
    return f"{output_name}_{json_key}_document"


@dataclass(frozen=True)
class DatasetRef:
    """One .bin/.idx pair inside a validated dataset artifact."""

    artifact_dir: Path
    prefix: Path  # full path without .bin/.idx, what megatron-core's IndexedDataset takes
    manifest: Manifest
    entry: dict[str, Any]

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.manifest.summary["tokenizer"]

    def tokenizer_file(self, key: str) -> Path | None:
        """Absolute path of a tokenizer file named in the summary (``vocab_file``, ...)."""
        rel = self.tokenizer.get(key)
        return self.artifact_dir / rel if rel else None


def resolve_dataset(path: str | os.PathLike, *, verify: str = "size") -> list[DatasetRef]:
    """Accept a dataset artifact directory or a full prefix inside one; return its pairs.

    A directory yields every pair it holds; a prefix (``DIR/NAME_text_document``,
    with or without ``.bin``) yields that one, after checking the artifact is complete.
    """
    path = Path(path)
    if path.suffix in (".bin", ".idx"):
        path = path.with_suffix("")
    if path.is_dir() and (path / MANIFEST_NAME).exists():
        artifact_dir, wanted = path, None
    elif not path.exists() and not (path.parent / MANIFEST_NAME).exists() \
            and not path.with_name(path.name + ".bin").exists():
        # Neither an artifact directory nor a prefix with data: name the path the user gave.
        raise ArtifactError(f"{path}: no such dataset (neither a directory nor {path.name}.bin)",
                            hint="give a dataset artifact directory or its DIR/NAME_text_document prefix; "
                                 f"produce one with: {MEGATRON_DATASET.produced_by}")
    else:
        artifact_dir, wanted = path.parent, path.name
    manifest = read_manifest(artifact_dir, MEGATRON_DATASET, verify=verify)
    entries = manifest.summary.get("datasets", [])
    refs = [DatasetRef(artifact_dir, artifact_dir / e["prefix"], manifest, e) for e in entries]
    if wanted is None:
        if not refs:
            raise ArtifactError(f"{artifact_dir}: dataset artifact lists no datasets in its manifest")
        return refs
    for ref in refs:
        if ref.prefix.name == wanted:
            return [ref]
    have = ", ".join(str(r.prefix) for r in refs) or "none"
    raise ArtifactError(f"{path}: no dataset with this prefix in {artifact_dir} (it holds: {have})")


def checkpoint_dir_name(step: int) -> str:
    """``step-00000100``: sortable by name."""
    return f"step-{step:08d}"


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint of a training run, or None if it has none.

    Follows the ``latest`` pointer when it names a complete checkpoint; otherwise
    (pointer missing or pointing at something deleted) falls back to the highest
    step directory that has a manifest, so a crash between the rename and the
    pointer update loses nothing.
    """
    ckpt_root = Path(run_dir) / CHECKPOINTS_DIR
    if not ckpt_root.is_dir():
        return None
    pointer = ckpt_root / LATEST_POINTER
    if pointer.is_file():
        target = ckpt_root / pointer.read_text().strip()
        if (target / MANIFEST_NAME).is_file():
            return target
    complete = sorted(p for p in ckpt_root.glob("step-*") if (p / MANIFEST_NAME).is_file())
    return complete[-1] if complete else None


def remove_abandoned_checkpoint_writes(run_dir: str | os.PathLike) -> list[Path]:
    """Delete temporary directories a killed checkpoint save left behind; return what was removed.

    ``atomic_directory`` cleans up after exceptions, but SIGKILL (OOM killer, scancel -9)
    skips that, and each leftover can be as large as a whole checkpoint. Call it from
    one process only, before the run's first save.
    """
    ckpt_root = Path(run_dir) / CHECKPOINTS_DIR
    if not ckpt_root.is_dir():
        return []
    leftovers = [p for p in ckpt_root.glob(".step-*") if p.is_dir() and (p.suffix == ".tmp" or ".old-" in p.name)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


def set_latest_checkpoint(run_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> None:
    """Point ``latest`` at a complete checkpoint (atomically)."""
    atomic_write_text(Path(run_dir) / CHECKPOINTS_DIR / LATEST_POINTER, Path(checkpoint_dir).name + "\n")


def read_checkpoint(path: str | os.PathLike, *, verify: str = "size") -> tuple[Path, Manifest]:
    """Validate a checkpoint artifact; a run directory means its latest checkpoint."""
    path = Path(path)
    if not (path / MANIFEST_NAME).exists() and (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ArtifactError(
                f"{path}: training run has no complete checkpoint yet.",
                hint="train longer or lower exp_manager.checkpoint_callback_params.every_n_steps",
            )
        path = latest
    return path, read_manifest(path, GPT_CHECKPOINT, verify=verify)
