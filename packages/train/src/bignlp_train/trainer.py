"""Pretraining: the checks before a run, the model and data it builds, and the task it hands the loop.

``pretrain(cfg)`` is the library entry point behind ``bignlp-train pretrain``. The loop itself
(accumulate, clip, update, validate, checkpoint, stop; loop.py) is shared with every other
task; ``PretrainTask`` supplies Megatron datasets, the next-token loss and the validation loss.

Multi-process: every rank runs ``pretrain``; the layout comes from the process
environment (torchrun, srun or ``--nproc-per-node``) and the config's parallel sizes.
Rank 0 alone prints, writes metrics.jsonl and manifests, and holds the run directory's
lock, taken before anything is written (rundir.py, which also picks a verified checkpoint
to resume from).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bignlp_contracts import (
    ArtifactError,
    ConfigError,
    checkpoint_family,
    checkpoint_problem,
    checkpoint_vocab_size,
    discover_run_env,
    input_record,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    resume_candidates,
    save_config,
)
from bignlp_models import FamilySpec, get_family, lm_loss, num_parameters
from bignlp_models.masks import document_causal_mask

from .affinity import apply_numa_mapping
from .checkpoint import TrainState, load_checkpoint, save_checkpoint
from .config import TrainConfig, check_parallel_layout
from .data import (
    BlendEntry,
    TokenizerInfo,
    blend_tokenizer,
    build_datasets,
    check_splits,
    check_vocab,
    micro_batches,
    resolve_blend,
    split_sizes,
)
from .loggers import attach_loggers, check_loggers
from .loop import DataParallel, TrainingDivergedError, run_loop
from .optim import Optimizers
from .parallelize import build_model_parts, loss_context, tied_stages
from .pipeline import Pipeline
from .progress import Progress
from .recompute import Recompute
from .rundir import choose_resume_checkpoint, hold_run_dir
from .runtime import (
    check_precision,
    device_name,
    init_distributed,
    peak_tflops,
    pick_device,
    seed_everything,
    shutdown_distributed,
)

__all__ = ["PretrainTask", "RunPlan", "T5PretrainTask", "TrainResult", "TrainingDivergedError", "plan_run", "pretrain"]


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
    arch: Any  # the family's architecture config (bignlp_models), vocabulary padded
    run_dir: Path
    resume_from: Path | None
    data_parallel_size: int
    vocab_size: int  # the model's unpadded vocabulary (model.tokenizer.vocab_size, else the dataset's)


def recompute_of(cfg: TrainConfig) -> Recompute:
    """The activation-recomputation setting from ``model.activations_checkpoint_*``."""
    m = cfg.model
    return Recompute(m.activations_checkpoint_granularity, m.activations_checkpoint_method,
                     m.activations_checkpoint_num_layers)


def find_resume_checkpoint(cfg: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from, following ``exp_manager.resume_*``; reads, never writes.

    The newest candidate (``latest``, then older ones) that passes the cheap checks (a manifest,
    every file present with its size). ``pretrain`` then verifies contents, under the run's
    lock, and moves damaged ones aside (``rundir.choose_resume_checkpoint``).
    """
    em = cfg.exp_manager
    if not em.resume_if_exists:
        if latest_checkpoint(run_dir) is not None:
            raise ConfigError(
                f"run directory {run_dir} already holds checkpoints and exp_manager.resume_if_exists=false",
                hint="set exp_manager.resume_if_exists=true to continue it, or choose another "
                "exp_manager.explicit_log_dir / exp_manager.name",
            )
        return None
    candidates = resume_candidates(run_dir)
    if not candidates:
        if not em.resume_ignore_no_checkpoint:
            raise ArtifactError(
                f"{run_dir}: no checkpoint to resume from (exp_manager.resume_ignore_no_checkpoint=false)",
                hint="set exp_manager.resume_ignore_no_checkpoint=true to start fresh",
            )
        return None
    tried = []
    for candidate in candidates:
        problem = checkpoint_problem(candidate)
        if problem is None:
            return candidate
        tried.append(f"{candidate.name}: {problem}")
    raise ArtifactError(
        f"{run_dir / 'checkpoints'}: no intact checkpoint to resume from (tried {'; '.join(tried)})",
        hint="restore a good copy, or move the damaged ones away to start afresh",
    )


