"""The pretraining loop: validate, step, log, checkpoint, resume.

``pretrain(cfg)`` is the library entry point behind ``bignlp-train pretrain``.
One optimizer step = ``global_batch_size / micro_batch_size`` micro-batches of
gradient accumulation (split over the data-parallel ranks), then clipping by the
global gradient norm and AdamW at the scheduled learning rate. Everything a step
depends on (weights, optimizer moments, step, data position, RNG) is in the
checkpoint, so a resumed run repeats an uninterrupted one bit for bit.

Multi-process: every rank runs ``pretrain``; the layout comes from the process
environment (torchrun, srun or ``--nproc-per-node``) and the config's parallel sizes.
Rank 0 alone prints, writes metrics.jsonl and manifests.
"""

from __future__ import annotations

import dataclasses
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from bignlp_contracts import (
    ArtifactError,
    BigNLPError,
    ConfigError,
    discover_run_env,
    input_record,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    save_config,
)

from .affinity import apply_numa_mapping
from .checkpoint import TrainState, load_checkpoint, save_checkpoint, saved_vocab_size
from .config import TrainConfig, check_parallel_layout
from .data import (
    BlendEntry,
    TokenizerInfo,
    blend_tokenizer,
    build_datasets,
    check_splits,
    check_vocab,
    document_causal_mask,
    micro_batches,
    resolve_blend,
)
from .loggers import attach_loggers, check_loggers
from .model import GPT, GPTConfig, count_parameters, flops_per_token, lm_loss, num_parameters, padded_vocab_size
from .optim import build_optimizer, lr_at, set_lr
from .parallelize import Recompute, build_parallel_model, clip_grad_norm_
from .pipeline import Pipeline, build_pipeline_model
from .progress import Progress
from .runtime import (
    StopSignals,
    check_precision,
    device_name,
    init_distributed,
    peak_tflops,
    pick_device,
    seed_everything,
    shutdown_distributed,
)


class TrainingDivergedError(BigNLPError):
    """The loss or gradient norm became NaN/inf: the run stops without saving. Exit code 1."""

    exit_code = 1


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or time-limited) run reports."""

    run_dir: Path
    step: int
    max_steps: int
    initial_val_loss: float | None  # before the first step; None when resumed
    final_val_loss: float | None
    test_loss: float | None
    latest_checkpoint: Path | None
    resumed_from: Path | None
    stopped_by_max_time: bool
    num_parameters: int
    device: str
    rank: int = 0
    world_size: int = 1
    stopped_by_signal: str | None = None  # "SIGTERM" / "SIGUSR1" when a signal ended the run early

    @property
    def stopped_early(self) -> bool:
        """Stopped before ``max_steps`` (time limit or signal): the same command continues the run."""
        return self.step < self.max_steps and (self.stopped_by_max_time or self.stopped_by_signal is not None)


@dataclass(frozen=True)
class RunPlan:
    """What the checks before training found: run by the launcher before it starts workers, and by each."""

    entries: list[BlendEntry]
    tokenizer: TokenizerInfo
    arch: GPTConfig
    run_dir: Path
    resume_from: Path | None
    data_parallel_size: int


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


def gpt_config(cfg: TrainConfig, vocab_size: int) -> GPTConfig:
    """The architecture from the training config and the (unpadded) vocabulary size."""
    m = cfg.model
    return GPTConfig(
        vocab_size=padded_vocab_size(vocab_size, m.make_vocab_size_divisible_by, m.tensor_model_parallel_size),
        max_position_embeddings=m.max_position_embeddings,
        num_layers=m.num_layers,
        hidden_size=m.hidden_size,
        num_attention_heads=m.num_attention_heads,
        ffn_hidden_size=m.ffn_hidden_size or 4 * m.hidden_size,
        kv_channels=m.kv_channels or m.hidden_size // m.num_attention_heads,
        hidden_dropout=m.hidden_dropout,
        attention_dropout=m.attention_dropout,
        layernorm_epsilon=m.layernorm_epsilon,
        init_method_std=m.init_method_std,
    )


def recompute_of(cfg: TrainConfig) -> Recompute:
    """The activation-recomputation setting from ``model.activations_checkpoint_*``."""
    m = cfg.model
    return Recompute(m.activations_checkpoint_granularity, m.activations_checkpoint_method,
                     m.activations_checkpoint_num_layers, m.pipeline_model_parallel_size)


def find_resume_checkpoint(cfg: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from, following ``exp_manager.resume_*``."""
    em = cfg.exp_manager
    latest = latest_checkpoint(run_dir)
    if not em.resume_if_exists:
        if latest is not None:
            raise ConfigError(
                f"run directory {run_dir} already holds checkpoints and exp_manager.resume_if_exists=false",
                hint="set exp_manager.resume_if_exists=true to continue it, or choose another "
                "exp_manager.explicit_log_dir / exp_manager.name",
            )
        return None
    if latest is None and not em.resume_ignore_no_checkpoint:
        raise ArtifactError(
            f"{run_dir}: no checkpoint to resume from (exp_manager.resume_ignore_no_checkpoint=false)",
            hint="set exp_manager.resume_ignore_no_checkpoint=true to start fresh",
        )
    return latest


