"""Run by test_train_sequence_parallel.py as 2 ranks (TP=2, gloo): ColwiseSequenceParallel against DTensor's
ColwiseParallel(input_layouts=Shard(1)) on the same random linear and inputs.

Argument: ``equal`` (fp32 outputs and gradients), ``saved`` (what autograd keeps), ``bf16`` (bf16 weights and
inputs, and fp32 weights under bf16 autocast), ``fallback`` (the all_gather / all_reduce collectives).
"""

from __future__ import annotations

import sys

import torch
from torch import nn
from torch.distributed.tensor import DTensor, Shard
from torch.distributed.tensor.parallel import ColwiseParallel, parallelize_module

from bignlp_contracts import discover_run_env
from bignlp_train import sequence_parallel
from bignlp_train.runtime import init_distributed, shutdown_distributed
from bignlp_train.sequence_parallel import ColwiseSequenceParallel

B, S, H, OUT = 2, 8, 16, 24  # distinct sizes: shard 2·4·16 = 128, full 256, local weight 12·16 = 192


def pair(mesh, dtype=torch.float32):
    """The same random Linear twice: DTensor's ColwiseParallel (reference) and ours."""
    torch.manual_seed(0)
    linear = nn.Linear(H, OUT).to(dtype)
    ref, ours = nn.Linear(H, OUT).to(dtype), nn.Linear(H, OUT).to(dtype)
    ref.load_state_dict(linear.state_dict())
    ours.load_state_dict(linear.state_dict())
    parallelize_module(ref, mesh, ColwiseParallel(input_layouts=Shard(1)))
    parallelize_module(ours, mesh, ColwiseSequenceParallel())
    for p in ours.parameters():
        assert isinstance(p, nn.Parameter) and isinstance(p, DTensor) and p.placements == (Shard(0),)
    return ref, ours


def run(module, mesh, rank, seq=S, dtype=torch.float32, as_dtensor=True):
    """Forward + backward of a random weighted sum; returns (output, input grad, weight grad, bias grad)."""
    torch.manual_seed(1)
    x = torch.randn(B, seq, H, dtype=dtype)
    grad_out = torch.randn(B, seq, OUT, dtype=dtype).chunk(2, dim=2)[rank]
    shard = x.tensor_split(2, dim=1)[rank].clone().requires_grad_()
    inp = DTensor.from_local(shard, mesh, [Shard(1)], run_check=False, shape=x.shape,
                             stride=x.stride()) if as_dtensor else shard
    y = module(inp)
    assert not isinstance(y, DTensor) and y.shape == (B, seq, OUT // 2), (type(y), y.shape)
    (y.float() * grad_out.float()).sum().backward()
    return y, shard.grad, module.weight.grad, module.bias.grad


def assert_close(got, want, tol, what):
    for name, g, w in zip(("output", "input grad", "weight grad", "bias grad"), got, want):
        if isinstance(w, DTensor):
            assert isinstance(g, DTensor) and g.placements == w.placements == (Shard(0),), (what, name, g)
            g, w = g.to_local(), w.to_local()
        assert g.dtype == w.dtype and g.shape == w.shape, (what, name, g.dtype, w.dtype, g.shape, w.shape)
        err = (g.float() - w.float()).abs().max().item()
        assert err <= tol * max(1.0, w.float().abs().max().item()), f"{what} {name}: max error {err}"


def equal(mesh, rank) -> None:
    ref, ours = pair(mesh)
    want = run(ref, mesh, rank)
    assert_close(run(ours, mesh, rank), want, 1e-6, "DTensor input")
    ref, ours = pair(mesh)  # the plain local shard as input (fresh modules: fresh grads)
    assert_close(run(ours, mesh, rank, as_dtensor=False), want, 1e-6, "local input")
    ref, ours = pair(mesh)  # S = 7: uneven shards (4 + 3) take DTensor's gather and still agree
    assert_close(run(ours, mesh, rank, seq=7), run(ref, mesh, rank, seq=7), 1e-6, "uneven sequence")


def saved_by(module, mesh, rank, dtype=torch.float32, autocast=False):
    """(numel, dtype) of each tensor autograd saves during the module's forward, local parts for DTensors."""
    torch.manual_seed(1)
    shard = torch.randn(B, S, H, dtype=dtype).chunk(2, dim=1)[rank].clone().requires_grad_()
    saved = []

    def pack(t):
        local = t.to_local() if isinstance(t, DTensor) else t
        saved.append((local.numel(), local.dtype))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        module(DTensor.from_local(shard, mesh, [Shard(1)], run_check=False))
    return sorted(saved)


def saved(mesh, rank) -> None:
    ref, ours = pair(mesh)
    shard, full, weight = B * S // 2 * H, B * S * H, OUT // 2 * H
    got, want = saved_by(ours, mesh, rank), saved_by(ref, mesh, rank)
    assert got == [(shard, torch.float32), (weight, torch.float32)], got
    assert (full, torch.float32) in want, want  # the reference keeps the gathered sequence
    assert sum(n for n, _ in want if n != weight) >= 2 * sum(n for n, _ in got if n != weight), (got, want)
    # under bf16 autocast the saved shard and weight are the 16-bit copies
    assert saved_by(ours, mesh, rank, autocast=True) == [(shard, torch.bfloat16), (weight, torch.bfloat16)]


def bf16(mesh, rank) -> None:
    ref, ours = pair(mesh, torch.bfloat16)  # bf16 parameters and inputs, as FSDP's MixedPrecisionPolicy gives
    got, want = run(ours, mesh, rank, dtype=torch.bfloat16), run(ref, mesh, rank, dtype=torch.bfloat16)
    assert got[0].dtype == got[1].dtype == torch.bfloat16
    assert_close(got, want, 2 ** -7, "bf16")
    ref, ours = pair(mesh)  # fp32 parameters under bf16 autocast: bf16 compute, fp32 parameter grads
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, want = run(ours, mesh, rank), run(ref, mesh, rank)
    assert got[0].dtype == torch.bfloat16 and got[2].dtype == got[3].dtype == torch.float32
    assert_close(got, want, 2 ** -7, "autocast")


def fallback(mesh, rank) -> None:
    sequence_parallel._fallback.update(all_gather=True, reduce_scatter=True)
    ref, ours = pair(mesh)
    assert_close(run(ours, mesh, rank), run(ref, mesh, rank), 1e-6, "fallback collectives")


def main() -> None:
    env = discover_run_env()
    mesh = init_distributed(env, torch.device("cpu"), 2)["tp"]
    {"equal": equal, "saved": saved, "bf16": bf16, "fallback": fallback}[sys.argv[1]](mesh, env.rank)
    print(f"rank {env.rank}: {sys.argv[1]} ok")
    shutdown_distributed()


if __name__ == "__main__":
    main()
