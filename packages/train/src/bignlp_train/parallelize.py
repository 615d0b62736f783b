"""Parallelism applied from outside to the plain GPT of model.py (the torchtitan way).

``build_parallel_model`` runs the steps in this fixed order, on a model built on the
meta device so that no rank ever allocates the full weights of a large model:

1. ``apply_tp``   — tensor parallelism (+ sequence parallelism) over the mesh's "tp" dim;
2. ``apply_ac``   — activation recomputation (full: whole blocks, uniform groups or the first
   blocks of each stage; selective: the attention core only), also with a single process;
3. ``apply_fsdp`` — FSDP2 over the "dp" dim: parameters, gradients and optimizer state
   sharded across data-parallel ranks (the seed's ``distributed_fused_adam``, ZeRO-style);
4. materialise on the device (``to_empty``) and ``init_weights`` with a fill that draws
   each tensor at its full shape and keeps the local slice, so the initial weights equal
   the single-process ones exactly.

Gradient clipping over sharded gradients needs the global norm: ``clip_grad_norm_``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.utils.checkpoint
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from .model import GPT, GPTConfig, build_model
from .sequence_parallel import ColwiseSequenceParallel


def apply_tp(model: GPT, tp_mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Megatron's tensor parallelism on every block, optionally with sequence parallelism.

    Column-parallel QKV and first MLP linear (each rank keeps whole heads: the fused
    per-head [q|k|v] layout splits cleanly), row-parallel output projections. With
    sequence parallelism the residual stream between the row- and column-parallel
    linears (LayerNorms, dropout, residual adds) is split along the sequence instead of
    replicated. Embeddings and the tied output layer stay replicated.
    """
    stream = Shard(1) if sequence_parallel else Replicate()  # layout of the residual stream
    for layer in model.layers:
        # With SP, the column-parallel linears keep only their 1/t sequence shard for backward.
        colwise = ColwiseSequenceParallel() if sequence_parallel else ColwiseParallel(input_layouts=stream)
        plan = {
            "self_attention.linear_qkv": colwise,
            "self_attention.linear_proj": RowwiseParallel(output_layouts=stream),
            "mlp.linear_fc1": colwise,
            "mlp.linear_fc2": RowwiseParallel(output_layouts=stream),
        }
        if sequence_parallel:
            plan["input_layernorm"] = SequenceParallel()
            plan["pre_mlp_layernorm"] = SequenceParallel()
        parallelize_module(layer, tp_mesh, plan)
    if sequence_parallel:
        # Embedding output: keep this rank's sequence chunk (no communication).
        parallelize_module(model.embedding, tp_mesh,
                           PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=Shard(1)))
        # Final LayerNorm on the chunk, then gather the sequence for the replicated output layer.
        parallelize_module(model.final_layernorm, tp_mesh, SequenceParallel())
        parallelize_module(model.final_layernorm, tp_mesh,
                           PrepareModuleOutput(output_layouts=Shard(1), desired_output_layouts=Replicate()))


@dataclass(frozen=True)
class Recompute:
    """Which activations to recompute in backward (the seed's ``model.activations_checkpoint_*``)."""

    granularity: str | None = None  # None, "full" or "selective"
    method: str | None = None  # full: "uniform" or "block"
    num_layers: int | None = None  # uniform: blocks per checkpointed group; block: blocks per stage
    num_stages: int = 1  # pipeline stages ("block" counts per stage)


def _checkpoint(run: Callable, *args, **kwargs):
    # Non-reentrant, with the RNG state preserved: dropout draws the same masks when recomputed,
    # so the gradients equal those without recomputation.
    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)


def _recompute_forward(module: nn.Module) -> None:
    """Make ``module``'s forward keep only its inputs and recompute the rest in backward.

    Replacing the bound ``forward`` (instead of wrapping the module) keeps parameter names,
    so checkpoints do not depend on the recomputation setting.
    """
    run = module.forward
    module.forward = lambda *args, **kwargs: _checkpoint(run, *args, **kwargs)


def _recompute_group(layers: list[nn.Module]) -> None:
    """Recompute consecutive ``layers`` as one unit: only the group's input is kept.

    When the model's loop reaches the first layer, it runs the whole group under one
    checkpoint, calling each layer (so hooks such as FSDP's fire as usual); the loop's calls
    to the other layers then pass their input through. (Under FSDP those pass-through calls
    still gather and free the layer's parameters once more: a communication cost.)
    """
    inside = [False]

    def group(x, *args, **kwargs):
        inside[0] = True
        try:
            for layer in layers:
                x = layer(x, *args, **kwargs)
        finally:
            inside[0] = False
        return x

    def member(index: int, original: Callable) -> Callable:
        def forward(x, *args, **kwargs):
            if inside[0]:
                return original(x, *args, **kwargs)  # for real, inside the group
            return _checkpoint(group, x, *args, **kwargs) if index == 0 else x

        return forward

    for index, layer in enumerate(layers):
        layer.forward = member(index, layer.forward)


