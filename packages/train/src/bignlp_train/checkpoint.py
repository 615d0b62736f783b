"""Checkpoints in the ``model-checkpoint`` layout (see bignlp_contracts.layout); the legacy
``gpt-checkpoint`` of bignlp-train 0.5.0 resumes too.

``RUN_DIR/checkpoints/step-00000100/`` holds ``dcp/`` (torch.distributed.checkpoint:
model, optimizer, data position, scheduler step, RNG), ``config.yaml``,
``tokenizer/`` and ``manifest.json``; ``checkpoints/latest`` names the newest.
Each directory is built under a temporary name and renamed into place, so a
crash never leaves a half-written checkpoint under a real name.

DCP writes one shard per rank and reshards on load, so a checkpoint saved with one
layout (DP=2, say) resumes with another (TP=2, or one process). Every rank calls
``save_checkpoint`` (the DCP write is collective); rank 0 alone picks the temporary
directory, writes config, tokenizer and manifest, renames it into place and moves
``latest``, and the others wait for it at a barrier.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pickle
import shutil
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor, distribute_tensor

from bignlp_contracts import (
    MANIFEST_NAME,
    MODEL_CHECKPOINT,
    ArtifactError,
    Producer,
    atomic_directory,
    checkpoint_dir_name,
    checkpoint_problem,
    checkpoint_vocab_size,
    latest_checkpoint,
    read_checkpoint,
    save_config,
    set_latest_checkpoint,
    to_dict,
    write_manifest,
)
from bignlp_contracts.layout import CHECKPOINTS_DIR, TOKENIZER_DIR
from bignlp_contracts.manifest import git_commit
from bignlp_models import FamilySpec

from . import __version__
from .config import CheckpointCallbackParams, TrainConfig
from .data import TokenizerInfo
from .optim import Optimizers
from .recompute import canonical_name
from .runtime import get_rng_state, set_rng_state

DCP_DIR = "dcp"


@dataclass(frozen=True)
class TrainState:
    """Where training stands: enough, with model and optimizer, to continue exactly."""

    step: int = 0
    consumed_samples: int = 0


@contextlib.contextmanager
def _quiet_dcp() -> Iterator[None]:
    # DCP warns that it runs without a process group; with one process that is the intent.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _rng_key(rank: int) -> str:
    return f"rank{rank}"  # RNG streams are per process: one entry per rank


# Optimizer state keyed by parameter name ("state.layers.3.mlp.linear_fc1.weight.exp_avg", one
# "param_groups.<name>.lr" per parameter), so any rank, under any layout, finds its parameters' entries.
_OPTIONS = StateDictOptions(flatten_optimizer_state_dict=True)


def _renamed(sd: dict, old: str, new: str) -> dict:
    """``sd`` with parameter name ``old`` replaced by ``new`` in model and flat optimizer keys."""
    def swap(key: str) -> str:
        if key == old:
            return new
        for prefix in ("state.", "param_groups."):
            if key.startswith(f"{prefix}{old}."):
                return prefix + new + key[len(prefix) + len(old):]
        return key

    return {swap(k): v for k, v in sd.items()}


def _tied_renames(part: torch.nn.Module, spec: FamilySpec) -> list[tuple[str, str]]:
    # A pipeline's last stage: its copy of a tied weight is stored under the weight's own name
    # (equal values, deduplicated by DCP), so the checkpoint looks like the unsplit model's.
    names = {canonical_name(name) for name, _ in part.named_parameters()}
    return [(copy, weight) for copy, weight in spec.tied_parameters.items() if copy in names]


def _part_states(parts: list[torch.nn.Module], optimizers: Optimizers, spec: FamilySpec) -> list[tuple[dict, dict]]:
    """Each part's (model, flat optimizer) state dicts under the whole model's names (sharded DTensors under
    FSDP/TP); the parts hold disjoint names, so their union is the unsplit model's state."""
    states = []
    for part, optimizer in zip(parts, optimizers.optimizers):
        model_sd, optim_sd = get_state_dict(part, optimizer, options=_OPTIONS)
        for copy, weight in _tied_renames(part, spec):
            model_sd, optim_sd = _renamed(model_sd, copy, weight), _renamed(optim_sd, copy, weight)
        states.append((model_sd, optim_sd))
    return states


def _state(states: list[tuple[dict, dict]], state: TrainState, rng: Any, rng_key: str) -> dict:
    return {
        "model": {k: v for model_sd, _ in states for k, v in model_sd.items()},
        "optim": {k: v for _, optim_sd in states for k, v in optim_sd.items()},
        "train_state": {"step": state.step, "consumed_samples": state.consumed_samples,
                        "scheduler": {"last_step": state.step}},  # the LR is a pure function of the step
        "rng": {rng_key: rng},
    }


