"""Our GPT ↔ NeMo 1.x ``MegatronGPTModel`` (``model_config.yaml`` keys, state-dict keys, tensor-parallel splits).

Key names, QKV order (per head [q|k|v], as ours) and split dimensions as in NeMo 1.11 / Megatron-LM:
column-parallel weights and their biases split along dim 0, row-parallel weights along dim -1 (their
biases replicated), the word embedding along the vocabulary. With pipeline stages, layer indices are
local to the stage and the last stage holds the output layer's copy of the tied embedding.
"""

from __future__ import annotations

from typing import Any

from bignlp_contracts import ConfigError
from bignlp_models import GPTConfig

TARGET = "nemo.collections.nlp.models.language_modeling.megatron_gpt_model.MegatronGPTModel"
STACKS = {"layers": "model.language_model.encoder.layers."}
# within a layer: ours → (NeMo's, split dim or None)
LAYER = {"layers": {
    "input_layernorm.weight": ("input_layernorm.weight", None),
    "input_layernorm.bias": ("input_layernorm.bias", None),
    "self_attention.linear_qkv.weight": ("self_attention.query_key_value.weight", 0),
    "self_attention.linear_qkv.bias": ("self_attention.query_key_value.bias", 0),
    "self_attention.linear_proj.weight": ("self_attention.dense.weight", -1),
    "self_attention.linear_proj.bias": ("self_attention.dense.bias", None),
    "pre_mlp_layernorm.weight": ("post_attention_layernorm.weight", None),
    "pre_mlp_layernorm.bias": ("post_attention_layernorm.bias", None),
    "mlp.linear_fc1.weight": ("mlp.dense_h_to_4h.weight", 0),
    "mlp.linear_fc1.bias": ("mlp.dense_h_to_4h.bias", 0),
    "mlp.linear_fc2.weight": ("mlp.dense_4h_to_h.weight", -1),
    "mlp.linear_fc2.bias": ("mlp.dense_4h_to_h.bias", None),
}}
# other weights: ours → [(NeMo's key, which stages, split dim)]; "first"/"last" pipeline stage
TOP = {
    "embedding.word_embeddings.weight": [("model.language_model.embedding.word_embeddings.weight", "first", 0),
                                         ("model.word_embeddings.weight", "last_if_pipelined", 0)],
    "embedding.position_embeddings.weight": [("model.language_model.embedding.position_embeddings.weight", "first",
                                              None)],
    "final_layernorm.weight": [("model.language_model.encoder.final_layernorm.weight", "last", None)],
    "final_layernorm.bias": [("model.language_model.encoder.final_layernorm.bias", "last", None)],
}
VOCAB = ("embedding.word_embeddings.weight",)


def check_layout(cfg: GPTConfig, tp: int, pp: int, split_rank: int | None) -> None:
    for what, n in (("num_attention_heads", cfg.num_attention_heads), ("ffn_hidden_size", cfg.ffn_hidden_size)):
        if n % tp:
            raise ConfigError(f"--tensor-model-parallel-size {tp} does not divide {what}={n}")
    if cfg.num_layers % pp:
        raise ConfigError(f"--pipeline-model-parallel-size {pp} does not divide num_layers={cfg.num_layers}",
                          hint="NeMo gives every pipeline stage the same number of layers")


def stage_layers(cfg: GPTConfig, pp: int, split_rank: int | None) -> list[dict[str, list[int]]]:
    per = cfg.num_layers // pp
    return [{"layers": list(range(s * per, (s + 1) * per))} for s in range(pp)]


def model_config(cfg: GPTConfig, *, tokenizer: dict[str, Any], tp: int, pp: int, split_rank: int | None,
                 divisible_by: int, precision: Any) -> dict[str, Any]:
    return {
        "target": TARGET, "precision": precision, "megatron_amp_O2": False,
        "micro_batch_size": 1, "global_batch_size": 1,
        "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
        "encoder_seq_length": cfg.max_position_embeddings, "max_position_embeddings": cfg.max_position_embeddings,
        "num_layers": cfg.num_layers, "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "kv_channels": cfg.kv_channels,
        "init_method_std": cfg.init_method_std, "hidden_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout, "layernorm_epsilon": cfg.layernorm_epsilon,
        "make_vocab_size_divisible_by": divisible_by, "pre_process": True, "post_process": True,
        "apply_query_key_layer_scaling": True, "fp32_residual_connection": False, "use_cpu_initialization": False,
        "bias_gelu_fusion": False, "masked_softmax_fusion": True, "persist_layer_norm": True,
        "onnx_safe": False, "sequence_parallel": False, "activations_checkpoint_method": None,
        "activations_checkpoint_num_layers": None, "activations_checkpoint_granularity": None,
        # NeMo's GeLU is the erf one unless openai_gelu (the tanh one, ours by default)
        "openai_gelu": cfg.gelu_approximation == "tanh", "share_embeddings_and_output_weights": True,
        "tokenizer": tokenizer,
    }


def config_from_yaml(y: dict[str, Any], padded_vocab_size: int) -> GPTConfig:
    for key, want in (("share_embeddings_and_output_weights", True), ("position_embedding_type", "learned_absolute"),
                      ("normalization", "layernorm"), ("bias", True), ("activation", "gelu"),
                      ("transformer_block_type", "pre_ln")):
        if key in y and y[key] != want:
            raise ConfigError(f"model_config.yaml {key}={y[key]!r}: our GPT computes {key}={want!r}")
    h, heads = y["hidden_size"], y["num_attention_heads"]
    return GPTConfig(vocab_size=padded_vocab_size, max_position_embeddings=y["max_position_embeddings"],
                     num_layers=y["num_layers"], hidden_size=h, num_attention_heads=heads,
                     ffn_hidden_size=y.get("ffn_hidden_size") or 4 * h, kv_channels=y.get("kv_channels") or h // heads,
                     layernorm_epsilon=y.get("layernorm_epsilon", 1e-5), init_method_std=y.get("init_method_std", 0.02),
                     gelu_approximation="tanh" if y.get("openai_gelu", False) else "none")


def run_config(cfg: GPTConfig) -> dict[str, Any]:
    from .hf_gpt import run_config as keys

    return keys(cfg)
