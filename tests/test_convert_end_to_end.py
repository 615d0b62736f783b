"""Trained checkpoints through every conversion, through the console scripts, checked by logits.

GPT: trained with tensor parallelism (2 processes) → ``.nemo`` with 2 pipeline stages → imported back →
Hugging Face → ``transformers``' ``GPT2LMHeadModel``. mT5 (the T5 v1.1 options): trained → Hugging Face →
``MT5ForConditionalGeneration``, and → ``.nemo`` at TP 2 → imported back. Each step's model must compute
what the trained checkpoint computes: no layout of training or of the archive changes a logit.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import torch

from bignlp_contracts import read_manifest
from bignlp_models import load_model
from support import DATA, console_script, run

transformers = pytest.importorskip("transformers")

GPT_TINY = [
    "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
    "model.micro_batch_size=2", "model.global_batch_size=4", "model.encoder_seq_length=32",
    "model.max_position_embeddings=32", "model.data.seq_length=32", "model.num_layers=4", "model.hidden_size=32",
    "model.ffn_hidden_size=64", "model.num_attention_heads=4", "model.tensor_model_parallel_size=2",
    "model.data.splits_string=90,8,2",
]
MT5_V11 = [
    "trainer.accelerator=cpu", "trainer.max_steps=4", "trainer.val_check_interval=4", "trainer.limit_val_batches=1",
    "model.micro_batch_size=2", "model.global_batch_size=4", "model.position_embedding_type=relative",
    "model.normalization=rmsnorm", "model.bias=false", "model.share_decoder_tokens_head_embeddings=false",
    "model.layernorm_epsilon=1e-6", "model.kv_channels=16", "model.num_attention_heads=4", "model.hidden_size=64",
    "model.ffn_hidden_size=96",
]


def convert(*args: str) -> None:
    res = run([console_script("bignlp-convert"), *args], timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]


def preprocess(root: Path, *tokenizer: str, docs: int, corpus: Path, extra=()) -> Path:
    with gzip.open(corpus, "rt", encoding="utf-8") as f:
        (root / "small.jsonl").write_text("".join(line for _, line in zip(range(docs), f)))
    res = run([console_script("bignlp-dataprep"), "preprocess", "--input", str(root / "small.jsonl"),
               "--output-prefix", str(root / "data" / "c"), *tokenizer, *extra])
    assert res.returncode == 0, res.stderr
    return root / "data" / "c_text_document"


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("gpt")
    prefix = preprocess(root, "--tokenizer-type", "gpt2-bpe", "--vocab-file", str(DATA / "gpt2" / "vocab.json"),
                        "--merges-file", str(DATA / "gpt2" / "merges.txt"), docs=60,
                        corpus=DATA / "corpus" / "demo-en.jsonl.gz", extra=["--append-eod"])
    res = run([console_script("bignlp-train"), "pretrain", "--nproc-per-node", "2", "--config", "gpt3/tiny-cpu",
               f"model.data.data_prefix=[1.0,{prefix}]", f"exp_manager.explicit_log_dir={root / 'run'}", *GPT_TINY],
              timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "run"


@pytest.fixture(scope="module")
def mt5_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mt5")
    prefix = preprocess(root, "--tokenizer-type", "sentencepiece", "--tokenizer-model",
                        str(DATA / "spm" / "multi_unigram_8000.model"), docs=150,
                        corpus=DATA / "corpus" / "demo-multi.jsonl.gz",
                        extra=["--num-sentinel-tokens", "100", "--split-sentences"])
    res = run([console_script("bignlp-train"), "pretrain", "--config", "mt5/tiny-cpu",
               f"model.data.data_prefix=[1.0,{prefix}]", f"exp_manager.explicit_log_dir={root / 'run'}", *MT5_V11],
              timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return root / "run"


def tokens(vocab: int, shape=(2, 12), seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


def test_gpt_trained_with_tp2_through_nemo_pp2_and_hugging_face(gpt_run, tmp_path):
    trained = load_model(gpt_run)
    x = tokens(trained.vocab_size)
    with torch.no_grad():
        want = trained.model(x)
    nemo = tmp_path / "nemo" / "megatron_gpt.nemo"
    convert("to-nemo", "--checkpoint", str(gpt_run), "--output", str(nemo), "-t", "1", "-p", "2")
    summary = read_manifest(nemo.parent, "nemo-archive").summary
    assert summary["pipeline_model_parallel_size"] == 2 and summary["family"] == "gpt"
    convert("from-nemo", "--nemo", str(nemo), "--output", str(tmp_path / "back"))
    back = load_model(tmp_path / "back")
    vocab = trained.tokenizer.vocab_size  # the archive pads for its own layout: compare the real tokens' logits
    want = want[..., :vocab]
    with torch.no_grad():
        torch.testing.assert_close(back.model(x)[..., :vocab], want, rtol=0, atol=0)
    convert("to-hf", "--checkpoint", str(tmp_path / "back"), "--output", str(tmp_path / "hf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == "GPT2LMHeadModel"
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, want, rtol=0, atol=1e-5)
    text = "Conversion keeps every token: 3.14, naïve café."
    assert transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")(text)["input_ids"] == \
        trained.tokenizer.encode(text)


def test_mt5_v11_to_hugging_face_and_through_nemo_tp2(mt5_run, tmp_path):
    trained = load_model(mt5_run)
    enc, dec = tokens(trained.vocab_size, (2, 10)), tokens(trained.vocab_size, (2, 6), seed=1)
    vocab = trained.tokenizer.vocab_size
    with torch.no_grad():
        want = trained.model(enc, decoder_tokens=dec)[..., :vocab]
    convert("to-hf", "--checkpoint", str(mt5_run), "--output", str(tmp_path / "hf"))
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["MT5ForConditionalGeneration"]
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=enc, decoder_input_ids=dec).logits, want, rtol=0, atol=1e-5)
    nemo = tmp_path / "nemo" / "megatron_mt5.nemo"
    convert("to-nemo", "--config", "mt5/convert_mt5", "--checkpoint", str(mt5_run), "--output", str(nemo), "-t", "2")
    convert("from-nemo", "--nemo", str(nemo), "--output", str(tmp_path / "back"))
    with torch.no_grad():
        got = load_model(tmp_path / "back").model(enc, decoder_tokens=dec)[..., :vocab]
    torch.testing.assert_close(got, want, rtol=0, atol=0)
