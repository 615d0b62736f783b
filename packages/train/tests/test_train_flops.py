"""Model FLOPs per token (6·N + 12·L·a·s) against an independent count, and the progress line's TFLOP/s and MFU."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bignlp_models import GPTConfig, build_model
from bignlp_models.gpt import flops_per_token
from bignlp_train.progress import Progress
from bignlp_train.runtime import peak_tflops


def test_flops_per_token_equals_torch_flop_counter():
    cfg = GPTConfig(vocab_size=384, max_position_embeddings=40, num_layers=3, hidden_size=48, num_attention_heads=4,
                    ffn_hidden_size=160, kv_channels=16, hidden_dropout=0.0, attention_dropout=0.0)
    model = build_model(cfg)
    batch, seq = 2, 40
    tokens = torch.randint(0, cfg.vocab_size, (batch, seq))
    # the math SDPA backend: its matmuls are visible to the counter (as on GPUs' flash kernels)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(tokens).float().sum().backward()
    assert counter.get_total_flops() == batch * seq * flops_per_token(cfg, seq)


def test_flops_per_token_matches_megatron_formula_for_gpt3_175b():
    h, layers, s, v = 12288, 96, 2048, 51200
    cfg = GPTConfig(vocab_size=v, max_position_embeddings=s, num_layers=layers, hidden_size=h, num_attention_heads=96,
                    ffn_hidden_size=4 * h, kv_channels=h // 96)
    megatron = 72 * layers * h * h * (1 + s / (6 * h) + v / (12 * h * layers))  # per token, no recomputation
    assert flops_per_token(cfg, s) == pytest.approx(megatron, rel=1e-12)


def test_peak_table():
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA H200") == 989.0
    assert peak_tflops("Tesla V100-SXM2-32GB") is None and peak_tflops(None) is None


def test_progress_line_shows_tflops_and_mfu(tmp_path):
    lines: list[str] = []
    progress = Progress(tmp_path, max_steps=10, tokens_per_step=1000, log=lines.append, flops_per_token=1e9,
                        num_devices=2, peak_tflops=312.0)
    progress._window_start -= 1.0  # one step that took a second: 1000 tok/s → 1e12 FLOP/s → 0.5 TFLOP/s per device
    progress.step_done()
    progress.train_step(1, loss=1.0, lr=1e-3, grad_norm=1.0, consumed_samples=8)
    assert "| 0.5 TFLOP/s/device | MFU 0.2% |" in lines[0]
    unknown = Progress(tmp_path, max_steps=10, tokens_per_step=1000, log=lines.append, flops_per_token=1e9)
    unknown.step_done()
    unknown.train_step(1, loss=1.0, lr=1e-3, grad_norm=1.0, consumed_samples=8)
    assert "TFLOP/s/device" in lines[1] and "MFU" not in lines[1]  # CPU: no known peak