def check_resume_compatible(path: Path, arch: Any, entries: list[BlendEntry], tokenizer: TokenizerInfo,
                            model_vocab_size: int, *,
                            expected_family: str) -> None:
    """The checkpoint must hold the same architecture and vocabulary the config describes.

    The vocabulary is compared unpadded (``model_vocab_size``: model.tokenizer.vocab_size, else the
    dataset's): its padding follows the tensor-parallel size, and ``load_checkpoint`` re-pads a
    checkpoint saved with another.
    """
    _, manifest = read_checkpoint(path)
    family = checkpoint_family(manifest)
    if family != expected_family:
        raise ConfigError(f"checkpoint {path} holds a {family} model; this config trains a {expected_family} model",
                          hint="resume with the config the checkpoint was written with, or another run directory")
    saved_vocab = checkpoint_vocab_size(manifest)
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


class PretrainTask:
    """Pretraining as a ``loop.Task``: Megatron datasets, next-token loss, validation and test loss."""

    def __init__(self, cfg: TrainConfig, plan: RunPlan, *, parts: list[nn.Module], optimizer: Optimizers,
                 spec: FamilySpec, datasets: tuple, inputs: list[dict], device: torch.device, dp: DataParallel,
                 pipeline: Pipeline | None, num_parameters: int, mesh=None) -> None:
        self.cfg, self.plan, self.parts, self.optimizer, self.spec = cfg, plan, parts, optimizer, spec
        self.train_ds, self.valid_ds, self.test_ds = datasets
        self.inputs, self.device, self.dp, self.pipeline = inputs, device, dp, pipeline
        self.num_parameters = num_parameters
        self.eod_id = plan.tokenizer.eod_id
        self.loss_context = loss_context(mesh)

    def _micro_batches(self, dataset, start: int, num_samples: int) -> Iterator[dict]:
        m = self.cfg.model
        return micro_batches(dataset, start=start, num_samples=num_samples, micro_batch_size=m.micro_batch_size,
                             num_workers=m.data.num_workers, pin_memory=self.device.type == "cuda", seed=m.seed,
                             data_parallel_rank=self.dp.rank, data_parallel_size=self.dp.size)

    def train_batches(self, consumed_samples: int, num_samples: int) -> Iterator[dict]:
        return self._micro_batches(self.train_ds, consumed_samples, num_samples)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        device = self.device
        tokens = batch["tokens"].to(device, non_blocking=True)
        mask = document_causal_mask(tokens, self.eod_id) if self.cfg.model.data.reset_attention_mask else None
        logits = model(tokens, batch["position_ids"].to(device, non_blocking=True), mask)  # bf16: FSDP casts
        return lm_loss(logits, batch["labels"].to(device, non_blocking=True), batch["loss_mask"].to(device))

    def pipeline_batch(self, micro_batches: list[dict]) -> dict:
        """Micro-batches side by side, as one batch the pipeline schedule splits again (same order)."""
        batch = {key: torch.cat([mb[key] for mb in micro_batches])
                 for key in ("tokens", "labels", "loss_mask", "position_ids")}
        kwargs = {}
        if self.cfg.model.data.reset_attention_mask:
            kwargs["attention_mask"] = document_causal_mask(batch["tokens"], self.eod_id)
        return {"inputs": (batch["tokens"], batch["position_ids"]), "kwargs": kwargs, "labels": batch["labels"],
                "loss_mask": batch["loss_mask"]}

    @torch.no_grad()
    def mean_loss(self, dataset, num_batches: int) -> float:
        """Mean loss over the first ``num_batches`` global batches of ``dataset`` (always the same ones)."""
        for part in self.parts:
            part.eval()
        total, count = torch.zeros((), device=self.device), 0
        mbs = self._micro_batches(dataset, 0, num_batches * self.cfg.model.global_batch_size)
        if self.pipeline is not None:  # one global batch per schedule run
            n = self.cfg.model.num_micro_batches // self.dp.size
            for _ in range(num_batches):
                total += self.pipeline.eval_sum(self.pipeline_batch([next(mbs) for _ in range(n)]))
                count += n
        else:
            for mb in mbs:
                with self.loss_context():
                    total += self.loss(self.parts[0], mb)
                count += 1
        for part in self.parts:
            part.train()
        return self.dp.mean(total, count)

    def validate(self) -> dict[str, float]:
        n = self.cfg.trainer.limit_val_batches
        return {"val_loss": self.mean_loss(self.valid_ds, n)} if self.valid_ds is not None and n > 0 else {}

    def test(self) -> dict[str, float]:
        n = self.cfg.trainer.limit_test_batches
        return {"test_loss": self.mean_loss(self.test_ds, n)} if self.test_ds is not None and n > 0 else {}

    def save(self, state: TrainState, metrics: dict[str, float | None]) -> Path:
        return save_checkpoint(self.plan.run_dir, cfg=self.cfg, parts=self.parts, optimizers=self.optimizer,
                               state=state, spec=self.spec, arch=self.plan.arch, vocab_size=self.plan.vocab_size,
                               tokenizer=self.plan.tokenizer, inputs=self.inputs, metrics=metrics,
                               num_parameters=self.num_parameters)


