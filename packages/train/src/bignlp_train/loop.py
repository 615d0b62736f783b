"""The one training loop every task runs: step, clip, update, validate, checkpoint, stop, resume.

A task (pretraining now; fine-tuning and prompt learning later) plugs in through the ``Task``
hooks: its micro-batches, its loss, its validation and test metrics and how it saves a
checkpoint. The loop owns what is the same for all of them: the learning-rate schedule,
gradient accumulation (FSDP's no_sync) or the pipeline schedule, clipping by the global
gradient norm, the NaN stop, the progress line and metrics, Slurm's signals and
``trainer.max_time``, and when to validate and save. Everything a step depends on (weights,
optimizer moments, step, data position, RNG) is in the checkpoint, so a resumed run repeats
an uninterrupted one bit for bit.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.distributed as dist
from torch import nn

from bignlp_contracts import BigNLPError

from .checkpoint import TrainState
from .config import TrainConfig
from .memory import measure_step, record_memory
from .optim import Optimizers, lr_at, set_lr
from .parallelize import clip_grad_norm_
from .pipeline import Pipeline
from .progress import Progress
from .runtime import StopSignals


class TrainingDivergedError(BigNLPError):
    """The loss or gradient norm became NaN/inf: the run stops without saving. Exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class DataParallel:
    """This rank's place among the data-parallel replicas (group None: one replica)."""

    rank: int = 0
    size: int = 1
    group: dist.ProcessGroup | None = None

    def mean(self, total: torch.Tensor, count: int) -> float:
        """Mean over all replicas of a per-rank sum of ``count`` values (one host sync)."""
        if self.group is not None:
            total = total.clone()
            dist.all_reduce(total, group=self.group)
        return total.item() / (count * self.size)


class Task(Protocol):
    """What one kind of training plugs into the loop.

    Optional: ``reduce_gradients()``, called after a step's backward and before clipping, for a task whose
    trainable parameters are replicated outside FSDP (prompt learning averages its prompts' over the ranks).
    """

    def train_batches(self, consumed_samples: int, num_samples: int) -> Iterator[dict]:
        """This rank's training micro-batches from ``consumed_samples`` on, ``num_samples`` (all ranks) in all."""

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The mean loss of one micro-batch (no pipeline: ``model`` is the whole model)."""

    def pipeline_batch(self, micro_batches: list[dict]) -> dict:
        """Micro-batches as one batch for the pipeline schedule, which splits it again."""

    def validate(self) -> dict[str, float]:
        """Validation metrics (``val_loss``, a task metric); empty when the task has no validation data."""

    def test(self) -> dict[str, float]:
        """Test metrics after the last step; empty when there is no test data."""

    def save(self, state: TrainState, metrics: dict[str, float | None]) -> Path:
        """Write a checkpoint of ``state`` (every rank calls it) and return its directory."""


@dataclass(frozen=True)
class LoopResult:
    """How the loop ended."""

    state: TrainState
    initial_val_loss: float | None
    final_val_loss: float | None
    test_loss: float | None
    stopped_by_max_time: bool
    stopped_by_signal: str | None


def parameters(parts: list[nn.Module]) -> list[nn.Parameter]:
    """Every parameter of a rank's model parts."""
    return [p for part in parts for p in part.parameters()]


