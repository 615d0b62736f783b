"""Load a training checkpoint for inference: weights only, no optimizer, no process group.

``load_model(checkpoint)`` takes a ``model-checkpoint`` (or legacy ``gpt-checkpoint``)
directory, or a training run directory (its latest checkpoint), and returns the model in eval
mode with its config, family spec and tokenizer. It reads the manifest (family, architecture,
vocabulary), builds the model on the meta device, materialises it where it will live, in the
dtype asked for, and reads only the ``model.*`` entries of ``dcp/`` into it:
``torch.distributed.checkpoint`` loads a partial state dict in a plain process, and the
optimizer's entries are never deserialised.

Before any of it is used, the files it reads are checked against the sha256 the manifest
records (``verify="sha256"``, the default): ``dcp/.metadata`` before it is unpickled, then the
``dcp/`` files holding weights (whole files: the manifest has one sha256 per file, so a
training checkpoint's optimizer bytes are hashed too) and ``tokenizer/``. A damaged file is one
``ArtifactError`` line naming it.

The vocabulary rows training padded for divisibility hold no token, so they are dropped: the
model is built with the unpadded vocabulary (``LoadedModel.vocab_size``), the embedding keeps
the real-token rows, and ``model(tokens)`` returns logits of that width (also what conversion
to Hugging Face wants).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from bignlp_contracts import (
    MODEL_CHECKPOINT,
    ArtifactError,
    Manifest,
    check_files,
    checkpoint_family,
    checkpoint_vocab_size,
    read_checkpoint,
)
from bignlp_tokenizers import Tokenizer, tokenizer_from_summary

from .dcp_direct import read_direct
from .placement import place_model, resolve_devices
from .spec import FAMILIES, FamilySpec

DCP_DIR = "dcp"
MODEL_PREFIX = "model."  # where training's DCP state keeps the weights ("model.layers.0.mlp...")


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint's model ready for inference, and what describes it."""

    model: nn.Module  # eval mode, parameters frozen; logits of width vocab_size
    config: Any  # the family's config dataclass, vocab_size unpadded (summary.model has the padded one)
    family: FamilySpec
    tokenizer: Tokenizer  # the one the model was trained with (from the checkpoint's tokenizer/)
    vocab_size: int  # the tokenizer's vocabulary: rows of the embedding, width of the logits
    manifest: Manifest
    path: Path  # the checkpoint directory (a run directory resolved to its latest)
    devices: tuple[torch.device, ...] = (torch.device("cpu"),)  # where the layers live, in order


@dataclass(frozen=True)
class _Source:
    """A validated checkpoint: where it is, what it holds, and its dcp/ entries."""

    path: Path
    manifest: Manifest
    family: FamilySpec
    config: Any  # unpadded
    padded_vocab_size: int
    vocab_size: int
    saved: dict[str, Any]  # dcp/ metadata: key → storage metadata
    storage: dict[Any, Any] = dataclasses.field(default_factory=dict)  # dcp/ metadata: chunk → file byte range


def _error(path: Path, message: str, hint: str | None = None) -> ArtifactError:
    return ArtifactError(f"{path}: {message}",
                         hint=hint or f"load a checkpoint made by: {MODEL_CHECKPOINT.produced_by}")


@contextlib.contextmanager
def _quiet_dcp() -> Iterator[None]:
    # DCP warns that it runs without a process group; a weights-only load is one process by design.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


VERIFY_MODES = ("none", "size", "sha256")


def _check_sha256(path: Path, manifest: Manifest, names: list[str]) -> None:
    """The files ``names`` (relative to ``path``) must match the sha256 the manifest records."""
    listed = {name: manifest.files[name] for name in names if name in manifest.files}
    problems = check_files(path, listed, sha256=True)
    if problems:
        raise _error(path, f"file {problems[0]}",
                     hint="load an intact checkpoint (a training run directory's older checkpoints/step-*), "
                          "or pass verify='size' to skip the content check")


def _files_read(manifest: Manifest, storage: dict) -> list[str]:
    """What loading the weights reads: the dcp/ files holding ``model.*`` entries, and tokenizer/."""
    shards = {f"{DCP_DIR}/{info.relative_path}" for index, info in storage.items()
              if index.fqn.startswith(MODEL_PREFIX)}
    return sorted(shards | {name for name in manifest.files if name.startswith("tokenizer/")})


