"""Run by test_train_bf16.py as 2 ranks (DP=2): FSDP2 with bf16 compute keeps fp32 master weights and moments,
and the whole forward (residual stream, logits) runs in bf16 without autocast."""

from __future__ import annotations

import torch
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

from bignlp_contracts import discover_run_env
from bignlp_models import GPT_SPEC, GPTConfig, lm_loss
from bignlp_train.parallelize import build_model_parts
from bignlp_train.runtime import init_distributed, shutdown_distributed

CFG = GPTConfig(vocab_size=128, max_position_embeddings=16, num_layers=2, hidden_size=32, num_attention_heads=4,
                ffn_hidden_size=64, kv_channels=8, hidden_dropout=0.0, attention_dropout=0.0)


def main() -> None:
    env = discover_run_env()
    device = torch.device("cpu")
    init_distributed(env, device, 1)
    mesh = init_device_mesh("cpu", (2, 1), mesh_dim_names=("dp", "tp"))
    torch.manual_seed(0)
    model = build_model_parts(GPT_SPEC, CFG, device, mesh, param_dtype=torch.bfloat16)[0]
    seen: dict[str, torch.dtype] = {}

    def note(name: str):
        def hook(module, _args) -> None:
            seen[name] = module.weight.dtype  # the parameter as forward sees it (gathered by FSDP)
        return hook

    model.layers["0"].self_attention.linear_qkv.register_forward_pre_hook(note("linear_qkv"))
    model.embedding.word_embeddings.register_forward_pre_hook(note("word_embeddings"))
    model.layers["0"].register_forward_hook(lambda _m, _a, out: seen.__setitem__("residual", out.dtype))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, CFG.vocab_size, (2, 16), generator=torch.Generator().manual_seed(env.rank))
    positions = torch.arange(16).expand(2, 16)
    logits = model(tokens, positions)
    assert logits.dtype == torch.bfloat16, logits.dtype
    loss = lm_loss(logits, tokens.roll(-1, dims=1), torch.ones(2, 16))
    loss.backward()
    assert set(seen.values()) == {torch.bfloat16} and len(seen) == 3, seen  # compute and activations in bf16
    for name, p in model.named_parameters():
        assert isinstance(p, DTensor) and p.dtype == torch.float32, (name, p.dtype)  # sharded fp32 master
        assert p.grad is not None and p.grad.dtype == torch.float32, (name, p.grad.dtype)  # reduced in fp32
    optimizer.step()
    for p in model.parameters():
        state = optimizer.state[p]
        assert state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.float32
    print(f"rank {env.rank}: bf16 compute, fp32 master weights, grads and AdamW moments")
    shutdown_distributed()


if __name__ == "__main__":
    main()