def check_resume_compatible(path: Path, arch: GPTConfig, entries: list[BlendEntry], tokenizer: TokenizerInfo,
                            model_vocab_size: int) -> None:
    """The checkpoint must hold the same architecture and vocabulary the config describes.

    The vocabulary is compared unpadded (``model_vocab_size``: model.tokenizer.vocab_size, else the
    dataset's): its padding follows the tensor-parallel size, and ``load_checkpoint`` re-pads a
    checkpoint saved with another.
    """
    _, manifest = read_checkpoint(path)
    saved_vocab = saved_vocab_size(manifest)
    want = model_vocab_size
    if saved_vocab != want:
        raise ArtifactError(
            f"dataset {entries[0].ref.prefix} has a vocabulary of {tokenizer.vocab_size} tokens (padded to "
            f"{arch.vocab_size}) but the model's in checkpoint {path} has {saved_vocab} tokens (the config's: {want})",
            hint="resume with data tokenized like the checkpoint's, or set model.tokenizer.vocab_size to match it",
        )
    saved = manifest.summary.get("model", {})
    # regularisation, unused on resume, or (vocab_size) the padding, re-made on load
    changeable = {"hidden_dropout", "attention_dropout", "init_method_std", "vocab_size"}
    for key, value in vars(arch).items():
        if key in saved and saved[key] != value and key not in changeable:
            raise ConfigError(
                f"checkpoint {path} was trained with {key}={saved[key]}, the config gives {value}",
                hint="resume with the architecture the checkpoint was written with",
            )


def _forward_loss(model: GPT, batch: dict, device: torch.device, eod_id: int,
                  reset_attention_mask: bool) -> torch.Tensor:
    tokens = batch["tokens"].to(device, non_blocking=True)
    mask = document_causal_mask(tokens, eod_id) if reset_attention_mask else None
    logits = model(tokens, batch["position_ids"].to(device, non_blocking=True), mask)  # bf16: FSDP casts
    return lm_loss(logits, batch["labels"].to(device, non_blocking=True), batch["loss_mask"].to(device))


def _whole_batch(mbs: list[dict], eod_id: int, reset_attention_mask: bool) -> dict:
    """Micro-batches side by side, as one batch the pipeline schedule splits again (same order)."""
    batch = {key: torch.cat([mb[key] for mb in mbs]) for key in ("tokens", "labels", "loss_mask", "position_ids")}
    if reset_attention_mask:
        batch["attention_mask"] = document_causal_mask(batch["tokens"], eod_id)
    return batch


