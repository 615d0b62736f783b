"""Run by test_train_parallel.py as 2 ranks: sharded init equals single-device init; TP/SP logits equal.

With the argument ``no_sync``: one FSDP (DP=2) training step of 2 micro-batches per rank reduce-scatters
each FSDP unit's gradients once (after the last micro-batch), not once per micro-batch.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from bignlp_contracts import discover_run_env
from bignlp_models import GPT_SPEC, GPTConfig, build_model, lm_loss
from bignlp_train.config import load_train_config
from bignlp_train.parallelize import build_model_parts
from bignlp_train.runtime import init_distributed, shutdown_distributed

CFG = GPTConfig(vocab_size=128, max_position_embeddings=16, num_layers=2, hidden_size=32, num_attention_heads=4,
                ffn_hidden_size=64, kv_channels=8, hidden_dropout=0.0, attention_dropout=0.0)


def no_sync() -> None:
    from bignlp_train.loop import DataParallel, train_step
    from bignlp_train.optim import Optimizers

    env = discover_run_env()
    mesh = init_distributed(env, torch.device("cpu"), 1)
    cfg = load_train_config("gpt3/tiny-cpu", ["model.micro_batch_size=2", "model.global_batch_size=8"])
    torch.manual_seed(0)
    model = build_model_parts(GPT_SPEC, CFG, torch.device("cpu"), mesh)[0]
    optimizer = Optimizers([model], cfg, torch.device("cpu"))
    dp = DataParallel(mesh["dp"].get_local_rank(), mesh["dp"].size(), mesh["dp"].get_group())

    def batches():
        while True:
            tokens = torch.randint(0, CFG.vocab_size, (2, 16))
            yield {"tokens": tokens, "labels": tokens.roll(-1, 1), "loss_mask": torch.ones(2, 16),
                   "position_ids": torch.arange(16).expand(2, 16)}

    calls = []
    real = dist.reduce_scatter_single

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dist.reduce_scatter_single = counted
    class Task:  # the loop's loss hook, as pretraining computes it
        @staticmethod
        def loss(model, batch):
            return lm_loss(model(batch["tokens"], batch["position_ids"]), batch["labels"], batch["loss_mask"])

    loss, grad_norm = train_step(Task(), [model], optimizer, batches(), num_micro_batches=2, clip=1.0,
                                 device=torch.device("cpu"), dp=dp)
    units = CFG.num_layers + 1  # one FSDP unit per block, the root for embeddings and final LayerNorm
    assert len(calls) == units, f"{len(calls)} reduce-scatters for {units} FSDP units over 2 micro-batches"
    assert grad_norm > 0 and loss > 0
    shutdown_distributed()


def main() -> None:
    env = discover_run_env()
    init_distributed(env, torch.device("cpu"), 1)
    torch.manual_seed(0)
    reference = build_model(CFG)
    tokens = torch.randint(0, CFG.vocab_size, (2, 16))
    for dp, tp, sp in [(2, 1, False), (1, 2, False), (1, 2, True)]:
        mesh = init_device_mesh("cpu", (dp, tp), mesh_dim_names=("dp", "tp"))
        torch.manual_seed(0)
        model = build_model_parts(GPT_SPEC, CFG, torch.device("cpu"), mesh, sequence_parallel=sp)[0]
        for (name, want), (_, got) in zip(reference.named_parameters(), model.named_parameters()):
            full = got.full_tensor() if isinstance(got, DTensor) else got
            assert torch.equal(want, full), f"dp={dp} tp={tp} sp={sp}: {name} differs after init"
        if tp > 1:
            logits = model(tokens)
            # vocabulary-parallel output: this rank holds the logits of its vocabulary slice only
            assert isinstance(logits, DTensor) and logits.to_local().shape[-1] == CFG.vocab_size // tp, logits.shape
            diff = (logits.full_tensor() - reference(tokens)).abs().max().item()
            assert diff < 1e-5, f"tp={tp} sp={sp}: logits differ by {diff}"
    shutdown_distributed()


if __name__ == "__main__":
    no_sync() if sys.argv[1:] == ["no_sync"] else main()
