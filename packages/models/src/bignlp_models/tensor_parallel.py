"""Megatron's tensor parallelism, applied from outside to a plain model of any family (training and inference).

The model classes stay single-device PyTorch; a family's ``tensor_parallel_plan`` (spec.py) names
each module's role (``spec.TP_STYLES``) and ``apply_tp`` maps the roles to torch's DTensor parallel
styles (``parallelize_module``) over a 1-D "tp" device mesh. One implementation: bignlp-train
applies it to a meta-device part before materialising it (``bignlp_train.parallelize``), inference
to a model it then fills from a checkpoint (``load_model_tp``).

Inference (``load_model_tp``): every rank of the TP group loads the checkpoint and keeps its shard
of each weight (whole heads per rank, its slice of the vocabulary); ``bignlp_models.generate`` then
runs unchanged on every rank, in lockstep on identical inputs. A KV cache holds the rank's own heads
(its buffers take their shapes from what the layers write); the logits come out split along the
vocabulary (a DTensor) and ``generate`` gathers them, so every rank samples from the same full row
and picks the same token. The vocabulary is padded to a multiple of the TP size (zero rows, never
chosen: ``LoadedModel.vocab_size`` is the tokenizer's, and the padded logits are cut off before
sampling).
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)
from torch.distributed.tensor.parallel.style import ParallelStyle

from .sequence_parallel import ColwiseSequenceParallel
from .spec import FamilySpec

__all__ = ["apply_tp", "check_tp_size", "load_model_tp", "tp_styles"]


def tp_styles(style: str, sequence_parallel: bool) -> list:
    """torch's parallel styles for one entry of a family's tensor-parallel plan (bignlp_models.spec.TP_STYLES)."""
    stream = Shard(1) if sequence_parallel else Replicate()  # layout of the residual stream
    if style == "colwise":
        # With SP, the column-parallel linears keep only their 1/t sequence shard for backward.
        return [ColwiseSequenceParallel() if sequence_parallel else ColwiseParallel(input_layouts=stream)]
    if style == "rowwise":
        return [RowwiseParallel(output_layouts=stream)]
    if style == "vocab_embedding":  # rows split along the vocabulary; each rank's lookups summed
        return [RowwiseParallel(input_layouts=Replicate(), output_layouts=Replicate())]
    if style in ("vocab_weight", "vocab_head"):
        return [VocabShardedWeight()]
    if style == "head_embedding":  # columns = heads: each rank looks up its own heads' bias
        return [ColwiseParallel(input_layouts=Replicate())]
    if style == "final_norm":
        # The output, as a replicated DTensor (gathered along the sequence under SP), meets the
        # vocabulary-split output weight: the logits come out split along the vocabulary.
        gather = PrepareModuleOutput(output_layouts=stream, desired_output_layouts=Replicate(), use_local_output=False)
        return [SequenceParallel(), gather] if sequence_parallel else [gather]
    if not sequence_parallel:
        return []  # the rest is replicated: nothing to do without SP
    if style == "norm":
        return [SequenceParallel()]
    if style == "embedding":  # keep this rank's sequence chunk of the output (no communication)
        return [PrepareModuleOutput(output_layouts=Replicate(), desired_output_layouts=Shard(1))]
    raise ValueError(f"unknown tensor-parallel style {style!r}")


class VocabShardedWeight(ParallelStyle):
    """A module's ``weight`` (and ``bias``, if any) split along dim 0, the vocabulary, as the tied embedding
    it copies or the logits it produces."""

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        def partition(_name: str, mod: nn.Module, mesh: DeviceMesh) -> None:
            for name in ("weight", "bias"):
                param = getattr(mod, name, None)
                if param is not None and mod is module:
                    mod.register_parameter(name, nn.Parameter(distribute_tensor(param, mesh, [Shard(0)])))

        return distribute_module(module, device_mesh, partition)


def apply_tp(part: nn.Module, spec: FamilySpec, tp_mesh: DeviceMesh, sequence_parallel: bool) -> None:
    """Megatron's tensor parallelism (optionally with sequence parallelism) from the family's plan.

    Column-parallel linears split their output features (whole heads per rank), row-parallel ones
    their input features; with sequence parallelism the residual stream between them (norms,
    dropout, residual adds) is split along the sequence instead of replicated.
    """
    for path, style in spec.tensor_parallel_plan(part).items():
        for parallel_style in tp_styles(style, sequence_parallel):
            parallelize_module(part.get_submodule(path), tp_mesh, parallel_style)


def check_tp_size(cfg, tp: int) -> None:
    """ValueError (one line) unless ``tp`` ≥ 1 splits ``cfg``'s attention heads and MLP widths evenly."""
    if tp < 1:
        raise ValueError(f"tensor parallel size {tp}: must be at least 1")
    heads = int(cfg.num_attention_heads)
    if heads % tp:
        raise ValueError(f"tensor parallel size {tp} does not divide the model's {heads} attention heads "
                         f"(each rank holds whole heads)")
    for field in dataclasses.fields(cfg):
        if field.name.endswith("ffn_hidden_size") and int(getattr(cfg, field.name)) % tp:
            raise ValueError(f"tensor parallel size {tp} does not divide {field.name}={getattr(cfg, field.name)}")


