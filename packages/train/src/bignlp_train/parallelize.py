"""Parallelism applied from outside to a plain model of bignlp_models (the torchtitan way).

One build path for every family and layout (``build_model_parts``), on a model built on the
meta device so that no rank ever allocates the full weights of a large model:

1. split into pipeline parts (the family's ``split_for_pipeline``; one part without PP): each
   part is the model with some layers absent, under the whole model's parameter names;
2. ``parallelize(part)`` in a fixed order: tensor parallelism (+ sequence parallelism) over the
   mesh's "tp" dim from the family's plan (``bignlp_models.tensor_parallel.apply_tp``) → activation
   recomputation (wrapper modules) → FSDP2 over the "dp" dim (the seed's ``distributed_fused_adam``, ZeRO-style);
3. materialise on the device (``to_empty``) and ``init_like_one_device``: every tensor is drawn
   at its full shape in the single-device order and each rank keeps what it holds, so the
   initial weights equal one process's exactly.

Gradient clipping over sharded gradients needs the global norm: ``clip_grad_norm_``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor
from torch.distributed.tensor.parallel import loss_parallel

from bignlp_models import FamilySpec

# Tensor parallelism is the models library's (one implementation, shared with inference); its old names here too.
from bignlp_models.tensor_parallel import VocabShardedWeight as _VocabShardedWeight  # noqa: F401
from bignlp_models.tensor_parallel import apply_tp
from bignlp_models.tensor_parallel import tp_styles as _tp_styles  # noqa: F401

from .pipeline import rank_stages
from .recompute import NO_RECOMPUTE, Recompute, apply_recompute, canonical_name, layer_stack


def loss_context(mesh: DeviceMesh | None) -> Callable[[], contextlib.AbstractContextManager]:
    """What to run a loss (forward and backward) under: torch's ``loss_parallel`` when tensor
    parallelism splits the logits along the vocabulary, so no rank gathers the full-vocabulary
    logits (at 175B, GBS 2048, s 2048, V 51200 the largest activation of a step); else nothing."""
    if mesh is not None and "tp" in (mesh.mesh_dim_names or ()) and mesh["tp"].size() > 1:
        return loss_parallel
    return contextlib.nullcontext


def apply_fsdp(part: nn.Module, spec: FamilySpec, dp_mesh: DeviceMesh, *,
               param_dtype: torch.dtype | None = None) -> None:
    """FSDP2: one unit per layer (gathered just in time, gradients reduce-scattered while backward
    goes on), then the part's root for embeddings and final norms.

    ``param_dtype`` (bf16 for ``trainer.precision=bf16``): parameters are gathered in it for
    forward and backward (half the all-gather traffic and compute memory), gradients are
    reduce-scattered in fp32, and the sharded master weights and optimizer state stay fp32.
    This is how bf16 runs on every layout, a one-rank "dp" dim included: the whole forward is
    bf16 (residual stream, LayerNorms, logits; the loss upcasts), as in Megatron's bf16 models,
    and no autocast is needed. Autocast would keep fp32 weights' residual stream in fp32 and run
    LayerNorm on fp32 copies: twice the activation memory (Korthikanti et al. count 16-bit).
    """
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for name in spec.layer_stacks:
        for layer in layer_stack(part, name).values():
            fully_shard(layer, mesh=dp_mesh, mp_policy=mp)
    fully_shard(part, mesh=dp_mesh, mp_policy=mp)


def parallelize(part: nn.Module, spec: FamilySpec, mesh: DeviceMesh | None, *, sequence_parallel: bool = False,
                recompute: Recompute = NO_RECOMPUTE, param_dtype: torch.dtype | None = None) -> None:
    """TP → recomputation → FSDP on one meta-device part, in that order, in place.

    ``mesh`` has dims ("pp", "dp", "tp"); None: one process (recomputation only).
    ``param_dtype``: FSDP's compute dtype (see ``apply_fsdp``), also over a one-rank "dp" dim;
    None (fp32) applies FSDP only when DP > 1.
    """
    if mesh is not None and mesh["tp"].size() > 1:
        apply_tp(part, spec, mesh["tp"], sequence_parallel)  # on meta: other ranks' layers cost nothing
    apply_recompute(part, spec, recompute)
    if mesh is not None and (mesh["dp"].size() > 1 or param_dtype is not None):
        apply_fsdp(part, spec, mesh["dp"], param_dtype=param_dtype)


def build_model_parts(spec: FamilySpec, cfg, device: torch.device, mesh: DeviceMesh | None = None, *,
                      virtual: int = 1, sequence_parallel: bool = False, recompute: Recompute = NO_RECOMPUTE,
                      param_dtype: torch.dtype | None = None, split_rank: int | None = None) -> list[nn.Module]:
    """This rank's parts of the family's model for ``cfg`` on ``device``, initialised as on one device.

    Without pipeline parallelism the one part is the whole model; with it, the parts of this
    pipeline rank's stages in order (one, or ``virtual`` for the interleaved schedule).
    """
    model = spec.build_meta(cfg)
    pp = mesh["pp"].size() if mesh is not None and "pp" in (mesh.mesh_dim_names or ()) else 1
    parts = [model]
    if pp > 1:
        stages = rank_stages(mesh["pp"].get_local_rank(), pp, virtual)
        parts = spec.split_for_pipeline(model, spec.pipeline_stages(cfg, pp, virtual, split_rank), pp * virtual,
                                        stages)
    for part in parts:
        parallelize(part, spec, mesh, sequence_parallel=sequence_parallel, recompute=recompute,
                    param_dtype=param_dtype)
        part.to_empty(device=device)
    init_like_one_device(spec, cfg, parts, device)
    return parts


def tied_stages(spec: FamilySpec, cfg, pp: int, virtual: int = 1, split_rank: int | None = None) -> set[int]:
    """The global pipeline stages whose part holds a tied weight or a copy of it (split on meta: no memory)."""
    names = set(spec.tied_parameters) | set(spec.tied_parameters.values())
    stages = spec.pipeline_stages(cfg, pp, virtual, split_rank)
    parts = spec.split_for_pipeline(spec.build_meta(cfg), stages, pp * virtual, range(pp * virtual))
    return {s for s, part in enumerate(parts) if names & {n for n, _ in part.named_parameters()}}


@torch.no_grad()
def init_like_one_device(spec: FamilySpec, cfg, parts: list[nn.Module], device: torch.device) -> None:
    """The family's ``init_weights`` over the whole model: every tensor is drawn at its full shape in
    the single-device order, and each part keeps what it holds of it (its TP/FSDP shard; a tied
    copy takes the draw of the weight it copies). Parameters are matched by their checkpoint names."""
    whole = spec.build_meta(cfg)
    names = {id(p): name for name, p in whole.named_parameters()}
    targets: dict[str, list[torch.Tensor]] = {}
    for part in parts:
        for name, param in part.named_parameters():
            name = canonical_name(name)
            targets.setdefault(spec.tied_parameters.get(name, name), []).append(param)

    def fill(param: torch.Tensor, init_) -> None:
        full = torch.empty(param.shape, dtype=param.dtype, device=device)
        init_(full)  # drawn even when not kept: the next tensor's draw starts where one device's would
        for target in targets.get(names[id(param)], ()):
            if isinstance(target, DTensor):
                target.copy_(distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None))
            else:
                target.copy_(full)

    whole.init_weights(fill=fill)


def tied_copies(parts: Iterable[nn.Module], spec: FamilySpec) -> list[nn.Parameter]:
    """The parts' copies of tied weights (a pipeline's last-stage output layer)."""
    return [p for part in parts for name, p in part.named_parameters() if canonical_name(name) in spec.tied_parameters]


@torch.no_grad()
def clip_grad_norm_(parameters: Iterable[nn.Parameter], max_norm: float, *,
                    pipeline_group: dist.ProcessGroup | None = None,
                    uncounted: Iterable[nn.Parameter] = ()) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most ``max_norm``; return the norm before.

    Sharded (DTensor) gradients contribute their full norm, replicated ones count once.
    Gradients are grouped by device mesh, since one model can mix plain tensors
    (replicated embeddings), tensor-parallel and FSDP-sharded parameters. Under pipeline
    parallelism each stage holds other parameters: the squared norms are summed over
    ``pipeline_group``; ``uncounted`` (the last stage's copy of the tied embedding, whose
    gradient equals the first stage's) is clipped but not counted twice.
    """
    skip = {id(p) for p in uncounted}
    parameters = list(parameters)
    groups: dict[object, list[nn.Parameter]] = {}
    for p in parameters:
        if p.grad is not None:
            groups.setdefault(p.grad.device_mesh if isinstance(p.grad, DTensor) else None, []).append(p)
    norms = []
    for params in groups.values():
        counted = [p.grad for p in params if id(p) not in skip]
        if not counted:
            continue
        norm = torch.nn.utils.get_total_norm(counted)
        norms.append(norm.full_tensor() if isinstance(norm, DTensor) else norm)
    # no gradient here (a pipeline stage without trainable parameters): zero, on the parameters' device for NCCL
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(
        (), device=parameters[0].device if parameters else None)
    if pipeline_group is not None:
        squared = total.pow(2)
        dist.all_reduce(squared, group=pipeline_group)
        total = squared.sqrt()
    if math.isfinite(max_norm):
        for params in groups.values():
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
