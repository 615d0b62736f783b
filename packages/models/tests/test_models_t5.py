"""The T5/mT5 encoder-decoder: against Hugging Face's T5 v1.1 / mT5, its options, counts, pipeline parts."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bignlp_models import num_parameters
from bignlp_models.layers import KVCache, relative_position_bucket
from bignlp_models.t5 import T5, T5Config, count_parameters, pipeline_stages, split_for_pipeline

V, H, HEADS, KV, FF = 96, 32, 4, 8, 48


def v11_config(**overrides) -> T5Config:
    """Our config with T5 v1.1 / mT5's math."""
    base = dict(vocab_size=V, hidden_size=H, num_attention_heads=HEADS, kv_channels=KV, encoder_num_layers=2,
                decoder_num_layers=2, encoder_ffn_hidden_size=FF, decoder_ffn_hidden_size=FF,
                position_embedding_type="relative", relative_attention_num_buckets=8,
                relative_attention_max_distance=20, activation="geglu", normalization="rmsnorm", bias=False,
                share_decoder_tokens_head_embeddings=False, hidden_dropout=0.0, attention_dropout=0.0,
                layernorm_epsilon=1e-6)
    base.update(overrides)
    return T5Config(**base)


def build(cfg: T5Config, seed: int = 0) -> T5:
    torch.manual_seed(seed)
    with torch.device("meta"):
        model = T5(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    return model.eval()


def _fused(*weights: torch.Tensor, heads: int) -> torch.Tensor:
    """Megatron's per-head fused layout: rows [head 0: w0 | w1 | ..., head 1: ...] of (heads·kv, h) weights."""
    per_head = [w.view(heads, -1, w.shape[-1]) for w in weights]
    return torch.cat(per_head, dim=1).reshape(-1, weights[0].shape[-1])


def from_hf(hf, cfg: T5Config) -> T5:
    """Map a Hugging Face T5ForConditionalGeneration / MT5ForConditionalGeneration into ours, by hand.

    HF leaves attention scores unscaled; ours divides by √kv as Megatron does, so the query rows take √kv.
    """
    sd = hf.state_dict()
    ours = build(cfg)
    scale = math.sqrt(cfg.kv_channels)
    out: dict[str, torch.Tensor] = {
        "encoder_embedding.word_embeddings.weight": sd["shared.weight"],
        "encoder_relative_position_bias.relative_attention_bias.weight":
            sd["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        "decoder_relative_position_bias.relative_attention_bias.weight":
            sd["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
        "encoder_final_layernorm.weight": sd["encoder.final_layer_norm.weight"],
        "decoder_final_layernorm.weight": sd["decoder.final_layer_norm.weight"],
        "tokens_head.weight": sd["lm_head.weight"],
    }
    for stack, n in (("encoder", cfg.encoder_num_layers), ("decoder", cfg.decoder_num_layers)):
        for i in range(n):
            hf_p, p = f"{stack}.block.{i}.layer.", f"{stack}_layers.{i}."
            att = hf_p + "0.SelfAttention."
            out[p + "input_layernorm.weight"] = sd[hf_p + "0.layer_norm.weight"]
            out[p + "self_attention.linear_qkv.weight"] = _fused(sd[att + "q.weight"] * scale, sd[att + "k.weight"],
                                                                sd[att + "v.weight"], heads=cfg.num_attention_heads)
            out[p + "self_attention.linear_proj.weight"] = sd[att + "o.weight"]
            mlp = 1
            if stack == "decoder":
                cross = hf_p + "1.EncDecAttention."
                out[p + "pre_cross_attn_layernorm.weight"] = sd[hf_p + "1.layer_norm.weight"]
                out[p + "cross_attention.linear_q.weight"] = sd[cross + "q.weight"] * scale
                out[p + "cross_attention.linear_kv.weight"] = _fused(sd[cross + "k.weight"], sd[cross + "v.weight"],
                                                                    heads=cfg.num_attention_heads)
                out[p + "cross_attention.linear_proj.weight"] = sd[cross + "o.weight"]
                mlp = 2
            ff = f"{hf_p}{mlp}.DenseReluDense."
            out[p + "pre_mlp_layernorm.weight"] = sd[f"{hf_p}{mlp}.layer_norm.weight"]
            out[p + "mlp.linear_fc1.weight"] = sd[ff + "wi_0.weight"]
            out[p + "mlp.linear_fc1_2.weight"] = sd[ff + "wi_1.weight"]
            out[p + "mlp.linear_fc2.weight"] = sd[ff + "wo.weight"]
    missing, unexpected = ours.load_state_dict(out, strict=True)
    assert not missing and not unexpected
    return ours


def hf_model(kind: str, cfg: T5Config):
    transformers = pytest.importorskip("transformers")
    config_class = transformers.T5Config if kind == "t5" else transformers.MT5Config
    model_class = transformers.T5ForConditionalGeneration if kind == "t5" else transformers.MT5ForConditionalGeneration
    hf_cfg = config_class(vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, d_kv=cfg.kv_channels,
                          d_ff=cfg.encoder_ffn_hidden_size, num_layers=cfg.encoder_num_layers,
                          num_decoder_layers=cfg.decoder_num_layers, num_heads=cfg.num_attention_heads,
                          relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                          relative_attention_max_distance=cfg.relative_attention_max_distance, dropout_rate=0.0,
                          layer_norm_epsilon=cfg.layernorm_epsilon, feed_forward_proj="gated-gelu",
                          tie_word_embeddings=False, decoder_start_token_id=0, pad_token_id=0)
    torch.manual_seed(1)
    hf = model_class(hf_cfg)
    # transformers 5 ties lm_head to the shared embedding whatever the flag: give it its own weight (v1.1).
    hf.lm_head.weight = nn.Parameter(torch.randn(cfg.vocab_size, cfg.hidden_size) * 0.05)
    with torch.no_grad():  # a random init far from zero, so every term of the math shows
        for name, p in hf.named_parameters():
            if "layer_norm" in name:
                p.uniform_(0.5, 1.5)
            elif "relative_attention_bias" in name:
                p.normal_(0.0, 1.0)
    return hf.eval()


@pytest.mark.parametrize("kind", ["t5", "mt5"])
def test_logits_equal_hugging_face_v11(kind):
    cfg = v11_config()
    hf = hf_model(kind, cfg)
    ours = from_hf(hf, cfg)
    torch.manual_seed(2)
    enc = torch.randint(0, V, (3, 11))
    dec = torch.randint(0, V, (3, 7))
    enc_mask = torch.ones(3, 11, dtype=torch.bool)
    enc_mask[1, 8:] = False  # a padded encoder row
    enc_mask[2, 5:] = False
    with torch.no_grad():
        want = hf(input_ids=enc, attention_mask=enc_mask.long(), decoder_input_ids=dec).logits
        got = ours(enc, decoder_tokens=dec, encoder_mask=enc_mask)
    assert got.shape == want.shape == (3, 7, V)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_relative_buckets_equal_hugging_face():
    transformers = pytest.importorskip("transformers")
    bucket = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket
    rel = torch.arange(-300, 300)[None, :] - torch.arange(0, 40)[:, None]
    for bidirectional in (True, False):
        for buckets, distance in ((32, 128), (8, 20)):
            want = bucket(rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            got = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=buckets, max_distance=distance)
            assert torch.equal(got, want)


OPTIONS = [
    dict(),  # the NeMo launcher's default: learned absolute, geglu, layernorm with bias, tied head
    dict(position_embedding_type="learned_absolute", activation="gelu", normalization="layernorm", bias=True,
         share_decoder_tokens_head_embeddings=True),
    dict(activation="swiglu", relative_position_bias_self_attention_only=False),
    dict(encoder_num_layers=3, decoder_num_layers=1, decoder_ffn_hidden_size=24),
    dict(kv_channels=16),
]


@pytest.mark.parametrize("overrides", OPTIONS)
def test_parameter_count_from_config(overrides):
    cfg = v11_config(**overrides) if overrides else T5Config(
        vocab_size=V, hidden_size=H, num_attention_heads=HEADS, kv_channels=KV, encoder_num_layers=2,
        decoder_num_layers=2, encoder_ffn_hidden_size=FF, decoder_ffn_hidden_size=FF)
    with torch.device("meta"):
        model = T5(cfg)
    assert count_parameters(cfg) == num_parameters(model)


@pytest.mark.parametrize("overrides", OPTIONS)
def test_cached_decoding_equals_full_forward(overrides):
    cfg = v11_config(**overrides)
    model = build(cfg)
    torch.manual_seed(3)
    enc, dec = torch.randint(0, V, (2, 9)), torch.randint(0, V, (2, 6))
    enc_mask = torch.ones(2, 9, dtype=torch.bool)
    enc_mask[1, 6:] = False
    with torch.no_grad():
        full = model(enc, decoder_tokens=dec, encoder_mask=enc_mask)
        memory = model.encode(enc, enc_mask)
        cache = KVCache(2, 6)
        steps = [model.decode(dec[:, :2], memory, enc_mask, cache=cache)]  # a prompt of two, then one by one
        steps += [model.decode(dec[:, i:i + 1], memory, enc_mask, cache=cache) for i in range(2, 6)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-5, atol=1e-5)


def test_padded_decoder_keys_are_not_attended():
    model = build(v11_config())
    enc, dec = torch.randint(0, V, (1, 8)), torch.randint(0, V, (1, 6))
    mask = torch.tensor([[True] * 4 + [False] * 2])
    other = dec.clone()
    other[0, 4:] = (other[0, 4:] + 1) % V  # change only the padded tokens
    with torch.no_grad():
        a = model(enc, decoder_tokens=dec, decoder_mask=mask)
        b = model(enc, decoder_tokens=other, decoder_mask=mask)
    torch.testing.assert_close(a[:, :4], b[:, :4], rtol=0, atol=0)


@pytest.mark.parametrize("tied", [True, False])
@pytest.mark.parametrize("pp,split", [(2, 1), (3, 1), (3, 2), (4, 2)])
def test_pipeline_parts_chained_equal_the_whole_model(pp, split, tied):
    cfg = v11_config(position_embedding_type="learned_absolute", encoder_num_layers=2, decoder_num_layers=2,
                     share_decoder_tokens_head_embeddings=tied, bias=True, normalization="layernorm")
    model = build(cfg)
    with torch.device("meta"):
        meta = T5(cfg)
    stages = pipeline_stages(cfg, pp, 1, split)
    parts = split_for_pipeline(meta, stages, pp, list(range(pp)))
    whole = model.state_dict()
    from bignlp_models.t5 import TIED_PARAMETERS
    for part in parts:
        part.to_empty(device="cpu")
        part.load_state_dict({k: whole[TIED_PARAMETERS.get(k, k)] for k in part.state_dict()})
        part.eval()
    names = [set(p.state_dict()) for p in parts]
    # every weight of the whole model lives on exactly one stage (tied copies aside)
    held = [k for n in names for k in n if k not in TIED_PARAMETERS]
    assert sorted(held) == sorted(whole)
    torch.manual_seed(4)
    enc, dec = torch.randint(0, V, (2, 9)), torch.randint(0, V, (2, 5))
    kwargs = dict(decoder_tokens=dec, encoder_mask=torch.ones(2, 9, dtype=torch.bool))
    with torch.no_grad():
        want = model(enc, **kwargs)
        x = (enc,)
        for part in parts:
            x = part(*x, **kwargs)
            x = x if isinstance(x, tuple) else (x,)
    torch.testing.assert_close(x[0], want, rtol=0, atol=0)


def test_unknown_position_embedding_type_is_one_line():
    with pytest.raises(ValueError, match="position_embedding_type 'rotary' is not supported"):
        v11_config(position_embedding_type="rotary")
