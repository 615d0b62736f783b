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

Several processes (``--nproc-per-node``, torchrun, srun): data-parallel replicas each take their slice
of the global batch and average the prompt gradients; a GPT base can be split over tensor and pipeline
ranks as pretraining splits it (prompt_parallel.py). A T5/mT5 base runs data-parallel only.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from bignlp_contracts import (
    ConfigError,
    Producer,
    checkpoint_dir_name,
    discover_run_env,
    input_record,
    latest_checkpoint,
    read_checkpoint,
    remove_abandoned_checkpoint_writes,
    set_latest_checkpoint,
    to_dict,
)
from bignlp_models import get_family, lm_loss, load_model
from bignlp_models.prompt import (
    PromptTable,
    base_record,
    check_base_pin,
    input_embedding_owner,
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
from .parallelize import loss_context
from .pipeline import Pipeline
from .progress import Progress
from .prompt_data import Example, check_fields, collate, encode_rows, read_rows, sample_order
from .prompt_parallel import (
    check_prompt_layout,
    install_virtual_tokens,
    load_frozen_parts,
    mask_padding_on_output,
    pipeline_eval_loss,
    reduce_prompt_gradients,
)
from .rundir import hold_run_dir
from .runtime import init_distributed, pick_device, seed_everything, shutdown_distributed

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
    manifest: object  # the base's manifest (its summary.model: the architecture a parallel layout builds)
    data_parallel_size: int


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
    rank: int = 0


def plan_prompt_learn(cfg: PromptLearnConfig, world_size: int = 1) -> PromptPlan:
    """Every check that needs no model: base, earlier prompts, templates, data, the parallel layout of
    ``world_size`` processes (``BigNLPError``, one line)."""
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
    dp = check_prompt_layout(tp=m.tensor_model_parallel_size, pp=m.pipeline_model_parallel_size,
                             world_size=world_size, family=family, arch=arch,
                             global_batch_size=m.global_batch_size, micro_batch_size=m.micro_batch_size)

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
                      max_steps, cfg.exp_manager.run_dir(), manifest, dp)