def _open(checkpoint: str | os.PathLike, verify: str) -> _Source:
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify={verify!r}: expected one of {', '.join(VERIFY_MODES)}")
    path, manifest = read_checkpoint(checkpoint, verify="none" if verify == "none" else "size")
    try:
        name = checkpoint_family(manifest)
    except ArtifactError as exc:
        raise _error(path, exc.message) from None
    spec = FAMILIES.get(name)
    if spec is None:
        raise _error(path, f"summary.family {name!r} is not a model family this bignlp-models knows "
                           f"({', '.join(sorted(FAMILIES))})",
                     hint=f"upgrade bignlp-models, or load a checkpoint made by: {MODEL_CHECKPOINT.produced_by}")
    arch = manifest.summary.get("model")
    if not isinstance(arch, dict):
        raise _error(path, "manifest has no summary.model (the architecture)")
    try:
        padded = spec.config_class(**arch)
    except TypeError as exc:
        raise _error(path, f"summary.model does not describe a {name} model ({exc})") from None
    padded_vocab = int(getattr(padded, "vocab_size", 0))
    vocab = checkpoint_vocab_size(manifest) or padded_vocab
    if vocab > padded_vocab:
        raise _error(path, f"vocabulary of {vocab} tokens is larger than the model's {padded_vocab} embedding rows")
    config = dataclasses.replace(padded, vocab_size=vocab) if vocab != padded_vocab else padded
    if verify == "sha256":
        _check_sha256(path, manifest, [f"{DCP_DIR}/.metadata"])  # before unpickling it
    try:
        metadata = dcp.FileSystemReader(str(path / DCP_DIR)).read_metadata()
    except Exception as exc:  # a torn or foreign dcp/.metadata: pickle and OS errors alike
        raise _error(path, f"cannot read {DCP_DIR}/.metadata ({type(exc).__name__}: {exc})") from None
    if verify == "sha256":
        _check_sha256(path, manifest, _files_read(manifest, metadata.storage_data or {}))
    return _Source(path, manifest, spec, config, padded_vocab, vocab, metadata.state_dict_metadata,
                   dict(metadata.storage_data or {}))


def _plan_reads(src: _Source, tensors: dict[str, torch.Tensor]) -> tuple[dict, list, list]:
    """Map each wanted tensor (whole-model name → its storage) to its DCP entry, checking shapes.

    Returns the DCP template (``{"model": {name: tensor}}``, loaded in place), the
    (destination, loaded tensor, real-token rows) to copy after the load (padded rows dropped),
    and the (destination, source) tied copies to fill after that. An entry missing or of
    another shape is an ArtifactError.
    """
    template: dict[str, torch.Tensor] = {}
    unpad: list[tuple[torch.Tensor, torch.Tensor, int]] = []
    tied: list[tuple[torch.Tensor, torch.Tensor]] = []
    missing, wrong = [], []
    copies = dict(src.family.tied_parameters)  # a part's copy → the weight it copies
    originals = {weight: copy for copy, weight in copies.items()}
    for name, tensor in tensors.items():
        key = name
        if key in copies and copies[key] in tensors:
            tied.append((tensor, tensors[copies[key]]))  # filled from the weight once that is loaded
            continue
        if MODEL_PREFIX + key not in src.saved and key in originals and MODEL_PREFIX + originals[key] in src.saved:
            key = originals[key]  # the weight saved only under its copy's name
        meta = src.saved.get(MODEL_PREFIX + key)
        if not isinstance(meta, TensorStorageMetadata):
            missing.append(MODEL_PREFIX + key)
            continue
        have, want = tuple(meta.size), tuple(tensor.shape)
        if have == want:
            template[key] = tensor
        elif (len(have) == len(want) >= 1 and have[1:] == want[1:] and have[0] == src.padded_vocab_size
              and want[0] == src.vocab_size):
            # padded vocabulary rows: read all, keep the real-token ones
            template[key] = torch.empty(have, dtype=tensor.dtype, device=tensor.device)
            unpad.append((tensor, template[key], src.vocab_size))
        else:
            wrong.append(f"{MODEL_PREFIX}{key} is {list(have)}, summary.model makes it {list(want)}")
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise _error(src.path, f"{DCP_DIR}/ has no model tensor {', '.join(missing[:3])}{more} "
                               f"({len(missing)} of {len(tensors)} missing)")
    if wrong:
        more = f"; {len(wrong) - 2} more" if len(wrong) > 2 else ""
        raise _error(src.path, f"{DCP_DIR}/ does not fit summary.model: {'; '.join(wrong[:2])}{more}")
    return {"model": template}, unpad, tied


