"""Where and how the math runs: device, precision, seeds and RNG state (chosen at run time)."""

from __future__ import annotations

import gc
import random
import signal
import threading
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from bignlp_contracts import ConfigError, RunEnv

from .config import TrainerConfig


def pick_device(trainer: TrainerConfig, local_rank: int = 0) -> torch.device:
    """``auto``: the GPU if there is one (this local rank's), else the CPU; ``gpu`` without one is an error."""
    if trainer.accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if trainer.accelerator == "gpu":
        raise ConfigError(
            "trainer.accelerator=gpu but no CUDA device is visible", hint="use trainer.accelerator=auto or cpu"
        )
    return torch.device("cpu")


def init_distributed(env: RunEnv, device: torch.device, tensor_parallel_size: int,
                     pipeline_parallel_size: int = 1, *, one_process_mesh: bool = False) -> DeviceMesh | None:
    """Join the job's process group (NCCL on GPUs, gloo on CPUs); return the ("pp", "dp", "tp") mesh.

    TP innermost (neighbouring ranks, the fastest links), PP outermost, as Megatron orders them.

    A single process gets None (no group, no mesh: the plain model), or with ``one_process_mesh`` a
    group of one over an in-memory store and a 1×1×1 mesh, for FSDP's bf16 mixed precision
    (see ``parallelize.apply_fsdp``), so one process computes exactly as each rank of many does.
    """
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not env.is_distributed:
        if not one_process_mesh:
            return None
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1,
                                device_id=device if device.type == "cuda" else None)
        return init_device_mesh(device.type, (1, 1, 1), mesh_dim_names=("pp", "dp", "tp"))
    dist.init_process_group(backend, init_method=f"tcp://{env.master_addr}:{env.master_port}", rank=env.rank,
                            world_size=env.world_size, device_id=device if device.type == "cuda" else None)
    dp = env.world_size // (tensor_parallel_size * pipeline_parallel_size)
    return init_device_mesh(device.type, (pipeline_parallel_size, dp, tensor_parallel_size),
                            mesh_dim_names=("pp", "dp", "tp"))


def shutdown_distributed() -> None:
    """Leave the process group, if this process joined one.

    Garbage is collected first: objects in reference cycles that hold process groups (device meshes,
    parallelised modules) would otherwise be freed at interpreter exit, after the groups are destroyed,
    and gloo then sometimes aborts the process ("terminate called without an active exception", about
    1 run in 10 of a 2-rank TP worker here).
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class StopSignals:
    """Remember SIGTERM/SIGUSR1 instead of dying, so the loop can checkpoint and exit cleanly.

    Slurm sends SIGTERM (or, with ``--signal=USR1@120``, SIGUSR1) before it preempts or times
    out a job. Handlers can only be installed from the main thread; elsewhere this is inert.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._note) for sig in self.SIGNALS}
        return self

    def _note(self, signum: int, _frame: Any) -> None:
        self.received = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# Dense bf16 tensor-core peak per GPU (vendor datasheets), the MFU denominator. Matched in this order
# against torch.cuda.get_device_name (e.g. "NVIDIA A100-SXM4-80GB", "NVIDIA H100 80GB HBM3"); the
# PCIe and NVL cards run slower clocks than the SXM modules.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),
    ("H200", 989.0),
    ("A100", 312.0),
)


def peak_tflops(device_name: str | None) -> float | None:
    """The device's dense bf16 peak in TFLOP/s, or None when unknown (CPUs, other GPUs)."""
    for key, tflops in PEAK_BF16_TFLOPS:
        if device_name and key in device_name:
            return tflops
    return None


def device_name(device: torch.device) -> str | None:
    """The CUDA device's name (for ``peak_tflops``); None on CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def check_precision(device: torch.device, precision: str) -> None:
    """bf16 needs hardware support on GPUs (Ampere and later); CPUs emulate it."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no bf16 support",
            hint="use trainer.precision=32",
        )


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) so init and dropout repeat exactly."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def get_rng_state() -> dict[str, Any]:
    """Every generator a training step may draw from, for the checkpoint."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what ``get_rng_state`` captured (CUDA states only when both sides have CUDA)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda") is not None:
        torch.cuda.set_rng_state_all(state["cuda"])
