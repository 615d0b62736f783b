"""Our T5 ↔ Hugging Face ``T5ForConditionalGeneration`` / ``MT5ForConditionalGeneration`` (the v1.1 shapes).

Hugging Face's T5 computes what ours does with the options of T5 v1.1 and mT5 (relative position
bias in self-attention only, RMSNorm, no biases, gated GeLU or SiLU, untied output head). Two
differences of storage: its q/k/v are separate where ours are fused per head (Megatron's order),
and it leaves attention scores unscaled where ours divides by √kv_channels, so its query weight is
ours / √kv. That scale is a power of two for kv_channels 4, 16, 64, 256 (64 is every published
T5 v1.1/mT5 size): there, round trips are bit-exact; for other widths equal to rounding.
Other options have no Hugging Face class and are refused, naming the option.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from bignlp_contracts import ConfigError
from bignlp_models import T5Config

ARCHITECTURES = ("T5ForConditionalGeneration", "MT5ForConditionalGeneration")
_ACT = {"geglu": "gated-gelu", "swiglu": "gated-silu"}

_LAYER = re.compile(r"^(encoder|decoder)_layers\.(\d+)\.(.+)$")
_HF_LAYER = re.compile(r"^(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\.(.+)$")
_TOP = {"encoder_embedding.word_embeddings.weight": "shared.weight",
        "encoder_relative_position_bias.relative_attention_bias.weight":
            "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "decoder_relative_position_bias.relative_attention_bias.weight":
            "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder_final_layernorm.weight": "encoder.final_layer_norm.weight",
        "decoder_final_layernorm.weight": "decoder.final_layer_norm.weight",
        "tokens_head.weight": "lm_head.weight"}
_HF_TOP = {hf: ours for ours, hf in _TOP.items()}
# Hugging Face ties these to shared.weight (saved or not)
_HF_TIED = ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")


def _refuse(option: str, why: str) -> ConfigError:
    return ConfigError(f"{option} has no Hugging Face T5 equivalent: {why}",
                       hint="to-hf exports T5 v1.1/mT5-shaped models (position_embedding_type=relative, "
                            "normalization=rmsnorm, bias=false, activation=geglu|swiglu, "
                            "share_decoder_tokens_head_embeddings=false); use to-nemo for the others")


def architecture(cfg: T5Config, tokenizer: Any, previous: str | None = None) -> str:
    """The transformers class; a ConfigError naming what blocks it.

    ``previous`` (the class an imported model came from) if given, else mT5 for a SentencePiece vocabulary
    (or its unigram ``tokenizer.json``), else T5. Both classes compute the same function.
    """
    if cfg.position_embedding_type != "relative":
        raise _refuse(f"position_embedding_type={cfg.position_embedding_type}",
                      "Hugging Face's T5 has relative position bias only")
    if not cfg.relative_position_bias_self_attention_only:
        raise _refuse("relative_position_bias_self_attention_only=false", "its cross-attention has no position bias")
    if cfg.normalization != "rmsnorm":
        raise _refuse(f"normalization={cfg.normalization}", "its layer norm is RMSNorm")
    if cfg.bias:
        raise _refuse("bias=true", "its linear layers and norms have no biases")
    if cfg.activation not in _ACT:
        raise _refuse(f"activation={cfg.activation}", "the v1.1 feed-forward is gated (geglu or swiglu here)")
    if cfg.activation == "geglu" and cfg.gelu_approximation != "tanh":
        raise _refuse(f"gelu_approximation={cfg.gelu_approximation}", "its gated-gelu is the tanh GeLU")
    if cfg.share_decoder_tokens_head_embeddings:
        raise _refuse("share_decoder_tokens_head_embeddings=true",
                      "its tied head rescales the decoder output by hidden_size**-0.5, ours does not")
    if cfg.encoder_ffn_hidden_size != cfg.decoder_ffn_hidden_size:
        raise _refuse(f"encoder_ffn_hidden_size={cfg.encoder_ffn_hidden_size} != decoder_ffn_hidden_size="
                      f"{cfg.decoder_ffn_hidden_size}", "it has one d_ff")
    if previous in ARCHITECTURES:
        return previous
    backend = getattr(getattr(tokenizer, "_tok", None), "model", None)
    unigram = type(backend).__name__ == "Unigram"
    return "MT5ForConditionalGeneration" if tokenizer.type == "sentencepiece" or unigram else \
        "T5ForConditionalGeneration"


def _layer_names(stack: str) -> dict[str, tuple[int, str]]:
    """ours within a layer → (Hugging Face sub-layer index, name) of one stack."""
    names = {"input_layernorm.weight": (0, "layer_norm.weight"),
             "self_attention.linear_proj.weight": (0, "SelfAttention.o.weight")}
    mlp = 1
    if stack == "decoder":
        names.update({"pre_cross_attn_layernorm.weight": (1, "layer_norm.weight"),
                      "cross_attention.linear_q.weight": (1, "EncDecAttention.q.weight"),
                      "cross_attention.linear_proj.weight": (1, "EncDecAttention.o.weight")})
        mlp = 2
    names.update({"pre_mlp_layernorm.weight": (mlp, "layer_norm.weight"),
                  "mlp.linear_fc1.weight": (mlp, "DenseReluDense.wi_0.weight"),
                  "mlp.linear_fc1_2.weight": (mlp, "DenseReluDense.wi_1.weight"),
                  "mlp.linear_fc2.weight": (mlp, "DenseReluDense.wo.weight")})
    return names


_NAMES = {stack: _layer_names(stack) for stack in ("encoder", "decoder")}
_HF_NAMES = {stack: {v: k for k, v in names.items()} for stack, names in _NAMES.items()}


def _scale(cfg: T5Config) -> float:
    return math.sqrt(cfg.kv_channels)


def _times(t: torch.Tensor, factor: float) -> torch.Tensor:
    # in float64, then rounded once: exact when the factor is a power of two, else the nearest weight
    return (t.double() * factor).to(t.dtype)


def to_hf(tensors: Mapping[str, torch.Tensor], cfg: T5Config) -> Iterator[tuple[str, torch.Tensor]]:
    """Our weights (any subset, e.g. one layer) under Hugging Face T5's names."""
    heads, s = cfg.num_attention_heads, _scale(cfg)
    for name, t in tensors.items():
        if name in _TOP:
            yield _TOP[name], t
            continue
        m = _LAYER.match(name)
        if not m:
            raise KeyError(f"no Hugging Face T5 name for {name!r}")
        stack, i, rest = m.groups()
        p = f"{stack}.block.{i}.layer."
        if rest == "self_attention.linear_qkv.weight":
            q, k, v = t.reshape(heads, 3, -1, t.shape[-1]).unbind(1)
            yield p + "0.SelfAttention.q.weight", _times(q.reshape(-1, t.shape[-1]), 1 / s)
            yield p + "0.SelfAttention.k.weight", k.reshape(-1, t.shape[-1])
            yield p + "0.SelfAttention.v.weight", v.reshape(-1, t.shape[-1])
        elif rest == "cross_attention.linear_kv.weight":
            k, v = t.reshape(heads, 2, -1, t.shape[-1]).unbind(1)
            yield p + "1.EncDecAttention.k.weight", k.reshape(-1, t.shape[-1])
            yield p + "1.EncDecAttention.v.weight", v.reshape(-1, t.shape[-1])
        elif rest in _NAMES[stack]:
            sub, hf = _NAMES[stack][rest]
            yield f"{p}{sub}.{hf}", (_times(t, 1 / s) if rest == "cross_attention.linear_q.weight" else t)
        else:
            raise KeyError(f"no Hugging Face T5 name for {name!r}")


