"""Pipeline parallelism: the GPT of model.py cut into stages from outside, run by torch's pipelining schedules.

The layers are split evenly over ``PP × virtual`` model chunks in Megatron's round-robin
order: chunk ``c`` of pipeline rank ``r`` is global stage ``s = c·PP + r`` and holds layers
``[s·L/(PP·v), (s+1)·L/(PP·v))``. Stage 0 also holds the embeddings; the last stage the
final LayerNorm and the output layer. PP=2, v=2, 8 layers: rank 0 holds layers 0-1 and 4-5,
rank 1 layers 2-3 and 6-7. One chunk per rank runs ``Schedule1F1B``, several run
``ScheduleInterleaved1F1B``.

The output layer is tied to the token embedding, which lives on the first stage. As in
Megatron, the last stage holds a copy (``output_layer.weight``), initialised from the same
random draw; after each backward the two gradients are summed over the first and last
stages, so both copies take the same update and stay equal: the math of the unsplit model.

Parameter names are the unsplit model's (``layers.5.mlp.linear_fc1.weight`` keeps its index on
whichever rank holds it), and the copy is saved under the embedding's name, so a checkpoint
written under one layout loads under any other (see checkpoint.py).

Per chunk the order of ``build_parallel_model`` applies: TP(+SP) → activation recomputation →
FSDP2 over the mesh's "dp" dim, then materialise and init as on one device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleInterleaved1F1B
from torch.distributed.tensor import DTensor, distribute_tensor

from .model import GPT, GPTConfig, lm_loss
from .parallelize import Recompute, apply_ac, apply_fsdp, apply_tp

TIED_NAME = "embedding.word_embeddings.weight"  # the tied weight's name in the unsplit model
COPY_NAME = "output_layer.weight"  # its copy on the last stage


def stage_layers(num_layers: int, pp: int, virtual: int = 1) -> list[range]:
    """Layers of each global stage ``s = chunk·PP + rank`` (Megatron's interleaved assignment)."""
    per_stage = num_layers // (pp * virtual)
    return [range(s * per_stage, (s + 1) * per_stage) for s in range(pp * virtual)]


def rank_stages(pp_rank: int, pp: int, virtual: int = 1) -> list[int]:
    """The global stages pipeline rank ``pp_rank`` runs, its chunks in order."""
    return [chunk * pp + pp_rank for chunk in range(virtual)]


class OutputLayer(nn.Module):
    """The last stage's copy of the tied token embedding, used as the output projection."""

    def __init__(self, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(vocab_size, hidden_size))


class PipelineChunk(nn.Module):
    """One model chunk: [embedding] → its layers → [final LayerNorm → logits]; what a PipelineStage runs.

    Holds the very submodules of the meta-built GPT (no copies), so TP, recomputation and
    FSDP applied to those act on the chunk.
    """

    def __init__(self, gpt: GPT, layers: Iterable[int], *, first: bool, last: bool,
                 output_layer: OutputLayer | None) -> None:
        super().__init__()
        self.embedding = gpt.embedding if first else None
        self.layers = nn.ModuleList(gpt.layers[i] for i in layers)
        self.final_layernorm = gpt.final_layernorm if last else None
        self.output_layer = output_layer if last else None

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.embedding is not None:  # x: token ids
            x = self.embedding(x, position_ids)
        for layer in self.layers:
            x = layer(x, attention_mask)
        if self.final_layernorm is not None:
            x = F.linear(self.final_layernorm(x), self.output_layer.weight)  # PP > 1: never the first stage
        return x


class PipelineModel(nn.Module):
    """What one pipeline rank holds, under the unsplit model's parameter names.

    The module to hand to the optimizer, ``state_dict``, ``train()``/``eval()`` and gradient
    clipping. ``chunks`` (not submodules, so no name appears twice) are what the schedule runs.
    """

    def __init__(self, gpt: GPT, chunks: list[PipelineChunk], stages: list[int], num_stages: int) -> None:
        super().__init__()
        self.cfg: GPTConfig = gpt.cfg
        first = next((c for c in chunks if c.embedding is not None), None)
        last = next((c for c in chunks if c.final_layernorm is not None), None)
        if first is not None:
            self.embedding = first.embedding
        self.layers = nn.ModuleDict({str(i): gpt.layers[i] for s in stages
                                     for i in stage_layers(gpt.cfg.num_layers, num_stages)[s]})
        if last is not None:
            self.final_layernorm = last.final_layernorm
            self.output_layer = last.output_layer
        self.chunks = list(chunks)  # a plain list: not registered
        self.stages = list(stages)
        self.num_stages = num_stages

    @property
    def has_first_stage(self) -> bool:
        return 0 in self.stages

    @property
    def has_last_stage(self) -> bool:
        return self.num_stages - 1 in self.stages

    def forward(self, *args, **kwargs):
        raise RuntimeError("a pipeline-parallel model runs through its schedule (Pipeline.train_step)")


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def build_pipeline_model(cfg: GPTConfig, device: torch.device, mesh: DeviceMesh, *, virtual: int = 1,
                         sequence_parallel: bool = False, recompute: Recompute | None = None,
                         param_dtype: torch.dtype | None = None) -> PipelineModel:
    """This rank's chunks of the GPT over ``mesh`` ("pp", "dp", "tp"), initialised as on one device.

    ``param_dtype`` (bf16): FSDP's compute dtype, on any DP size (see ``apply_fsdp``); master weights stay fp32.
    """
    pp, pp_rank = mesh["pp"].size(), mesh["pp"].get_local_rank()
    num_stages = pp * virtual
    stages = rank_stages(pp_rank, pp, virtual)
    with torch.device("meta"):
        gpt = GPT(cfg)
        output_layer = OutputLayer(cfg.vocab_size, cfg.hidden_size) if num_stages - 1 in stages else None
    tp_mesh, dp_mesh = mesh["tp"], mesh["dp"]
    if tp_mesh.size() > 1:
        apply_tp(gpt, tp_mesh, sequence_parallel)  # on meta: the layers of other ranks cost nothing
    layers = stage_layers(cfg.num_layers, pp, virtual)
    chunks = [PipelineChunk(gpt, layers[s], first=s == 0, last=s == num_stages - 1, output_layer=output_layer)
              for s in stages]
    per_chunk = dataclasses.replace(recompute or Recompute(), num_stages=1)  # "block"/"uniform": per chunk
    for chunk in chunks:
        apply_ac(chunk, per_chunk)
        if dp_mesh.size() > 1 or param_dtype is not None:
            apply_fsdp(chunk, dp_mesh, param_dtype=param_dtype)
        chunk.to_empty(device=device)
    model = PipelineModel(gpt, chunks, stages, num_stages)
    _init_like_one_device(gpt, model, device)
    return model


@torch.no_grad()
def _init_like_one_device(gpt: GPT, model: PipelineModel, device: torch.device) -> None:
    """``GPT.init_weights`` over the whole model: every tensor is drawn at its full shape in the
    single-device order, each rank keeps the slices it holds (and the last stage the tied weight's
    draw for its output-layer copy), so the weights equal one process's."""
    copy = getattr(model, "output_layer", None)

    def fill(param: torch.Tensor, init_: Callable[[torch.Tensor], object]) -> None:
        targets = [] if _local(param).is_meta else [param]
        if copy is not None and param is gpt.embedding.word_embeddings.weight:
            targets.append(copy.weight)
        full = torch.empty(param.shape, dtype=param.dtype, device=device)
        init_(full)  # drawn even when not kept: the next tensor's draw starts where one device's would
        for target in targets:
            if isinstance(target, DTensor):
                target.copy_(distribute_tensor(full, target.device_mesh, target.placements, src_data_rank=None))
            else:
                target.copy_(full)

    gpt.init_weights(fill=fill)


def _pack_target(labels: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    # The schedules split one target tensor into micro-batches: labels and the 0/1 mask side by side.
    return torch.cat([labels, loss_mask.to(labels.dtype)], dim=-1)


def _unpack_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    labels, mask = target.chunk(2, dim=-1)
    return labels, mask.float()


class Pipeline:
    """Runs a ``PipelineModel`` through its schedule: a training step (1F1B or interleaved 1F1B with
    gradient accumulation over ``num_micro_batches``) or a forward-only evaluation.

    Every rank of a pipeline calls the same method with the same whole local batch; the first
    stage uses the tokens, the last the labels. Losses come back from the last stage and are
    summed over the pipeline group, so every rank returns them.
    """

    def __init__(self, model: PipelineModel, mesh: DeviceMesh, device: torch.device, num_micro_batches: int) -> None:
        self.model = model
        self.device = device
        self.pp_group = mesh["pp"].get_group()
        self.num_micro_batches = num_micro_batches
        self._loss_divisor = num_micro_batches
        stages = [PipelineStage(chunk, s, model.num_stages, device, group=self.pp_group)
                  for chunk, s in zip(model.chunks, model.stages)]
        if len(stages) == 1:
            self.schedule = Schedule1F1B(stages[0], num_micro_batches, loss_fn=self._loss, scale_grads=False)
        else:
            self.schedule = ScheduleInterleaved1F1B(stages, num_micro_batches, loss_fn=self._loss, scale_grads=False)
        self.embedding_group = _embedding_group(mesh)
        # the last stage's copy of the tied weight: left out of the gradient norm (counted once, as the embedding)
        self.tied_copy = [p for name, p in model.named_parameters() if name == COPY_NAME]

    def _loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Training: the mean over micro-batches, as (loss / n).backward() accumulates without a pipeline.
        return lm_loss(logits, *_unpack_target(target)) / self._loss_divisor

    def _run(self, batch: dict, run: Callable) -> torch.Tensor:
        args = ()
        if self.model.has_first_stage:
            args = (batch["tokens"].to(self.device), batch["position_ids"].to(self.device))
        kwargs = {}
        if batch.get("attention_mask") is not None:
            kwargs["attention_mask"] = batch["attention_mask"].to(self.device)
        target = None
        if self.model.has_last_stage:
            target = _pack_target(batch["labels"].to(self.device), batch["loss_mask"].to(self.device))
        losses: list[torch.Tensor] = []  # the last stage's, one per micro-batch
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
        """Sum the token embedding's gradient (first stage) and its output copy's (last stage)."""
        if self.embedding_group is None:
            return
        tied = self.model.embedding.word_embeddings.weight if self.model.has_first_stage else (
            self.model.output_layer.weight)
        if tied.grad is None:
            tied.grad = torch.zeros_like(tied)
        dist.all_reduce(_local(tied.grad), group=self.embedding_group)


def _embedding_group(mesh: DeviceMesh) -> dist.ProcessGroup | None:
    """The process group of this rank's first- and last-stage peers (same dp and tp coordinates).

    Every rank creates every such group (``new_group`` is collective); None for ranks between.
    """
    ranks = mesh.mesh  # (pp, dp, tp) global ranks
    pp = ranks.shape[0]
    mine = None
    for dp in range(ranks.shape[1]):
        for tp in range(ranks.shape[2]):
            members = [int(ranks[0, dp, tp]), int(ranks[pp - 1, dp, tp])]
            group = dist.new_group(members)
            if dist.get_rank() in members:
                mine = group
    return mine
