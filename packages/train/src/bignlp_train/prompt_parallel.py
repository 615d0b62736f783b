"""Prompt learning over several processes: data parallelism, and a GPT base under tensor/pipeline parallelism.

The learned prompts are small and replicated on every rank; what is split is the work and the frozen base:

- data parallelism: each replica takes its slice of every global batch; after the step's backward the
  prompt gradients are averaged over the replicas (``reduce_prompt_gradients``), so every replica
  takes the same update and the optimizer state stays replicated (rank 0's resume point is everyone's);
- tensor parallelism (GPT): the base is built and sharded as pretraining shards it (the family's
  tensor-parallel plan, vocabulary-parallel embedding and output layer) and its weights are read from
  the base's ``dcp/`` (``load_frozen_parts``); no FSDP over the replicas: a frozen base has no gradient
  or optimizer state to shard, and Megatron's prompt learning keeps it replicated too;
- pipeline parallelism (GPT): the first stage holds the embedding and so uses the table; the loop's
  1F1B schedule runs the micro-batches, padded to one length (the schedule's buffers are sized once).

The base keeps its padded vocabulary here (one process drops the padding rows, ``load_model``): the
padding logits are masked out before the loss (``mask_padding_logits``), so the softmax runs over the
real tokens only, as one process computes it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from bignlp_contracts import ConfigError
from bignlp_models import lm_loss
from bignlp_models.prompt import PromptTable, input_embedding_owner

from .parallelize import apply_tp


def check_prompt_layout(*, tp: int, pp: int, world_size: int, family: str, arch: dict, global_batch_size: int,
                        micro_batch_size: int) -> int:
    """The data-parallel size of ``world_size`` processes (``ConfigError``, one line, for a layout that does not
    fit). ``arch``: the base's ``summary.model``."""
    if family != "gpt" and (tp > 1 or pp > 1):
        key = "tensor_model_parallel_size" if tp > 1 else "pipeline_model_parallel_size"
        raise ConfigError(f"model.{key}={tp if tp > 1 else pp}: prompt learning splits only a GPT base over "
                          f"tensor/pipeline ranks, this base is {family}",
                          hint="set model.tensor_model_parallel_size=1 and model.pipeline_model_parallel_size=1; "
                               "--nproc-per-node N then runs N data-parallel replicas")
    if world_size % (tp * pp):
        raise ConfigError(f"world size {world_size} is not a multiple of model.tensor_model_parallel_size={tp} × "
                          f"model.pipeline_model_parallel_size={pp} (world size = TP × PP × DP)",
                          hint=f"start a multiple of {tp * pp} processes, or change the parallel sizes")
    heads, layers = int(arch.get("num_attention_heads", 1)), int(arch.get("num_layers", 1))
    if heads % tp:
        raise ConfigError(f"model.tensor_model_parallel_size={tp} does not divide the base's {heads} attention heads",
                          hint="each tensor-parallel rank computes whole heads: pick a TP size that divides them")
    if layers % pp:
        raise ConfigError(f"model.pipeline_model_parallel_size={pp} does not divide the base's {layers} layers",
                          hint="each pipeline stage holds the same number of layers")
    dp = world_size // (tp * pp)
    if global_batch_size % (micro_batch_size * dp):
        raise ConfigError(f"model.global_batch_size={global_batch_size} is not a multiple of "
                          f"model.micro_batch_size={micro_batch_size} × data-parallel size {dp}",
                          hint="keep GBS and pick a process count or micro-batch size that divides it")
    if pp > 1 and global_batch_size // (micro_batch_size * dp) < pp:
        raise ConfigError(f"{global_batch_size // (micro_batch_size * dp)} micro-batches per step cannot fill {pp} "
                          f"pipeline stages (model.pipeline_model_parallel_size={pp})",
                          hint=f"raise model.global_batch_size to at least {pp * micro_batch_size * dp}")
    return dp