class PromptTask:
    """The loop's hooks for prompt learning (see loop.Task).

    ``model``: the whole frozen base (one process or data-parallel replicas) or this rank's pipeline stage
    of it; ``pipeline``: the schedule that runs the stages (None without pipeline parallelism).
    """

    def __init__(self, cfg: PromptLearnConfig, plan: PromptPlan, *, model: nn.Module, table: PromptTable,
                 optimizer: Optimizers, device: torch.device, log: Callable[[str], None],
                 dp: DataParallel | None = None, mesh=None, pipeline: Pipeline | None = None,
                 hidden_size: int = 0) -> None:
        self.cfg, self.plan, self.model, self.table = cfg, plan, model, table
        self.optimizer, self.device, self.log = optimizer, device, log
        self.dp = dp = dp or DataParallel()
        self.mesh, self.pipeline, self.hidden_size = mesh, pipeline, hidden_size
        self.pad = roles_of(plan.tokenizer, plan.family).pad
        self.loss_context = loss_context(mesh)
        # Every rank of a pipeline gets the whole batch; all micro-batches are padded to the longest training
        # example (the schedule sizes its buffers once).
        self.length = max(len(e.tokens) for e in plan.train)
        tp = 1 if mesh is None else mesh["tp"].size()
        self.uses_table = pipeline is None or pipeline.has_first_stage
        self.groups = [(g, n) for g, n in ((dp.group, dp.size), (None if tp == 1 else mesh["tp"].get_group(), tp))
                       if g is not None]

    def _micro_batches(self, examples: list[Example], order: Iterator[int]) -> Iterator[dict]:
        mbs = self.cfg.model.micro_batch_size
        chunk: list[Example] = []
        for index in order:
            chunk.append(examples[index])
            if len(chunk) == mbs:
                yield collate(chunk, family=self.plan.family, pad=self.pad)
                chunk = []
        if chunk:
            yield collate(chunk, family=self.plan.family, pad=self.pad)

    def train_batches(self, consumed_samples: int, num_samples: int) -> Iterator[dict]:
        """This replica's micro-batches: its contiguous slice of each global batch (all of it in one process)."""
        gbs = self.cfg.model.global_batch_size
        share = gbs // self.dp.size
        order = sample_order(len(self.plan.train), num_samples, consumed_samples, seed=self.cfg.model.seed,
                             shuffle=self.cfg.model.data.shuffle)
        mine = (index for i, index in enumerate(order) if (i % gbs) // share == self.dp.rank)
        return self._micro_batches(self.plan.train, mine)

    def loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        d = self.device
        if self.plan.family == "t5":
            logits = self.model(batch["encoder_tokens"].to(d), decoder_tokens=batch["tokens"].to(d),
                                encoder_mask=batch["encoder_mask"].to(d), decoder_mask=batch["decoder_mask"].to(d))
        else:
            logits = self.model(batch["tokens"].to(d))
        return lm_loss(logits, batch["labels"].to(d), batch["loss_mask"].to(d))

    def pipeline_batch(self, micro_batches: list[dict]) -> dict:
        """GPT micro-batches padded to the longest training example, side by side (the schedule splits them)."""
        def padded(key: str, fill: int) -> torch.Tensor:
            parts = [mb[key] for mb in micro_batches]
            return torch.cat([torch.nn.functional.pad(t, (0, self.length - t.shape[1]), value=fill) for t in parts])

        return {"inputs": (padded("tokens", self.pad),), "kwargs": {}, "labels": padded("labels", self.pad),
                "loss_mask": padded("loss_mask", 0)}

    def reduce_gradients(self) -> None:
        """The prompt gradients averaged over the data-parallel replicas and the tensor-parallel ranks (the loop
        calls it after the step's backward, before clipping), so every copy of the table takes the same update."""
        if self.uses_table:
            reduce_prompt_gradients([p for p in self.table.parameters() if p.requires_grad], self.groups)

    @torch.no_grad()
    def _mean_loss(self, examples: list[Example]) -> float:
        """Mean over ``examples`` of the per-example-weighted micro-batch losses, as one process computes it:
        micro-batch ``i`` is scored by replica ``i mod DP``, the sums are added over the replicas."""
        self.table.eval()
        sums = torch.zeros(2, dtype=torch.float64)  # loss × rows, rows
        for i, batch in enumerate(self._micro_batches(examples, iter(range(len(examples))))):
            if i % self.dp.size != self.dp.rank:
                continue
            n = batch["labels"].shape[0]
            if self.pipeline is not None:
                loss = pipeline_eval_loss(self.model, batch, mesh=self.mesh, device=self.device,
                                          hidden_size=self.hidden_size, loss_context=self.loss_context)
            else:
                with self.loss_context():
                    loss = self.loss(self.model, batch)
            sums += torch.tensor([float(loss) * n, n], dtype=torch.float64)
        if self.dp.group is not None:
            dist.all_reduce(sums, group=self.dp.group)
        self.table.train()
        return float(sums[0] / sums[1].clamp(min=1))

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
        RNG, position). Only the newest is kept. Written by rank 0 alone: the table, its optimizer state and the
        RNG are the same on every rank that uses them (rank 0 always does: the first stage)."""
        root = self.plan.run_dir / "checkpoints"
        path = root / checkpoint_dir_name(state.step)
        if dist.is_initialized() and dist.get_rank() != 0:
            return path
        buffer = io.BytesIO()
        torch.save({"learned": self.table.learned.state_dict(),
                    "optimizer": [opt.state_dict() for opt in self.optimizer.optimizers],
                    "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
                    "step": state.step, "consumed_samples": state.consumed_samples,
                    "metrics": metrics}, buffer)
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


def build_table(cfg: PromptLearnConfig, plan: PromptPlan, hidden_size: int, *, std: float,
                text_rows: Callable[[list[int], int], torch.Tensor]) -> PromptTable:
    """The prompt table: the existing tasks' rows frozen, a learned entry per new task (seeded init).

    ``text_rows(ids, n)``: prompt tuning's ``text`` init, the base's embeddings of ``ids`` as ``n`` rows.
    """
    m = cfg.model
    table = PromptTable(hidden_size, frozen=plan.frozen_rows)
    for i, name in enumerate(m.new_tasks):
        n = m.template(name).total_virtual_tokens
        init = None
        if m.virtual_prompt_style == "prompt-tuning":
            method, text = m.init_method(i)
            random = method != "text"
            init = torch.randn(n, hidden_size) * std if random else text_rows(plan.tokenizer.encode(text), n)
        table.add_task(name, n, style=m.virtual_prompt_style, encoder_type=m.p_tuning.encoder_type,
                       num_layers=m.p_tuning.num_layers, dropout=m.p_tuning.dropout, init=init)
    return table


def _stage_text_rows(part: nn.Module, first_stage: bool, hidden_size: int) -> Callable[[list[int], int], torch.Tensor]:
    """``text_rows`` for a parallel layout: the first stage reads its (vocabulary-parallel) embedding whole
    (collective over its TP ranks); later stages never use their copy of the table, zeros will do."""
    def rows(ids: list[int], n: int) -> torch.Tensor:
        if not first_stage:
            return torch.zeros(n, hidden_size)
        if not ids:
            raise ValueError("the init text has no tokens")
        weight = input_embedding_owner(part).word_embeddings.weight.detach()
        whole = weight.full_tensor() if isinstance(weight, DTensor) else weight
        return whole[torch.tensor([ids[i % len(ids)] for i in range(n)], device=whole.device)].float().cpu()

    return rows


def prompt_learn(cfg: PromptLearnConfig, *, log: Callable[[str], None] = print) -> PromptResult:
    """Learn ``cfg.model.new_tasks``' prompts on the frozen base; resume the run directory's latest state if any.

    Joins the job's process group when started as one of several processes (torchrun, srun,
    ``--nproc-per-node``), after the checks have passed; ``log`` is used on rank 0 only.
    """
    started = time.monotonic()
    env = discover_run_env()
    plan = plan_prompt_learn(cfg, env.world_size)
    rank0_log = log if env.rank == 0 else lambda _line: None
    for split, skips in plan.skipped.items():
        for name, count in skips.items():
            if count:
                rank0_log(f"{split}: skipped {count} example(s) of task {name!r} longer than the model takes "
                          f"(nothing left to cut in truncate_field)")
    device = pick_device(cfg.trainer, env.local_rank)
    if cfg.trainer.precision_name != "32":
        raise ConfigError(f"trainer.precision={cfg.trainer.precision}: prompt learning runs in fp32 for now",
                          hint="set trainer.precision=32")
    m = cfg.model
    mesh = init_distributed(env, device, m.tensor_model_parallel_size, m.pipeline_model_parallel_size)
    lock = None
    try:
        lock = hold_run_dir(plan.run_dir, rank=env.rank, log=rank0_log, command=COMMAND)
        latest = None
        if env.rank == 0:
            for leftover in remove_abandoned_checkpoint_writes(plan.run_dir):
                log(f"removed {leftover.name}: an unfinished checkpoint write of a killed run")
            (plan.run_dir / "config.yaml").write_text(_yaml(to_dict(cfg)))
            latest = latest_checkpoint(plan.run_dir) if cfg.exp_manager.resume_if_exists else None
        if mesh is not None:  # every rank resumes what rank 0 found
            box = [latest]
            dist.broadcast_object_list(box, src=0)
            latest = box[0]
        result = _train(cfg, plan, device=device, mesh=mesh, latest=latest, started=started, log=rank0_log)
        return dataclasses.replace(result, rank=env.rank)
    finally:
        if lock is not None:
            lock.release()
        shutdown_distributed()


def _train(cfg: PromptLearnConfig, plan: PromptPlan, *, device: torch.device, mesh, latest: Path | None,
           started: float, log: Callable[[str], None]) -> PromptResult:
    m = cfg.model
    tcfg = effective_train_config(cfg, plan.max_steps)
    rank = dist.get_rank() if mesh is not None else 0
    dp = DataParallel()
    if mesh is not None and mesh["dp"].size() > 1:
        dp = DataParallel(mesh["dp"].get_local_rank(), mesh["dp"].size(), mesh["dp"].get_group())
    seed_everything(m.seed)
    pipeline, layout = None, ""
    if m.tensor_model_parallel_size == 1 and m.pipeline_model_parallel_size == 1:
        loaded = load_model(plan.base_path, device=device, verify="size")
        model = loaded.model  # eval mode, requires_grad False: the frozen base, whole on every replica
        hidden_size = loaded.config.hidden_size
        table = build_table(cfg, plan, hidden_size, std=float(getattr(loaded.config, "init_method_std", 0.02)),
                            text_rows=lambda ids, n: text_init(model, ids, n)).to(device)
        install_prompts(model, table=table)
    else:
        spec = get_family(plan.family)
        parts, arch = load_frozen_parts(plan.base_path, plan.manifest, spec, device, mesh, log)
        model, hidden_size = parts[0], arch.hidden_size
        stage, num_stages = mesh["pp"].get_local_rank(), mesh["pp"].size()
        # Every rank builds the table (the same seeded draws); only the first stage's is used and trained.
        table = build_table(cfg, plan, hidden_size, std=arch.init_method_std,
                            text_rows=_stage_text_rows(model, stage == 0, hidden_size)).to(device)
        if stage == 0:
            install_virtual_tokens(model, table, plan.vocab_size)
        if stage == num_stages - 1:
            mask_padding_on_output(model, plan.vocab_size)
        if num_stages > 1:
            pipeline = Pipeline(parts, spec, mesh, device, tcfg.model.num_micro_batches // dp.size,
                                tied_stages=set(),  # the frozen embedding's copy takes no gradient to share
                                loss_context=loss_context(mesh))
        layout = (f" × {mesh.size()} processes (DP {dp.size}, TP {m.tensor_model_parallel_size}, "
                  f"PP {m.pipeline_model_parallel_size})")
    if mesh is not None and not layout:
        layout = f" × {mesh.size()} processes (DP {dp.size})"
    optimizer = Optimizers([table], tcfg, device)
    state = TrainState()
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
    log(f"prompt learning ({m.virtual_prompt_style}) of {', '.join(m.new_tasks)} on frozen "
        f"{plan.family} {plan.base_path} | {num_learned:,} prompt parameters, {len(plan.train)} training "
        f"examples, {plan.max_steps} steps | device {device}{layout} | run dir {plan.run_dir}")
    table.train()
    task = PromptTask(cfg, plan, model=model, table=table, optimizer=optimizer, device=device, log=log, dp=dp,
                      mesh=mesh, pipeline=pipeline, hidden_size=hidden_size)
    longest = max(len(e.tokens) + len(e.prompt) for e in plan.train)
    progress = Progress(plan.run_dir, max_steps=plan.max_steps, tokens_per_step=m.global_batch_size * longest,
                        log=log, enabled=rank == 0, num_devices=1 if mesh is None else mesh.size())
    if latest is not None:
        progress.forget_after(state.step)
    out = run_loop(task, tcfg, parts=[table], optimizer=optimizer, pipeline=pipeline, state=state, progress=progress,
                   device=device, dp=dp, mesh=mesh, started=started, resumed=latest is not None, latest=latest,
                   log=log, loss_context=loss_context(mesh))
    stopped = out.stopped_by_max_time or out.stopped_by_signal is not None
    output = None
    if not stopped:
        output = plan.run_dir / OUTPUT_NAME
        if rank == 0:
            write_prompts(cfg, plan, table, output)
            log(f"wrote prompt checkpoint {output} ({len(task_records(plan, cfg))} task(s))")
    return PromptResult(plan.run_dir, output, out.state.step, plan.max_steps, out.initial_val_loss,
                        out.final_val_loss, plan.skipped, stopped)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)