def _reduce_locally(module: nn.Linear, mesh: DeviceMesh) -> None:
    """Run a row-parallel linear (after ``apply_tp``) on its local shard: y = all_reduce(x_r W_rᵀ) + b.

    What ``RowwiseParallel`` computes, without DTensor's dispatch of the matmul. torch 2.13's DTensor
    finds the sharding of ``F.linear`` on a 3-D row-parallel input through an uncached decomposition
    (about 10 ms a call on a CPU, more than a tiny model's whole decoding step), and for a 2-D input
    with a bias it all-gathers the input and the weight instead of summing partial results (measured).
    The parameters stay DTensors (names, shapes, loading unchanged); the style's own input and output
    hooks still run around this forward: its input arrives as a Shard(-1) DTensor of the local
    activations, and a Replicate DTensor goes back, which the output hook returns as a plain tensor.
    """
    group = mesh.get_group()

    def forward(x: torch.Tensor) -> torch.Tensor:
        local = x.to_local() if isinstance(x, DTensor) else x
        y = F.linear(local, module.weight.to_local())
        dist.all_reduce(y, group=group)
        if module.bias is not None:
            y = y + module.bias.to_local()
        return DTensor.from_local(y, mesh, [Replicate()], run_check=False)

    module.forward = forward  # instance attribute: the style's hooks and the parameters stay the module's


def load_model_tp(checkpoint: str | os.PathLike, tp_mesh: DeviceMesh, *, device: str | torch.device = "cpu",
                  dtype: torch.dtype = torch.float32, verify: str = "sha256"):
    """``load_model``, sharded over the 1-D tensor-parallel mesh ``tp_mesh`` (every rank of it calls this).

    Returns a ``LoadedModel`` whose ``model`` holds this rank's shard (DTensor parameters) on
    ``device`` (the mesh's device type); ``vocab_size`` is the tokenizer's, and the model's own
    (``model.cfg.vocab_size``) is rounded up to a multiple of the TP size with zero rows. Pass
    ``vocab_size=loaded.vocab_size`` to ``generate`` (it also defaults to it, through the model's
    ``unpadded_vocab_size``). Each rank reads the whole checkpoint on the CPU first, then keeps its
    shard: peak host memory is one copy of the model per rank. ValueError when the TP size does not
    divide the heads; ``load_model``'s errors otherwise.
    """
    from .checkpoint import load_model

    tp = tp_mesh.size()
    full = load_model(checkpoint, device="cpu", dtype=dtype, verify=verify)
    check_tp_size(full.config, tp)
    cfg = dataclasses.replace(full.config, vocab_size=-(-full.vocab_size // tp) * tp)
    model = full.family.build_meta(cfg).to(dtype=dtype)  # as load_model's placement: every weight in dtype
    apply_tp(model, full.family, tp_mesh, sequence_parallel=False)  # a 1-rank mesh too: one code path
    for path, style in full.family.tensor_parallel_plan(model).items():
        if style == "rowwise":
            _reduce_locally(model.get_submodule(path), tp_mesh)
    model.to_empty(device=device)
    source = full.model.state_dict()
    with torch.no_grad():
        for name, target in model.state_dict(keep_vars=True).items():
            whole = source[name]
            if whole.shape != target.shape:  # vocabulary rows added for divisibility: zeros
                padded = whole.new_zeros(target.shape)
                padded[:whole.shape[0]] = whole
                whole = padded
            whole = whole.to(device=device, dtype=target.dtype)
            if isinstance(target, DTensor):
                target.copy_(distribute_tensor(whole, target.device_mesh, target.placements, src_data_rank=None))
            else:
                target.copy_(whole)
    model.eval().requires_grad_(False)
    model.unpadded_vocab_size = full.vocab_size  # what generate masks to when not told
    return dataclasses.replace(full, model=model, devices=(torch.device(device),))
