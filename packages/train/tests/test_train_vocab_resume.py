"""Resume across a change of vocabulary padding (TP=1 → TP=2) with the real GPT-2 vocabulary.

Megatron pads the vocabulary to a multiple of make_vocab_size_divisible_by × TP: GPT-2's 50257
tokens become 50304 rows at TP=1 and 50432 at TP=2. On resume the real-token rows of the embedding
(tied to the output layer) and of its AdamW moments are loaded exactly; the padding rows are this
layout's own (fresh init, zero moments). What cannot be equal: padded logits take part in the
softmax's normaliser, so the resumed losses differ from an uninterrupted TP=1 run's by the change in
that normaliser. With nearly uniform logits that is about log(50432/50304) ≈ 2.5e-3 nats; measured
here 3.7e-3 to 4.0e-3 nats at steps 4-6 (about 4e-4 relative; the TP=1 run's old padding rows had
been pushed below the fresh ones), checked against twice that estimate, 5.1e-3.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_train_parallel import CURVE, curve
from train_helpers import make_dataset, tiny_overrides

from bignlp_contracts import MEGATRON_DATASET, Producer, latest_checkpoint, write_manifest
from bignlp_models import GPT_SPEC, build_model
from bignlp_train.checkpoint import load_checkpoint
from bignlp_train.config import load_train_config
from bignlp_train.optim import Optimizers
from bignlp_train.trainer import pretrain

GPT2 = Path(__file__).resolve().parents[3] / "tests" / "data" / "gpt2"
GPT2_VOCAB = 50257
EMBEDDING = "embedding.word_embeddings.weight"


@pytest.fixture(scope="module")
def gpt2_dataset(tmp_path_factory) -> Path:
    """Token ids over GPT-2's id space (end of document 50256) with GPT-2's own vocab.json/merges.txt."""
    prefix = make_dataset(tmp_path_factory.mktemp("gpt2") / "data", vocab_size=GPT2_VOCAB)
    out = prefix.parent
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2 / name, out / "tokenizer" / name)
    manifest = json.loads((out / "manifest.json").read_text())
    write_manifest(out, MEGATRON_DATASET, producer=Producer("bignlp-train-tests", "0"),
                   files=sorted(manifest["files"]), summary=manifest["summary"])
    return prefix


def overrides(dataset: Path, run_dir: Path, *extra: str) -> list[str]:
    return tiny_overrides(dataset, run_dir, *CURVE, "trainer.max_steps=6", "trainer.val_check_interval=3",
                          "model.optim.sched.max_steps=6", *extra)


@pytest.fixture(scope="module")
def saved_tp1(gpt2_dataset, tmp_path_factory) -> Path:
    """A one-process (TP=1, 50304 rows) run stopped after its step-3 checkpoint."""
    run_dir = tmp_path_factory.mktemp("tp1")
    pretrain(load_train_config("gpt3/tiny-cpu", overrides(gpt2_dataset, run_dir, "trainer.max_steps=3")),
             log=lambda _line: None)
    return run_dir


def model_and_optimizer(cfg, seed: int = 1234):
    torch.manual_seed(seed)
    model = build_model(cfg.model.architecture(GPT2_VOCAB))
    return model, Optimizers([model], cfg, torch.device("cpu"))


@pytest.mark.parametrize("divisible_by", [256, 64], ids=["grow-50432", "shrink-50304"])
def test_real_token_rows_load_exactly(gpt2_dataset, saved_tp1, divisible_by, tmp_path):
    """Loaded into a model padded otherwise (as TP=2 pads, or less): real rows exact, padding fresh."""
    if divisible_by == 64:  # shrink: save a 50432-row checkpoint first, load it into 50304 rows
        saved = tmp_path / "wide"
        cfg = load_train_config("gpt3/tiny-cpu", overrides(gpt2_dataset, saved, "trainer.max_steps=3",
                                                           "model.make_vocab_size_divisible_by=256"))
        pretrain(cfg, log=lambda _line: None)
        source_div, saved_rows, rows = 256, 50432, 50304
    else:
        saved, source_div, saved_rows, rows = saved_tp1, 128, 50304, 50432
    ckpt = latest_checkpoint(saved)
    source_cfg = load_train_config("gpt3/tiny-cpu", overrides(gpt2_dataset, saved,
                                                              f"model.make_vocab_size_divisible_by={source_div}"))
    reference, ref_opt = model_and_optimizer(source_cfg)
    load_checkpoint(ckpt, parts=[reference], optimizers=ref_opt, spec=GPT_SPEC)

    cfg = load_train_config("gpt3/tiny-cpu", overrides(gpt2_dataset, saved,
                                                       f"model.make_vocab_size_divisible_by={divisible_by}"))
    model, optimizer = model_and_optimizer(cfg)
    fresh = model.state_dict()[EMBEDDING].clone()
    lines: list[str] = []
    state = load_checkpoint(ckpt, parts=[model], optimizers=optimizer, spec=GPT_SPEC, log=lines.append)
    assert state.step == 3
    assert len(lines) == 1 and f"pads {GPT2_VOCAB} tokens to {saved_rows} rows, this layout to {rows}" in lines[0]

    got, want = dict(model.named_parameters()), dict(reference.named_parameters())
    assert got[EMBEDDING].shape[0] == rows
    assert torch.equal(got[EMBEDDING][:GPT2_VOCAB], want[EMBEDDING][:GPT2_VOCAB])
    assert torch.equal(got[EMBEDDING][GPT2_VOCAB:], fresh[GPT2_VOCAB:])  # this layout's own padding
    for name in got:
        if name != EMBEDDING:
            assert torch.equal(got[name], want[name]), name
    for key in ("exp_avg", "exp_avg_sq"):
        moment = optimizer.optimizers[0].state[got[EMBEDDING]][key]
        ref_moment = ref_opt.optimizers[0].state[want[EMBEDDING]][key]
        assert torch.equal(moment[:GPT2_VOCAB], ref_moment[:GPT2_VOCAB])
        assert ref_moment[:GPT2_VOCAB].abs().sum() > 0 and not moment[GPT2_VOCAB:].any()


def test_save_at_tp1_resume_at_tp2(gpt2_dataset, saved_tp1, tmp_path):
    """The real resume: 2 processes at TP=2 continue the TP=1 checkpoint; losses track an uninterrupted run."""
    reference, resumed = tmp_path / "tp1", tmp_path / "tp2"
    shutil.copytree(saved_tp1, reference)
    shutil.copytree(saved_tp1, resumed)
    pretrain(load_train_config("gpt3/tiny-cpu", overrides(gpt2_dataset, reference)), log=lambda _line: None)
    out = subprocess.run(
        [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
         *overrides(gpt2_dataset, resumed, "model.tensor_model_parallel_size=2")],
        capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("vocabulary re-padded: checkpoint step-00000003 pads 50257 tokens to 50304 rows, "
                            "this layout to 50432") == 1  # rank 0 alone logs
    assert "resumed from" in out.stdout and "vocab 50432" in out.stdout
    want, got = curve(reference), curve(resumed)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]  # 1-3 from the copied run's metrics.jsonl
    for step in (4, 5, 6):
        # within the normaliser's share of the extra padding (see the module docstring), not equal
        assert got[step][0] == pytest.approx(want[step][0], abs=2 * (torch.log(torch.tensor(50432 / 50304))).item())
        assert got[step][0] != want[step][0]
    assert got[6][0] < curve(saved_tp1)[1][0]  # it learns on