def train_step(model: GPT, optimizer: torch.optim.Optimizer, batches, *, cfg: TrainConfig, device: torch.device,
               eod_id: int, clip: float, dp: DataParallel = DataParallel(),
               pipeline: Pipeline | None = None) -> tuple[float, float]:
    """One optimizer step: accumulate gradients over this rank's GBS/(MBS·DP) micro-batches, clip, update.

    Each micro-batch loss is a mean, scaled by 1/local count; FSDP averages the
    gradients over the DP ranks, so the step sees the mean over all GBS/MBS
    micro-batches, as one process would. Under FSDP only the last micro-batch's backward
    reduce-scatters (the others accumulate locally: Megatron's no_sync). With a ``pipeline``
    its schedule runs the micro-batches (1F1B) and the norm spans all stages. Returns the
    mean loss and the global gradient norm before clipping. A NaN/inf loss or gradient norm
    skips the update (every rank sees the same values, so all skip).
    """
    n = cfg.model.num_micro_batches // dp.size
    if pipeline is not None:
        mbs = [next(batches) for _ in range(n)]
        loss_sum = pipeline.train_step(_whole_batch(mbs, eod_id, cfg.model.data.reset_attention_mask))
        grad_norm = clip_grad_norm_(model.parameters(), clip, pipeline_group=pipeline.pp_group,
                                    uncounted=pipeline.tied_copy).item()
    else:
        sync = getattr(model, "set_requires_gradient_sync", None)  # an FSDP root: reduce on the last only
        loss_sum = torch.zeros((), device=device)
        for i in range(n):
            if sync is not None:
                sync(i == n - 1)
            loss = _forward_loss(model, next(batches), device, eod_id, cfg.model.data.reset_attention_mask)
            (loss / n).backward()
            loss_sum += loss.detach()
        grad_norm = clip_grad_norm_(model.parameters(), clip).item()  # global: the same on every rank
    mean_loss = dp.mean(loss_sum, n)
    if math.isfinite(mean_loss) and math.isfinite(grad_norm):  # else the caller stops the run: no update
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


@torch.no_grad()
def evaluate(model: GPT, dataset, *, num_batches: int, cfg: TrainConfig, device: torch.device,
             eod_id: int, dp: DataParallel = DataParallel(), pipeline: Pipeline | None = None) -> float:
    """Mean loss over the first ``num_batches`` global batches of ``dataset`` (always the same ones)."""
    model.eval()
    total, count = torch.zeros((), device=device), 0
    mbs = micro_batches(dataset, start=0, num_samples=num_batches * cfg.model.global_batch_size,
                        micro_batch_size=cfg.model.micro_batch_size, num_workers=cfg.model.data.num_workers,
                        seed=cfg.model.seed, data_parallel_rank=dp.rank, data_parallel_size=dp.size)
    if pipeline is not None:  # one global batch per schedule run
        n = cfg.model.num_micro_batches // dp.size
        for _ in range(num_batches):
            batch = _whole_batch([next(mbs) for _ in range(n)], eod_id, cfg.model.data.reset_attention_mask)
            total += pipeline.eval_sum(batch)
            count += n
    else:
        for mb in mbs:
            total += _forward_loss(model, mb, device, eod_id, cfg.model.data.reset_attention_mask)
            count += 1
    model.train()
    return dp.mean(total, count)


def plan_run(cfg: TrainConfig, world_size: int = 1) -> RunPlan:
    """Every check that needs neither a process group nor a model: layout, data, vocabulary, resume."""
    dp_size = check_parallel_layout(cfg.model, world_size)
    check_loggers(cfg)
    entries = resolve_blend(cfg.model)
    check_splits(cfg, entries)
    tokenizer = blend_tokenizer(entries)
    model_vocab = cfg.model.tokenizer.vocab_size or tokenizer.vocab_size
    check_vocab(entries, tokenizer, model_vocab, source=f"model.tokenizer.vocab_size={model_vocab}")
    arch = gpt_config(cfg, model_vocab)
    run_dir = cfg.exp_manager.run_dir()
    resume_from = find_resume_checkpoint(cfg, run_dir)
    if resume_from is not None:
        check_resume_compatible(resume_from, arch, entries, tokenizer, model_vocab)
    return RunPlan(entries, tokenizer, arch, run_dir, resume_from, dp_size)