@torch.no_grad()
def _read(src: _Source, tensors: dict[str, torch.Tensor]) -> None:
    """Fill ``tensors`` (whole-model names, allocated where they live) from the checkpoint's dcp/.

    Plain items are read straight into their destinations (``dcp_direct``, padded vocabulary rows
    never read); whatever that cannot read goes through ``dcp.load``.
    """
    template, unpad, tied = _plan_reads(src, tensors)
    unpadded = {id(loaded): dest for dest, loaded, _ in unpad}
    wanted = {MODEL_PREFIX + key: unpadded.get(id(t), t) for key, t in template["model"].items()}
    try:
        left = set(read_direct(src.path / DCP_DIR, src.saved, src.storage, wanted))
    except OSError as exc:
        raise _error(src.path, f"cannot read the model from {DCP_DIR}/ ({type(exc).__name__}: {exc})") from None
    rest = {key: t for key, t in template["model"].items() if MODEL_PREFIX + key in left}
    if rest:
        try:
            with _quiet_dcp():
                dcp.load({"model": rest}, checkpoint_id=src.path / DCP_DIR, no_dist=True)
        except Exception as exc:  # DCP raises several kinds; all mean "these files do not hold it"
            first = (str(exc).strip().splitlines() or [""])[0]
            raise _error(src.path, f"cannot read the model from {DCP_DIR}/ ({type(exc).__name__}: {first})") from None
    loaded_rest = {id(t) for t in rest.values()}
    for dest, loaded, rows in unpad:
        if id(loaded) in loaded_rest:
            dest.copy_(loaded[:rows])
    for dest, source in tied:  # after the row slices: a copy of a sliced weight copies its real rows
        dest.copy_(source)


def load_model(
    checkpoint: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    devices: str | Sequence[str | torch.device] | None = None,
    verify: str = "sha256",
) -> LoadedModel:
    """Load a checkpoint's model for inference, in eval mode with frozen parameters.

    ``checkpoint``: a checkpoint directory, or a training run directory (its latest checkpoint).
    ``device``: where the whole model lives. ``devices``: several local devices instead, for a
    model larger than one (``["cuda:0", "cuda:1"]``, or ``"auto"`` for every visible GPU): its
    layers are split evenly over them in order (see ``placement``); give tokens on any device,
    the logits come back on the same. ``dtype``: of the parameters (the checkpoint's are cast).
    ``verify``: ``"sha256"`` (the default) checks that every file it reads (``dcp/.metadata`` first,
    the ``dcp/`` files holding the weights, ``tokenizer/``) matches the sha256 in the manifest, and
    that every other listed file has its size; ``"size"`` checks sizes only (storage you trust, or
    no time to read the optimizer's bytes twice); ``"none"`` reads the manifest alone.

    Raises ``ArtifactError`` (one line, naming what is missing or unknown and how to produce a
    checkpoint) for a directory that is not a complete checkpoint, an unknown family, or a
    ``dcp/`` without the model's tensors or with other shapes.
    """
    placed_on = resolve_devices([device] if devices is None else devices)
    src = _open(checkpoint, verify)
    model = src.family.build_meta(src.config)
    place_model(model, src.family, placed_on, dtype=dtype)
    _read(src, model.state_dict(keep_vars=True))
    model.eval().requires_grad_(False)
    return LoadedModel(model=model, config=src.config, family=src.family, tokenizer=_tokenizer(src),
                       vocab_size=src.vocab_size, manifest=src.manifest, path=src.path, devices=placed_on)


def load_state_dict_only(
    checkpoint: str | os.PathLike,
    *,
    dtype: torch.dtype | None = None,
    unpad: bool = True,
    verify: str = "sha256",
) -> tuple[dict[str, torch.Tensor], Manifest]:
    """The model's weights as CPU tensors under the whole model's names, and the manifest (for converters).

    ``dtype``: cast to it (default: as saved). ``unpad``: drop the padded vocabulary rows (as
    ``load_model`` does); ``False`` keeps the embedding as training stored it. ``verify``: as ``load_model``'s.
    """
    src = _open(checkpoint, verify)
    config = src.config if unpad else dataclasses.replace(src.config, vocab_size=src.padded_vocab_size)
    if not unpad:
        src = dataclasses.replace(src, config=config, vocab_size=src.padded_vocab_size)
    meta = src.family.build_meta(config).state_dict()
    tensors = {}
    for name, shape_of in meta.items():
        saved = src.saved.get(MODEL_PREFIX + name)
        saved_dtype = saved.properties.dtype if isinstance(saved, TensorStorageMetadata) else shape_of.dtype
        tensors[name] = torch.empty(shape_of.shape, dtype=dtype or saved_dtype)
    _read(src, tensors)
    return tensors, src.manifest


def _tokenizer(src: _Source) -> Tokenizer:
    summary = src.manifest.summary.get("tokenizer")
    if not isinstance(summary, dict):
        raise _error(src.path, "manifest has no summary.tokenizer (the tokenizer the model was trained with)")
    return tokenizer_from_summary(summary, src.path)


