"""GPT: shapes, causality, tied output, Megatron init, meta-device construction, pipeline parts."""

from __future__ import annotations

import math

import pytest
import torch

from bignlp_models import GPT, GPTConfig, build_model, lm_loss, num_parameters, padded_vocab_size

CFG = GPTConfig(vocab_size=256, max_position_embeddings=32, num_layers=3, hidden_size=48, num_attention_heads=4,
                ffn_hidden_size=192, kv_channels=12, hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.02)


@pytest.fixture
def model() -> GPT:
    torch.manual_seed(0)
    return build_model(CFG).eval()


def test_output_shape(model):
    tokens = torch.randint(0, 256, (3, 20))
    assert model(tokens).shape == (3, 20, 256)


def test_causal(model):
    tokens = torch.randint(0, 256, (2, 24))
    changed = tokens.clone()
    changed[:, 15] = (changed[:, 15] + 1) % 256
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.equal(a[:, :15], b[:, :15])
    assert not torch.allclose(a[:, 15:], b[:, 15:])


def test_output_projection_is_tied(model):
    assert model.output_weight is model.embedding.word_embeddings.weight
    names = [n for n, _ in model.named_parameters()]
    assert not any("output" in n or "lm_head" in n for n in names)
    tokens = torch.randint(0, 256, (1, 8))
    model(tokens).sum().backward()
    grad = model.embedding.word_embeddings.weight.grad
    unused = sorted(set(range(256)) - set(tokens.flatten().tolist()))
    assert grad[unused].abs().sum() > 0  # only the output projection touches unused rows


def test_megatron_init(model):
    std, scaled = 0.02, 0.02 / math.sqrt(2 * CFG.num_layers)
    big = build_model(GPTConfig(**{**vars(CFG), "hidden_size": 256, "kv_channels": 64, "ffn_hidden_size": 1024}))
    layer = big.layers["0"]
    assert layer.self_attention.linear_qkv.weight.std().item() == pytest.approx(std, rel=0.05)
    assert layer.mlp.linear_fc1.weight.std().item() == pytest.approx(std, rel=0.05)
    assert layer.self_attention.linear_proj.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert layer.mlp.linear_fc2.weight.std().item() == pytest.approx(scaled, rel=0.05)
    assert big.embedding.word_embeddings.weight.std().item() == pytest.approx(std, rel=0.05)
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.count_nonzero(p) == 0, name
    assert torch.equal(model.final_layernorm.weight, torch.ones(48))


def test_meta_construction_then_init():
    with torch.device("meta"):
        model = GPT(CFG)
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    torch.manual_seed(1)
    model.init_weights()
    torch.manual_seed(1)
    again = build_model(CFG)
    for (n, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), n


def test_parameter_count(model):
    h, f, v, s, layers = 48, 192, 256, 32, 3
    per_layer = (3 * h * h + 3 * h) + (h * h + h) + (h * f + f) + (f * h + h) + 4 * h
    assert num_parameters(model) == v * h + s * h + layers * per_layer + 2 * h


def test_padded_vocab():
    assert padded_vocab_size(50257, 128) == 50304
    assert padded_vocab_size(50257, 128, tensor_parallel_size=8) == 51200
    assert padded_vocab_size(512, 128) == 512


def test_masked_loss_and_document_mask():
    from bignlp_models.masks import document_causal_mask

    logits = torch.zeros(1, 4, 10)
    labels = torch.tensor([[1, 2, 3, 4]])
    assert lm_loss(logits, labels, torch.ones(1, 4)).item() == pytest.approx(math.log(10))
    mask = document_causal_mask(torch.tensor([[5, 9, 6, 7]]), eod_id=9)
    expected = torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], dtype=torch.bool)
    assert torch.equal(mask[0, 0], expected)