class T5PretrainTask(PretrainTask):
    """T5/mT5 span corruption: the encoder reads the corrupted text, the decoder predicts the masked spans."""

    def _micro_batches(self, dataset, start: int, num_samples: int) -> Iterator[dict]:
        from .t5_data import t5_batch

        return (t5_batch(mb) for mb in super()._micro_batches(dataset, start, num_samples))

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        device = self.device
        logits = model(batch["encoder_tokens"].to(device, non_blocking=True),
                       decoder_tokens=batch["decoder_tokens"].to(device, non_blocking=True),
                       encoder_mask=batch["encoder_mask"].to(device), decoder_mask=batch["decoder_mask"].to(device))
        return lm_loss(logits, batch["labels"].to(device, non_blocking=True), batch["loss_mask"].to(device))

    def pipeline_batch(self, micro_batches: list[dict]) -> dict:
        batch = {key: torch.cat([mb[key] for mb in micro_batches]) for key in micro_batches[0]}
        return {"inputs": (batch["encoder_tokens"],),
                "kwargs": {key: batch[key] for key in ("decoder_tokens", "encoder_mask", "decoder_mask")},
                "labels": batch["labels"], "loss_mask": batch["loss_mask"]}


def _task_class(cfg: TrainConfig) -> type[PretrainTask]:
    return T5PretrainTask if cfg.model.family == "t5" else PretrainTask


def _build_datasets(cfg: TrainConfig, plan: RunPlan, cache_dir: Path) -> list:
    """The family's pretraining datasets: GPT's token stream, or T5's span corruption."""
    if cfg.model.family != "t5":
        return build_datasets(cfg, plan.entries, plan.tokenizer, cache_dir)
    from .t5_data import build_t5_datasets

    check_splits(cfg, plan.entries)
    m = cfg.model
    return build_t5_datasets(m.data, seed=m.seed, seq_length=m.seq_length, seq_length_dec=m.seq_length_dec,
                             sizes=split_sizes(cfg), entries=plan.entries, tokenizer=plan.tokenizer,
                             cache_dir=cache_dir)


def describe_layers(arch: Any) -> str:
    """"12 layers" (GPT) or "6 encoder + 6 decoder layers" (T5)."""
    if hasattr(arch, "num_layers"):
        return f"{arch.num_layers} layers"
    return f"{arch.encoder_num_layers} encoder + {arch.decoder_num_layers} decoder layers"