def _from_rank0(value: Any) -> Any:
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _barrier() -> None:
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def save_checkpoint(
    run_dir: Path,
    *,
    cfg: TrainConfig,
    parts: list[torch.nn.Module],
    optimizers: Optimizers,
    state: TrainState,
    spec: FamilySpec,
    arch: Any,
    vocab_size: int,
    tokenizer: TokenizerInfo,
    inputs: list[dict[str, Any]],
    metrics: dict[str, float | None],
    num_parameters: int,
) -> Path:
    """Write ``checkpoints/step-NNNNNNNN`` (manifest last), point ``latest`` at it, prune old ones."""
    final = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_dir_name(state.step)
    rank = _rank()
    with contextlib.ExitStack() as stack:
        tmp = _from_rank0(stack.enter_context(atomic_directory(final)) if rank == 0 else None)
        sd = _state(_part_states(parts, optimizers, spec), state, pickle.dumps(get_rng_state()), _rng_key(rank))
        with _quiet_dcp():
            dcp.save(sd, checkpoint_id=tmp / DCP_DIR)
        _barrier()  # every shard is on disk before rank 0 lists files and renames
        if rank != 0:
            stack.pop_all()
            _barrier()
            return final
        save_config(cfg, tmp / "config.yaml")
        tokenizer_summary = _copy_tokenizer(tokenizer, tmp)
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        summary = {
            "step": state.step,
            "consumed_samples": state.consumed_samples,
            **metrics,
            "family": spec.name,
            "vocab_size": vocab_size,  # the tokenizer's (unpadded)
            "padded_vocab_size": arch.vocab_size,
            "num_parameters": num_parameters,
            "model": dataclasses.asdict(arch),
            "tokenizer": tokenizer_summary,
        }
        write_manifest(tmp, MODEL_CHECKPOINT, producer=Producer("bignlp-train", __version__, git_commit()),
                       files=files, config=to_dict(cfg), inputs=inputs, summary=summary)
    set_latest_checkpoint(run_dir, final)
    prune_checkpoints(run_dir, cfg.exp_manager.checkpoint_callback_params)
    _barrier()  # nobody reads ``latest`` or writes the next checkpoint before this one is in place
    return final


def _copy_tokenizer(tokenizer: TokenizerInfo, dest: Path) -> dict[str, Any]:
    """Copy the dataset's tokenizer files into ``dest/tokenizer``; return the summary with paths there."""
    summary = dict(tokenizer.summary)
    src_dir = tokenizer.artifact_dir
    out = dest / TOKENIZER_DIR
    out.mkdir(parents=True, exist_ok=True)
    if src_dir is not None and (src_dir / TOKENIZER_DIR).is_dir():
        shutil.copytree(src_dir / TOKENIZER_DIR, out, dirs_exist_ok=True)
    for key, value in tokenizer.summary.items():
        if src_dir is None or not isinstance(value, str) or not key.endswith("_file"):
            continue
        src = src_dir / value
        if src.is_file():
            target = out / Path(value).name
            if not target.exists():
                shutil.copy2(src, target)
            summary[key] = f"{TOKENIZER_DIR}/{target.name}"
    return summary


@dataclass
class _Resized:
    """A state-dict entry whose rows are the padded vocabulary, stored with another padding."""

    container: dict
    key: str
    model_value: torch.Tensor  # the entry as this layout holds it (DTensor under FSDP)
    name: str  # its DCP key


def _vocab_rows_mismatch(path: Path, sd: dict, saved: dict, prefix: str = "") -> list[_Resized]:
    """Swap the entries whose saved row count is the checkpoint's padded vocabulary and differs from
    this model's (Megatron pads to ``make_vocab_size_divisible_by × TP``, so a TP change changes it)
    for plain tensors of the saved shape, which DCP can then load. Returns what was swapped."""
    found: list[_Resized] = []
    padded = None
    for key, value in sd.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            found += _vocab_rows_mismatch(path, value, saved, f"{name}.")
            continue
        meta = saved.get(name)
        if not (isinstance(value, torch.Tensor) and isinstance(meta, TensorStorageMetadata) and value.dim() >= 1
                and len(meta.size) == value.dim() and tuple(meta.size)[1:] == tuple(value.shape)[1:]
                and meta.size[0] != value.shape[0]):
            continue
        if padded is None:
            padded = read_checkpoint(path, verify="none")[1].summary.get("padded_vocab_size")
        if meta.size[0] != padded:
            continue  # not a vocabulary-sized entry: DCP reports the mismatch
        local = value.to_local() if isinstance(value, DTensor) else value
        sd[key] = torch.empty(tuple(meta.size), dtype=meta.properties.dtype, device=local.device)
        found.append(_Resized(sd, key, value, name))
    return found