def test_document_mask_blocks_attention_across_eod(model):
    tokens = torch.randint(0, 200, (1, 16))
    tokens[0, 7] = 255  # EOD
    from bignlp_models.masks import document_causal_mask

    mask = document_causal_mask(tokens, 255)
    changed = tokens.clone()
    changed[0, 2] = (changed[0, 2] + 1) % 200
    with torch.no_grad():
        a = model(tokens, attention_mask=mask)
        b = model(changed, attention_mask=document_causal_mask(changed, 255))
    assert torch.equal(a[:, 8:], b[:, 8:])  # the second document never sees the first


def _saved_storages(fn) -> list[torch.Tensor]:
    """The distinct storages autograd keeps for backward while ``fn`` runs."""
    kept: dict[int, torch.Tensor] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.setdefault(t.untyped_storage().data_ptr(), t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return list(kept.values())


@pytest.mark.parametrize("document_mask", [False, True])
def test_cpu_attention_with_dropout_keeps_what_megatron_keeps(document_mask):
    # SDPA's CPU math fallback (dropout > 0) would keep fp32 copies of q, k, v and three fp32 s² tensors
    from bignlp_models.layers import CoreAttention, unfused_attention
    from bignlp_models.masks import document_causal_mask

    b, a, s, d = 2, 3, 32, 8
    qkv = torch.randn(b, s, a, 3 * d, dtype=torch.bfloat16, requires_grad=True)
    q, k, v = (t.transpose(1, 2) for t in qkv.split(d, dim=-1))
    core = CoreAttention(GPTConfig(vocab_size=8, max_position_embeddings=s, num_layers=1, hidden_size=a * d,
                                   num_attention_heads=a, ffn_hidden_size=4, kv_channels=d, attention_dropout=0.5))
    mask = document_causal_mask(torch.randint(0, 4, (b, s)), 0) if document_mask else None
    out = []
    saved = _saved_storages(lambda: out.append(core.train()(q, k, v, mask)))
    squares = sorted(str(t.dtype) for t in saved if t.numel() == b * a * s * s)
    assert squares == ["torch.bfloat16", "torch.bfloat16", "torch.bool"]  # softmax out, dropped out, 1-byte mask
    assert sum(t.untyped_storage().nbytes() for t in saved) == 5 * a * s * s * b + 3 * 2 * s * b * a * d  # + q, k, v
    assert out[0].dtype == torch.bfloat16
    out[0].float().sum().backward()
    assert torch.isfinite(qkv.grad.float()).all()
    with torch.no_grad():  # without dropout the unfused path computes what SDPA computes
        q32, k32, v32 = q.float(), k.float(), v.float()
        fused = core.eval()(q32, k32, v32, mask)  # SDPA
        assert torch.allclose(unfused_attention(q32, k32, v32, mask, 0.0), fused, atol=1e-6)


def test_pipeline_parts_chained_equal_the_whole_model(model):
    from bignlp_models.gpt import split_for_pipeline

    with torch.device("meta"):
        meta = GPT(CFG)
    parts = split_for_pipeline(meta, [{"layers": range(0, 1)}, {"layers": range(1, 3)}], 2, [0, 1])
    state = model.state_dict()
    for part in parts:
        part.to_empty(device="cpu")
        own = part.state_dict()
        own.update({k: state[k] for k in own if k in state})
        if part.output_layer is not None:
            own["output_layer.weight"] = state["embedding.word_embeddings.weight"]
        part.load_state_dict(own)
        part.eval()
    first, last = parts
    assert list(first.layers) == ["0"] and list(last.layers) == ["1", "2"]
    assert first.final_layernorm is None and last.embedding is None and last.output_layer is not None
    names = {n for p in parts for n, _ in p.named_parameters()} - {"output_layer.weight"}
    assert names == {n for n, _ in model.named_parameters()}  # whole-model names, each on one part
    tokens = torch.randint(0, 256, (2, 16))
    with torch.no_grad():
        assert torch.equal(last(first(tokens)), model(tokens))