def load_frozen_parts(base_path, manifest, spec, device: torch.device, mesh: DeviceMesh,
                      log: Callable[[str], None]) -> tuple[list[nn.Module], object]:
    """This rank's frozen part of the base: split into pipeline stages, tensor-parallel as in pretraining,
    weights read from the base's ``dcp/`` (resharded), eval mode, no parameter requiring a gradient.

    Returns the parts (one: this rank's stage) and the architecture they were built with (padded vocabulary).
    """
    from .finetune import load_base_weights

    arch = spec.config_class(**manifest.summary["model"])
    tp, pp = mesh["tp"].size(), mesh["pp"].size()
    if arch.vocab_size % tp:  # a vocabulary padded for another TP size: re-padded on load (load_base_weights)
        arch = dataclasses.replace(arch, vocab_size=-(-arch.vocab_size // tp) * tp)
    model = spec.build_meta(arch)
    parts = [model]
    if pp > 1:
        stage = mesh["pp"].get_local_rank()
        parts = spec.split_for_pipeline(model, spec.pipeline_stages(arch, pp, 1, None), pp, [stage])
    for part in parts:
        if tp > 1:
            apply_tp(part, spec, mesh["tp"], sequence_parallel=False)
        part.to_empty(device=device)
        with torch.no_grad():
            for p in part.parameters():
                p.zero_()  # rows a re-pad leaves unloaded stay zero: their (masked) logits stay finite
    load_base_weights(base_path, parts, spec, log)
    for part in parts:
        part.eval().requires_grad_(False)
    return parts, arch


class VirtualTokenEmbedding(nn.Module):
    """A token embedding module (vocabulary-parallel or not) that also takes virtual token ids.

    Ids below ``vocab_size`` go through ``inner`` as before; id ``vocab_size + r`` is row ``r`` of the
    prompt table. The rows are substituted *after* ``inner``, i.e. after the vocabulary-parallel
    embedding has summed its ranks' lookups: every TP rank then holds the same replicated table, computes
    the same rows and receives the same gradient for them, exactly as one process does. (Adding the
    rows on one TP rank before the sum would give the same forward, but only that rank would see their
    gradient, and the other ranks' copies would drift unless it were broadcast.)
    """

    def __init__(self, inner: nn.Module, table: PromptTable, vocab_size: int) -> None:
        super().__init__()
        self.inner = inner
        self.table = table
        self.vocab_size = vocab_size

    @property
    def weight(self) -> torch.Tensor:
        """The token embedding's weight (GPT's output layer is tied to it)."""
        return self.inner.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        virtual = ids >= self.vocab_size
        words = self.inner(ids.masked_fill(virtual, 0))
        if not bool(virtual.any()):
            return words
        rows = self.table.rows().to(words.dtype)
        prompts = F.embedding((ids - self.vocab_size).clamp(min=0), rows)
        return torch.where(virtual.unsqueeze(-1), prompts, words)


def install_virtual_tokens(part: nn.Module, table: PromptTable, vocab_size: int) -> None:
    """Let the first stage's ``part`` take virtual token ids (after its weights are loaded: names change)."""
    owner = input_embedding_owner(part)
    owner.word_embeddings = VirtualTokenEmbedding(owner.word_embeddings, table, vocab_size)


def mask_padding_logits(logits: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """Logits of the real tokens only: the padding columns cut (plain logits) or set to -inf (vocabulary-parallel
    logits, each rank holding an equal slice of the columns), so the softmax ignores them."""
    if not isinstance(logits, DTensor):
        return logits[..., :vocab_size]
    if len(logits.placements) != 1 or logits.placements[0] != Shard(logits.dim() - 1):
        raise ValueError(f"expected logits split along the vocabulary, got {logits.placements}")
    local = logits.to_local()
    start = logits.device_mesh.get_local_rank() * local.shape[-1]
    columns = torch.arange(start, start + local.shape[-1], device=local.device)
    masked = local.masked_fill(columns >= vocab_size, float("-inf"))
    return DTensor.from_local(masked, logits.device_mesh, logits.placements, run_check=False)


def mask_padding_on_output(part: nn.Module, vocab_size: int) -> None:
    """Apply ``mask_padding_logits`` to what the last stage's ``part`` returns (the pipeline's loss sees it too)."""
    part.register_forward_hook(lambda _module, _args, out: mask_padding_logits(out, vocab_size))


@torch.no_grad()
def reduce_prompt_gradients(params: list[nn.Parameter], groups: list[tuple[dist.ProcessGroup, int]]) -> None:
    """Average the prompt gradients over each ``(group, size)``: the data-parallel replicas (each took its
    slice of the batch) and the tensor-parallel ranks (equal already; averaged so they are bit-identical)."""
    if not params or not groups:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])
    for group, size in groups:
        dist.all_reduce(flat, group=group)
        flat /= size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad.copy_(flat[offset:offset + n].view_as(p.grad))
        offset += n


@torch.no_grad()
def pipeline_eval_loss(part: nn.Module, batch: dict, *, mesh: DeviceMesh, device: torch.device, hidden_size: int,
                       loss_context: Callable) -> torch.Tensor:
    """A micro-batch's mean loss through the pipeline stages, forward only (every pipeline rank gets it).

    Evaluation batches vary in size and length, which the training schedule's fixed buffers do not take:
    here each stage receives its input, runs its part and sends the output on, one micro-batch at a time.
    """
    group = mesh["pp"].get_group()
    stage, num_stages = mesh["pp"].get_local_rank(), mesh["pp"].size()
    tokens = batch["tokens"].to(device)
    if stage == 0:
        x = part(tokens)
    else:
        x = torch.empty(*tokens.shape, hidden_size, device=device)
        dist.recv(x, src=dist.get_global_rank(group, stage - 1), group=group)
        x = part(x)
    loss = torch.zeros((), device=device)
    if stage < num_stages - 1:
        dist.send(x.contiguous(), dst=dist.get_global_rank(group, stage + 1), group=group)
    else:
        with loss_context():
            loss = lm_loss(x, batch["labels"].to(device), batch["loss_mask"].to(device)).detach().float()
    dist.all_reduce(loss, group=group)  # only the last stage's is non-zero
    return loss
