"""Virtual prompts: installing them leaves the model's outputs bit-identical, virtual ids reach the table (with
gradients while learning), generate takes them, p-tuning folds into rows, the prompt-checkpoint round trip."""

from __future__ import annotations

import pytest
import torch

from bignlp_contracts import ArtifactError, Producer
from bignlp_models import GPTConfig, T5Config, generate, get_family
from bignlp_models.prompt import (
    PromptTable,
    check_base_pin,
    install_prompts,
    load_prompt_checkpoint,
    remove_prompts,
    save_prompt_checkpoint,
)

V = 50


def model(family: str):
    torch.manual_seed(0)
    if family == "gpt":
        cfg = GPTConfig(vocab_size=V, max_position_embeddings=32, num_layers=2, hidden_size=16,
                        num_attention_heads=2, ffn_hidden_size=32, kv_channels=8)
    else:
        cfg = T5Config(vocab_size=V, hidden_size=16, num_attention_heads=2, kv_channels=8, encoder_num_layers=1,
                       decoder_num_layers=1, encoder_ffn_hidden_size=32, decoder_ffn_hidden_size=32,
                       max_position_embeddings=32)
    m = get_family(family).build_meta(cfg)
    m.to_empty(device="cpu")
    m.init_weights()
    return m.eval().requires_grad_(False)


def forward(m, family: str, tokens: torch.Tensor) -> torch.Tensor:
    return m(tokens) if family == "gpt" else m(tokens, decoder_tokens=tokens[:, :4])


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_outputs_without_virtual_tokens_are_bit_identical(family):
    m = model(family)
    x = torch.randint(0, V, (2, 9))
    before = forward(m, family, x)
    table = PromptTable(16)
    table.add_task("a", 3, style="p-tuning", encoder_type="mlp")
    install_prompts(m, table=table)
    assert torch.equal(forward(m, family, x), before)
    remove_prompts(m)
    assert torch.equal(forward(m, family, x), before)
    assert sorted(m.state_dict()) == sorted(model(family).state_dict())


@pytest.mark.parametrize("family", ["gpt", "t5"])
def test_virtual_tokens_are_learned_and_generated_with(family):
    m = model(family)
    table = PromptTable(16)
    table.add_task("a", 2, style="prompt-tuning", init=torch.randn(2, 16))
    table.add_task("b", 3, style="p-tuning", encoder_type="lstm")
    install_prompts(m, table=table)
    x = torch.randint(0, V, (2, 8))
    x[:, 0], x[:, 1] = V + 2, V + 4  # task b's rows 0 and 2
    forward(m, family, x).square().mean().backward()
    grads = {name: p.grad for name, p in table.named_parameters()}
    assert grads["learned.0.rows"] is None or not grads["learned.0.rows"].any()  # task a unused here
    assert all(g is not None for n, g in grads.items() if n.startswith("learned.1."))
    assert all(p.grad is None for n, p in m.named_parameters() if ".table." not in n)  # the base: no gradient
    rows = table.fold()
    assert rows.shape == (5, 16) and torch.equal(rows[:2], table.learned["0"].rows.detach())
    install_prompts(m, rows=rows)
    with torch.no_grad():
        folded = forward(m, family, x)
        install_prompts(m, table=table.eval())
        assert torch.equal(forward(m, family, x), folded)
    install_prompts(m, rows=rows)
    extra = {"decoder_start_token_id": 1} if family == "t5" else {}
    out = generate(m, [[V, V + 1, 5, 6], [7, V + 3]], max_new_tokens=3, greedy=True, **extra)
    assert [len(t) for t in out.tokens] == [3, 3] and all(0 <= t < V for row in out.tokens for t in row)
    remove_prompts(m)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(m, [[V, 5]], max_new_tokens=1, greedy=True, **extra)


def test_frozen_rows_never_move():
    earlier = torch.randn(4, 16)
    table = PromptTable(16, frozen=earlier)
    table.add_task("new", 2, style="p-tuning", encoder_type="mlp")
    assert [n for n, _ in table.named_parameters() if "frozen" in n] == []
    opt = torch.optim.AdamW(table.parameters(), lr=1.0)
    table.rows().sum().backward()
    opt.step()
    assert torch.equal(table.fold()[:4], earlier)


def test_prompt_checkpoint_round_trip_and_pin(tmp_path):
    rows = torch.randn(3, 16)
    base = {"path": "/b", "manifest_sha256": "a" * 64, "family": "gpt", "tokenizer_sha256": "t" * 64}
    tasks = [{"taskname": "x", "prompt_template": "<|VIRTUAL_PROMPT_0|>{q} {answer}", "total_virtual_tokens": 3,
              "virtual_token_splits": [3], "offset": 0}]
    save_prompt_checkpoint(tmp_path / "p", rows=rows, tasks=tasks, base=base, producer=Producer("t", "0"))
    ckpt = load_prompt_checkpoint(tmp_path / "p")
    assert torch.equal(ckpt.rows, rows) and list(ckpt.tasks) == ["x"] and ckpt.base == base
    check_base_pin(ckpt.base, base, what="p")
    with pytest.raises(ArtifactError, match="pins base manifest sha256 aaaaaaaaaaaa"):
        check_base_pin(ckpt.base, {**base, "manifest_sha256": "b" * 64}, what="p")
    with pytest.raises(ArtifactError, match="another tokenizer"):
        check_base_pin(ckpt.base, {**base, "tokenizer_sha256": "u" * 64, "manifest_sha256": "b" * 64}, what="p")