def pretrain(cfg: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg`` to ``trainer.max_steps`` (or ``trainer.max_time``), resuming if asked; return the outcome.

    Joins the job's process group when started as one of several processes
    (torchrun, srun, ``--nproc-per-node``), after the cheap checks have passed.
    """
    started = time.monotonic()
    env = discover_run_env()
    plan = plan_run(cfg, env.world_size)
    if env.rank == 0:
        for leftover in remove_abandoned_checkpoint_writes(plan.run_dir):
            log(f"removed {leftover.name}: an unfinished checkpoint write of a killed run")
    device = pick_device(cfg.trainer, env.local_rank)
    apply_numa_mapping(cfg.numa_mapping, local_rank=env.local_rank, local_world_size=env.local_world_size,
                       gpu=device.type == "cuda")  # pin before any heavy work; each rank says so on stderr
    check_precision(device, cfg.trainer.precision_name)
    mesh = init_distributed(env, device, cfg.model.tensor_model_parallel_size, cfg.model.pipeline_model_parallel_size,
                            one_process_mesh=cfg.trainer.precision_name == "bf16")
    try:
        dp = DataParallel()
        if mesh is not None and mesh["dp"].size() > 1:
            dp = DataParallel(mesh["dp"].get_local_rank(), mesh["dp"].size(), mesh["dp"].get_group())
        result = _train(cfg, plan, device=device, mesh=mesh, dp=dp, rank=env.rank, started=started,
                        log=log if env.rank == 0 else lambda _line: None)
        return dataclasses.replace(result, rank=env.rank, world_size=env.world_size)
    finally:
        shutdown_distributed()


def _train(cfg: TrainConfig, plan: RunPlan, *, device: torch.device, mesh, dp: DataParallel, rank: int,
           started: float, log: Callable[[str], None]) -> TrainResult:
    precision = cfg.trainer.precision_name
    entries, tokenizer, arch, run_dir, resume_from = (plan.entries, plan.tokenizer, plan.arch, plan.run_dir,
                                                      plan.resume_from)
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.model.seed)
    pipeline = None
    param_dtype = torch.bfloat16 if precision == "bf16" else None  # FSDP's compute dtype
    if cfg.model.pipeline_model_parallel_size > 1:
        model = build_pipeline_model(arch, device, mesh, virtual=cfg.model.virtual_pipeline_size,
                                     sequence_parallel=cfg.model.sequence_parallel, recompute=recompute_of(cfg),
                                     param_dtype=param_dtype)
        pipeline = Pipeline(model, mesh, device, cfg.model.num_micro_batches // dp.size)
        n_params = count_parameters(arch)  # this rank holds a part
    else:
        model = build_parallel_model(arch, device, mesh, sequence_parallel=cfg.model.sequence_parallel,
                                     recompute=recompute_of(cfg), param_dtype=param_dtype)
        n_params = num_parameters(model)
    optimizer = build_optimizer(model, cfg, device)
    cache_dir = Path(cfg.model.data.index_mapping_dir or run_dir / "index_cache")
    train_ds, valid_ds, test_ds = build_datasets(cfg, entries, tokenizer, cache_dir)
    inputs = [input_record(a) for a in dict.fromkeys(e.ref.artifact_dir for e in entries)]

    state = TrainState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, model=model, optimizer=optimizer, log=log)
        log(f"resumed from {resume_from} (step {state.step}, {state.consumed_samples} samples consumed)")
    model.train()
    m, trainer = cfg.model, cfg.trainer
    pp_text = "" if pipeline is None else f", PP {m.pipeline_model_parallel_size}" + (
        f" × {m.virtual_pipeline_size} chunks (interleaved 1F1B)" if m.virtual_pipeline_size > 1 else " (1F1B)")
    layout = "" if mesh is None or mesh.size() == 1 else (f" × {mesh.size()} processes (DP {dp.size}, TP "
                                      f"{m.tensor_model_parallel_size}{', SP' if m.sequence_parallel else ''}"
                                      f"{pp_text})")
    log(f"model: {n_params:,} parameters, {arch.num_layers} layers, hidden {arch.hidden_size}, "
        f"vocab {arch.vocab_size} | device {device}{layout}, precision {precision} | run dir {run_dir}")
    progress = Progress(run_dir, max_steps=trainer.max_steps, tokens_per_step=m.global_batch_size * m.seq_length,
                        log=log, enabled=rank == 0, flops_per_token=flops_per_token(arch, m.seq_length),
                        num_devices=1 if mesh is None else mesh.size(), peak_tflops=peak_tflops(device_name(device)))
    if resume_from is not None:
        progress.forget_after(state.step)
    attach_loggers(progress, cfg, run_dir, enabled=progress.enabled,  # TensorBoard / W&B beside metrics.jsonl
                   resume_step=None if resume_from is None else state.step)
    do_val = valid_ds is not None and trainer.limit_val_batches > 0
    validate = lambda: evaluate(model, valid_ds, num_batches=trainer.limit_val_batches, cfg=cfg, device=device,
                                eod_id=tokenizer.eod_id, dp=dp, pipeline=pipeline)

    initial_val = final_val = None
    if resume_from is None and do_val:
        initial_val = final_val = validate()
        log(f"validation loss before training: {initial_val:.4f}")
        progress.record("validation", step=0, val_loss=initial_val)

    latest, stopped_by_time, signalled, train_loss = resume_from, False, None, math.nan
    max_time_s = trainer.max_time_s
    clip = trainer.gradient_clip_val if trainer.gradient_clip_val > 0 else math.inf
    batches = micro_batches(train_ds, start=state.consumed_samples,
                            num_samples=(trainer.max_steps - state.step) * m.global_batch_size,
                            micro_batch_size=m.micro_batch_size, num_workers=m.data.num_workers,
                            pin_memory=device.type == "cuda", seed=m.seed, data_parallel_rank=dp.rank,
                            data_parallel_size=dp.size)
    progress.pause()
    first_step = state.step + 1  # logged too, so a (re)started run shows signs of life at once
    with StopSignals() as stop:  # SIGTERM/SIGUSR1 (Slurm preemption): checkpoint, then stop
        while state.step < trainer.max_steps:
            lr = lr_at(state.step, cfg)
            set_lr(optimizer, lr)
            train_loss, grad_norm = train_step(model, optimizer, batches, cfg=cfg, device=device,
                                               eod_id=tokenizer.eod_id, clip=clip, dp=dp, pipeline=pipeline)
            if not (math.isfinite(train_loss) and math.isfinite(grad_norm)):
                progress.record("diverged", step=state.step + 1, loss=train_loss, grad_norm=grad_norm, lr=lr)
                raise _diverged(state.step + 1, train_loss, grad_norm, lr, latest, precision)
            state = TrainState(state.step + 1, state.consumed_samples + m.global_batch_size)
            progress.step_done()
            if state.step % trainer.log_every_n_steps == 0 or state.step in (first_step, trainer.max_steps):
                progress.train_step(state.step, loss=train_loss, lr=lr, grad_norm=grad_norm,
                                    consumed_samples=state.consumed_samples)
            time_up = max_time_s is not None and time.monotonic() - started >= max_time_s
            reason = _rank0_decides(stop.received or (-1 if time_up else 0), mesh)  # signal number, -1: time, 0: go on
            stopped_by_time = reason == -1
            signalled = signal.Signals(reason).name if reason > 0 else None
            at_end = state.step == trainer.max_steps or reason != 0
            val_now = do_val and (state.step % trainer.val_check_interval == 0 or at_end)
            every_n = cfg.exp_manager.checkpoint_callback_params.every_n_steps
            if val_now:
                final_val = validate()
                progress.validation(state.step, final_val)
            save_now = val_now or at_end or bool(every_n and state.step % every_n == 0)
            if cfg.exp_manager.create_checkpoint_callback and save_now:
                latest = save_checkpoint(
                    run_dir, cfg=cfg, model=model, optimizer=optimizer, state=state, gpt_config=arch,
                    tokenizer=tokenizer, inputs=inputs, num_parameters=n_params,
                    metrics={"train_loss": train_loss, "val_loss": final_val if val_now else None},
                )
                log(f"saved checkpoint {latest}")
            if val_now or save_now:
                progress.pause()  # keep validation and checkpoint time out of the step time
            if reason != 0:
                why = f"trainer.max_time={trainer.max_time} reached" if stopped_by_time else f"{signalled} received"
                log(f"{why} at step {state.step}/{trainer.max_steps}; run the same command again to continue")
                break

    if final_val is None and do_val:  # resumed at or past max_steps: still report where the model stands
        final_val = validate()
        progress.validation(state.step, final_val)
    test_loss = None
    if test_ds is not None and trainer.limit_test_batches > 0 and not stopped_by_time and signalled is None:
        test_loss = evaluate(model, test_ds, num_batches=trainer.limit_test_batches, cfg=cfg, device=device,
                             eod_id=tokenizer.eod_id, dp=dp, pipeline=pipeline)
        progress.validation(state.step, test_loss, split="test")
    return TrainResult(
        run_dir=run_dir, step=state.step, max_steps=trainer.max_steps, initial_val_loss=initial_val,
        final_val_loss=final_val, test_loss=test_loss, latest_checkpoint=latest_checkpoint(run_dir),
        resumed_from=resume_from, stopped_by_max_time=stopped_by_time, num_parameters=n_params, device=str(device),
        stopped_by_signal=signalled,
    )


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
