"""NeMo CosineAnnealing values and Megatron's weight-decay groups."""

from __future__ import annotations

import math

import pytest
import torch

from bignlp_models import GPTConfig, build_model
from bignlp_train.config import load_train_config
from bignlp_train.optim import build_optimizer, cosine_annealing_lr, lr_at


def lr(step, **kw):
    args = {"max_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "constant_steps": 0, "max_steps": 110} | kw
    return cosine_annealing_lr(step, **args)


def test_cosine_without_constant_steps():
    assert lr(0) == pytest.approx(1 / 11)  # NeMo warmup: (step+1)/(warmup+1)
    assert lr(10) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.1 + 0.9 * 0.5)  # half-way through the cosine
    assert lr(110) == pytest.approx(0.1)
    assert lr(500) == pytest.approx(0.1)
    assert lr(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 25 / 100)))


def test_cosine_with_constant_steps_megatron_shape():
    kw = {"constant_steps": 20}  # decay over 110 - 20 - 10 = 80 steps
    assert lr(0, **kw) == 0.0  # Megatron warmup: step/warmup
    assert lr(5, **kw) == pytest.approx(0.5)
    assert lr(10, **kw) == pytest.approx(1.0)
    assert lr(50, **kw) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr(90, **kw) == pytest.approx(0.1)
    assert lr(100, **kw) == pytest.approx(0.1)  # the constant tail at min_lr
    assert lr(200, **kw) == pytest.approx(0.1)


def test_no_warmup():
    assert lr(0, warmup_steps=0) == pytest.approx(1.0)
    assert lr(55, warmup_steps=0) == pytest.approx(0.1 + 0.9 * 0.5)


def test_schedule_follows_trainer_max_steps_by_default():
    cfg = load_train_config("gpt3/tiny-cpu", ["trainer.max_steps=100", "model.optim.sched.warmup_steps=0",
                                              "model.optim.lr=1e-3", "model.optim.sched.min_lr=0"])
    assert lr_at(50, cfg) == pytest.approx(5e-4)
    cfg = load_train_config("gpt3/tiny-cpu", ["trainer.max_steps=100", "model.optim.sched.max_steps=200",
                                              "model.optim.sched.warmup_steps=0", "model.optim.lr=1e-3",
                                              "model.optim.sched.min_lr=0"])
    assert lr_at(100, cfg) == pytest.approx(5e-4)


def test_weight_decay_groups():
    cfg = load_train_config("gpt3/tiny-cpu", ["model.optim.weight_decay=0.1"])
    model = build_model(GPTConfig(vocab_size=64, max_position_embeddings=8, num_layers=1, hidden_size=16,
                                  num_attention_heads=2, ffn_hidden_size=32, kv_channels=8))
    opt = build_optimizer(model, cfg, torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"])  # linears and embeddings
    assert all(p.ndim == 1 for p in no_decay["params"])  # biases and LayerNorms
    assert any(p is model.embedding.word_embeddings.weight for p in decay["params"])
    assert opt.defaults["betas"] == (0.9, 0.95)
