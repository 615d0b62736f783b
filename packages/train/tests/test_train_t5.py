"""T5 pretraining through the one engine: span corruption, every parallel layout equal to one process,
resume, and bad input caught before any process starts.

Tiny model, fp32, dropout 0, fixed seed, synthetic WordPiece dataset with 100 sentinels: loss curves of
2- and 4-process layouts must equal one process's within 1e-5 relative.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_train_parallel import assert_same_curve, curve  # the same curve comparison as GPT's (1e-5 relative)
from train_helpers import t5_tiny_overrides

from bignlp_contracts import latest_checkpoint, read_checkpoint
from bignlp_train.cli import main
from bignlp_train.config import load_train_config
from bignlp_train.trainer import pretrain as pretrain_lib

# GBS 8 / MBS 2: 4 micro-batches a step (2 per rank at DP=2); learned absolute positions by default.
CURVE = ("trainer.max_steps=10", "trainer.val_check_interval=5", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=0", "model.global_batch_size=8", "model.hidden_dropout=0",
         "model.attention_dropout=0", "model.optim.sched.max_steps=10")


def pretrain(dataset, run_dir: Path, *extra: str, nproc: int = 1, check: bool = True,
             timeout: int = 240) -> subprocess.CompletedProcess:
    """``python -m bignlp_train pretrain --config t5/tiny-cpu`` (with ``--nproc-per-node`` when nproc > 1)."""
    args = [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "t5/tiny-cpu"]
    if nproc > 1:
        args += ["--nproc-per-node", str(nproc)]
    out = subprocess.run([*args, *t5_tiny_overrides(dataset, run_dir, *CURVE, *extra)], capture_output=True,
                         text=True, timeout=timeout)
    if check:
        assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def reference(t5_dataset, tmp_path_factory) -> dict:
    run_dir = tmp_path_factory.mktemp("t5single")
    pretrain(t5_dataset, run_dir)
    return curve(run_dir)


def test_single_process_learns_and_writes_a_t5_checkpoint(t5_dataset, tmp_path, reference):
    run_dir = tmp_path / "run"
    cfg = load_train_config("t5/tiny-cpu", t5_tiny_overrides(t5_dataset, run_dir, "trainer.max_steps=30",
                                                               "trainer.val_check_interval=30"))
    result = pretrain_lib(cfg, log=lambda _line: None)
    assert result.final_val_loss < result.initial_val_loss - 1.0, (result.initial_val_loss, result.final_val_loss)
    _, manifest = read_checkpoint(latest_checkpoint(run_dir))
    assert manifest.kind == "model-checkpoint"
    assert manifest.summary["family"] == "t5"
    assert manifest.summary["model"]["encoder_num_layers"] == 2
    assert manifest.summary["tokenizer"]["num_sentinel_tokens"] == 100

    # load_model gives the trained model: its validation loss, recomputed here, is the trainer's last one
    import torch

    from bignlp_models import T5, T5Config, generate, lm_loss, load_model, load_state_dict_only
    from bignlp_train.data import micro_batches, resolve_blend, split_sizes
    from bignlp_train.t5_data import build_t5_datasets, t5_batch
    from bignlp_train.trainer import plan_run

    loaded = load_model(run_dir)
    assert loaded.family.name == "t5" and loaded.tokenizer.sentinel_ids[0] == loaded.vocab_size - 100
    m = cfg.model
    plan = plan_run(dataclasses.replace(cfg, exp_manager=dataclasses.replace(cfg.exp_manager, resume_if_exists=True)))
    valid = build_t5_datasets(m.data, seed=m.seed, seq_length=m.seq_length, seq_length_dec=m.seq_length_dec,
                              sizes=split_sizes(cfg), entries=resolve_blend(m), tokenizer=plan.tokenizer,
                              cache_dir=run_dir / "index_cache")[1]
    # training's softmax spans the padded vocabulary rows too: score with them, as the trainer did
    weights, _ = load_state_dict_only(run_dir, unpad=False)
    padded = T5(T5Config(**manifest.summary["model"]))
    padded.load_state_dict(weights)
    padded.eval()
    losses = []
    with torch.no_grad():
        for mb in micro_batches(valid, start=0, num_samples=2 * m.global_batch_size, micro_batch_size=2):
            b = t5_batch(mb)
            inputs = dict(decoder_tokens=b["decoder_tokens"], encoder_mask=b["encoder_mask"],
                          decoder_mask=b["decoder_mask"])
            logits = padded(b["encoder_tokens"], **inputs)
            losses.append(lm_loss(logits, b["labels"], b["loss_mask"]).item())
            real = loaded.model(b["encoder_tokens"], **inputs)  # load_model's model: the real-token rows only
            torch.testing.assert_close(real, logits[..., :loaded.vocab_size], rtol=1e-5, atol=1e-5)
    assert sum(losses) / len(losses) == pytest.approx(result.final_val_loss, rel=1e-5)
    # and it generates: a sentinel-bearing encoder input, decoding from the tokenizer's bos (NeMo's start)
    tok = loaded.tokenizer
    out = generate(loaded.model, [[*b["encoder_tokens"][0][:10].tolist(), tok.sentinel_ids[0]]], max_new_tokens=5,
                   pad_id=tok.pad_id, decoder_start_token_id=tok.bos_id)
    assert len(out.tokens[0]) == 5


LAYOUTS = {
    "dp2-fsdp": (),
    "tp2": ("model.tensor_model_parallel_size=2",),
    "tp2-sp": ("model.tensor_model_parallel_size=2", "model.sequence_parallel=true"),
    "pp2-encoder|decoder": ("model.pipeline_model_parallel_size=2",),
    "dp2-full-uniform": ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
                         "model.activations_checkpoint_num_layers=2"),
    "dp2-full-block": ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=block",
                       "model.activations_checkpoint_num_layers=1"),
    "tp2-sp-selective": ("model.tensor_model_parallel_size=2", "model.sequence_parallel=true",
                         "model.activations_checkpoint_granularity=selective"),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_two_process_curve_equals_single_process(t5_dataset, tmp_path, reference, layout):
    out = pretrain(t5_dataset, tmp_path, *LAYOUTS[layout], nproc=2)
    assert_same_curve(curve(tmp_path), reference, range(1, 11))
    assert "× 2 processes" in out.stdout


def test_bad_input_is_one_line_before_any_process_starts(dataset, t5_dataset, tmp_path):
    runner = CliRunner()

    def fails(*overrides, data=t5_dataset) -> str:
        result = runner.invoke(main, ["pretrain", "--config", "t5/tiny-cpu", "--nproc-per-node", "2",
                                      *t5_tiny_overrides(data, tmp_path / "bad", *overrides)])
        assert result.exit_code in (2, 3), result.output  # a config error, or a data error
        assert result.stderr.count("\n") == 1, result.stderr
        assert not (tmp_path / "bad").exists()  # nothing written, no process started
        return result.stderr

    assert "sentinel" in fails(data=dataset)  # a GPT dataset: no sentinels
    assert "position_embedding_type='rotary'" in fails("model.position_embedding_type=rotary")
    assert "activation='relu'" in fails("model.activation=relu")
    assert "pipeline_model_parallel_split_rank=2" in fails("model.pipeline_model_parallel_size=2",
                                                           "model.pipeline_model_parallel_split_rank=2")
    assert "seq_length_dec" in fails("model.data.seq_length_dec=3")


def test_save_at_dp2_resume_at_tp2_and_one_process(t5_dataset, tmp_path, reference):
    saved = tmp_path / "dp2"
    pretrain(t5_dataset, saved, "trainer.max_steps=5", nproc=2)
    for name, nproc, extra in [("tp2", 2, ("model.tensor_model_parallel_size=2",)), ("single", 1, ())]:
        run_dir = tmp_path / name
        shutil.copytree(saved, run_dir)
        out = pretrain(t5_dataset, run_dir, *extra, nproc=nproc)
        assert "resumed from" in out.stdout and "(step 5, 40 samples consumed)" in out.stdout
        assert_same_curve(curve(run_dir), reference, range(6, 11))


def test_kill_9_mid_run_then_resume_matches_the_uninterrupted_run(t5_dataset, tmp_path):
    from test_train_faults import HOOK, assert_steps_equal, kill_group, train_records

    # dropout on: the resumed run must restore the RNG too; a checkpoint every 2 steps
    faults = ("trainer.max_steps=8", "model.optim.sched.max_steps=8", "trainer.val_check_interval=4",
              "trainer.limit_val_batches=1", "trainer.limit_test_batches=0",
              "exp_manager.checkpoint_callback_params.every_n_steps=2",
              "exp_manager.checkpoint_callback_params.save_top_k=-1")
    args = ["pretrain", "--config", "t5/tiny-cpu"]
    straight = tmp_path / "straight"
    subprocess.run([sys.executable, "-m", "bignlp_train", *args, *t5_tiny_overrides(t5_dataset, straight, *faults)],
                   check=True, capture_output=True, timeout=240)
    run_dir = tmp_path / "killed"
    env = {**os.environ, "FAULT_MODE": "hang-after-log", "FAULT_STEP": "5"}
    proc = subprocess.Popen([sys.executable, "-c", HOOK, *args, *t5_tiny_overrides(t5_dataset, run_dir, *faults)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while 5 not in train_records(run_dir):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "step 5 was never logged"
            time.sleep(0.05)
    finally:
        kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(run_dir).name == "step-00000004"
    command = [sys.executable, "-m", "bignlp_train", *args, *t5_tiny_overrides(t5_dataset, run_dir, *faults)]
    out = subprocess.run(command,
                         capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "resumed from" in out.stdout and "(step 4, 16 samples consumed)" in out.stdout
    assert_steps_equal(train_records(run_dir), train_records(straight), range(1, 9))


# The curve only: no validation, no checkpoint (keeps 4 processes on 2 cores well under a minute).
FAST = ("trainer.limit_val_batches=0", "exp_manager.create_checkpoint_callback=false")


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_pp2_dp2_four_processes_equal_one(t5_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 4 ranks on 2 cores: one intra-op thread each (as GPT's mesh test)
    pretrain(t5_dataset, tmp_path / "single", *FAST)
    out = pretrain(t5_dataset, tmp_path / "mesh", *FAST, "model.pipeline_model_parallel_size=2",
                   "numa_mapping.enable=false", nproc=4)
    assert "× 4 processes (DP 2, TP 1, PP 2 (1F1B))" in out.stdout
    assert_same_curve(curve(tmp_path / "mesh"), curve(tmp_path / "single"), range(1, 11))


# T5 v1.1 / mT5's options: relative position bias (split by heads under TP), RMSNorm, no biases, untied
# output layer (its own vocabulary-parallel weight), swiglu, an asymmetric model, cross-attention bias.
V11 = ("model.position_embedding_type=relative", "model.normalization=rmsnorm", "model.bias=false",
       "model.share_decoder_tokens_head_embeddings=false", "model.activation=swiglu", "model.encoder.num_layers=2",
       "model.decoder.num_layers=1", "model.decoder.ffn_hidden_size=48",
       "model.relative_position_bias_self_attention_only=false")


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_v11_options_under_tp_sp_and_pp_equal_one_process(t5_dataset, tmp_path):
    pretrain(t5_dataset, tmp_path / "single", *FAST, *V11)
    single = curve(tmp_path / "single")
    for name, layout in {"tp2-sp": ("model.tensor_model_parallel_size=2", "model.sequence_parallel=true"),
                         "pp2": ("model.pipeline_model_parallel_size=2",)}.items():
        pretrain(t5_dataset, tmp_path / name, *FAST, *V11, *layout, nproc=2)
        assert_same_curve(curve(tmp_path / name), single, range(1, 11))


def test_bf16_follows_the_fp32_curve(t5_dataset, tmp_path, reference):
    """bf16 compute (FSDP's bf16 parameters, fp32 master weights) on one process: the same curve within bf16's
    precision."""
    pretrain(t5_dataset, tmp_path, "trainer.precision=bf16")
    got = curve(tmp_path)
    for step in range(1, 11):
        assert got[step][0] == pytest.approx(reference[step][0], rel=3e-2), (step, got[step], reference[step])