def train_step(task: Task, parts: list[nn.Module], optimizer: Optimizers, batches: Iterator[dict], *,
               num_micro_batches: int, clip: float, device: torch.device, dp: DataParallel = DataParallel(),
               pipeline: Pipeline | None = None,
               loss_context: Callable[[], AbstractContextManager] = nullcontext) -> tuple[float, float]:
    """One optimizer step: accumulate gradients over this rank's ``num_micro_batches``, clip, update.

    Each micro-batch loss is a mean, scaled by 1/local count; FSDP averages the
    gradients over the DP ranks, so the step sees the mean over all GBS/MBS
    micro-batches, as one process would. Under FSDP only the last micro-batch's backward
    reduce-scatters (the others accumulate locally: Megatron's no_sync). With a ``pipeline``
    its schedule runs the micro-batches (1F1B) and the norm spans all stages. Returns the
    mean loss and the global gradient norm before clipping. A NaN/inf loss or gradient norm
    skips the update (every rank sees the same values, so all skip). ``loss_context``: what the loss's
    forward and backward run under (``parallelize.loss_context``).
    """
    n = num_micro_batches
    if pipeline is not None:
        loss_sum = pipeline.train_step(task.pipeline_batch([next(batches) for _ in range(n)]))
    else:
        model = parts[0]  # without a pipeline: the whole model
        sync = getattr(model, "set_requires_gradient_sync", None)  # an FSDP root: reduce on the last only
        loss_sum = torch.zeros((), device=device)
        for i in range(n):
            if sync is not None:
                sync(i == n - 1)
            with loss_context():
                loss = task.loss(model, next(batches))
                (loss / n).backward()
            loss_sum += loss.detach()
    reduce = getattr(task, "reduce_gradients", None)  # a task's parameters outside FSDP (prompt learning's)
    if reduce is not None:
        reduce()
    if pipeline is not None:
        grad_norm = clip_grad_norm_(parameters(parts), clip, pipeline_group=pipeline.pp_group,
                                    uncounted=pipeline.tied_copy).item()
    else:
        grad_norm = clip_grad_norm_(parameters(parts), clip).item()  # global: the same on every rank
    mean_loss = dp.mean(loss_sum, n)
    if math.isfinite(mean_loss) and math.isfinite(grad_norm):  # else the caller stops the run: no update
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def run_loop(task: Task, cfg: TrainConfig, *, parts: list[nn.Module], optimizer: Optimizers,
             pipeline: Pipeline | None, state: TrainState, progress: Progress, device: torch.device,
             dp: DataParallel, mesh, started: float, resumed: bool, latest: Path | None,
             log: Callable[[str], None],
             loss_context: Callable[[], AbstractContextManager] = nullcontext) -> LoopResult:
    """Train from ``state`` to ``trainer.max_steps`` (or until time or a signal says stop)."""
    trainer, em = cfg.trainer, cfg.exp_manager
    initial_val = final_val = None
    if not resumed:
        metrics = task.validate()
        if "val_loss" in metrics:
            initial_val = final_val = metrics["val_loss"]
            log(f"validation loss before training: {initial_val:.4f}")
            progress.record("validation", step=0, **metrics)

    stopped_by_time, signalled, train_loss = False, None, math.nan
    clip = trainer.gradient_clip_val if trainer.gradient_clip_val > 0 else math.inf
    gbs = cfg.model.global_batch_size
    batches = task.train_batches(state.consumed_samples, (trainer.max_steps - state.step) * gbs)
    progress.pause()
    first_step = state.step + 1  # logged too, so a (re)started run shows signs of life at once
    with StopSignals() as stop:  # SIGTERM/SIGUSR1 (Slurm preemption): checkpoint, then stop
        while state.step < trainer.max_steps:
            lr = lr_at(state.step, cfg)
            set_lr(optimizer, lr)
            with measure_step(parts, optimizer, device, enabled=state.step + 1 == trainer.memory_step) as memory:
                train_loss, grad_norm = train_step(task, parts, optimizer, batches,
                                                   num_micro_batches=cfg.model.num_micro_batches // dp.size,
                                                   clip=clip, device=device, dp=dp, pipeline=pipeline,
                                                   loss_context=loss_context)
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                progress.record("diverged", step=state.step + 1, loss=train_loss, grad_norm=grad_norm, lr=lr)
                raise _diverged(state.step + 1, train_loss, grad_norm, lr, latest, trainer.precision_name)
            state = TrainState(state.step + 1, state.consumed_samples + gbs)
            progress.step_done()
            if state.step % trainer.log_every_n_steps == 0 or state.step in (first_step, trainer.max_steps):
                progress.train_step(state.step, loss=train_loss, lr=lr, grad_norm=grad_norm,
                                    consumed_samples=state.consumed_samples)
            if memory is not None and memory.result is not None:  # every rank: the records gather all ranks
                record_memory(progress, state.step, memory.result, distributed=mesh is not None)
                progress.pause()  # the gather is not step time
            time_up = trainer.max_time_s is not None and time.monotonic() - started >= trainer.max_time_s
            reason = _rank0_decides(stop.received or (-1 if time_up else 0), mesh)  # signal number, -1: time, 0: go on
            stopped_by_time = reason == -1
            signalled = signal.Signals(reason).name if reason > 0 else None
            at_end = state.step == trainer.max_steps or reason != 0
            val_metrics: dict[str, float] = {}
            if state.step % trainer.val_check_interval == 0 or at_end:
                val_metrics = task.validate()
                if "val_loss" in val_metrics:
                    final_val = val_metrics["val_loss"]
                    progress.validation(state.step, final_val)
            every_n = em.checkpoint_callback_params.every_n_steps
            save_now = bool(val_metrics) or at_end or bool(every_n and state.step % every_n == 0)
            if em.create_checkpoint_callback and save_now:
                latest = task.save(state, {"train_loss": train_loss, "val_loss": val_metrics.get("val_loss"),
                                           **{k: v for k, v in val_metrics.items() if k != "val_loss"}})
                log(f"saved checkpoint {latest}")
            if val_metrics or save_now:
                progress.pause()  # keep validation and checkpoint time out of the step time
            if reason != 0:
                why = f"trainer.max_time={trainer.max_time} reached" if stopped_by_time else f"{signalled} received"
                log(f"{why} at step {state.step}/{trainer.max_steps}; run the same command again to continue")
                break

    if final_val is None:  # resumed at or past max_steps: still report where the model stands
        metrics = task.validate()
        if "val_loss" in metrics:
            final_val = metrics["val_loss"]
            progress.validation(state.step, final_val)
    test_loss = None
    if not stopped_by_time and signalled is None:
        metrics = task.test()
        if "test_loss" in metrics:
            test_loss = metrics["test_loss"]
            progress.validation(state.step, test_loss, split="test")
    return LoopResult(state, initial_val, final_val, test_loss, stopped_by_time, signalled)


def _diverged(step: int, loss: float, grad_norm: float, lr: float, latest: Path | None,
              precision: str) -> TrainingDivergedError:
    kept = f"checkpoints/latest still names {latest.name}" if latest else "no checkpoint was saved yet"
    hint = ("lower model.optim.lr or raise model.optim.sched.warmup_steps, check the data near this step "
            "(consumed_samples in metrics.jsonl)")
    hint += ", or try trainer.precision=32 (bf16 overflow)" if precision == "bf16" else ""
    return TrainingDivergedError(
        f"loss {loss} (grad norm {grad_norm}) at step {step} (lr {lr:.3e}): training diverged, stopped without "
        f"saving; {kept}", hint=f"{hint}; the same command resumes from the last good checkpoint")


def _rank0_decides(value: int, mesh) -> int:
    """Rank 0's value for everyone, so no rank stops while others step (clocks and signals differ)."""
    if mesh is None:
        return value
    box = torch.tensor([value], device=mesh.device_type)
    dist.broadcast(box, src=0)
    return int(box.item())
