"""Training end to end on tiny data: loss, checkpoints, pruning, exact resume, vocabulary errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from train_helpers import tiny_overrides

from bignlp_contracts import (
    GPT_CHECKPOINT,
    MANIFEST_NAME,
    MODEL_CHECKPOINT,
    ConfigError,
    Producer,
    latest_checkpoint,
    read_checkpoint,
    set_latest_checkpoint,
    write_manifest,
)
from bignlp_models import GPT_SPEC, GPTConfig, build_model
from bignlp_train.checkpoint import load_checkpoint, prune_checkpoints
from bignlp_train.cli import main
from bignlp_train.config import CheckpointCallbackParams, load_train_config
from bignlp_train.optim import Optimizers
from bignlp_train.trainer import pretrain


def run(dataset, run_dir: Path, *extra: str):
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, run_dir, *extra))
    lines: list[str] = []
    return pretrain(cfg, log=lines.append), lines


def records(run_dir: Path, event: str) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == event]


def test_loss_decreases_and_layout(dataset, tmp_path):
    result, lines = run(dataset, tmp_path, "trainer.max_steps=30", "trainer.val_check_interval=10",
                        "trainer.log_every_n_steps=5", "model.optim.lr=1e-2", "model.optim.sched.warmup_steps=3",
                        "model.optim.sched.min_lr=1e-3", "exp_manager.checkpoint_callback_params.save_top_k=1")
    assert result.initial_val_loss == pytest.approx(6.24, abs=0.3)  # ln(512): uniform at init
    assert result.final_val_loss < result.initial_val_loss - 1.0
    assert result.step == 30 and result.test_loss is not None and not result.stopped_by_max_time
    assert any(line.startswith("validation loss before training:") for line in lines)
    progress = [line for line in lines if line.startswith("step ")]
    assert len(progress) == 7 and progress[0].startswith("step 1/30")  # the first step, then every 5th
    assert all(k in progress[0] for k in ("loss", "lr", "grad norm", "tok/s", "s/step", "ETA"))
    assert {r["step"] for r in records(tmp_path, "validation")} == {0, 10, 20, 30}

    assert (tmp_path / "config.yaml").is_file()
    ckpt_root = tmp_path / "checkpoints"
    assert (ckpt_root / "latest").read_text() == "step-00000030\n"
    assert result.latest_checkpoint == ckpt_root / "step-00000030"
    path, manifest = read_checkpoint(tmp_path)
    assert path == ckpt_root / "step-00000030"
    for rel in ("dcp/.metadata", "config.yaml", "tokenizer/vocab.json", "tokenizer/merges.txt", MANIFEST_NAME):
        assert (path / rel).is_file(), rel
    s = manifest.summary
    assert s["step"] == 30 and s["consumed_samples"] == 120 and s["padded_vocab_size"] == 512
    assert s["val_loss"] == pytest.approx(result.final_val_loss) and s["train_loss"] > 0
    assert s["model"]["num_layers"] == 2 and s["num_parameters"] == result.num_parameters
    assert s["tokenizer"]["vocab_file"] == "tokenizer/vocab.json" and s["tokenizer"]["eod_id"] == 511
    assert manifest.inputs[0]["kind"] == "megatron-dataset" and manifest.inputs[0]["path"] == str(dataset.parent)
    assert manifest.producer.package == "bignlp-train"
    assert manifest.kind == "model-checkpoint" and s["family"] == "gpt" and s["vocab_size"] == 512
    # top-1 by val_loss plus the latest: at most two survive
    assert 1 <= len(list(ckpt_root.glob("step-*"))) <= 2


def test_blended_run(dataset, other_dataset, tmp_path):
    result, _ = run(f"[0.5,{dataset},0.5,{other_dataset.parent}]", tmp_path, "trainer.max_steps=2")
    assert result.step == 2
    _, manifest = read_checkpoint(tmp_path)
    assert len(manifest.inputs) == 2


def test_exact_resume(dataset, tmp_path):
    fixed = ("model.optim.sched.max_steps=6", "model.hidden_dropout=0.1", "model.attention_dropout=0.1")
    straight, _ = run(dataset, tmp_path / "a", "trainer.max_steps=6", *fixed)
    first, _ = run(dataset, tmp_path / "b", "trainer.max_steps=3", *fixed)
    resumed, lines = run(dataset, tmp_path / "b", "trainer.max_steps=6", *fixed)
    assert first.step == 3 and resumed.step == 6
    assert resumed.resumed_from == tmp_path / "b" / "checkpoints" / "step-00000003"
    assert resumed.initial_val_loss is None and any(line.startswith("resumed from") for line in lines)
    losses = lambda d: [(r["step"], r["loss"], r["lr"], r["grad_norm"]) for r in records(d, "train")]
    assert losses(tmp_path / "a") == losses(tmp_path / "b")
    vals = lambda d: [(r["step"], r["val_loss"]) for r in records(d, "validation")]
    assert vals(tmp_path / "a") == vals(tmp_path / "b")

    def final_state(run_dir):
        cfg = GPTConfig(**read_checkpoint(run_dir)[1].summary["model"])
        model = build_model(cfg)
        opt = Optimizers([model], load_train_config("gpt3/tiny-cpu"), torch.device("cpu"))
        state = load_checkpoint(latest_checkpoint(run_dir), parts=[model], optimizers=opt, spec=GPT_SPEC)
        return state, model, opt

    (sa, ma, oa), (sb, mb, ob) = final_state(tmp_path / "a"), final_state(tmp_path / "b")
    assert sa == sb
    for (name, pa), (_, pb) in zip(ma.named_parameters(), mb.named_parameters()):
        assert torch.equal(pa, pb), name
    for ka, kb in zip(oa.optimizers[0].state.values(), ob.optimizers[0].state.values()):
        assert torch.equal(ka["exp_avg_sq"], kb["exp_avg_sq"])


def test_resume_if_exists_false_refuses_to_overwrite(dataset, tmp_path):
    run(dataset, tmp_path, "trainer.max_steps=1")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "exp_manager.resume_if_exists=false")])
    assert result.exit_code == 2 and "already holds checkpoints" in result.stderr


def test_max_time_stops_and_checkpoints(dataset, tmp_path):
    result, lines = run(dataset, tmp_path, "trainer.max_time=00:00:00:00", "trainer.max_steps=50")
    assert result.stopped_by_max_time and result.step == 1
    assert latest_checkpoint(tmp_path).name == "step-00000001"
    assert any("trainer.max_time" in line for line in lines)


def test_max_time_before_max_steps_exits_75(dataset, tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "trainer.max_time=00:00:00:00")])
    assert result.exit_code == 75  # retryable: the sbatch template requeues the job
    assert "stopped by trainer.max_time at step 1/6" in result.stderr
    assert latest_checkpoint(tmp_path).name == "step-00000001"


def test_vocab_larger_than_model_exits_3(dataset, tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "model.tokenizer.vocab_size=256")])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1
    assert f"dataset {dataset} has a vocabulary of 512 tokens but the model's is 256" in result.stderr
    assert "(fix: set model.tokenizer.vocab_size=512" in result.stderr


def test_resumed_checkpoint_with_other_vocab_exits_3(dataset, tmp_path):
    run(dataset, tmp_path, "trainer.max_steps=1")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "model.tokenizer.vocab_size=1000",
                                                       "trainer.max_steps=2")])
    assert result.exit_code == 3
    assert "has a vocabulary of 512 tokens (padded to 1024) but the model's in checkpoint" in result.stderr
    assert result.stderr.count("\n") == 1


def _fake_checkpoint(run_dir: Path, step: int, val_loss: float | None) -> Path:
    path = run_dir / "checkpoints" / f"step-{step:08d}"
    (path / "dcp").mkdir(parents=True)
    (path / "dcp" / ".metadata").write_text("x")
    (path / "config.yaml").write_text("{}\n")
    write_manifest(path, MODEL_CHECKPOINT, producer=Producer("t", "0"), files=["config.yaml"],
                   summary={"step": step, "val_loss": val_loss})
    return path


def test_top_k_pruning_keeps_best_and_latest(tmp_path):
    for step, loss in [(10, 3.0), (20, 1.0), (30, 2.0), (40, None), (50, 5.0)]:
        _fake_checkpoint(tmp_path, step, loss)
    set_latest_checkpoint(tmp_path, tmp_path / "checkpoints" / "step-00000050")
    gone = prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=2))
    left = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*"))
    assert left == ["step-00000020", "step-00000030", "step-00000050"]  # best two + latest
    assert len(gone) == 2
    prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=0))
    assert [p.name for p in (tmp_path / "checkpoints").glob("step-*")] == ["step-00000050"]  # never the latest


def test_top_k_counts_latest_when_it_is_among_the_best(tmp_path):
    for step, loss in [(10, 3.0), (20, 2.0), (30, 1.0)]:
        _fake_checkpoint(tmp_path, step, loss)
    set_latest_checkpoint(tmp_path, tmp_path / "checkpoints" / "step-00000030")
    prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=2))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000020", "step-00000030"]
    _fake_checkpoint(tmp_path, 40, 9.0)
    set_latest_checkpoint(tmp_path, tmp_path / "checkpoints" / "step-00000040")
    prune_checkpoints(tmp_path, CheckpointCallbackParams(save_top_k=1, mode="max"))
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000040"]


def test_resume_drops_metrics_past_the_checkpoint_and_reports_at_max(dataset, tmp_path):
    run(dataset, tmp_path, "trainer.max_steps=3")
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a run that died after logging step 4
        f.write(json.dumps({"event": "train", "step": 4, "loss": 0.0}) + "\n")
    again, _ = run(dataset, tmp_path, "trainer.max_steps=3")
    assert again.step == 3 and again.final_val_loss is not None  # nothing left to train, still reported
    assert all(r["step"] <= 3 for r in records(tmp_path, "train"))


def test_bf16_trains_on_cpu(dataset, tmp_path):
    result, _ = run(dataset, tmp_path, "trainer.precision=bf16", "trainer.max_steps=2")
    assert result.step == 2 and result.final_val_loss is not None


def test_resume_with_another_architecture_exits_2(dataset, tmp_path):
    run(dataset, tmp_path, "trainer.max_steps=1")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "model.num_layers=3", "trainer.max_steps=2")])
    assert result.exit_code == 2
    assert "was trained with num_layers=2, the config gives 3" in result.stderr


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    run(dataset, tmp_path, "trainer.max_steps=3")  # a good checkpoint at step 3
    # resume with an absurd learning rate: step 4 updates the weights to ~1e30, step 5's loss is inf/NaN
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "trainer.max_steps=6", "model.optim.lr=1e30",
                                                       "model.optim.sched.min_lr=1e29")])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("bignlp-train: error: loss ")
    assert "at step 5 " in result.stderr and "training diverged" in result.stderr
    assert "checkpoints/latest still names step-00000003" in result.stderr
    assert "lower model.optim.lr" in result.stderr
    assert latest_checkpoint(tmp_path).name == "step-00000003"
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*")) == ["step-00000003"]
    assert records(tmp_path, "diverged")[0]["step"] == 5
    assert max(r["step"] for r in records(tmp_path, "train")) == 4


def test_resume_from_a_legacy_gpt_checkpoint(dataset, tmp_path):
    """A 0.5.0 run directory (kind gpt-checkpoint, no summary.family/vocab_size) resumes as before."""
    first, _ = run(str(dataset), tmp_path, "trainer.max_steps=2")
    ckpt = first.latest_checkpoint
    old = read_checkpoint(ckpt)[1]
    summary = {k: v for k, v in old.summary.items() if k not in ("family", "vocab_size")}
    write_manifest(ckpt, GPT_CHECKPOINT, producer=old.producer, files=list(old.files),
                   config=old.config, inputs=old.inputs, summary=summary)
    assert read_checkpoint(ckpt)[1].kind == "gpt-checkpoint"
    resumed, _ = run(str(dataset), tmp_path, "trainer.max_steps=3")
    assert resumed.resumed_from == ckpt and resumed.step == 3
    assert read_checkpoint(tmp_path)[1].kind == "model-checkpoint"


def test_resume_refuses_a_checkpoint_of_another_family(dataset, tmp_path):
    first, _ = run(str(dataset), tmp_path, "trainer.max_steps=1")
    old = read_checkpoint(first.latest_checkpoint)[1]
    write_manifest(first.latest_checkpoint, MODEL_CHECKPOINT, producer=old.producer, files=list(old.files),
                   config=old.config, inputs=old.inputs, summary={**old.summary, "family": "t5"})
    with pytest.raises(ConfigError, match="holds a t5 model; this config trains a gpt model"):
        run(str(dataset), tmp_path, "trainer.max_steps=2")