def from_hf(tensors: Mapping[str, torch.Tensor], cfg: T5Config) -> dict[str, torch.Tensor]:
    """Hugging Face T5's weights under our names (q/k/v fused per head, query × √kv_channels)."""
    heads, s = cfg.num_attention_heads, _scale(cfg)
    out: dict[str, torch.Tensor] = {}
    parts: dict[str, dict[str, torch.Tensor]] = {}
    for name, t in tensors.items():
        if name in _HF_TOP:
            out[_HF_TOP[name]] = t
            continue
        if name in _HF_TIED:
            continue
        m = _HF_LAYER.match(name)
        if not m:
            raise ConfigError(f"Hugging Face T5 weight {name!r} has no place in our T5")
        stack, i, sub, rest = m.groups()
        p = f"{stack}_layers.{i}."
        attn = re.fullmatch(r"(SelfAttention|EncDecAttention)\.([qkv])\.weight", rest)
        if attn and not (attn.group(1) == "EncDecAttention" and attn.group(2) == "q"):
            fused = "self_attention.linear_qkv.weight" if attn.group(1) == "SelfAttention" else \
                "cross_attention.linear_kv.weight"
            parts.setdefault(p + fused, {})[attn.group(2)] = _times(t, s) if attn.group(2) == "q" else t
        elif (int(sub), rest) in _HF_NAMES[stack]:
            ours = _HF_NAMES[stack][(int(sub), rest)]
            out[p + ours] = _times(t, s) if ours == "cross_attention.linear_q.weight" else t
        else:
            raise ConfigError(f"Hugging Face T5 weight {name!r} has no place in our T5")
    for name, qkv in parts.items():
        order = "qkv" if name.endswith("linear_qkv.weight") else "kv"
        if set(qkv) != set(order):
            raise ConfigError(f"{name}: the Hugging Face weights lack {sorted(set(order) - set(qkv))}")
        per_head = [qkv[c].reshape(heads, -1, qkv[c].shape[-1]) for c in order]
        out[name] = torch.cat(per_head, dim=1).reshape(-1, per_head[0].shape[-1])
    return out


