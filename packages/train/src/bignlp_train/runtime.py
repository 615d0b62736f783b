"""Where and how the math runs: device, precision, seeds and RNG state (chosen at run time)."""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from bignlp_contracts import ConfigError

from .config import TrainerConfig


def pick_device(trainer: TrainerConfig) -> torch.device:
    """``auto``: the GPU if there is one, else the CPU; ``gpu`` without one is an error."""
    if trainer.accelerator == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if trainer.accelerator == "gpu":
        raise ConfigError(
            "trainer.accelerator=gpu but no CUDA device is visible", hint="use trainer.accelerator=auto or cpu"
        )
    return torch.device("cpu")


def check_precision(device: torch.device, precision: str) -> None:
    """bf16 needs hardware support on GPUs (Ampere and later); CPUs emulate it."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no bf16 support",
            hint="use trainer.precision=32",
        )


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast for forward and loss (weights, grads and optimizer stay fp32), or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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
