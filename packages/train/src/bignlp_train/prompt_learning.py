"""Prompt learning: virtual prompts for new tasks on a frozen GPT, T5 or mT5, through the shared loop.

``prompt_learn(cfg)`` is the library entry point behind ``bignlp-train prompt-learn``. Every check
runs before a step is taken (``plan_prompt_learn``): the templates, every data line's fields, the base
checkpoint, and, with ``model.restore_path``, that the earlier prompt checkpoint was learned on this
very base (the sha256 of its manifest.json) with this tokenizer. The base is loaded with ``load_model``
(eval mode, no gradients, no optimizer state); only the new tasks' prompts (a ``PromptEncoder`` per
task for p-tuning, a table of rows for prompt tuning) are parameters. ``PromptTask`` hands the loop
(loop.py) its micro-batches, loss, validation loss and resume checkpoints; at the end the encoders are
folded into the table and ``RUN_DIR/prompt_checkpoint`` (a ``prompt-checkpoint``) is written with the
earlier tasks' rows copied unchanged.

One process for now: tensor and pipeline parallelism of the base are refused by the config.
"""

from __future__ import annotations

import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bignlp_contracts import (
    ConfigError,
    Producer,
    checkpoint_dir_name,
    input_record,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    set_latest_checkpoint,
    to_dict,
)
from bignlp_models import lm_loss, load_model
from bignlp_models.prompt import (
    PromptTable,
    base_record,
    check_base_pin,
    install_prompts,
    load_prompt_checkpoint,
    save_prompt_checkpoint,
    text_init,
)
from bignlp_models.prompt_template import roles_of
from bignlp_tokenizers import tokenizer_from_summary

from . import __version__
from .checkpoint import TrainState
from .config.prompt import PromptLearnConfig, effective_train_config
from .loop import DataParallel, run_loop
from .optim import Optimizers
from .progress import Progress
from .prompt_data import Example, check_fields, collate, encode_rows, read_rows, sample_order
from .rundir import hold_run_dir
from .runtime import pick_device, seed_everything

TRAIN_STATE = "train_state.pt"
OUTPUT_NAME = "prompt_checkpoint"
COMMAND = "bignlp-train prompt-learn"


@dataclass(frozen=True)
class PromptPlan:
    """What the checks before training found."""

    base_path: Path  # the base checkpoint directory (a run directory resolved to its latest)
    base: dict  # path, manifest_sha256, family, tokenizer_sha256: what the prompt checkpoint pins
    family: str
    tokenizer: object
    vocab_size: int
    max_length: int | None
    max_decoder_length: int | None
    frozen_rows: torch.Tensor | None  # the existing tasks' rows (restore_path), in their order
    existing: list[dict]  # the existing tasks' records (offset, template keys), as restore_path has them
    offsets: dict[str, int]  # every task's first row
    train: list[Example]
    validation: list[Example]
    test: list[Example]
    skipped: dict[str, dict[str, int]]  # split → task → examples skipped as too long
    max_steps: int
    run_dir: Path


@dataclass(frozen=True)
class PromptResult:
    run_dir: Path
    output: Path | None
    step: int
    max_steps: int
    initial_val_loss: float | None
    final_val_loss: float | None
    skipped: dict[str, dict[str, int]]
    stopped_early: bool


