"""Building blocks an encoder-decoder needs: cross-attention, gated MLPs, RMSNorm; checked against
Hugging Face's T5 modules where they are the same math (an independent reference)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from bignlp_models.layers import MLP, CrossAttention, KVCache, build_norm

CFG = SimpleNamespace(hidden_size=32, num_attention_heads=4, kv_channels=8, ffn_hidden_size=64, attention_dropout=0.0)


def _reference_cross_attention(attn: CrossAttention, x, memory, allowed):
    """Written out per head: q from x, [k | v] per head from memory, softmax over allowed keys."""
    heads, d = CFG.num_attention_heads, CFG.kv_channels
    q = attn.linear_q(x).unflatten(-1, (heads, d)).transpose(1, 2)
    kv = attn.linear_kv(memory).unflatten(-1, (heads, 2 * d))
    k, v = kv[..., :d].transpose(1, 2), kv[..., d:].transpose(1, 2)
    scores = q @ k.transpose(-1, -2) / d ** 0.5
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.linear_proj(out.transpose(1, 2).flatten(2))


@pytest.mark.parametrize("masked", [False, True])
def test_cross_attention_equals_written_out_attention(masked):
    torch.manual_seed(0)
    attn = CrossAttention(CFG).eval()
    x, memory = torch.randn(2, 5, 32), torch.randn(2, 7, 32)
    allowed = None
    if masked:  # the second example's encoder input has 3 padding positions
        allowed = torch.ones(2, 1, 1, 7, dtype=torch.bool)
        allowed[1, ..., 4:] = False
    with torch.no_grad():
        torch.testing.assert_close(attn(x, memory, allowed), _reference_cross_attention(attn, x, memory, allowed))


def test_cross_attention_keys_values_are_computed_once_with_a_cache():
    torch.manual_seed(0)
    attn = CrossAttention(CFG).eval()
    memory = torch.randn(2, 7, 32)
    calls = []
    attn.linear_kv.register_forward_hook(lambda *_: calls.append(1))
    layer_cache = KVCache(2, 8).layer("0")
    steps = [torch.randn(2, 1, 32) for _ in range(3)]
    with torch.no_grad():
        cached = [attn(x, memory, cache=layer_cache) for x in steps]
        assert len(calls) == 1  # the encoder's keys and values once, for every decoding step
        for x, got in zip(steps, cached):
            torch.testing.assert_close(got, attn(x, memory))


def test_cross_attention_names_and_no_bias():
    names = {n for n, _ in CrossAttention(CFG, bias=False).named_parameters()}
    assert names == {"linear_q.weight", "linear_kv.weight", "linear_proj.weight"}


@pytest.mark.parametrize("activation", ["gelu", "geglu", "swiglu"])
def test_mlp_activations(activation):
    torch.manual_seed(0)
    mlp = MLP(CFG, activation=activation, bias=False)
    x = torch.randn(3, 32)
    h = x @ mlp.linear_fc1.weight.T
    if activation == "gelu":
        want = F.gelu(h, approximate="tanh")
        assert not hasattr(mlp, "linear_fc1_2")
    else:
        act = F.gelu(h, approximate="tanh") if activation == "geglu" else h * torch.sigmoid(h)
        want = act * (x @ mlp.linear_fc1_2.weight.T)
    torch.testing.assert_close(mlp(x), want @ mlp.linear_fc2.weight.T)


def test_unknown_activation_and_norm_are_one_line_errors():
    with pytest.raises(ValueError, match="activation 'relu2' is not supported; use one of gelu, geglu, swiglu"):
        MLP(CFG, activation="relu2")
    with pytest.raises(ValueError, match="normalization 'batchnorm' is not supported"):
        build_norm("batchnorm", 32, 1e-6)


def test_geglu_and_rmsnorm_equal_hugging_face_t5_v1_1():
    t5 = pytest.importorskip("transformers.models.t5.modeling_t5")
    config = t5.T5Config(d_model=32, d_ff=64, num_heads=4, d_kv=8, feed_forward_proj="gated-gelu", dropout_rate=0.0,
                         layer_norm_epsilon=1e-6)
    torch.manual_seed(0)
    theirs = t5.T5DenseGatedActDense(config).eval()
    ours = MLP(CFG, activation="geglu", bias=False).eval()
    ours.load_state_dict({"linear_fc1.weight": theirs.wi_0.weight, "linear_fc1_2.weight": theirs.wi_1.weight,
                          "linear_fc2.weight": theirs.wo.weight})
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    their_norm = t5.T5LayerNorm(32, eps=1e-6)
    their_norm.weight.data.uniform_(0.5, 1.5)
    our_norm = build_norm("rmsnorm", 32, 1e-6)
    our_norm.load_state_dict({"weight": their_norm.weight})
    with torch.no_grad():
        torch.testing.assert_close(our_norm(x), their_norm(x), rtol=1e-6, atol=1e-6)
    assert isinstance(build_norm("layernorm", 32, 1e-5), torch.nn.LayerNorm)
