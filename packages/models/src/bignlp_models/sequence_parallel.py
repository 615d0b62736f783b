"""Column-parallel linear after a sequence-parallel region that keeps only its sequence shard.

With sequence parallelism the residual stream is split along the sequence (dim 1 of
(batch, seq, hidden)), and the column-parallel linears that follow a LayerNorm (QKV and the
first MLP linear) need the whole sequence: the input is all-gathered first. DTensor's
``ColwiseParallel(input_layouts=Shard(1))`` lets autograd keep that all-gathered input for the
weight gradient, t times the activation memory of the shard. Megatron (Korthikanti et al. 2022,
section 4.2.2) keeps only the shard and all-gathers it again in backward; so does
``SequenceParallelLinear`` here:

- forward: all-gather x along the sequence, y = x Wᵀ + b, save the shard and W;
- backward: re-gather x (started before, and overlapped with, the input gradient g W), reduce-scatter
  the input gradient back to the sequence shard (overlapped with the weight gradient gᵀ x).

``ColwiseSequenceParallel`` is the parallel style: it shards weight and bias exactly as
``ColwiseParallel`` (Shard(0) DTensor parameters, so names, FSDP2 on top, DCP checkpoints and the
sharded init are unchanged) and runs the module's forward through the function above.

Collectives: ``all_gather_single`` / ``reduce_scatter_single`` (torch ≥ 2.13; the older names
``all_gather_into_tensor`` / ``reduce_scatter_tensor`` before) on the tensor-parallel group. NCCL
and gloo (torch 2.13, checked) both implement them; a backend without them (gloo in older torch)
raises, and we fall back once, for the rest of the process, to ``all_gather`` into a list and to
``all_reduce`` + keeping this rank's slice — the same sums, t times the reduce traffic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Partial, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel.style import ParallelStyle

_ALL_GATHER = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_REDUCE_SCATTER = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_fallback = {"all_gather": False, "reduce_scatter": False}  # set once a backend lacks the fused collective


class _Done:
    """A finished collective (the fallback paths complete synchronously)."""

    def wait(self) -> None:
        pass


def _unsupported(error: Exception) -> bool:
    # c10d's "Backend gloo does not support ...", older gloo's "no support for _allgather_base ..."
    return isinstance(error, NotImplementedError) or "support" in str(error).lower()


def _fused_or_fallback(kind: str, fused: Callable[[], object], fallback: Callable[[], None]):
    """Run the fused collective, or (once a backend lacks it, for the rest of the process) the fallback."""
    if not _fallback[kind]:
        try:
            return fused()
        except (RuntimeError, NotImplementedError) as error:
            if not _unsupported(error):
                raise
            _fallback[kind] = True
    fallback()
    return _Done()


def _all_gather(out: torch.Tensor, shard: torch.Tensor, group: dist.ProcessGroup, async_op: bool):
    """``out`` (t·n, ...) = the t ranks' ``shard`` (n, ...) stacked along dim 0."""
    return _fused_or_fallback(
        "all_gather", lambda: _ALL_GATHER(out, shard, group=group, async_op=async_op),
        lambda: dist.all_gather(list(out.chunk(dist.get_world_size(group))), shard, group=group))


def _reduce_scatter(out: torch.Tensor, full: torch.Tensor, group: dist.ProcessGroup, async_op: bool):
    """``out`` (n, ...) = this rank's n-row slice of ``full`` (t·n, ...) summed over the t ranks."""
    def fallback() -> None:
        dist.all_reduce(full, group=group)
        out.copy_(full.chunk(dist.get_world_size(group))[dist.get_rank(group)])

    return _fused_or_fallback("reduce_scatter", lambda: _REDUCE_SCATTER(out, full, group=group, async_op=async_op),
                              fallback)


def _gather_sequence(shard: torch.Tensor, group: dist.ProcessGroup, async_op: bool = False):
    """Start gathering the (B, S/t, H) shards into (t, B, S/t, H); return (buffer, work)."""
    world = dist.get_world_size(group)
    buffer = shard.new_empty((world, *shard.shape))
    work = _all_gather(buffer.view(world * shard.shape[0], *shard.shape[1:]), shard.contiguous(), group, async_op)
    return buffer, work


def _sequence_major(buffer: torch.Tensor) -> torch.Tensor:
    """(t, B, S/t, H) rank-major chunks → (B, S, H), the chunks in rank order along the sequence."""
    t, b, s, h = buffer.shape
    return buffer.transpose(0, 1).reshape(b, t * s, h)