def plan_prompt_learn(cfg: PromptLearnConfig) -> PromptPlan:
    """Every check that needs no model: base, earlier prompts, templates, data (``BigNLPError``, one line)."""
    m = cfg.model
    if not m.language_model_path:
        raise ConfigError("model.language_model_path is not set: the frozen base model-checkpoint (or its run dir)",
                          hint="e.g. model.language_model_path=results/gpt3_126m")
    base_path, manifest = read_checkpoint(m.language_model_path)
    base = base_record(base_path)
    family = base["family"]
    tokenizer = tokenizer_from_summary(manifest.summary["tokenizer"], base_path)
    vocab_size = int(manifest.summary.get("vocab_size") or tokenizer.vocab_size)
    arch = manifest.summary.get("model") or {}
    positions = arch.get("max_position_embeddings")
    relative = arch.get("position_embedding_type") == "relative"
    max_length = m.data.max_seq_length or (None if relative else positions)
    max_decoder_length = None if family != "t5" or relative else positions

    frozen_rows, existing, offsets = None, [], {}
    if m.restore_path:
        restored = load_prompt_checkpoint(m.restore_path)
        check_base_pin(restored.base, base, what=f"model.restore_path {m.restore_path}")
        missing = [name for name in m.existing_tasks if name not in restored.tasks]
        if missing:
            raise ConfigError(f"model.existing_tasks {missing} are not in {m.restore_path} (it holds "
                              f"{', '.join(restored.tasks)})")
        clash = [name for name in m.new_tasks if name in restored.tasks]
        if clash:
            raise ConfigError(f"model.new_tasks {clash} are already in {m.restore_path}",
                              hint="its prompts stay frozen; learn the task under a new name")
        frozen_rows = restored.rows
        existing = list(restored.tasks.values())  # every task it holds is kept (existing_tasks are checked)
        offsets = {t["taskname"]: int(t["offset"]) for t in existing}
    row = 0 if frozen_rows is None else frozen_rows.shape[0]
    templates = {name: m.template(name) for name in m.new_tasks}
    for name in m.new_tasks:
        offsets[name] = row
        row += templates[name].total_virtual_tokens

    if not m.data.train_ds:
        raise ConfigError("model.data.train_ds is empty: the JSONL file(s) to learn from",
                          hint="e.g. model.data.train_ds=[data/squad/prompt/train.jsonl]")
    roles = roles_of(tokenizer, family)
    splits, skipped = {}, {}
    for split in ("train_ds", "validation_ds", "test_ds"):
        rows = read_rows(getattr(m.data, split), f"model.data.{split}")
        check_fields(rows, templates)
        examples, skips = encode_rows(rows, templates, offsets, tokenizer, vocab_size=vocab_size, family=family,
                                      roles=roles, max_length=max_length, max_decoder_length=max_decoder_length)
        splits[split], skipped[split.removesuffix("_ds")] = examples, skips
    if not splits["train_ds"]:
        raise ConfigError(f"model.data.train_ds has no usable example of {', '.join(m.new_tasks)} "
                          f"(skipped as too long: {skipped['train']})",
                          hint="check the tasknames in the data, raise model.data.max_seq_length or set truncate_field")
    gbs = m.global_batch_size
    max_steps = cfg.trainer.steps_for(len(splits["train_ds"]), gbs)
    return PromptPlan(base_path, base, family, tokenizer, vocab_size, max_length, max_decoder_length, frozen_rows,
                      existing, offsets, splits["train_ds"], splits["validation_ds"], splits["test_ds"], skipped,
                      max_steps, cfg.exp_manager.run_dir())


