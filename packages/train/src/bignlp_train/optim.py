"""AdamW with Megatron's weight-decay groups, and NeMo's ``CosineAnnealing`` / ``WarmupAnnealing`` learning rates."""

from __future__ import annotations

import math

import torch
from torch import nn

from .config import TrainConfig


class Optimizers:
    """One AdamW per model part, stepped together (a pipeline rank with several parts holds several).

    Per part, because torch's state-dict helpers pair an optimizer with the module that holds its
    parameters; AdamW is element-wise, so the update equals one optimizer over all parts.
    """

    def __init__(self, parts: list[nn.Module], cfg: TrainConfig, device: torch.device) -> None:
        self.optimizers = [build_optimizer(part, cfg, device) for part in parts]

    @property
    def param_groups(self) -> list[dict]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over two groups: decay for matrices (linears, embeddings), none for biases and LayerNorms.

    Megatron's rule: a parameter with one dimension is a bias or a norm gain.
    """
    optim = cfg.model.optim
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": optim.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    fused = device.type == "cuda"  # one kernel per step on GPU; the foreach path elsewhere
    return torch.optim.AdamW(groups, lr=lr_at(0, cfg), betas=optim.betas, fused=fused)


def cosine_annealing_lr(
    step: int,
    *,
    max_lr: float,
    min_lr: float,
    warmup_steps: int,
    constant_steps: int,
    max_steps: int,
) -> float:
    """The learning rate for optimizer step ``step`` (0-based), as NeMo's ``CosineAnnealing`` gives it.

    NeMo has two shapes, chosen by ``constant_steps``:

    - ``constant_steps == 0``: warmup ``max_lr·(step+1)/(warmup+1)`` for step ≤ warmup, then a
      cosine from max_lr to min_lr reached at ``max_steps``;
    - ``constant_steps > 0`` (Megatron's schedule, the GPT-3 recipes): warmup ``max_lr·step/warmup``
      (so step 0 has lr 0), a cosine to min_lr over ``max_steps − warmup − constant`` steps, then
      min_lr for the last ``constant_steps``.

    Past ``max_steps`` the rate stays at min_lr.
    """
    if constant_steps == 0:
        if warmup_steps > 0 and step <= warmup_steps:
            return max_lr * (step + 1) / (warmup_steps + 1)
        if step > max_steps:
            return min_lr
        progress = (step - warmup_steps) / (max_steps - warmup_steps)
        return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if warmup_steps > 0 and step <= warmup_steps:
        return max_lr * step / warmup_steps
    decay_steps = max_steps - constant_steps - warmup_steps
    if step > warmup_steps + decay_steps:
        return min_lr
    progress = (step - warmup_steps) / decay_steps
    return min_lr + (max_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_annealing_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """The learning rate for optimizer step ``step`` (0-based), as NeMo's ``WarmupAnnealing`` gives it.

    Warmup ``max_lr·(step+1)/(warmup+1)`` for step ≤ warmup (as CosineAnnealing without constant steps),
    then a straight line from max_lr down to min_lr reached at ``max_steps``; min_lr after.
    """
    if warmup_steps > 0 and step <= warmup_steps:
        return max_lr * (step + 1) / (warmup_steps + 1)
    if step > max_steps:
        return min_lr
    progress = (step - warmup_steps) / (max_steps - warmup_steps)
    return min_lr + (max_lr - min_lr) * (1.0 - progress)


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The configured schedule at optimizer step ``step``."""
    optim = cfg.model.optim
    max_steps = cfg.sched_max_steps
    warmup = optim.sched.warmup_steps_for(max_steps)
    if optim.sched.name == "WarmupAnnealing":
        return warmup_annealing_lr(step, max_lr=optim.lr, min_lr=optim.sched.min_lr, warmup_steps=warmup,
                                   max_steps=max_steps)
    return cosine_annealing_lr(
        step,
        max_lr=optim.lr,
        min_lr=optim.sched.min_lr,
        warmup_steps=warmup,
        constant_steps=optim.sched.constant_steps,
        max_steps=max_steps,
    )


def set_lr(optimizer: torch.optim.Optimizer | Optimizers, lr: float) -> None:
    """Apply one learning rate to every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr
