"""Fine-tuning T5/mT5 on text-to-text tasks: the checks before a run, and the task it hands the shared loop.

``finetune(cfg)`` is the library entry point behind ``bignlp-train finetune``. It starts from a base
``model-checkpoint`` (``model.restore_from_path``: pretrained here, or imported by ``bignlp-convert
from-nemo|from-hf``), builds the model with the base's architecture through the same parallelism as
pretraining (``build_model_parts``: FSDP over data-parallel ranks, tensor parallelism), reads the base's
weights into it (DCP, resharded to this layout; the vocabulary re-padded for the TP size), and runs
``loop.run_loop`` with ``FinetuneTask``: source/target micro-batches (seq2seq_data.py), T5's loss,
and validation by greedy generation scored with the configured metric. Checkpoints are the same
``model-checkpoint`` artifacts pretraining writes (resume, reshard, prune to the best
``save_top_k`` by the monitored metric); each names its base in ``inputs`` (role ``base``, by the sha256
of the base's manifest) and in ``summary.base_checkpoint``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict
from torch.distributed.tensor import DTensor

from bignlp_contracts import (
    ArtifactError,
    ConfigError,
    checkpoint_family,
    checkpoint_vocab_size,
    discover_run_env,
    input_record,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    save_config,
)
from bignlp_contracts.layout import CHECKPOINTS_DIR
from bignlp_models import get_family, num_parameters

from .affinity import apply_numa_mapping
from .checkpoint import (
    DCP_DIR,
    TrainState,
    _quiet_dcp,
    _renamed,
    _repad,
    _tied_renames,
    _vocab_rows_mismatch,
    load_checkpoint,
    save_checkpoint,
)
from .config import check_parallel_layout
from .config.finetune import FinetuneConfig, effective_train_config
from .data import TokenizerInfo
from .loggers import attach_loggers, check_loggers
from .loop import DataParallel, run_loop
from .optim import Optimizers
from .parallelize import build_model_parts, loss_context
from .progress import Progress
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
from .seq2seq_data import Roles, Seq2SeqExamples, check_pair, token_roles, train_micro_batches
from .trainer import T5PretrainTask, find_resume_checkpoint

__all__ = ["FinetunePlan", "FinetuneResult", "FinetuneTask", "finetune", "plan_finetune", "score"]

COMMAND = "bignlp-train finetune"


@dataclass(frozen=True)
class FinetunePlan:
    """What the checks before fine-tuning found (run by the launcher before it starts workers, and by each)."""

    cfg: FinetuneConfig
    train_cfg: Any  # the T5TrainConfig the shared loop reads (config.finetune.effective_train_config)
    base: Path  # the base checkpoint directory
    base_manifest: Any
    arch: Any  # the base's architecture, vocabulary padded for this layout
    vocab_size: int  # the tokenizer's (unpadded)
    tokenizer: TokenizerInfo
    run_dir: Path
    resume_from: Path | None
    data_parallel_size: int
    num_train_examples: int
    max_steps: int


@dataclass(frozen=True)
class FinetuneResult:
    """What a finished (or stopped) fine-tuning run reports."""

    run_dir: Path
    step: int
    max_steps: int
    metric: str  # validation_<metric.name>
    initial_metrics: dict[str, float]  # before the first step (empty when resumed)
    final_metrics: dict[str, float]
    best_checkpoint: Path | None
    best_score: float | None
    latest_checkpoint: Path | None
    resumed_from: Path | None
    base: Path
    stopped_by_max_time: bool
    stopped_by_signal: str | None
    rank: int = 0

    @property
    def stopped_early(self) -> bool:
        return self.step < self.max_steps and (self.stopped_by_max_time or self.stopped_by_signal is not None)


def _base_checkpoint(cfg: FinetuneConfig) -> tuple[Path, Any]:
    path = cfg.model.restore_from_path
    if not path:
        raise ConfigError("model.restore_from_path is not set: fine-tuning starts from a trained checkpoint",
                          hint="model.restore_from_path=RUN_DIR (its latest checkpoint) or a checkpoint directory "
                               "(bignlp-train pretrain, or bignlp-convert from-nemo|from-hf)")
    base, manifest = read_checkpoint(path)
    family = checkpoint_family(manifest)
    if family != "t5":
        raise ConfigError(f"model.restore_from_path={path} holds a {family} model, but fine-tuning trains a seq2seq "
                          "(T5/mT5) model: a decoder-only GPT has no encoder for the source text",
                          hint="give a T5 or mT5 checkpoint (bignlp-train pretrain --config t5/..., or bignlp-convert "
                               "from-hf/from-nemo of a T5)")
    return base, manifest


def plan_finetune(cfg: FinetuneConfig, world_size: int = 1) -> FinetunePlan:
    """Every check that needs neither a process group nor a model: base, data, lengths, layout, resume."""
    from bignlp_models.t5 import T5Config

    base, manifest = _base_checkpoint(cfg)
    try:
        saved_arch = T5Config(**manifest.summary["model"])
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{base}: summary.model does not describe a T5 model ({exc})") from None
    vocab = int(checkpoint_vocab_size(manifest) or saved_arch.vocab_size)
    data = cfg.model.data
    if saved_arch.position_embedding_type == "learned_absolute":
        for key in ("train_ds", "validation_ds"):
            ds = getattr(data, key)
            for what in ("max_src_seq_length", "max_tgt_seq_length"):
                if getattr(ds, what) > saved_arch.max_position_embeddings:
                    raise ConfigError(f"model.data.{key}.{what}={getattr(ds, what)} exceeds the base model's "
                                      f"{saved_arch.max_position_embeddings} positions (max_position_embeddings of "
                                      f"{base})", hint=f"set model.data.{key}.{what}<="
                                                       f"{saved_arch.max_position_embeddings}")
    [(_, train_src, train_tgt)] = data.train_ds.files("train_ds")[:1] or [(None, None, None)]
    if len(data.train_ds.files("train_ds")) != 1:
        raise ConfigError("model.data.train_ds: give one src_file_name and one tgt_file_name",
                          hint="concatenate several tasks' files into one pair")
    num_train = check_pair("train_ds", train_src, train_tgt)
    for _, src, tgt in data.validation_ds.files("validation_ds"):
        check_pair("validation_ds", src, tgt)
    max_steps = cfg.trainer.steps_for(num_train, data.train_ds.global_batch_size)
    train_cfg = effective_train_config(cfg, saved_arch, max_steps)
    dp = check_parallel_layout(train_cfg.model, world_size)
    if data.validation_ds.global_batch_size % (data.validation_ds.micro_batch_size * dp):
        raise ConfigError(f"model.data.validation_ds.global_batch_size={data.validation_ds.global_batch_size} is not "
                          f"a multiple of micro_batch_size={data.validation_ds.micro_batch_size} × data-parallel "
                          f"size {dp}")
    check_loggers(train_cfg)
    arch = train_cfg.model.architecture(vocab)
    run_dir = train_cfg.exp_manager.run_dir()
    resume_from = find_resume_checkpoint(train_cfg, run_dir)
    if resume_from is not None:
        _check_resume(resume_from, arch)
    tok = manifest.summary.get("tokenizer") or {}
    tokenizer = TokenizerInfo(type=str(tok.get("type")), vocab_size=vocab, eod_id=int(tok.get("eod_id") or 0),
                              summary=dict(tok), artifact_dir=base)
    return FinetunePlan(cfg, train_cfg, base, manifest, arch, vocab, tokenizer, run_dir, resume_from, dp, num_train,
                        max_steps)


def _check_resume(path: Path, arch: Any) -> None:
    _, manifest = read_checkpoint(path)
    if checkpoint_family(manifest) != "t5":
        raise ConfigError(f"checkpoint {path} in this run directory holds a {checkpoint_family(manifest)} model",
                          hint="give fine-tuning its own exp_manager.explicit_log_dir")
    saved = manifest.summary.get("model", {})
    for key, value in vars(arch).items():
        if key in saved and saved[key] != value and key not in ("hidden_dropout", "attention_dropout", "vocab_size"):
            raise ConfigError(f"checkpoint {path} in this run directory has {key}={saved[key]}, the base model "
                              f"{value}", hint="resume with the base it was fine-tuned from, or another run directory")


@torch.no_grad()
def load_base_weights(path: Path, parts: list[nn.Module], spec: Any, log: Callable[[str], None] | None) -> None:
    """The base checkpoint's model weights into this rank's parts (DCP resharded; nothing else of the base is read)."""
    states = []
    for part in parts:
        sd = get_model_state_dict(part)
        for copy, weight in _tied_renames(part, spec):
            sd = _renamed(sd, copy, weight)
        states.append(sd)
    template = {"model": {k: v for sd in states for k, v in sd.items()}}
    try:
        saved = dcp.FileSystemReader(str(path / DCP_DIR)).read_metadata().state_dict_metadata
        resized = _vocab_rows_mismatch(path, template, saved)
        with _quiet_dcp():
            dcp.load(template, checkpoint_id=path / DCP_DIR)
    except Exception as exc:  # DCP raises several kinds; all mean "this base does not fit"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ArtifactError(f"{path}: cannot load the base model's weights from {DCP_DIR}/ "
                            f"({type(exc).__name__}: {first})") from None
    _repad(path, resized, log)
    for part, sd in zip(parts, states):
        model_sd = {k: template["model"][k] for k in sd}
        for copy, weight in _tied_renames(part, spec):
            model_sd = _renamed(model_sd, weight, copy)
        set_model_state_dict(part, model_sd)


def score(name: str, predictions: list[str], targets: list[str]) -> float:
    """The validation metric: exact_string_match/accuracy (share equal after strip), or F1 (SQuAD token F1, 0-100,
    torchmetrics' SQuAD: the official v1.1 script's normalisation)."""
    if not predictions:
        return math.nan
    if name in ("exact_string_match", "accuracy"):
        return sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / len(predictions)
    from torchmetrics.text import SQuAD

    preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
    target = [{"answers": {"answer_start": [0], "text": [t]}, "id": str(i)} for i, t in enumerate(targets)]
    return float(SQuAD()(preds, target)["f1"])


@torch.no_grad()
def greedy_decode(model: nn.Module, batch: dict[str, torch.Tensor], *, roles: Roles, max_new_tokens: int,
                  vocab_size: int, device: torch.device) -> list[list[int]]:
    """Greedy outputs (without ``<eos>``) of a micro-batch, each step one forward of the whole model.

    Every rank runs the same number of steps (a step is taken while any rank of the job has a row
    not yet at ``<eos>``): FSDP and TP forwards are collective.
    """
    enc = batch["encoder_tokens"].to(device)
    enc_mask = batch["encoder_mask"].to(device)
    rows = enc.shape[0]
    dec = torch.full((rows, 1), roles.bos, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    group = dist.is_initialized() and dist.get_world_size() > 1
    for _ in range(max_new_tokens):
        logits = model(enc, decoder_tokens=dec, encoder_mask=enc_mask,
                       decoder_mask=torch.ones_like(dec, dtype=torch.bool))
        if isinstance(logits, DTensor):
            logits = logits.full_tensor()
        nxt = logits[:, -1, :vocab_size].argmax(dim=-1)
        nxt = torch.where(done, torch.full_like(nxt, roles.pad), nxt)
        dec = torch.cat([dec, nxt[:, None]], dim=1)
        done |= nxt == roles.eos
        active = (~done).any().to(torch.int32)
        if group:
            dist.all_reduce(active, op=dist.ReduceOp.MAX)
        if not int(active):
            break
    out = []
    for row in dec[:, 1:].tolist():
        out.append(row[: row.index(roles.eos)] if roles.eos in row else row)
    return out


class FinetuneTask(T5PretrainTask):
    """Fine-tuning as a ``loop.Task``: source/target micro-batches, T5's loss (inherited), validation by greedy
    generation scored with ``validation_ds.metric``, checkpoints that name their base."""

    def __init__(self, plan: FinetunePlan, *, parts: list[nn.Module], optimizer: Optimizers, spec: Any,
                 train: Seq2SeqExamples, validation: list[tuple[str, Seq2SeqExamples]], tokenizer: Any,
                 inputs: list[dict], device: torch.device, dp: DataParallel, num_parameters: int, mesh=None,
                 log: Callable[[str], None] = print) -> None:
        self.plan, self.cfg, self.parts, self.optimizer, self.spec = plan, plan.train_cfg, parts, optimizer, spec
        self.train, self.validation, self.tokenizer = train, validation, tokenizer
        self.inputs, self.device, self.dp, self.pipeline = inputs, device, dp, None
        self.num_parameters = num_parameters
        self.loss_context = loss_context(mesh)
        self.log = log
        self.ft = plan.cfg
        self.metric = f"validation_{self.ft.model.data.validation_ds.metric.name}"
        self.history: list[tuple[int, dict[str, float]]] = []
        self.step = 0

    def train_batches(self, consumed_samples: int, num_samples: int) -> Iterator[dict]:
        """The stream's micro-batches; ``self.step`` follows the steps they complete (the loop draws them lazily,
        one step's worth before each update), so validation knows the step it scores."""
        ds = self.ft.model.data.train_ds
        per_step = self.cfg.model.num_micro_batches // self.dp.size
        self.step = consumed_samples // ds.global_batch_size
        batches = train_micro_batches(self.train, start=consumed_samples, num_samples=num_samples,
                                      micro_batch_size=ds.micro_batch_size, seed=self.ft.model.seed,
                                      shuffle=ds.shuffle, data_parallel_rank=self.dp.rank,
                                      data_parallel_size=self.dp.size)
        for i, batch in enumerate(batches, start=1):
            if i % per_step == 0:  # the step's last micro-batch: validation after it scores this step
                self.step += 1
            yield batch

    def _limit(self, n: int) -> int:
        """How many of ``n`` validation examples a validation scores (trainer.limit_val_batches, Lightning's rule)."""
        limit = self.ft.trainer.limit_val_batches
        if limit <= 1.0:
            return max(1, int(n * limit)) if limit > 0 else 0
        return min(n, int(limit) * self.ft.model.data.validation_ds.global_batch_size)

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        ds = self.ft.model.data.validation_ds
        if not self.validation or self.ft.trainer.limit_val_batches == 0:
            return {}
        model = self.parts[0]
        model.eval()
        started = time.monotonic()
        out: dict[str, float] = {}
        loss_total, loss_count, scores = torch.zeros((), device=self.device), 0, []
        for name, examples in self.validation:
            n = self._limit(len(examples))
            mine = list(range(self.dp.rank, n, self.dp.size))
            per_rank = -(-n // self.dp.size)
            mine += [mine[-1] if mine else 0] * (per_rank - len(mine))  # every rank the same batch count
            predictions: dict[int, str] = {}
            for first in range(0, per_rank, ds.micro_batch_size):
                idx = mine[first:first + ds.micro_batch_size]
                batch = examples.batch(idx)
                with self.loss_context():
                    loss_total += self.loss(model, batch)
                loss_count += 1
                outputs = greedy_decode(model, batch, roles=examples.roles, max_new_tokens=ds.max_tgt_seq_length,
                                        vocab_size=self.plan.vocab_size, device=self.device)
                for i, ids in zip(idx, outputs):
                    predictions[i] = self.tokenizer.decode(ids, skip_special_tokens=True).strip()
            if self.dp.group is not None:
                gathered: list[Any] = [None] * self.dp.size
                dist.all_gather_object(gathered, predictions, group=self.dp.group)
                predictions = {k: v for part in gathered for k, v in part.items()}
            ordered = [predictions[i] for i in range(n)]
            value = score(ds.metric.name, ordered, examples.targets[:n])
            scores.append(value)
            if len(self.validation) > 1:
                out[f"{self.metric}_{name}"] = value
            if ds.write_predictions_to_file and self.dp.rank == 0 and (not dist.is_initialized() or
                                                                        dist.get_rank() == 0):
                pred_dir = self.plan.run_dir / "predictions"
                pred_dir.mkdir(parents=True, exist_ok=True)
                (pred_dir / f"{name}_step-{self.step:08d}.txt").write_text(
                    "".join(p.replace("\n", " ") + "\n" for p in ordered), encoding="utf-8")
        out[self.metric] = sum(scores) / len(scores)
        out["val_loss"] = self.dp.mean(loss_total, loss_count)
        model.train()
        shown = ", ".join(f"{k} {v:.4f}" for k, v in out.items())
        self.log(f"validation at step {self.step}: {shown} ({time.monotonic() - started:.1f} s)")
        self.history.append((self.step, dict(out)))
        return out

    def test(self) -> dict[str, float]:
        return {}

    def save(self, state: TrainState, metrics: dict[str, float | None]) -> Path:
        return save_checkpoint(self.plan.run_dir, cfg=self.cfg, parts=self.parts, optimizers=self.optimizer,
                               state=state, spec=self.spec, arch=self.plan.arch, vocab_size=self.plan.vocab_size,
                               tokenizer=self.plan.tokenizer, inputs=self.inputs,
                               metrics={**metrics, "base_checkpoint": str(self.plan.base.resolve()),
                                        "task": "finetune"},
                               num_parameters=self.num_parameters)


def finetune(cfg: FinetuneConfig, *, log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune the base checkpoint on ``cfg``'s data to the end (or time/signal), resuming if asked."""
    started = time.monotonic()
    env = discover_run_env()
    plan = plan_finetune(cfg, env.world_size)
    device = pick_device(cfg.trainer, env.local_rank)
    apply_numa_mapping(cfg.numa_mapping, local_rank=env.local_rank, local_world_size=env.local_world_size,
                       gpu=device.type == "cuda")
    check_precision(device, cfg.trainer.precision_name)
    mesh = init_distributed(env, device, cfg.model.tensor_model_parallel_size, 1,
                            one_process_mesh=cfg.trainer.precision_name == "bf16")
    rank0_log = log if env.rank == 0 else lambda _line: None
    lock = None
    try:
        lock = hold_run_dir(plan.run_dir, rank=env.rank, log=rank0_log, command=COMMAND)
        if env.rank == 0:
            for leftover in remove_abandoned_checkpoint_writes(plan.run_dir):
                log(f"removed {leftover.name}: an unfinished checkpoint write of a killed run")
        if plan.resume_from is not None:
            chosen = choose_resume_checkpoint(plan.run_dir, verify=cfg.exp_manager.verify_checkpoints,
                                              rank=env.rank, world_size=env.world_size, log=rank0_log)
            if chosen != plan.resume_from:
                _check_resume(chosen, plan.arch)
            plan = dataclasses.replace(plan, resume_from=chosen)
        dp = DataParallel()
        if mesh is not None and mesh["dp"].size() > 1:
            dp = DataParallel(mesh["dp"].get_local_rank(), mesh["dp"].size(), mesh["dp"].get_group())
        result = _train(plan, device=device, mesh=mesh, dp=dp, rank=env.rank, started=started, log=rank0_log)
        return dataclasses.replace(result, rank=env.rank)
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()


def _train(plan: FinetunePlan, *, device: torch.device, mesh, dp: DataParallel, rank: int, started: float,
           log: Callable[[str], None]) -> FinetuneResult:
    from bignlp_tokenizers import tokenizer_from_summary

    cfg, train_cfg = plan.cfg, plan.train_cfg
    m, data = cfg.model, cfg.model.data
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_config(cfg, plan.run_dir / "config.yaml")
    tokenizer = tokenizer_from_summary(plan.tokenizer.summary, plan.base)
    roles = token_roles(tokenizer)
    train_ds = data.train_ds
    [(_, src, tgt)] = train_ds.files("train_ds")
    train = Seq2SeqExamples(src, tgt, tokenizer, roles, max_src=train_ds.max_src_seq_length,
                            max_tgt=train_ds.max_tgt_seq_length)
    vds = data.validation_ds
    validation = [(name, Seq2SeqExamples(s, t, tokenizer, roles, max_src=vds.max_src_seq_length,
                                         max_tgt=vds.max_tgt_seq_length))
                  for name, s, t in vds.files("validation_ds")]
    for what, ex in [("train_ds", train), *((f"validation_ds {n}", e) for n, e in validation)]:
        if ex.truncated_sources:
            log(f"{what}: {ex.truncated_sources} of {len(ex)} sources longer than max_src_seq_length keep their "
                "last tokens")
    seed_everything(m.seed)
    param_dtype = torch.bfloat16 if cfg.trainer.precision_name == "bf16" else None
    spec = get_family("t5")
    parts = build_model_parts(spec, plan.arch, device, mesh, param_dtype=param_dtype)
    n_params = num_parameters(parts[0])
    optimizer = Optimizers(parts, train_cfg, device)
    inputs = [{**input_record(plan.base), "role": "base"},
              *({**input_record(p), "role": "train_ds"} for p in (src, tgt))]
    task = FinetuneTask(plan, parts=parts, optimizer=optimizer, spec=spec, train=train, validation=validation,
                        tokenizer=tokenizer, inputs=inputs, device=device, dp=dp, num_parameters=n_params, mesh=mesh,
                        log=log)
    state = TrainState()
    if plan.resume_from is not None:
        state = load_checkpoint(plan.resume_from, parts=parts, optimizers=optimizer, spec=spec, log=log)
        log(f"resumed from {plan.resume_from} (step {state.step}, {state.consumed_samples} samples consumed)")
    else:
        load_base_weights(plan.base, parts, spec, log)
        log(f"base model: {plan.base}")
    task.step = state.step
    for part in parts:
        part.train()
    layout = "" if mesh is None or mesh.size() == 1 else (
        f" × {mesh.size()} processes (DP {dp.size}, TP {m.tensor_model_parallel_size})")
    log(f"model: {n_params:,} parameters, {plan.arch.encoder_num_layers} encoder + {plan.arch.decoder_num_layers} "
        f"decoder layers, hidden {plan.arch.hidden_size}, vocab {plan.arch.vocab_size} | device {device}{layout} | "
        f"{len(train):,} training examples, {plan.max_steps} steps of {train_ds.global_batch_size} | run dir "
        f"{plan.run_dir}")
    progress = Progress(plan.run_dir, max_steps=plan.max_steps,
                        tokens_per_step=train_ds.global_batch_size * train_ds.max_src_seq_length, log=log,
                        enabled=rank == 0,
                        flops_per_token=spec.flops_per_token(plan.arch, train_ds.max_src_seq_length,
                                                             train_ds.max_tgt_seq_length),
                        num_devices=1 if mesh is None else mesh.size(), peak_tflops=peak_tflops(device_name(device)))
    if plan.resume_from is not None:
        progress.forget_after(state.step)
    attach_loggers(progress, train_cfg, plan.run_dir, enabled=progress.enabled,
                   resume_step=None if plan.resume_from is None else state.step)
    out = run_loop(task, train_cfg, parts=parts, optimizer=optimizer, pipeline=None, state=state, progress=progress,
                   device=device, dp=dp, mesh=mesh, started=started, resumed=plan.resume_from is not None,
                   latest=plan.resume_from, log=log, loss_context=loss_context(mesh))
    best, best_score = best_checkpoint(plan.run_dir, task.metric, cfg.exp_manager.checkpoint_callback_params.mode)
    initial = task.history[0][1] if task.history and task.history[0][0] == 0 and plan.resume_from is None else {}
    final = task.history[-1][1] if task.history else {}
    return FinetuneResult(run_dir=plan.run_dir, step=out.state.step, max_steps=plan.max_steps, metric=task.metric,
                          initial_metrics=initial, final_metrics=final, best_checkpoint=best, best_score=best_score,
                          latest_checkpoint=latest_checkpoint(plan.run_dir), resumed_from=plan.resume_from,
                          base=plan.base, stopped_by_max_time=out.stopped_by_max_time,
                          stopped_by_signal=out.stopped_by_signal)


def best_checkpoint(run_dir: Path, metric: str, mode: str) -> tuple[Path | None, float | None]:
    """The run's checkpoint with the best ``metric`` in its manifest (ties: the earliest)."""
    best: tuple[Path | None, float | None] = (None, None)
    for ckpt in sorted((Path(run_dir) / CHECKPOINTS_DIR).glob("step-*")):
        try:
            value = read_checkpoint(ckpt, verify="none")[1].summary.get(metric)
        except ArtifactError:
            continue
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        if best[1] is None or (value > best[1] if mode == "max" else value < best[1]):
            best = (ckpt, float(value))
    return best