def hf_config(cfg: T5Config, vocab_size: int, tokenizer: Any, torch_dtype: str,
              arch: str | None = None) -> dict[str, Any]:
    """``config.json`` of the class ``arch`` (default: as ``architecture`` decides)."""
    arch = arch or architecture(cfg, tokenizer)
    pad = tokenizer.pad_id if getattr(tokenizer, "pad_id", None) is not None else 0
    eos = tokenizer.eos_id if getattr(tokenizer, "eos_id", None) is not None else tokenizer.eod_id
    return {
        "architectures": [arch], "model_type": "mt5" if arch.startswith("MT5") else "t5", "vocab_size": vocab_size,
        "d_model": cfg.hidden_size, "d_kv": cfg.kv_channels, "d_ff": cfg.encoder_ffn_hidden_size,
        "num_layers": cfg.encoder_num_layers, "num_decoder_layers": cfg.decoder_num_layers,
        "num_heads": cfg.num_attention_heads, "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance, "dropout_rate": 0.0,
        "layer_norm_epsilon": cfg.layernorm_epsilon, "initializer_factor": 1.0,
        "feed_forward_proj": _ACT[cfg.activation], "is_encoder_decoder": True, "tie_word_embeddings": False,
        "scale_decoder_outputs": False,
        "pad_token_id": pad, "eos_token_id": eos,
        # T5 starts decoding from the pad token; ours from the tokenizer's BOS (NeMo's choice)
        "decoder_start_token_id": tokenizer.bos_id if getattr(tokenizer, "bos_id", None) is not None else pad,
        "torch_dtype": torch_dtype,
    }


def config_from_hf(hf: Mapping[str, Any], padded_vocab_size: int) -> T5Config:
    proj = hf.get("feed_forward_proj", "relu")
    act = {v: k for k, v in _ACT.items()}.get(proj)
    if act is None:
        raise ConfigError(f"config.json feed_forward_proj={proj!r}: only T5 v1.1/mT5 models (gated-gelu, "
                          f"gated-silu) import", hint="the original T5 (relu, no gate) is not one of our options")
    # transformers 5 writes tie_word_embeddings=true always and keeps the old meaning of false (no output
    # scaling by d_model**-0.5) in scale_decoder_outputs; files from version 4 have only the former
    scaled = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True) is not False)
    if scaled:
        raise ConfigError("config.json: the decoder output is scaled by d_model**-0.5 (tie_word_embeddings=true, "
                          "the original T5), which our T5 does not compute", hint="only T5 v1.1/mT5 models import")
    d_ff = hf["d_ff"]
    return T5Config(vocab_size=padded_vocab_size, hidden_size=hf["d_model"], num_attention_heads=hf["num_heads"],
                    kv_channels=hf["d_kv"], encoder_num_layers=hf["num_layers"],
                    decoder_num_layers=hf.get("num_decoder_layers") or hf["num_layers"],
                    encoder_ffn_hidden_size=d_ff, decoder_ffn_hidden_size=d_ff, max_position_embeddings=512,
                    position_embedding_type="relative",
                    relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
                    relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
                    activation=act, normalization="rmsnorm", bias=False, share_decoder_tokens_head_embeddings=False,
                    layernorm_epsilon=hf.get("layer_norm_epsilon", 1e-6))


def run_config(cfg: T5Config) -> dict[str, Any]:
    return {"num_layers": cfg.encoder_num_layers, "hidden_size": cfg.hidden_size,
            "ffn_hidden_size": cfg.encoder_ffn_hidden_size, "num_attention_heads": cfg.num_attention_heads,
            "kv_channels": cfg.kv_channels, "position_embedding_type": cfg.position_embedding_type,
            "activation": cfg.activation, "normalization": cfg.normalization, "bias": cfg.bias,
            "share_decoder_tokens_head_embeddings": False, "layernorm_epsilon": cfg.layernorm_epsilon}