class _GatherLinear(torch.autograd.Function):
    """y = all_gather_seq(x) Wᵀ + b, keeping only x's sequence shard for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                group: dist.ProcessGroup) -> torch.Tensor:
        buffer, _ = _gather_sequence(x, group)
        y = F.linear(_sequence_major(buffer), weight, bias)
        ctx.save_for_backward(x, weight)  # the shard, not the gathered sequence
        ctx.group, ctx.has_bias = group, bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight = ctx.saved_tensors
        group, world = ctx.group, dist.get_world_size(ctx.group)
        b, s, out = grad_y.shape
        with torch.autocast(grad_y.device.type, enabled=False):
            # re-gather the input while the input gradient is computed
            buffer, gather = _gather_sequence(x, group, async_op=True)
            grad_rank_major = grad_y.reshape(b, world, s // world, out).transpose(0, 1)  # (t, B, S/t, out)
            grad_x_full = (grad_rank_major @ weight).contiguous()  # (t, B, S/t, H): rank r's rows first
            grad_x = grad_x_full.new_empty(x.shape)
            gather.wait()
            # reduce-scatter the input gradient while the weight gradient is computed
            scatter = _reduce_scatter(grad_x, grad_x_full.view(world * b, *x.shape[1:]), group, async_op=True)
            grad_2d = grad_y.reshape(-1, out)
            grad_weight = grad_2d.t() @ _sequence_major(buffer).reshape(-1, x.shape[-1])
            grad_bias = grad_2d.sum(0) if ctx.has_bias else None
            scatter.wait()
        return grad_x, grad_weight, grad_bias, None


def sequence_parallel_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             group: dist.ProcessGroup) -> torch.Tensor:
    """Column-parallel linear of the sequence shard ``x`` (B, S/t, H): returns (B, S, out/t).

    Under autocast, x, W and b are cast to the autocast dtype first (as ``F.linear`` would be), so
    the gathered and saved tensors are 16-bit, and the matmuls run with autocast off.
    """
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
        bias = bias.to(dtype) if bias is not None else None
    with torch.autocast(device_type, enabled=False):
        return _GatherLinear.apply(x, weight, bias, group)


def _local(t: torch.Tensor | None) -> torch.Tensor | None:
    return t.to_local() if isinstance(t, DTensor) else t  # differentiable: the grad arrives as a DTensor


class ColwiseSequenceParallel(ParallelStyle):
    """``ColwiseParallel(input_layouts=Shard(1))`` for an ``nn.Linear`` that saves only the sequence shard.

    Input: a Shard(1) DTensor (torch's ``SequenceParallel`` on the preceding LayerNorm) or this
    rank's plain (B, S/t, H) shard. Output: a plain (B, S, out/t) tensor, as ``ColwiseParallel``
    with ``use_local_output=True`` returns.
    """

    def _partition_linear(self, _name: str, module: nn.Module, mesh: DeviceMesh) -> None:
        for name, param in module.named_parameters():
            sharded = distribute_tensor(param, mesh, [Shard(0)], src_data_rank=self.src_data_rank)
            module.register_parameter(name, nn.Parameter(sharded, requires_grad=param.requires_grad))

    def _apply(self, module: nn.Module, device_mesh: DeviceMesh) -> nn.Module:
        if not isinstance(module, nn.Linear):
            raise NotImplementedError(f"ColwiseSequenceParallel supports nn.Linear only, not {type(module).__name__}")
        if device_mesh.ndim != 1:
            raise ValueError(f"ColwiseSequenceParallel needs a 1-D tensor-parallel mesh, got {device_mesh.ndim}-D")
        distribute_module(module, device_mesh, self._partition_linear)
        group = device_mesh.get_group()

        def forward(x: torch.Tensor) -> torch.Tensor:
            weight, bias = _local(module.weight), _local(module.bias)
            if isinstance(x, DTensor):
                if x.shape[1] % device_mesh.size():
                    # Uneven sequence shards cannot be gathered into one buffer: gather as DTensor does
                    # (and keep the whole sequence); each rank's input gradient is a partial sum.
                    x = x.redistribute(placements=[Replicate()]).to_local(grad_placements=[Partial()])
                    return F.linear(x, weight, bias)
                if x.placements != (Shard(1),):
                    x = x.redistribute(placements=[Shard(1)])
                x = x.to_local()
            return sequence_parallel_linear(x, weight, bias, group)

        module.forward = forward  # instance attribute: parameter names and hooks stay those of the Linear
        return module

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
