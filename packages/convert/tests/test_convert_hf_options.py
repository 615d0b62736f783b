"""bignlp-convert to-hf / from-hf beyond the defaults: other head widths and activations, the options that
have no Hugging Face class, and Hub directories that ship only ``spiece.model``."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from convert_helpers import DATA, make_checkpoint
from test_convert_hf import hf_logits, inputs, our_logits, texts

from bignlp_contracts import ConfigError
from bignlp_convert.cli import main
from bignlp_convert.hf import from_hf, to_hf
from bignlp_models import open_checkpoint

transformers = pytest.importorskip("transformers")
safetensors = pytest.importorskip("safetensors.torch")


@pytest.mark.parametrize(("kind", "overrides", "atol"), [
    # √8 is no power of two: Hugging Face's query weights are ours / √8 rounded to fp32, which the sharp
    # attention of these std-0.2 weights turns into ~2e-5 on logits of ~8 (kv_channels 16 or 64: exact weights)
    ("t5v11", {"kv_channels": 8}, 1e-4),
    ("t5v11", {"activation": "swiglu"}, 1e-5),  # gated-silu
    ("t5v11", {"decoder_num_layers": 3}, 1e-5),
])
def test_other_t5_shapes_compute_our_logits(tmp_path, kind, overrides, atol):
    ckpt, model, tok = make_checkpoint(tmp_path / "ckpt", kind, **overrides)
    to_hf(ckpt, tmp_path / "hf")
    x, y = inputs(tok.vocab_size)
    torch.testing.assert_close(hf_logits(tmp_path / "hf", kind, x, y), our_logits(model, kind, x, y, tok.vocab_size),
                               rtol=0, atol=atol)
    from_hf(tmp_path / "hf", tmp_path / "back")
    back = open_checkpoint(tmp_path / "back").config
    assert all(getattr(back, k) == v for k, v in overrides.items())


@pytest.mark.parametrize(("kind", "overrides", "blocker"), [
    ("gpt", {"kv_channels": 8}, "kv_channels=8"),
    ("t5v11", {"bias": True}, "bias=true"),
    ("t5v11", {"normalization": "layernorm"}, "normalization=layernorm"),
    ("t5v11", {"activation": "gelu"}, "activation=gelu"),
    ("t5v11", {"gelu_approximation": "none"}, "gelu_approximation=none"),
    ("t5v11", {"share_decoder_tokens_head_embeddings": True}, "share_decoder_tokens_head_embeddings=true"),
    ("t5v11", {"decoder_ffn_hidden_size": 128}, "decoder_ffn_hidden_size=128"),
])
def test_options_without_hf_class_are_refused_by_name(tmp_path, kind, overrides, blocker):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", kind, **overrides)
    with pytest.raises(ConfigError, match=blocker) as err:
        to_hf(ckpt, tmp_path / "hf")
    assert "\n" not in str(err.value) and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("tokenizer_config", [None, {"extra_ids": 100},
                                              {"additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)]}])
def test_hub_directory_with_only_spiece_model_imports_with_transformers_ids(tmp_path, tokenizer_config):
    """google/mt5-* and t5-v1_1-* ship spiece.model; transformers puts <extra_id_0> at the top of the vocabulary."""
    ckpt, model, _ = make_checkpoint(tmp_path / "ckpt", "mt5")
    to_hf(ckpt, tmp_path / "seed")
    hub = tmp_path / "hub"
    transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "seed").save_pretrained(hub)
    shutil.copyfile(DATA / "spm" / "multi_unigram_8000.model", hub / "spiece.model")
    if tokenizer_config is not None:
        (hub / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", **tokenizer_config}))
    hf_tok = transformers.AutoTokenizer.from_pretrained(hub)
    from_hf(hub, tmp_path / "ours")
    tok = open_checkpoint(tmp_path / "ours").tokenizer()
    assert tok.vocab_size == len(hf_tok) == 8100
    assert tok.sentinel_ids[0] == hf_tok.convert_tokens_to_ids("<extra_id_0>") == 8099
    assert tok.sentinel_ids[99] == 8000 and tok.eod_id == hf_tok.eos_token_id
    for text in [*texts(), "fill <extra_id_0> and <extra_id_12> then </s>"]:
        assert tok.encode(text, allow_special=True) == hf_tok(text, add_special_tokens=False)["input_ids"], text


def test_gpt2_saved_as_the_base_model_imports(tmp_path):
    """openai-community/gpt2's model.safetensors holds GPT2Model's names (``h.0.…``, ``wte``) and mask buffers."""
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", "gpt")
    to_hf(ckpt, tmp_path / "hub")
    weights = safetensors.load_file(tmp_path / "hub" / "model.safetensors")
    base = {name.removeprefix("transformer."): t for name, t in weights.items()}
    base["h.0.attn.bias"] = torch.tril(torch.ones(1, 1, 64, 64))
    (tmp_path / "hub" / "manifest.json").unlink()
    safetensors.save_file(base, tmp_path / "hub" / "model.safetensors", metadata={"format": "pt"})
    from_hf(tmp_path / "hub", tmp_path / "ours")
    src, got = open_checkpoint(ckpt), open_checkpoint(tmp_path / "ours")
    names = list(src.shapes)
    a, b = src.read(names), got.read(names)
    assert all(torch.equal(a[n], b[n]) for n in names)


def test_pytorch_model_bin_imports(tmp_path):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", "mt5")
    to_hf(ckpt, tmp_path / "hub")
    torch.save(safetensors.load_file(tmp_path / "hub" / "model.safetensors"), tmp_path / "hub" / "pytorch_model.bin")
    (tmp_path / "hub" / "model.safetensors").unlink()
    from_hf(tmp_path / "hub", tmp_path / "ours")
    src, got = open_checkpoint(ckpt), open_checkpoint(tmp_path / "ours")
    names = list(src.shapes)
    a, b = src.read(names), got.read(names)
    assert all(torch.equal(a[n], b[n]) for n in names)


@pytest.mark.parametrize(("kind", "edit", "blocker"), [
    ("t5v11", {"feed_forward_proj": "relu"}, "feed_forward_proj='relu'"),
    ("t5v11", {"scale_decoder_outputs": True}, "scaled by d_model"),
    ("gpt", {"activation_function": "relu"}, "activation_function='relu'"),
    ("gpt", {"scale_attn_by_inverse_layer_idx": True}, "scale_attn_by_inverse_layer_idx=True"),
])
def test_hf_configs_we_cannot_compute_are_refused(tmp_path, kind, edit, blocker):
    ckpt, _, _ = make_checkpoint(tmp_path / "ckpt", kind)
    to_hf(ckpt, tmp_path / "hub")
    config = json.loads((tmp_path / "hub" / "config.json").read_text())
    (tmp_path / "hub" / "config.json").write_text(json.dumps({**config, **edit}))
    res = CliRunner().invoke(main, ["from-hf", "--hf", str(tmp_path / "hub"), "--output", str(tmp_path / "ours")])
    assert res.exit_code == 2 and blocker in res.output, res.output
    assert len(res.output.strip().splitlines()) <= 2 and not (tmp_path / "ours").exists()
