"""GPU kinds: peak FLOP/s, link speeds and what the runtime reserves; overridable per search.

Figures are per device: dense bf16 peak (fp32 for ``cpu``), the NVLink bandwidth one GPU has to
the others of its node (one direction), the network bandwidth per GPU (one NIC per GPU on DGX),
and the memory taken before the model (CUDA context, NCCL buffers, allocator slack).
Memory itself is the search's ``gpu_memory_gb``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from bignlp_contracts import ConfigError


@dataclass(frozen=True)
class GPUKind:
    """One device kind's figures."""

    name: str
    peak_tflops: float
    intra_node_gbps: float
    inter_node_gbps: float
    reserved_gb: float
    precision: str  # what the search runs train in: bf16 on GPUs, 32 on CPUs
    accelerator: str  # bignlp-train's trainer.accelerator
    work_half: float = 1.0e6  # mbs·s·h/TP at which matrix multiplies reach half the achievable rate (not calibrated)
    memory_gbps: float = 2039.0  # device memory bandwidth: the rate of memory-bound work (softmax over the vocabulary)


GPU_KINDS = {
    # A100 SXM: 312 TFLOP/s bf16, NVLink 3 600 GB/s bidirectional, HDR 200 Gb/s per GPU (DGX A100)
    # HBM2 1555 GB/s (40 GB), HBM2e 2039 GB/s (80 GB)
    "a100-40gb": GPUKind("a100-40gb", 312.0, 300.0, 25.0, 3.0, "bf16", "gpu", memory_gbps=1555.0),
    "a100-80gb": GPUKind("a100-80gb", 312.0, 300.0, 25.0, 3.0, "bf16", "gpu", memory_gbps=2039.0),
    # H100/H200 SXM: 989 TFLOP/s bf16, NVLink 4 900 GB/s bidirectional, NDR 400 Gb/s per GPU (DGX H100/H200)
    # HBM3 3350 GB/s (H100), HBM3e 4800 GB/s (H200)
    "h100-80gb": GPUKind("h100-80gb", 989.0, 450.0, 50.0, 3.0, "bf16", "gpu", memory_gbps=3350.0),
    "h200": GPUKind("h200", 989.0, 450.0, 50.0, 3.0, "bf16", "gpu", memory_gbps=4800.0),
    # processes on CPU cores with gloo (tests): fp32, shared-memory "links"
    "cpu": GPUKind("cpu", 0.1, 2.0, 1.0, 0.0, "32", "cpu", work_half=1.0e3, memory_gbps=10.0),
}


def gpu_kind(settings) -> GPUKind:
    """The kind ``train_settings`` names (null: the A100 of its memory size), with its overrides applied."""
    name = settings.gpu_kind or ("a100-40gb" if settings.gpu_memory_gb <= 40 else "a100-80gb")
    if name not in GPU_KINDS:
        raise ConfigError(f"train_settings.gpu_kind {name!r} is not known",
                          hint=f"use one of {', '.join(GPU_KINDS)}, and train_settings.hardware.* for other figures")
    kind = GPU_KINDS[name]
    changes = {k: v for k, v in vars(settings.hardware).items() if v is not None}
    return replace(kind, **changes) if changes else kind
