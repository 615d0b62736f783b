"""Our GPT ↔ Hugging Face ``GPT2LMHeadModel``.

Same function, different storage: GPT-2's ``Conv1D`` weights are (in, out), the transpose of
``nn.Linear``'s; its fused ``c_attn`` rows are [all q | all k | all v] where ours are Megatron's
per-head [q | k | v]; its ``lm_head`` is tied to ``wte`` and not saved. Pure layout moves, so
both directions are bit-exact.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from bignlp_contracts import ConfigError
from bignlp_models import GPTConfig

ARCHITECTURES = ("GPT2LMHeadModel",)
GELU = {"tanh": "gelu_new", "none": "gelu"}

_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")
# ours within a layer → GPT-2's, and whether the weight is stored transposed (Conv1D)
_LAYER_NAMES = {
    "input_layernorm.weight": ("ln_1.weight", False), "input_layernorm.bias": ("ln_1.bias", False),
    "self_attention.linear_qkv.weight": ("attn.c_attn.weight", True),
    "self_attention.linear_qkv.bias": ("attn.c_attn.bias", False),
    "self_attention.linear_proj.weight": ("attn.c_proj.weight", True),
    "self_attention.linear_proj.bias": ("attn.c_proj.bias", False),
    "pre_mlp_layernorm.weight": ("ln_2.weight", False), "pre_mlp_layernorm.bias": ("ln_2.bias", False),
    "mlp.linear_fc1.weight": ("mlp.c_fc.weight", True), "mlp.linear_fc1.bias": ("mlp.c_fc.bias", False),
    "mlp.linear_fc2.weight": ("mlp.c_proj.weight", True), "mlp.linear_fc2.bias": ("mlp.c_proj.bias", False),
}
_HF_LAYER_NAMES = {hf: (ours, t) for ours, (hf, t) in _LAYER_NAMES.items()}
_TOP = {"embedding.word_embeddings.weight": "transformer.wte.weight",
        "embedding.position_embeddings.weight": "transformer.wpe.weight",
        "final_layernorm.weight": "transformer.ln_f.weight", "final_layernorm.bias": "transformer.ln_f.bias"}
_HF_TOP = {hf: ours for ours, hf in _TOP.items()}


def architecture(cfg: GPTConfig, tokenizer: Any, previous: str | None = None) -> str:
    """The transformers class; a ConfigError naming the option when GPT-2 cannot compute ``cfg``.

    ``previous`` (the class an imported model came from) is unused: GPT-2 has one.
    """
    if cfg.num_attention_heads * cfg.kv_channels != cfg.hidden_size:
        raise ConfigError(f"kv_channels={cfg.kv_channels} × num_attention_heads={cfg.num_attention_heads} != "
                          f"hidden_size={cfg.hidden_size}: GPT2LMHeadModel has no separate head width",
                          hint="only models with kv_channels = hidden_size / num_attention_heads export to GPT-2")
    if cfg.gelu_approximation not in GELU:
        raise ConfigError(f"gelu_approximation={cfg.gelu_approximation!r} has no GPT-2 activation")
    return "GPT2LMHeadModel"


def _qkv_to_hf(t: torch.Tensor, heads: int) -> torch.Tensor:
    # rows [heads, {q,k,v}, kv] → [{q,k,v}, heads, kv]
    rest = t.shape[1:]
    return t.reshape(heads, 3, -1, *rest).transpose(0, 1).reshape(t.shape)


def _qkv_from_hf(t: torch.Tensor, heads: int) -> torch.Tensor:
    rest = t.shape[1:]
    return t.reshape(3, heads, -1, *rest).transpose(0, 1).reshape(t.shape)


def to_hf(tensors: Mapping[str, torch.Tensor], cfg: GPTConfig) -> Iterator[tuple[str, torch.Tensor]]:
    """Our weights (any subset, e.g. one layer) under GPT-2's names and layouts."""
    for name, t in tensors.items():
        if name in _TOP:
            yield _TOP[name], t
            continue
        m = _LAYER.match(name)
        if not m or m.group(2) not in _LAYER_NAMES:
            raise KeyError(f"no GPT-2 name for {name!r}")
        hf, transposed = _LAYER_NAMES[m.group(2)]
        if m.group(2).startswith("self_attention.linear_qkv"):
            t = _qkv_to_hf(t, cfg.num_attention_heads)
        yield f"transformer.h.{m.group(1)}.{hf}", (t.t() if transposed else t)