def apply_ac(model: GPT, recompute: Recompute) -> None:
    """Activation recomputation, Megatron's three ways (Korthikanti et al. 2022).

    - ``selective``: every block's attention core (softmax(QKᵀ)V, whose activations grow with s²)
      is recomputed; the linears' inputs are kept.
    - ``full`` + ``uniform``: the blocks are cut into groups of ``num_layers`` consecutive blocks;
      each group keeps only its input and recomputes everything else.
    - ``full`` + ``block``: the first ``num_layers`` blocks of each pipeline stage are recomputed
      whole, the rest keep everything (0: none).
    """
    layers = list(model.layers)
    if recompute.granularity == "selective":
        for layer in layers:
            _recompute_forward(layer.self_attention.core_attention)
    elif recompute.granularity == "full":
        n = recompute.num_layers or 0
        if recompute.method == "uniform":
            for start in range(0, len(layers), n):
                group = layers[start:start + n]
                if len(group) == 1:
                    _recompute_forward(group[0])
                else:
                    _recompute_group(group)
        else:
            per_stage = len(layers) // recompute.num_stages
            for stage in range(recompute.num_stages):
                for layer in layers[stage * per_stage:stage * per_stage + n]:
                    _recompute_forward(layer)


def apply_fsdp(model: GPT, dp_mesh: DeviceMesh, *, param_dtype: torch.dtype | None = None) -> None:
    """FSDP2: one unit per transformer block (gathered just in time, gradients reduce-scattered
    while backward goes on), then the root for embeddings and the final LayerNorm.

    ``param_dtype`` (bf16 for ``trainer.precision=bf16``): parameters are gathered in it for
    forward and backward (half the all-gather traffic and compute memory), gradients are
    reduce-scattered in fp32, and the sharded master weights and optimizer state stay fp32.
    This is how bf16 runs on every layout, a one-rank "dp" dim included: the whole forward is
    bf16 (residual stream, LayerNorms, logits; the loss upcasts), as in Megatron's bf16 models,
    and no autocast is needed. Autocast would keep fp32 weights' residual stream in fp32 and run
    LayerNorm on fp32 copies: twice the activation memory (Korthikanti et al. count 16-bit).
    """
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
    for layer in model.layers:
        fully_shard(layer, mesh=dp_mesh, mp_policy=mp)
    fully_shard(model, mesh=dp_mesh, mp_policy=mp)


def _fill_full_then_shard(param: torch.Tensor, init_: Callable[[torch.Tensor], object]) -> None:
    """Run ``init_`` on the full shape (same RNG draws as one device) and keep this rank's part."""
    if not isinstance(param, DTensor):
        init_(param)
        return
    full = torch.empty(param.shape, dtype=param.dtype, device=param.to_local().device)
    init_(full)
    param.copy_(distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None))


def build_parallel_model(cfg: GPTConfig, device: torch.device, mesh: DeviceMesh | None, *,
                         sequence_parallel: bool = False, recompute: Recompute = Recompute(),
                         param_dtype: torch.dtype | None = None) -> GPT:
    """The GPT on ``device``, parallelised over ``mesh`` (dims "dp", "tp"), initialised as on one device.

    ``param_dtype``: FSDP's compute dtype for the parameters (see ``apply_fsdp``), also over a
    one-rank "dp" dim; None (fp32) applies FSDP only when DP > 1.
    """
    if mesh is None:
        model = build_model(cfg, device)
        apply_ac(model, recompute)
        return model
    with torch.device("meta"):
        model = GPT(cfg)
    tp_mesh, dp_mesh = mesh["tp"], mesh["dp"]
    if tp_mesh.size() > 1:
        apply_tp(model, tp_mesh, sequence_parallel)
    apply_ac(model, recompute)
    if dp_mesh.size() > 1 or param_dtype is not None:
        apply_fsdp(model, dp_mesh, param_dtype=param_dtype)
    model.to_empty(device=device)
    model.init_weights(fill=_fill_full_then_shard)
    return model


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
    total = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
    if pipeline_group is not None:
        squared = total.pow(2)
        dist.all_reduce(squared, group=pipeline_group)
        total = squared.sqrt()
    if math.isfinite(max_norm):
        for params in groups.values():
            torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total
