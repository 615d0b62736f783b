"""Our GPT as a Hugging Face ``GPT2LMHeadModel`` with the same weights: the reference generation is checked against.

The two compute the same function: pre-LayerNorm blocks, tanh GeLU ("gelu_new"), learned
positions, output tied to the token embedding. Only the storage differs: GPT-2's ``Conv1D``
weights are (in, out), the transpose of ``nn.Linear``'s, and its fused ``c_attn`` is
[all q | all k | all v] where ours is Megatron's per-head [q | k | v]. Needs ``transformers``
(the ``test`` extra), imported on call.
"""

from __future__ import annotations

import torch

from .gpt import GPT, GPTConfig


def gpt2_config(cfg: GPTConfig):
    """The ``transformers.GPT2Config`` of ``cfg`` (dropout off: a reference for inference)."""
    from transformers import GPT2Config

    if cfg.num_attention_heads * cfg.kv_channels != cfg.hidden_size:
        raise ValueError(f"GPT-2 needs heads × kv_channels = hidden_size, got {cfg.num_attention_heads} × "
                         f"{cfg.kv_channels} != {cfg.hidden_size}")
    return GPT2Config(vocab_size=cfg.vocab_size, n_positions=cfg.max_position_embeddings, n_embd=cfg.hidden_size,
                      n_layer=cfg.num_layers, n_head=cfg.num_attention_heads, n_inner=cfg.ffn_hidden_size,
                      activation_function="gelu_new", layer_norm_epsilon=cfg.layernorm_epsilon, resid_pdrop=0.0,
                      embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True, bos_token_id=None,
                      eos_token_id=None, pad_token_id=None)


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """``model``'s weights under GPT-2's names and layouts (``lm_head`` left out: it is tied to ``wte``)."""
    cfg = model.cfg
    heads, kv = cfg.num_attention_heads, cfg.kv_channels
    ours = model.state_dict()
    out = {
        "transformer.wte.weight": ours["embedding.word_embeddings.weight"],
        "transformer.wpe.weight": ours["embedding.position_embeddings.weight"],
        "transformer.ln_f.weight": ours["final_layernorm.weight"],
        "transformer.ln_f.bias": ours["final_layernorm.bias"],
    }
    for i in range(cfg.num_layers):
        src, dst = f"layers.{i}.", f"transformer.h.{i}."
        qkv_w = ours[src + "self_attention.linear_qkv.weight"]  # rows [heads, {q,k,v}, kv]
        qkv_b = ours[src + "self_attention.linear_qkv.bias"]
        out.update({
            dst + "ln_1.weight": ours[src + "input_layernorm.weight"],
            dst + "ln_1.bias": ours[src + "input_layernorm.bias"],
            # rows → [{q,k,v}, heads, kv], then (in, out) for Conv1D
            dst + "attn.c_attn.weight": qkv_w.view(heads, 3, kv, -1).transpose(0, 1).reshape(3 * heads * kv, -1).t(),
            dst + "attn.c_attn.bias": qkv_b.view(heads, 3, kv).transpose(0, 1).reshape(-1),
            dst + "attn.c_proj.weight": ours[src + "self_attention.linear_proj.weight"].t(),
            dst + "attn.c_proj.bias": ours[src + "self_attention.linear_proj.bias"],
            dst + "ln_2.weight": ours[src + "pre_mlp_layernorm.weight"],
            dst + "ln_2.bias": ours[src + "pre_mlp_layernorm.bias"],
            dst + "mlp.c_fc.weight": ours[src + "mlp.linear_fc1.weight"].t(),
            dst + "mlp.c_fc.bias": ours[src + "mlp.linear_fc1.bias"],
            dst + "mlp.c_proj.weight": ours[src + "mlp.linear_fc2.weight"].t(),
            dst + "mlp.c_proj.bias": ours[src + "mlp.linear_fc2.bias"],
        })
    return {name: tensor.contiguous() for name, tensor in out.items()}


def to_hf_gpt2(model: GPT):
    """A ``transformers.GPT2LMHeadModel`` (eval mode, on ``model``'s device and dtype) computing what ``model`` does."""
    from transformers import GPT2LMHeadModel

    weight = model.embedding.word_embeddings.weight
    hf = GPT2LMHeadModel(gpt2_config(model.cfg)).to(device=weight.device, dtype=weight.dtype)
    missing, unexpected = hf.load_state_dict(gpt2_state_dict(model), strict=False)
    # lm_head is tied to wte; GPT-2 keeps no other buffer a checkpoint must fill
    left = [name for name in missing if name != "lm_head.weight"]
    if left or unexpected:
        raise RuntimeError(f"GPT-2 mapping incomplete: missing {left}, unexpected {unexpected}")
    return hf.eval()
