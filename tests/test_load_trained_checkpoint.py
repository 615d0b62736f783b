"""A checkpoint written by the real ``bignlp-train pretrain`` loads with bignlp_models.load_model."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bignlp_contracts import read_checkpoint
from bignlp_models import lm_loss, load_model
from support import console_script, run

SEQ = 32
TINY = [
    "trainer.accelerator=cpu", "trainer.max_steps=8", "trainer.val_check_interval=4", "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1", "model.micro_batch_size=4", "model.global_batch_size=4",
    f"model.encoder_seq_length={SEQ}", f"model.max_position_embeddings={SEQ}", f"model.data.seq_length={SEQ}",
    "model.num_layers=2", "model.hidden_size=32", "model.ffn_hidden_size=64", "model.num_attention_heads=2",
    "model.optim.lr=5e-3", "model.optim.sched.warmup_steps=1", "model.optim.sched.min_lr=5e-4",
    "model.data.splits_string=90,8,2",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_corpus, gpt2_files) -> tuple[Path, Path]:
    """dataprep → pretrain on the first 80 documents of the demo corpus (GPT-2 tokenizer, 8 steps)."""
    root = tmp_path_factory.mktemp("load")
    with gzip.open(demo_corpus, "rt", encoding="utf-8") as f:
        (root / "small.jsonl").write_text("".join(line for _, line in zip(range(80), f)))
    vocab, merges = gpt2_files
    res = run([
        console_script("bignlp-dataprep"), "preprocess", "--input", str(root / "small.jsonl"),
        "--output-prefix", str(root / "data" / "demo"), "--json-keys", "text", "--tokenizer-type", "gpt2-bpe",
        "--vocab-file", str(vocab), "--merges-file", str(merges), "--append-eod", "--workers", "1",
    ])
    assert res.returncode == 0, res.stderr
    prefix = root / "data" / "demo_text_document"
    res = run([
        console_script("bignlp-train"), "pretrain", "--config", "gpt3/tiny-cpu",
        f"model.data.data_prefix=[1.0,{prefix}]", f"exp_manager.explicit_log_dir={root / 'run'}", *TINY,
    ], timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "run", prefix


def test_trained_checkpoint_loads_and_predicts_like_the_trained_model(trained):
    run_dir, prefix = trained
    ckpt, manifest = read_checkpoint(run_dir)
    loaded = load_model(run_dir)
    assert loaded.path == ckpt and loaded.manifest.kind == "model-checkpoint"
    assert loaded.family.name == "gpt" and loaded.vocab_size == 50257 < manifest.summary["padded_vocab_size"]
    assert loaded.model.embedding.word_embeddings.weight.shape == (50257, 32)

    tokens = np.fromfile(f"{prefix}.bin", dtype=np.uint16)[: 16 * (SEQ + 1)].astype(np.int64)
    batch = torch.from_numpy(tokens).view(16, SEQ + 1)
    with torch.no_grad():
        logits = loaded.model(batch[:, :-1])
    assert logits.shape == (16, SEQ, 50257) and torch.isfinite(logits).all()
    loss = lm_loss(logits, batch[:, 1:], torch.ones(16, SEQ)).item()
    # The trained weights, not fresh ones: an untrained model scores about ln(50257) = 10.8 here.
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    before = next(m["val_loss"] for m in metrics if m.get("event") == "validation" and m["step"] == 0)
    last_train = [m["loss"] for m in metrics if m.get("event") == "train"][-1]
    assert before > math.log(50257) - 0.1
    assert loss < before - 0.3 and abs(loss - last_train) < 0.5, (loss, before, last_train)


def test_trained_checkpoint_carries_its_tokenizer(trained):
    run_dir, _ = trained
    tokenizer = load_model(run_dir).tokenizer
    ids = tokenizer.encode("Hello world")
    assert ids == [15496, 995]  # GPT-2's ids
    assert tokenizer.decode(ids) == "Hello world"