class PromptTask:
    """The loop's hooks for prompt learning (see loop.Task)."""

    def __init__(self, cfg: PromptLearnConfig, plan: PromptPlan, *, model: nn.Module, table: PromptTable,
                 optimizer: Optimizers, device: torch.device, log: Callable[[str], None]) -> None:
        self.cfg, self.plan, self.model, self.table = cfg, plan, model, table
        self.optimizer, self.device, self.log = optimizer, device, log
        self.pad = roles_of(plan.tokenizer, plan.family).pad

    def _batches(self, examples: list[Example], start: int, num_samples: int, *, shuffle: bool) -> Iterator[dict]:
        mbs = self.cfg.model.micro_batch_size
        order = sample_order(len(examples), num_samples, start, seed=self.cfg.model.seed, shuffle=shuffle)
        chunk: list[Example] = []
        for index in order:
            chunk.append(examples[index])
            if len(chunk) == mbs:
                yield collate(chunk, family=self.plan.family, pad=self.pad)
                chunk = []
        if chunk:
            yield collate(chunk, family=self.plan.family, pad=self.pad)

    def train_batches(self, consumed_samples: int, num_samples: int) -> Iterator[dict]:
        return self._batches(self.plan.train, consumed_samples, num_samples, shuffle=self.cfg.model.data.shuffle)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        d = self.device
        if self.plan.family == "t5":
            logits = self.model(batch["encoder_tokens"].to(d), decoder_tokens=batch["tokens"].to(d),
                                encoder_mask=batch["encoder_mask"].to(d), decoder_mask=batch["decoder_mask"].to(d))
        else:
            logits = self.model(batch["tokens"].to(d))
        return lm_loss(logits, batch["labels"].to(d), batch["loss_mask"].to(d))

    def pipeline_batch(self, micro_batches: list[dict]) -> dict:
        raise NotImplementedError("prompt learning runs without pipeline stages")

    @torch.no_grad()
    def _mean_loss(self, examples: list[Example]) -> float:
        self.table.eval()
        total, count = 0.0, 0
        for batch in self._batches(examples, 0, len(examples), shuffle=False):
            n = batch["labels"].shape[0]
            total += float(self.loss(self.model, batch)) * n
            count += n
        self.table.train()
        return total / max(count, 1)

    def validate(self) -> dict[str, float]:
        n = self.cfg.trainer.limit_val_batches
        if not self.plan.validation or n == 0:
            return {}
        return {"val_loss": self._mean_loss(self.plan.validation[: n * self.cfg.model.global_batch_size])}

    def test(self) -> dict[str, float]:
        n = self.cfg.trainer.limit_test_batches
        if not self.plan.test or n == 0:
            return {}
        return {"test_loss": self._mean_loss(self.plan.test[: n * self.cfg.model.global_batch_size])}

    def save(self, state: TrainState, metrics: dict[str, float | None]) -> Path:
        """A resume point: the folded prompts (usable as they are) plus ``train_state.pt`` (encoders, optimizer,
        RNG, position). Only the newest is kept."""
        buffer = io.BytesIO()
        torch.save({"learned": self.table.learned.state_dict(),
                    "optimizer": [opt.state_dict() for opt in self.optimizer.optimizers],
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                    "step": state.step, "consumed_samples": state.consumed_samples,
                    "metrics": metrics}, buffer)
        root = self.plan.run_dir / "checkpoints"
        path = root / checkpoint_dir_name(state.step)
        write_prompts(self.cfg, self.plan, self.table, path, extra_files={TRAIN_STATE: buffer.getvalue()})
        set_latest_checkpoint(self.plan.run_dir, path)
        for old in root.glob("step-*"):
            if old != path and old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
        return path


def task_records(plan: PromptPlan, cfg: PromptLearnConfig) -> list[dict]:
    """Every task of the output, in table order: the existing ones as they were, then the new ones."""
    records = [dict(t) for t in plan.existing]
    for name in cfg.model.new_tasks:
        t = cfg.model.template(name)
        records.append({"taskname": name, "prompt_template": t.prompt_template,
                        "total_virtual_tokens": t.total_virtual_tokens,
                        "virtual_token_splits": list(t.virtual_token_splits), "answer_only_loss": t.answer_only_loss,
                        "answer_field": t.answer_field, "truncate_field": t.truncate_field,
                        "offset": plan.offsets[name], "virtual_prompt_style": cfg.model.virtual_prompt_style,
                        "max_new_tokens": cfg.model.data.max_new_tokens})
    return records


def write_prompts(cfg: PromptLearnConfig, plan: PromptPlan, table: PromptTable, path: Path, *,
                  extra_files: dict[str, bytes] | None = None) -> Path:
    """The table folded (encoders evaluated) into a ``prompt-checkpoint`` at ``path``."""
    rows = table.fold()
    inputs = [input_record(plan.base_path)]
    if cfg.model.restore_path:
        inputs.append(input_record(cfg.model.restore_path))
    save_prompt_checkpoint(path, rows=rows, tasks=task_records(plan, cfg), base=plan.base,
                           producer=Producer("bignlp-train", __version__), config=to_dict(cfg), inputs=inputs,
                           extra_files=extra_files)
    return path


def build_table(cfg: PromptLearnConfig, plan: PromptPlan, model: nn.Module, hidden_size: int) -> PromptTable:
    """The prompt table: the existing tasks' rows frozen, a learned entry per new task (seeded init)."""
    m = cfg.model
    table = PromptTable(hidden_size, frozen=plan.frozen_rows)
    std = float(getattr(model.cfg, "init_method_std", 0.02))
    for i, name in enumerate(m.new_tasks):
        n = m.template(name).total_virtual_tokens
        init = None
        if m.virtual_prompt_style == "prompt-tuning":
            method, text = m.init_method(i)
            if method == "text":
                init = text_init(model, plan.tokenizer.encode(text), n)
            else:
                init = torch.randn(n, hidden_size) * std
        table.add_task(name, n, style=m.virtual_prompt_style, encoder_type=m.p_tuning.encoder_type,
                       num_layers=m.p_tuning.num_layers, dropout=m.p_tuning.dropout, init=init)
    return table