def plan_run(cfg: TrainConfig, world_size: int = 1) -> RunPlan:
    """Every check that needs neither a process group nor a model: layout, data, vocabulary, resume."""
    dp_size = check_parallel_layout(cfg.model, world_size)
    check_loggers(cfg)
    entries = resolve_blend(cfg.model)
    check_splits(cfg, entries)
    tokenizer = blend_tokenizer(entries)
    model_vocab = cfg.model.tokenizer.vocab_size or tokenizer.vocab_size
    check_vocab(entries, tokenizer, model_vocab, source=f"model.tokenizer.vocab_size={model_vocab}")
    if cfg.model.family == "t5":
        from .t5_data import check_t5_data

        m = cfg.model
        have = int(tokenizer.summary.get("num_sentinel_tokens") or 0)
        if have and have < m.tokenizer.num_sentinel_tokens:
            raise ArtifactError(
                f"dataset {entries[0].ref.prefix} carries {have} sentinels, model.tokenizer.num_sentinel_tokens="
                f"{m.tokenizer.num_sentinel_tokens} asks for more",
                hint=f"set model.tokenizer.num_sentinel_tokens={have}, or preprocess with --num-sentinel-tokens "
                     f"{m.tokenizer.num_sentinel_tokens}")
        check_t5_data(m.data, seq_length=m.seq_length, seq_length_dec=m.seq_length_dec, tokenizer=tokenizer,
                      entries=entries)
    arch = cfg.model.architecture(model_vocab)
    run_dir = cfg.exp_manager.run_dir()
    resume_from = find_resume_checkpoint(cfg, run_dir)
    if resume_from is not None:
        check_resume_compatible(resume_from, arch, entries, tokenizer, model_vocab, expected_family=cfg.model.family)
    return RunPlan(entries, tokenizer, arch, run_dir, resume_from, dp_size, model_vocab)


def pretrain(cfg: TrainConfig, *, log: Callable[[str], None] = print) -> TrainResult:
    """Train ``cfg`` to ``trainer.max_steps`` (or ``trainer.max_time``), resuming if asked; return the outcome.

    Joins the job's process group when started as one of several processes
    (torchrun, srun, ``--nproc-per-node``), after the cheap checks have passed.
    """
    started = time.monotonic()
    env = discover_run_env()
    plan = plan_run(cfg, env.world_size)
    device = pick_device(cfg.trainer, env.local_rank)
    apply_numa_mapping(cfg.numa_mapping, local_rank=env.local_rank, local_world_size=env.local_world_size,
                       gpu=device.type == "cuda")  # pin before any heavy work; each rank says so on stderr
    check_precision(device, cfg.trainer.precision_name)
    mesh = init_distributed(env, device, cfg.model.tensor_model_parallel_size, cfg.model.pipeline_model_parallel_size,
                            one_process_mesh=cfg.trainer.precision_name == "bf16")
    rank0_log = log if env.rank == 0 else lambda _line: None
    lock = None
    try:
        # Nothing is written into the run directory before its lock is ours (every rank learns the outcome).
        lock = hold_run_dir(plan.run_dir, rank=env.rank, log=rank0_log)
        if env.rank == 0:
            for leftover in remove_abandoned_checkpoint_writes(plan.run_dir):
                log(f"removed {leftover.name}: an unfinished checkpoint write of a killed run")
        if plan.resume_from is not None:
            plan = _verified_resume(cfg, plan, rank=env.rank, world_size=env.world_size, log=rank0_log)
        dp = DataParallel()
        if mesh is not None and mesh["dp"].size() > 1:
            dp = DataParallel(mesh["dp"].get_local_rank(), mesh["dp"].size(), mesh["dp"].get_group())
        result = _train(cfg, plan, device=device, mesh=mesh, dp=dp, rank=env.rank, started=started, log=rank0_log)
        return dataclasses.replace(result, rank=env.rank, world_size=env.world_size)
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()


def _verified_resume(cfg: TrainConfig, plan: RunPlan, *, rank: int, world_size: int,
                     log: Callable[[str], None]) -> RunPlan:
    """``plan`` resuming from the newest checkpoint that passes verification (damaged ones moved aside)."""
    chosen = choose_resume_checkpoint(plan.run_dir, verify=cfg.exp_manager.verify_checkpoints, rank=rank,
                                      world_size=world_size, log=log)
    if chosen != plan.resume_from:
        check_resume_compatible(chosen, plan.arch, plan.entries, plan.tokenizer, plan.vocab_size,
                                expected_family=cfg.model.family)
    return dataclasses.replace(plan, resume_from=chosen)