def from_hf(tensors: Mapping[str, torch.Tensor], cfg: GPTConfig) -> dict[str, torch.Tensor]:
    """GPT-2's weights under our names (buffers such as ``attn.bias`` masks and the tied ``lm_head`` skipped)."""
    out = {}
    for name, t in tensors.items():
        if not name.startswith(("transformer.", "lm_head.")):  # the Hub's gpt2 files: GPT2Model's names
            name = f"transformer.{name}"
        if name in _HF_TOP:
            out[_HF_TOP[name]] = t
            continue
        m = _HF_LAYER.match(name)
        if m and m.group(2) in _HF_LAYER_NAMES:
            ours, transposed = _HF_LAYER_NAMES[m.group(2)]
            t = t.t() if transposed else t
            if ours.startswith("self_attention.linear_qkv"):
                t = _qkv_from_hf(t, cfg.num_attention_heads)
            out[f"layers.{m.group(1)}.{ours}"] = t.contiguous()
        elif name == "lm_head.weight" or name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        else:
            raise ConfigError(f"GPT-2 weight {name!r} has no place in our GPT")
    return out


def hf_config(cfg: GPTConfig, vocab_size: int, tokenizer: Any, torch_dtype: str,
              arch: str = "GPT2LMHeadModel") -> dict[str, Any]:
    """``config.json`` (dropout off: an exported model is for inference and fine-tuning sets its own)."""
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "vocab_size": vocab_size,
        "n_positions": cfg.max_position_embeddings, "n_ctx": cfg.max_position_embeddings, "n_embd": cfg.hidden_size,
        "n_layer": cfg.num_layers, "n_head": cfg.num_attention_heads, "n_inner": cfg.ffn_hidden_size,
        "activation_function": GELU[cfg.gelu_approximation], "layer_norm_epsilon": cfg.layernorm_epsilon,
        "initializer_range": cfg.init_method_std, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0,
        "scale_attn_weights": True, "tie_word_embeddings": True,
        "bos_token_id": tokenizer.eod_id, "eos_token_id": tokenizer.eod_id, "torch_dtype": torch_dtype,
    }


def config_from_hf(hf: Mapping[str, Any], padded_vocab_size: int) -> GPTConfig:
    """Our config of a GPT-2 ``config.json``; ConfigError for settings our GPT does not compute."""
    act = hf.get("activation_function", "gelu_new")
    gelu = {v: k for k, v in GELU.items()}.get(act)
    if gelu is None:
        raise ConfigError(f"config.json activation_function={act!r}: our GPT computes gelu_new or gelu")
    for key, want in (("scale_attn_by_inverse_layer_idx", False), ("reorder_and_upcast_attn", False),
                      ("add_cross_attention", False), ("scale_attn_weights", True)):
        if hf.get(key, want) != want:
            raise ConfigError(f"config.json {key}={hf[key]!r} is not supported (our GPT computes {key}={want})")
    h, heads = hf["n_embd"], hf["n_head"]
    return GPTConfig(vocab_size=padded_vocab_size, max_position_embeddings=hf["n_positions"], num_layers=hf["n_layer"],
                     hidden_size=h, num_attention_heads=heads, ffn_hidden_size=hf.get("n_inner") or 4 * h,
                     kv_channels=h // heads, layernorm_epsilon=hf.get("layer_norm_epsilon", 1e-5),
                     init_method_std=hf.get("initializer_range", 0.02), gelu_approximation=gelu)


def run_config(cfg: GPTConfig) -> dict[str, Any]:
    """The launcher's model keys of ``cfg`` (config.yaml of an imported checkpoint)."""
    return {"num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.ffn_hidden_size,
            "num_attention_heads": cfg.num_attention_heads, "kv_channels": cfg.kv_channels,
            "max_position_embeddings": cfg.max_position_embeddings, "encoder_seq_length": cfg.max_position_embeddings,
            "layernorm_epsilon": cfg.layernorm_epsilon, "init_method_std": cfg.init_method_std}
