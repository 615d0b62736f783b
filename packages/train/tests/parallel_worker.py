"""Run by test_train_parallel.py as 2 ranks: sharded init equals single-device init; TP/SP logits equal."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from bignlp_contracts import discover_run_env
from bignlp_train.model import GPTConfig, build_model
from bignlp_train.parallelize import build_parallel_model
from bignlp_train.runtime import init_distributed, shutdown_distributed

CFG = GPTConfig(vocab_size=128, max_position_embeddings=16, num_layers=2, hidden_size=32, num_attention_heads=4,
                ffn_hidden_size=64, kv_channels=8, hidden_dropout=0.0, attention_dropout=0.0)


def main() -> None:
    env = discover_run_env()
    init_distributed(env, torch.device("cpu"), 1)
    torch.manual_seed(0)
    reference = build_model(CFG)
    tokens = torch.randint(0, CFG.vocab_size, (2, 16))
    for dp, tp, sp in [(2, 1, False), (1, 2, False), (1, 2, True)]:
        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("dp", "tp"))
        torch.manual_seed(0)
        model = build_parallel_model(CFG, torch.device("cpu"), mesh, sequence_parallel=sp)
        for (name, want), (_, got) in zip(reference.named_parameters(), model.named_parameters()):
            full = got.full_tensor() if isinstance(got, DTensor) else got
            assert torch.equal(want, full), f"dp={dp} tp={tp} sp={sp}: {name} differs after init"
        if tp > 1:
            diff = (model(tokens) - reference(tokens)).abs().max().item()
            assert diff < 1e-5, f"tp={tp} sp={sp}: logits differ by {diff}"
    shutdown_distributed()


if __name__ == "__main__":
    main()