@torch.no_grad()
def _repad(path: Path, resized: list[_Resized], log: Callable[[str], None] | None) -> None:
    """Keep the loaded real-token rows, and this layout's own values (fresh init, zero moments) for
    its padding rows: the padding exists for the layout's divisibility, it holds no token."""
    if not resized:
        return
    real = int(checkpoint_vocab_size(read_checkpoint(path, verify="none")[1]))
    saved_rows = resized[0].container[resized[0].key].shape[0]
    for item in resized:
        loaded, target = item.container[item.key], item.model_value
        full = target.full_tensor() if isinstance(target, DTensor) else target.detach().clone()
        full[:real] = loaded[:real].to(device=full.device, dtype=full.dtype)
        if isinstance(target, DTensor):
            full = distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None)
        item.container[item.key] = full
    if log is not None:
        log(f"vocabulary re-padded: checkpoint {path.name} pads {real} tokens to {saved_rows} rows, this layout "
            f"to {resized[0].model_value.shape[0]}; loaded the {real} real-token rows of {len(resized)} tensors "
            f"({', '.join(sorted({r.name.rsplit('.', 1)[-1] for r in resized}))}), padding rows start fresh")


def load_checkpoint(path: Path, *, parts: list[torch.nn.Module], optimizers: Optimizers, spec: FamilySpec,
                    log: Callable[[str], None] | None = None) -> TrainState:
    """Restore model, optimizer and RNG in place from a checkpoint directory; return the train state.

    A checkpoint whose vocabulary was padded for another tensor-parallel size loads too: its
    real-token rows (embedding, AdamW moments) are kept and the padding re-made (one ``log`` line).
    """
    try:
        saved = dcp.FileSystemReader(str(Path(path) / DCP_DIR)).read_metadata().state_dict_metadata
        # A rank the saving run did not have (a larger world) continues rank 0's RNG stream.
        rng_key = _rng_key(_rank()) if f"rng.{_rng_key(_rank())}" in saved else _rng_key(0)
        states = _part_states(parts, optimizers, spec)
        template = _state(states, TrainState(), None, rng_key)
        resized = _vocab_rows_mismatch(Path(path), template, saved)
        with _quiet_dcp():
            dcp.load(template, checkpoint_id=Path(path) / DCP_DIR)
    except Exception as exc:  # DCP raises several kinds; all mean "this checkpoint does not fit"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ArtifactError(f"{path}: cannot load its {DCP_DIR}/ ({type(exc).__name__}: {first})",
                            hint="resume with the config the checkpoint was written with") from None
    _repad(Path(path), resized, log)
    for part, optimizer, (model_keys, optim_keys) in zip(parts, optimizers.optimizers, states):
        model_sd = {k: template["model"][k] for k in model_keys}
        optim_sd = {k: template["optim"][k] for k in optim_keys}
        for copy, weight in _tied_renames(part, spec):
            model_sd, optim_sd = _renamed(model_sd, weight, copy), _renamed(optim_sd, weight, copy)
        set_state_dict(part, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd, options=_OPTIONS)
    set_rng_state(pickle.loads(template["rng"][rng_key]))
    train = template["train_state"]
    return TrainState(step=int(train["step"]), consumed_samples=int(train["consumed_samples"]))


def prune_checkpoints(run_dir: Path, params: CheckpointCallbackParams) -> list[Path]:
    """Keep the ``save_top_k`` best by ``monitor`` plus the latest; delete the rest. Returns what went.

    Scores are read back from the manifests, so pruning survives restarts. The
    checkpoint ``latest`` points at is never deleted, nor, when that one fails the cheap
    checks (``checkpoint_problem``: manifest, files, sizes), the newest one that passes them:
    pruning never deletes the only intact checkpoint.
    """
    if params.save_top_k < 0:
        return []
    root = Path(run_dir) / CHECKPOINTS_DIR
    latest = latest_checkpoint(run_dir)
    scored: list[tuple[float, Path]] = []
    others: list[Path] = []
    for ckpt in sorted(root.glob("step-*")):
        if not (ckpt / MANIFEST_NAME).is_file() or ckpt == latest:
            continue
        score = _score(ckpt, params.monitor)
        if score is None:
            others.append(ckpt)
        else:
            scored.append((float(score), ckpt))
    scored.sort(key=lambda item: item[0], reverse=params.mode == "max")
    latest_score = None if latest is None else _score(latest, params.monitor)
    # The latest counts towards top-k when it is itself among the best.
    slots = params.save_top_k
    if latest_score is not None and slots > 0:
        better = [s for s, _ in scored if (s < latest_score if params.mode == "min" else s > latest_score)]
        if len(better) < slots:
            slots -= 1
    doomed = [p for _, p in scored[slots:]] + others
    if latest is None or checkpoint_problem(latest) is not None:
        # ``latest`` is damaged: the newest intact one stays, whatever its score (the resume's fall-back)
        intact = next((p for p in sorted(doomed, reverse=True) if checkpoint_problem(p) is None), None)
        doomed = [p for p in doomed if p != intact]
    for ckpt in doomed:
        shutil.rmtree(ckpt, ignore_errors=True)
    return doomed


def _score(ckpt: Path, monitor: str) -> float | None:
    """The checkpoint's ``monitor`` value from its manifest; None without one (or with an unreadable manifest)."""
    try:
        return read_checkpoint(ckpt, verify="none")[1].summary.get(monitor)
    except ArtifactError:
        return None
