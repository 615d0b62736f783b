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

Checkpoint artifact (kind ``model-checkpoint``), made by ``bignlp-train``::

    RUN_DIR/checkpoints/
      step-00000100/                  one artifact per saved step
        dcp/                          torch.distributed.checkpoint files: model.* (weights under the
                                      whole model's parameter names), optim.*, train_state.*, rng.*
        config.yaml                   resolved training config
        tokenizer/                    tokenizer files, copied from the dataset
        manifest.json                 written last
      .step-00000200.tmp/             a save in progress (or abandoned by a killed run): never read
      latest                          text: the name of the newest complete step dir
      damaged/step-00000300/          a checkpoint a resume found damaged, moved aside (never deleted)

Its ``summary`` holds ``family`` (the model family, ``"gpt"``), ``model`` (the family's
architecture config; ``vocab_size`` there is the padded vocabulary, the embedding's rows),
``vocab_size`` (the tokenizer's, unpadded), ``padded_vocab_size``, ``num_parameters``,
``step`` and ``tokenizer`` (as in a dataset, file paths relative to the step dir).

The legacy kind ``gpt-checkpoint`` (bignlp-train 0.5.0) has the same layout without
``summary.family`` (always a GPT) and ``summary.vocab_size`` (``checkpoint_vocab_size``
finds it in the config or the tokenizer summary); ``read_checkpoint`` reads both.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text, fsync_dir
from .errors import ArtifactError
from .kinds import CHECKPOINT_KINDS, GPT_CHECKPOINT, MEGATRON_DATASET, MODEL_CHECKPOINT
from .manifest import MANIFEST_NAME, Manifest, read_manifest
from .verify import check_files, share_files

CHECKPOINTS_DIR = "checkpoints"
LATEST_POINTER = "latest"
TOKENIZER_DIR = "tokenizer"
DAMAGED_DIR = "damaged"


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


def resume_candidates(run_dir: str | os.PathLike) -> list[Path]:
    """The checkpoints a resume may continue from, in the order to try them; none checked yet.

    The step directory ``latest`` names, then every older one, newest first (a newer one that
    ``latest`` does not name yet was written by a run killed before it moved the pointer: it is
    redone, not trusted). Without a pointer, or with one naming a directory that is gone: every
    step directory, newest first. A candidate may lack its manifest (an incomplete save).
    """
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    steps = sorted((p for p in root.glob("step-*") if p.is_dir()), reverse=True)
    pointer = root / LATEST_POINTER
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if target.name.startswith("step-") and target.is_dir():
            return [target] + [p for p in steps if p.name < target.name]
    return steps


def checkpoint_problem(
    path: str | os.PathLike,
    *,
    sha256: bool = False,
    share: tuple[int, int] = (0, 1),
    num_threads: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> str | None:
    """Why a checkpoint directory cannot be resumed from, in a few words; None when it is intact.

    Always (cheap): a manifest of a checkpoint kind, and every file it lists (``dcp/.metadata``
    included) present with its recorded size. With ``sha256``: the content of share ``index`` of
    ``count`` of the files (``share=(index, count)``; balanced by bytes, see ``share_files``), so the
    processes of a job can verify a checkpoint together. ``on_progress(done, total)``: bytes hashed.
    """
    path = Path(path)
    if not (path / MANIFEST_NAME).is_file():
        return f"incomplete: no {MANIFEST_NAME} (a save that did not finish)"
    try:
        manifest = read_manifest(path, verify="none")
    except ArtifactError as exc:
        return _without_path(exc.message, path)
    problems = check_files(path, manifest.files, sha256=False)
    if not problems:
        try:
            read_checkpoint(path, verify="none")
        except ArtifactError as exc:
            return _without_path(exc.message, path)
    if not problems and sha256:
        index, count = share
        mine = share_files({rel: int(meta.get("size") or 0) for rel, meta in manifest.files.items()}, count, index)
        problems = check_files(path, {rel: manifest.files[rel] for rel in mine}, sha256=True,
                               num_threads=num_threads, on_progress=on_progress)
    if not problems:
        return None
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return f"{problems[0]}{more}"


def _without_path(message: str, path: Path) -> str:
    text = message.split(". Produce it with:")[0]
    prefix = f"{path}: "
    return text[len(prefix):] if text.startswith(prefix) else text


def move_aside_checkpoint(path: str | os.PathLike) -> Path:
    """Rename a damaged checkpoint to ``checkpoints/damaged/<name>`` (``<name>.2``, ... when taken); return it.

    Never deletes: what is left of it may still be worth a look. The new name matches neither
    ``step-*`` (so no resume or pruning sees it) nor a temporary save (so no clean-up removes it).
    """
    path = Path(path)
    aside = path.parent / DAMAGED_DIR
    aside.mkdir(exist_ok=True)
    dest, n = aside / path.name, 1
    while dest.exists():
        n += 1
        dest = aside / f"{path.name}.{n}"
    os.rename(path, dest)
    fsync_dir(path.parent)
    return dest


def set_latest_checkpoint(run_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike) -> None:
    """Point ``latest`` at a complete checkpoint (atomically)."""
    atomic_write_text(Path(run_dir) / CHECKPOINTS_DIR / LATEST_POINTER, Path(checkpoint_dir).name + "\n")


def read_checkpoint(path: str | os.PathLike, *, verify: str = "size") -> tuple[Path, Manifest]:
    """Validate a checkpoint artifact (``model-checkpoint``, or the legacy ``gpt-checkpoint``).

    A run directory means its latest complete checkpoint. Returns the checkpoint directory and
    its manifest; an ``ArtifactError`` names what is wrong (no manifest, another kind, a save
    still in progress, a missing ``dcp/.metadata``) and how to produce a checkpoint.
    """
    path = Path(path)
    how = f"produce one with: {MODEL_CHECKPOINT.produced_by}"
    if not (path / MANIFEST_NAME).exists() and (path / CHECKPOINTS_DIR).is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise ArtifactError(
                f"{path}: training run has no complete checkpoint yet.",
                hint="train longer or lower exp_manager.checkpoint_callback_params.every_n_steps; checkpoints "
                     f"are written by: {MODEL_CHECKPOINT.produced_by}",
            )
        path = latest
    if path.name.startswith(".step-") and path.is_dir() and not (path / MANIFEST_NAME).exists():
        raise ArtifactError(
            f"{path}: a checkpoint save in progress, or abandoned by a killed run (a temporary directory, "
            "not a checkpoint)",
            hint=f"give the run directory or a complete checkpoints/step-* directory; {how}",
        )
    found = _manifest_kind(path)
    names = {k.name: k for k in CHECKPOINT_KINDS}
    if found is not None and found not in names:
        raise ArtifactError(
            f"{path}: is a {found!r} artifact, not a model checkpoint (expected {MODEL_CHECKPOINT.name!r} "
            f"or the legacy {GPT_CHECKPOINT.name!r})",
            hint=f"give a training run directory or one of its checkpoints/step-* directories; {how}",
        )
    return path, read_manifest(path, names.get(found, MODEL_CHECKPOINT), verify=verify)


def _manifest_kind(path: Path) -> str | None:
    """The ``kind`` a manifest declares, or None when there is no readable one (read_manifest says why)."""
    try:
        data = json.loads((path / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def checkpoint_family(manifest: Manifest) -> str:
    """The model family of a checkpoint: ``summary.family``; ``"gpt"`` for the legacy gpt-checkpoint."""
    if manifest.kind == GPT_CHECKPOINT.name:
        return str(manifest.summary.get("family", "gpt"))
    family = manifest.summary.get("family")
    if not isinstance(family, str) or not family:
        raise ArtifactError(
            f"{manifest.kind} manifest has no summary.family (the model family)",
            hint=f"re-create the checkpoint with: {MODEL_CHECKPOINT.produced_by}",
        )
    return family


def checkpoint_vocab_size(manifest: Manifest) -> int | None:
    """A checkpoint's unpadded vocabulary (the tokenizer's), or None if the manifest does not say.

    ``summary.vocab_size`` (model-checkpoint); for the legacy kind, the training config's
    ``model.tokenizer.vocab_size`` when it was set, else the tokenizer summary's ``vocab_size``.
    """
    value = manifest.summary.get("vocab_size")
    if value is None:
        model_cfg = manifest.config.get("model") if isinstance(manifest.config, dict) else None
        tokenizer_cfg = model_cfg.get("tokenizer") if isinstance(model_cfg, dict) else None
        value = tokenizer_cfg.get("vocab_size") if isinstance(tokenizer_cfg, dict) else None
    if value is None:
        tokenizer = manifest.summary.get("tokenizer")
        value = tokenizer.get("vocab_size") if isinstance(tokenizer, dict) else None
    return int(value) if value is not None else None


def resolve_checkpoint(folder: str | os.PathLike, name: str = "latest") -> Path:
    """The checkpoint the NeMo launcher's ``checkpoint_folder`` + ``checkpoint_name`` keys mean.

    ``folder``: one checkpoint (it has a manifest), a run directory, or a run's ``checkpoints/``.
    ``name``: ``latest`` (the run's latest complete checkpoint), or a name or glob of
    ``checkpoints/step-*`` (the newest match). With ``latest`` and no complete checkpoint, the run
    directory is returned: the reader then names what is missing.
    """
    import fnmatch

    from .errors import ConfigError

    folder = Path(folder)
    if (folder / MANIFEST_NAME).exists():
        return folder
    run_dir = folder.parent if folder.name == CHECKPOINTS_DIR else folder
    if name == "latest":
        found = latest_checkpoint(run_dir)
        return found if found is not None else run_dir
    ckpts = run_dir / CHECKPOINTS_DIR
    matches = sorted(p for p in ckpts.glob("*") if p.is_dir() and fnmatch.fnmatch(p.name, name)) \
        if ckpts.is_dir() else []
    if not matches:
        have = sorted(p.name for p in ckpts.glob("step-*")) if ckpts.is_dir() else []
        raise ConfigError(f"model.checkpoint_name={name!r} matches no checkpoint in {ckpts}",
                          hint=f"there: {', '.join(have[-5:]) or 'none'}; or use checkpoint_name=latest")
    return matches[-1]
