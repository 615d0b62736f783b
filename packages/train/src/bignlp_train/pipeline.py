"""Pipeline parallelism: a model's parts (bignlp_models' ``split_for_pipeline``) run by torch's pipelining schedules.

The layers are split evenly over ``PP × virtual`` model parts in Megatron's round-robin
order: part ``c`` of pipeline rank ``r`` is global stage ``s = c·PP + r`` and holds layers
``[s·L/(PP·v), (s+1)·L/(PP·v))``. Stage 0 also holds the embeddings; the last stage the
final norm and the output layer. PP=2, v=2, 8 layers: rank 0 holds layers 0-1 and 4-5,
rank 1 layers 2-3 and 6-7. One part per rank runs ``Schedule1F1B``, several run
``ScheduleInterleaved1F1B``.

A tied output layer (GPT's token embedding) lives on the first stage. As in Megatron, the
last stage holds a copy, initialised from the same random draw; after each backward the two
gradients are summed over the first and last stages, so both copies take the same update and
stay equal: the math of the unsplit model.

Each part is the model with some layers absent, so parameter names are the unsplit model's
(``layers.5.mlp.linear_fc1.weight`` keeps its index on whichever rank holds it), and the copy is
saved under the tied weight's own name: a checkpoint written under one layout loads under any
other (see checkpoint.py).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B
from torch.distributed.tensor import DTensor

from bignlp_models import FamilySpec, lm_loss

from .recompute import canonical_name


def stage_layers(num_layers: int, pp: int, virtual: int = 1) -> list[range]:
    """Layers of each global stage ``s = chunk·PP + rank`` (Megatron's interleaved assignment)."""
    per_stage = num_layers // (pp * virtual)
    return [range(s * per_stage, (s + 1) * per_stage) for s in range(pp * virtual)]


def rank_stages(pp_rank: int, pp: int, virtual: int = 1) -> list[int]:
    """The global stages pipeline rank ``pp_rank`` runs, its parts in order."""
    return [chunk * pp + pp_rank for chunk in range(virtual)]


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _pack_target(labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    # The schedules split one target tensor into micro-batches: labels and the 0/1 mask side by side.
    return torch.cat([labels, loss_mask.to(labels.dtype)], dim=-1)


def _unpack_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels, mask = target.chunk(2, dim=-1)
    return labels, mask.float()


class Pipeline:
    """Runs this rank's model parts through their schedule: a training step (1F1B or interleaved 1F1B with
    gradient accumulation over ``num_micro_batches``) or a forward-only evaluation.

    Every rank of a pipeline calls the same method with the same whole local batch; the first
    stage uses the tokens, the last the labels. Losses come back from the last stage and are
    summed over the pipeline group, so every rank returns them.
    """

    def __init__(self, parts: list[nn.Module], spec: FamilySpec, mesh: DeviceMesh, device: torch.device,
                 num_micro_batches: int, *, virtual: int = 1, tied_stages: set[int] | None = None,
                 loss_context: Callable[[], AbstractContextManager] = nullcontext) -> None:
        self.parts = parts
        self.loss_context = loss_context  # the schedule runs the loss's forward and backward inside
        self.device = device
        self.pp_group = mesh["pp"].get_group()
        pp = mesh["pp"].size()
        self.num_stages = pp * virtual
        self.stages = rank_stages(mesh["pp"].get_local_rank(), pp, virtual)
        self.num_micro_batches = num_micro_batches
        self._loss_divisor = num_micro_batches
        stages = [PipelineStage(part, s, self.num_stages, device, group=self.pp_group)
                  for part, s in zip(parts, self.stages)]
        if len(stages) == 1:
            self.schedule = Schedule1F1B(stages[0], num_micro_batches, loss_fn=self._loss, scale_grads=False)
        else:
            self.schedule = ScheduleInterleaved1F1B(stages, num_micro_batches, loss_fn=self._loss, scale_grads=False)
        # The stages holding a tied weight or a copy of it (default: the first and the last, as GPT's).
        holders = {0, self.num_stages - 1} if tied_stages is None else tied_stages
        self.embedding_group = _embedding_group(mesh, sorted({s % pp for s in holders}))
        # A tied weight and its copies, as this rank holds them (one tensor per holding rank); the copies
        # are left out of the gradient norm (counted once, as the weight they copy).
        named = {canonical_name(n): p for part in parts for n, p in part.named_parameters()}
        self.tied_copy = [named[c] for c in spec.tied_parameters if c in named]
        originals = [named[w] for w in dict.fromkeys(spec.tied_parameters.values()) if w in named]
        self.tied = list({id(p): p for p in self.tied_copy + originals}.values())
        if self.embedding_group is None:
            self.tied = []

    @property
    def has_first_stage(self) -> bool:
        return 0 in self.stages

    @property
    def has_last_stage(self) -> bool:
        return self.num_stages - 1 in self.stages

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Training: the mean over micro-batches, as (loss / n).backward() accumulates without a pipeline.
        return lm_loss(logits, *_unpack_target(target)) / self._loss_divisor

    def _run(self, batch: dict, run: Callable) -> torch.Tensor:
        """``batch``: the task's ``pipeline_batch``: ``inputs`` (the first stage's positional inputs),
        ``kwargs`` (keyword inputs every stage gets), ``labels`` and ``loss_mask`` (the last stage's)."""
        args = ()
        if self.has_first_stage:
            args = tuple(t.to(self.device) for t in batch["inputs"])
        kwargs = {key: value.to(self.device) for key, value in batch.get("kwargs", {}).items()}
        target = None
        if self.has_last_stage:
            target = _pack_target(batch["labels"].to(self.device), batch["loss_mask"].to(self.device))
        losses: list[torch.Tensor] = []  # the last stage's, one per micro-batch
        with self.loss_context():
            run(*args, target=target, losses=losses, **kwargs)
        if losses:
            total = torch.stack([loss.detach().float() for loss in losses]).sum() * self._loss_divisor
        else:
            total = torch.zeros((), device=self.device)
        dist.all_reduce(total, group=self.pp_group)  # only the last stage's is non-zero
        return total

    def train_step(self, batch: dict) -> torch.Tensor:
        """Forward and backward over the whole local batch; return the mean micro-batch loss (all ranks).

        Gradients are accumulated over the micro-batches (FSDP reduces them once, after the last),
        then the tied embedding's two gradients are summed.
        """
        self._loss_divisor = self.num_micro_batches
        total = self._run(batch, self.schedule.step)
        self.sum_tied_gradients()
        return total

    @torch.no_grad()
    def eval_sum(self, batch: dict) -> torch.Tensor:
        """The sum of the micro-batch losses of ``batch``, forward only (all ranks)."""
        self._loss_divisor = 1
        return self._run(batch, self.schedule.eval)

    @torch.no_grad()
    def sum_tied_gradients(self) -> None:
        """Sum a tied weight's gradient (first stage) and its copy's (last stage)."""
        if self.embedding_group is None:
            return
        for tied in self.tied:
            if tied.grad is None:
                tied.grad = torch.zeros_like(tied)
            elif isinstance(tied.grad, DTensor) and tied.grad.placements != tied.placements:
                # A vocabulary-parallel embedding's gradient comes back replicated over the TP ranks: keep
                # this rank's rows (a local slice, no communication), as the last stage's copy holds them.
                tied.grad = tied.grad.redistribute(tied.device_mesh, tied.placements)
            dist.all_reduce(_local(tied.grad), group=self.embedding_group)


def _embedding_group(mesh: DeviceMesh, pp_ranks: list[int]) -> dist.ProcessGroup | None:
    """The process group of this rank's peers on the pipeline ranks ``pp_ranks`` (same dp and tp coordinates):
    those holding a tied weight or a copy of it.

    Every rank creates every such group (``new_group`` is collective); None for ranks outside, or when
    one pipeline rank holds them all.
    """
    if len(pp_ranks) < 2:
        return None
    ranks = mesh.mesh  # (pp, dp, tp) global ranks
    mine = None
    for dp in range(ranks.shape[1]):
        for tp in range(ranks.shape[2]):
            members = [int(ranks[r, dp, tp]) for r in pp_ranks]
            group = dist.new_group(members)
            if dist.get_rank() in members:
                mine = group
    return mine