def prompt_learn(cfg: PromptLearnConfig, *, log: Callable[[str], None] = print) -> PromptResult:
    """Learn ``cfg.model.new_tasks``' prompts on the frozen base; resume the run directory's latest state if any."""
    started = time.monotonic()
    plan = plan_prompt_learn(cfg)
    for split, skips in plan.skipped.items():
        for name, count in skips.items():
            if count:
                log(f"{split}: skipped {count} example(s) of task {name!r} longer than the model takes "
                    f"(nothing left to cut in truncate_field)")
    device = pick_device(cfg.trainer, 0)
    if cfg.trainer.precision_name != "32":
        raise ConfigError(f"trainer.precision={cfg.trainer.precision}: prompt learning runs in fp32 for now",
                          hint="set trainer.precision=32")
    tcfg = effective_train_config(cfg, plan.max_steps)
    run_dir = plan.run_dir
    lock = hold_run_dir(run_dir, rank=0, log=log, command=COMMAND)
    try:
        for leftover in remove_abandoned_checkpoint_writes(run_dir):
            log(f"removed {leftover.name}: an unfinished checkpoint write of a killed run")
        (run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
        seed_everything(cfg.model.seed)
        loaded = load_model(plan.base_path, device=device, verify="size")
        model = loaded.model  # eval mode, requires_grad False: the frozen base
        table = build_table(cfg, plan, model, loaded.config.hidden_size).to(device)
        install_prompts(model, table=table)
        optimizer = Optimizers([table], tcfg, device)
        state = TrainState()
        latest = latest_checkpoint(run_dir) if cfg.exp_manager.resume_if_exists else None
        if latest is not None:
            saved = torch.load(latest / TRAIN_STATE, map_location=device, weights_only=True)
            table.learned.load_state_dict(saved["learned"])
            for opt, opt_state in zip(optimizer.optimizers, saved["optimizer"]):
                opt.load_state_dict(opt_state)
            torch.set_rng_state(saved["rng"].cpu())
            if saved.get("cuda_rng") is not None and device.type == "cuda":
                torch.cuda.set_rng_state(saved["cuda_rng"].cpu(), device)
            state = TrainState(int(saved["step"]), int(saved["consumed_samples"]))
            log(f"resumed from {latest} (step {state.step}, {state.consumed_samples} samples consumed)")
        num_learned = sum(p.numel() for p in table.parameters())
        log(f"prompt learning ({cfg.model.virtual_prompt_style}) of {', '.join(cfg.model.new_tasks)} on frozen "
            f"{plan.family} {plan.base_path} | {num_learned:,} prompt parameters, {len(plan.train)} training "
            f"examples, {plan.max_steps} steps | device {device} | run dir {run_dir}")
        table.train()
        task = PromptTask(cfg, plan, model=model, table=table, optimizer=optimizer, device=device, log=log)
        longest = max(len(e.tokens) + len(e.prompt) for e in plan.train)
        progress = Progress(run_dir, max_steps=plan.max_steps, tokens_per_step=cfg.model.global_batch_size * longest,
                            log=log)
        if latest is not None:
            progress.forget_after(state.step)
        out = run_loop(task, tcfg, parts=[table], optimizer=optimizer, pipeline=None, state=state, progress=progress,
                       device=device, dp=DataParallel(), mesh=None, started=started, resumed=latest is not None,
                       latest=latest, log=log)
        stopped = out.stopped_by_max_time or out.stopped_by_signal is not None
        output = None
        if not stopped:
            output = write_prompts(cfg, plan, table, run_dir / OUTPUT_NAME)
            log(f"wrote prompt checkpoint {output} ({len(task_records(plan, cfg))} task(s))")
        return PromptResult(run_dir, output, out.state.step, plan.max_steps, out.initial_val_loss,
                            out.final_val_loss, plan.skipped, stopped)
    finally:
        if lock is not None:
            lock.release()


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
