"""Losses shared by the model families."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def lm_loss(logits: torch.Tensor, labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions loss_mask keeps (Megatron's masked mean).

    ``logits`` may be split along the vocabulary over tensor-parallel ranks (a DTensor, under
    torch's ``loss_parallel``): the per-token losses then come back whole on every rank.
    """
    losses = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), reduction="none")
    if hasattr(losses, "full_tensor"):  # vocabulary-parallel: per-token losses replicated over the TP ranks
        losses = losses.full_tensor()
    mask = loss_mask.flatten().to(losses.dtype)
    return (losses * mask).sum() / mask.sum().clamp(min=1.0)
