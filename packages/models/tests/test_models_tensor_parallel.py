"""Tensor-parallel inference (``bignlp_models.tensor_parallel``): 2 gloo ranks on the CPU generate exactly what
one process does.

Each test starts tensor_parallel_worker.py twice (ranks 0 and 1 of a gloo group on a free 127.0.0.1 port,
bounded by a timeout) on a tiny random checkpoint (convert's test helper, real tokenizers: GPT-2's
50,257 tokens are odd, so TP=2 pads the vocabulary by one row that must never be chosen).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bignlp_models import generate, load_model
from bignlp_models.generate import decoding_for

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "convert" / "tests"))
WORKER = Path(__file__).with_name("tensor_parallel_worker.py")
TIMEOUT_S = 120


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_tp(checkpoint: Path, out: Path, world: int = 2) -> list[dict]:
    """The worker as ``world`` ranks; each rank's results."""
    port = str(free_port())
    procs = []
    for rank in range(world):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "RANK": str(rank),
               "WORLD_SIZE": str(world), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(checkpoint), str(out)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = []
    try:
        for proc in procs:
            logs.append(proc.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    assert all(p.returncode == 0 for p in procs), "\n".join(log[-2000:] for log in logs)
    return [torch.load(f"{out}.rank{rank}.pt") for rank in range(world)]


@pytest.mark.parametrize("kind", ["gpt", "t5", "t5v11"])
def test_tp2_generation_equals_one_process(kind, tmp_path):
    from convert_helpers import make_checkpoint
    from tensor_parallel_worker import MAX_NEW, PROMPTS

    checkpoint = make_checkpoint(tmp_path / kind, kind)[0]
    ranks = run_tp(checkpoint, tmp_path / "out")
    loaded = load_model(checkpoint)
    start = None if kind == "gpt" else 0
    want = generate(loaded.model, PROMPTS, max_new_tokens=MAX_NEW, greedy=True, vocab_size=loaded.vocab_size,
                    decoder_start_token_id=start)
    decoding = decoding_for(loaded.model, decoder_start_token_id=start)
    tokens, mask = decoding.batch(PROMPTS, max_new_tokens=MAX_NEW, pad_id=0, vocab_size=loaded.vocab_size,
                                  device=torch.device("cpu"))
    with torch.inference_mode():
        logits = decoding.start(tokens, mask, max_new_tokens=MAX_NEW)
    for got in ranks:
        assert got["greedy"] == want.tokens
        assert got["model_vocab"] % 2 == 0 and got["vocab"] == loaded.vocab_size
        assert got["bf16_dtypes"] == {"torch.bfloat16"}  # dtype= reaches every shard
        torch.testing.assert_close(got["logits"], logits, rtol=1e-5, atol=1e-5)
    assert ranks[0]["sampled"] == ranks[1]["sampled"]  # the same draws on every rank: lockstep


def test_tp_size_must_divide_the_heads():
    from bignlp_models import GPTConfig
    from bignlp_models.tensor_parallel import check_tp_size

    cfg = GPTConfig(vocab_size=128, max_position_embeddings=16, num_layers=1, hidden_size=48, num_attention_heads=6,
                    ffn_hidden_size=96, kv_channels=8)
    check_tp_size(cfg, 3)
    with pytest.raises(ValueError, match="does not divide the model's 6 attention heads"):
        check_tp_size(cfg, 4)
    with pytest.raises(ValueError, match="at least 1"):
        check_tp_size(cfg, 0)