class CheckpointReader:
    """A checkpoint's weights, a few tensors at a time: converters stream a layer at a time with it.

    ``open_checkpoint(path)`` validates the checkpoint (and by default checks the sha256 of every
    file holding weights) once; ``read(names)`` then reads just those tensors from ``dcp/``
    (``torch.distributed.checkpoint`` reads only the byte ranges they occupy), so peak memory is
    the largest group read, not the model.
    """

    def __init__(self, src: _Source) -> None:
        self._src = src
        self.path, self.manifest, self.family = src.path, src.manifest, src.family
        self.config = src.config  # vocab_size unpadded
        self.vocab_size, self.padded_vocab_size = src.vocab_size, src.padded_vocab_size
        self._meta = src.family.build_meta(src.config).state_dict()

    @property
    def shapes(self) -> dict[str, tuple[torch.Size, torch.dtype]]:
        """Every weight the model has (whole-model names, tied copies once), its unpadded shape and saved dtype."""
        out = {}
        for name, meta in self._meta.items():
            saved = self._src.saved.get(MODEL_PREFIX + name)
            dtype = saved.properties.dtype if isinstance(saved, TensorStorageMetadata) else meta.dtype
            out[name] = (meta.shape, dtype)
        return out

    def read(self, names: Sequence[str], *, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """The tensors ``names`` as CPU tensors (padded vocabulary rows dropped), cast to ``dtype`` if given."""
        shapes = self.shapes
        unknown = [n for n in names if n not in shapes]
        if unknown:
            raise KeyError(f"{self.family.name} model has no weight {unknown[0]!r}")
        tensors = {n: torch.empty(shapes[n][0], dtype=dtype or shapes[n][1]) for n in names}
        _read(self._src, tensors)
        return tensors

    def tokenizer(self) -> Tokenizer:
        """The tokenizer the model was trained with (from the checkpoint's ``tokenizer/``)."""
        return _tokenizer(self._src)


def open_checkpoint(checkpoint: str | os.PathLike, *, verify: str = "sha256") -> CheckpointReader:
    """A ``CheckpointReader`` over a checkpoint (or a run directory's latest); ``verify`` as ``load_model``'s."""
    return CheckpointReader(_open(checkpoint, verify))


def save_model_checkpoint(
    output: str | os.PathLike,
    *,
    family: FamilySpec,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    tokenizer: Tokenizer,
    producer: Any,
    inputs: Sequence[dict[str, Any]] = (),
    summary: dict[str, Any] | None = None,
    run_config: dict[str, Any] | None = None,
) -> Path:
    """Write a weights-only ``model-checkpoint`` (what a converter imports into) at ``output``, atomically.

    ``config``: the family's config with the *padded* vocabulary the tensors have (their embedding
    rows); ``state_dict``: every weight under the whole model's names; ``tokenizer``: its files are
    copied to ``tokenizer/``. ``run_config``: the model keys written to ``config.yaml`` (the launcher's
    names, so a training config can be made from it). The manifest is written last; until then the
    directory has a temporary name, so a crash leaves nothing that looks complete.
    """
    import yaml

    from bignlp_contracts import atomic_directory, write_manifest

    output = Path(output)
    expected = family.build_meta(config).state_dict()
    missing = sorted(set(expected) - set(state_dict))
    extra = sorted(set(state_dict) - set(expected))
    if missing or extra:
        raise ValueError(f"state_dict does not make a {family.name} model: missing {missing[:3]}, unexpected "
                         f"{extra[:3]}")
    for name, meta in expected.items():
        if tuple(state_dict[name].shape) != tuple(meta.shape):
            raise ValueError(f"{name} is {list(state_dict[name].shape)}, the config makes it {list(meta.shape)}")
    with atomic_directory(output) as tmp:
        with _quiet_dcp():
            dcp.save({"model": state_dict}, checkpoint_id=tmp / DCP_DIR, no_dist=True)
        (tmp / "tokenizer").mkdir()
        files = {}
        for key, (name, source) in tokenizer.files().items():
            shutil.copyfile(source, tmp / "tokenizer" / name)
            files[key] = f"tokenizer/{name}"
        (tmp / "config.yaml").write_text(yaml.safe_dump({"model": run_config or {}}, sort_keys=False))
        listed = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        write_manifest(tmp, MODEL_CHECKPOINT, producer=producer, files=listed, inputs=list(inputs),
                       summary={**(summary or {}), "family": family.name, "vocab_size": tokenizer.vocab_size,
                                "padded_vocab_size": int(config.vocab_size),
                                "num_parameters": int(family.count_parameters(config)),
                                "model": dataclasses.asdict(config), "tokenizer": tokenizer.summary(files)})
    return output
