"""T5's activation-memory formula (``t5.activation_bytes_per_layer``) on cases small enough to add up by hand.

The bench (tests/bench/bench_train_t5.py) measures the same against saved-tensor hooks.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from bignlp_models import T5_SPEC
from bignlp_models.gpt import GPTConfig
from bignlp_models.gpt import activation_bytes_per_layer as gpt_bytes
from bignlp_models.t5 import T5Config, activation_bytes_per_layer

# h 8, 2 heads of 3 (p = 6), ffn 10 (encoder) / 12 (decoder); s_enc 4, s_dec 2, b 1
CFG = T5Config(vocab_size=32, hidden_size=8, num_attention_heads=2, kv_channels=3, encoder_num_layers=2,
               decoder_num_layers=2, encoder_ffn_hidden_size=10, decoder_ffn_hidden_size=12)


def bytes_(stack: str, cfg: T5Config = CFG, **kwargs) -> float:
    return activation_bytes_per_layer(cfg, seq_length=4, seq_length_dec=2, micro_batch_size=1, stack=stack, **kwargs)


# encoder, s = 4: 2 blocks × 5sbh = 320; QKV + context 8sbp = 192; geglu 8sbf = 320; scores 5as²b = 160
# decoder, s = 2: 3 blocks × 5sbh = 240; self 8sbp = 96; cross Q + context 4·s_d·b·p = 48, K V 4·s_e·b·p = 96;
#   geglu 8sbf = 192; scores 5a·s_d² = 40 + cross 5a·s_d·s_e = 80
@pytest.mark.parametrize("stack, recompute, tp, sp, want", [
    ("encoder", None, 1, False, 320 + 192 + 320 + 160),
    ("decoder", None, 1, False, 240 + 96 + 48 + 96 + 192 + 40 + 80),
    ("encoder", "selective", 1, False, 320 + 192 + 320),
    ("decoder", "selective", 1, False, 240 + 96 + 48 + 96 + 192),
    ("encoder", "full", 1, False, 2 * 4 * 8),
    ("decoder", "full", 1, False, 2 * 2 * 8),
    # TP=2: the per-block 5sbh stay whole on every rank, the rest is split by heads / ffn columns
    ("encoder", None, 2, False, 320 + (192 + 320 + 160) / 2),
    ("decoder", None, 2, False, 240 + (96 + 48 + 96 + 192 + 40 + 80) / 2),
    ("encoder", "selective", 2, False, 320 + (192 + 320) / 2),
    ("decoder", "selective", 2, False, 240 + (96 + 48 + 96 + 192) / 2),
    ("encoder", "full", 2, False, 2 * 4 * 8),
    # + SP: everything split, the full-recompute input too
    ("encoder", None, 2, True, (320 + 192 + 320 + 160) / 2),
    ("decoder", None, 2, True, (240 + 96 + 48 + 96 + 192 + 40 + 80) / 2),
    ("decoder", "selective", 2, True, (240 + 96 + 48 + 96 + 192) / 2),
    ("encoder", "full", 2, True, 2 * 4 * 8 / 2),
    ("decoder", "full", 2, True, 2 * 2 * 8 / 2),
])
def test_bytes_per_layer_by_hand(stack, recompute, tp, sp, want):
    assert bytes_(stack, tensor_parallel_size=tp, sequence_parallel=sp, recompute=recompute) == want


def test_options():
    gelu = replace(CFG, activation="gelu")  # fc1's output and the GeLU: 4sbf, not 8sbf
    assert bytes_("encoder", gelu) == 320 + 192 + 4 * 4 * 10 + 160
    assert bytes_("decoder", gelu) == 240 + 96 + 48 + 96 + 4 * 2 * 12 + 40 + 80
    # relative bias: additive_mask keeps a 1-byte mask, b·s_dec² (decoder) / b·s_enc (encoder), whole on every rank
    relative = replace(CFG, position_embedding_type="relative")
    assert bytes_("decoder", relative) == 792 + 4
    assert bytes_("encoder", relative) == 992 + 4
    assert bytes_("decoder", relative, tensor_parallel_size=2, sequence_parallel=True) == 792 / 2 + 4
    assert bytes_("decoder", relative, recompute="selective") == bytes_("decoder", recompute="selective")
    # without seq_length_dec the decoder is as long as the encoder
    assert activation_bytes_per_layer(CFG, seq_length=4, micro_batch_size=1, stack="decoder") == \
        activation_bytes_per_layer(CFG, seq_length=4, seq_length_dec=4, micro_batch_size=1, stack="decoder")
    with pytest.raises(ValueError, match="stack must be"):
        bytes_("middle")
    assert T5_SPEC.activation_bytes_per_layer is activation_bytes_per_layer


@pytest.mark.parametrize("recompute", [None, "selective", "full"])
@pytest.mark.parametrize("tp, sp", [(1, False), (2, False), (4, True)])
def test_encoder_layer_with_gpt_shape_is_korthikanti(recompute, tp, sp):
    """An encoder layer of GPT-3's shape (p = h, ffn 4h, GeLU) keeps what a GPT layer keeps (Table 2)."""
    h, heads, s, b = 64, 4, 32, 2
    t5 = T5Config(vocab_size=32, hidden_size=h, num_attention_heads=heads, kv_channels=h // heads,
                  encoder_num_layers=1, decoder_num_layers=1, encoder_ffn_hidden_size=4 * h,
                  decoder_ffn_hidden_size=4 * h, activation="gelu")
    gpt = GPTConfig(vocab_size=32, max_position_embeddings=s, num_layers=1, hidden_size=h, num_attention_heads=heads,
                    ffn_hidden_size=4 * h, kv_channels=h // heads)
    kwargs = dict(seq_length=s, micro_batch_size=b, tensor_parallel_size=tp, sequence_parallel=sp, recompute=recompute)
    assert activation_bytes_per_layer(t5, stack="encoder", **kwargs) == pytest.approx(gpt_bytes(gpt, **kwargs))