def _train(cfg: TrainConfig, plan: RunPlan, *, device: torch.device, mesh, dp: DataParallel, rank: int,
           started: float, log: Callable[[str], None]) -> TrainResult:
    precision = cfg.trainer.precision_name
    arch, run_dir, resume_from = plan.arch, plan.run_dir, plan.resume_from
    run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.model.seed)
    m, trainer = cfg.model, cfg.trainer
    param_dtype = torch.bfloat16 if precision == "bf16" else None  # FSDP's compute dtype
    spec = get_family(cfg.model.family)
    parts = build_model_parts(spec, arch, device, mesh, virtual=m.virtual_pipeline_size,
                              sequence_parallel=m.sequence_parallel, recompute=recompute_of(cfg),
                              param_dtype=param_dtype, split_rank=m.split_rank)
    pipeline = None
    if m.pipeline_model_parallel_size > 1:
        pipeline = Pipeline(parts, spec, mesh, device, m.num_micro_batches // dp.size, virtual=m.virtual_pipeline_size,
                            tied_stages=tied_stages(spec, arch, m.pipeline_model_parallel_size,
                                                    m.virtual_pipeline_size, m.split_rank),
                            loss_context=loss_context(mesh))
        n_params = spec.count_parameters(arch)  # this rank holds a part
    else:
        n_params = num_parameters(parts[0])
    optimizer = Optimizers(parts, cfg, device)
    cache_dir = Path(m.data.index_mapping_dir or run_dir / "index_cache")
    datasets = _build_datasets(cfg, plan, cache_dir)
    if cfg.model.family == "t5":
        from .t5_data import unsplit_datasets

        for note in unsplit_datasets(plan.entries):
            log(note)
    inputs = [input_record(a) for a in dict.fromkeys(e.ref.artifact_dir for e in plan.entries)]
    task = _task_class(cfg)(cfg, plan, parts=parts, optimizer=optimizer, spec=spec, datasets=datasets, inputs=inputs,
                        device=device, dp=dp, pipeline=pipeline, num_parameters=n_params, mesh=mesh)

    state = TrainState()
    if resume_from is not None:
        state = load_checkpoint(resume_from, parts=parts, optimizers=optimizer, spec=spec, log=log)
        log(f"resumed from {resume_from} (step {state.step}, {state.consumed_samples} samples consumed)")
    for part in parts:
        part.train()
    pp_text = "" if pipeline is None else f", PP {m.pipeline_model_parallel_size}" + (
        f" × {m.virtual_pipeline_size} chunks (interleaved 1F1B)" if m.virtual_pipeline_size > 1 else " (1F1B)")
    layout = "" if mesh is None or mesh.size() == 1 else (f" × {mesh.size()} processes (DP {dp.size}, TP "
                                      f"{m.tensor_model_parallel_size}{', SP' if m.sequence_parallel else ''}"
                                      f"{pp_text})")
    log(f"model: {n_params:,} parameters, {describe_layers(arch)}, hidden {arch.hidden_size}, "
        f"vocab {arch.vocab_size} | device {device}{layout}, precision {precision} | run dir {run_dir}")
    progress = Progress(run_dir, max_steps=trainer.max_steps, tokens_per_step=m.global_batch_size * m.seq_length,
                        log=log, enabled=rank == 0, flops_per_token=spec.flops_per_token(arch, *m.sequence_lengths),
                        num_devices=1 if mesh is None else mesh.size(), peak_tflops=peak_tflops(device_name(device)))
    if resume_from is not None:
        progress.forget_after(state.step)
    attach_loggers(progress, cfg, run_dir, enabled=progress.enabled,  # TensorBoard / W&B beside metrics.jsonl
                   resume_step=None if resume_from is None else state.step)
    out = run_loop(task, cfg, parts=parts, optimizer=optimizer, pipeline=pipeline, state=state, progress=progress,
                   device=device, dp=dp, mesh=mesh, started=started, resumed=resume_from is not None,
                   latest=resume_from, log=log, loss_context=loss_context(mesh))
    return TrainResult(
        run_dir=run_dir, step=out.state.step, max_steps=trainer.max_steps, initial_val_loss=out.initial_val_loss,
        final_val_loss=out.final_val_loss, test_loss=out.test_loss, latest_checkpoint=latest_checkpoint(run_dir),
        resumed_from=resume_from, stopped_by_max_time=out.stopped_by_max_time, num_parameters=n_params,
        device=str(device), stopped_by_signal=out.stopped_by_signal,
    )
