"""Our T5/mT5 ↔ NeMo 1.x ``MegatronT5Model`` (``model_config.yaml`` keys, state-dict keys, splits).

NeMo's encoder-decoder lives under ``enc_dec_model.``: embeddings, relative position biases and
the output head at its top, the layer stacks under ``enc_dec_model.enc_dec_model.{encoder,decoder}
.model``. A decoder layer's norms are named by what they follow (``post_attention_layernorm``
before cross-attention, ``post_inter_attention_layernorm`` before the MLP). With pipeline stages,
stages before ``pipeline_model_parallel_split_rank`` hold encoder layers and the rest decoder
layers; each stage holding a stack keeps that stack's relative position bias, the first decoder
stage the decoder's copy of the shared embedding, the last stage the head.
"""

from __future__ import annotations

from typing import Any

from bignlp_contracts import ConfigError
from bignlp_models import T5Config

TARGET = "nemo.collections.nlp.models.language_modeling.megatron_t5_model.MegatronT5Model"
STACKS = {"encoder_layers": "enc_dec_model.enc_dec_model.encoder.model.layers.",
          "decoder_layers": "enc_dec_model.enc_dec_model.decoder.model.layers."}


def _layer(decoder: bool) -> dict[str, tuple[str, int | None]]:
    names = {"input_layernorm": ("input_layernorm", None),
             "self_attention.linear_qkv": ("self_attention.query_key_value", 0),
             "self_attention.linear_proj": ("self_attention.dense", -1),
             "mlp.linear_fc1": ("mlp.dense_h_to_4h", 0), "mlp.linear_fc1_2": ("mlp.dense_h_to_4h_2", 0),
             "mlp.linear_fc2": ("mlp.dense_4h_to_h", -1)}
    if decoder:
        names.update({"pre_cross_attn_layernorm": ("post_attention_layernorm", None),
                      "cross_attention.linear_q": ("inter_attention.query", 0),
                      "cross_attention.linear_kv": ("inter_attention.key_value", 0),
                      "cross_attention.linear_proj": ("inter_attention.dense", -1),
                      "pre_mlp_layernorm": ("post_inter_attention_layernorm", None)})
    else:
        names["pre_mlp_layernorm"] = ("post_attention_layernorm", None)
    out = {}
    for ours, (nemo, split) in names.items():
        out[f"{ours}.weight"] = (f"{nemo}.weight", split)
        # row-parallel biases are whole on every rank; column-parallel ones split with their weight
        out[f"{ours}.bias"] = (f"{nemo}.bias", split if split == 0 else None)
    return out


LAYER = {"encoder_layers": _layer(False), "decoder_layers": _layer(True)}
_E, _D = "enc_dec_model.enc_dec_model.encoder.model.", "enc_dec_model.enc_dec_model.decoder.model."
TOP = {
    "encoder_embedding.word_embeddings.weight": [
        ("enc_dec_model.encoder_embedding.word_embeddings.weight", "first", 0),
        ("enc_dec_model.decoder_embedding.word_embeddings.weight", "split", 0)],
    "encoder_embedding.position_embeddings.weight": [
        ("enc_dec_model.encoder_embedding.position_embeddings.weight", "first", None)],
    "decoder_embedding.position_embeddings.weight": [
        ("enc_dec_model.decoder_embedding.position_embeddings.weight", "split", None)],
    "encoder_relative_position_bias.relative_attention_bias.weight": [
        ("enc_dec_model.encoder_relative_position_embedding.relative_position_embedding.weight", "encoder_layers",
         None)],
    "decoder_relative_position_bias.relative_attention_bias.weight": [
        ("enc_dec_model.decoder_relative_position_embedding.relative_position_embedding.weight", "decoder_layers",
         None)],
    "decoder_cross_relative_position_bias.relative_attention_bias.weight": [
        ("enc_dec_model.decoder_cross_attention_relative_position_embedding.relative_position_embedding.weight",
         "decoder_layers", None)],
    "encoder_final_layernorm.weight": [(_E + "final_layernorm.weight", "last_encoder", None)],
    "encoder_final_layernorm.bias": [(_E + "final_layernorm.bias", "last_encoder", None)],
    "decoder_final_layernorm.weight": [(_D + "final_layernorm.weight", "last", None)],
    "decoder_final_layernorm.bias": [(_D + "final_layernorm.bias", "last", None)],
    "tokens_head.weight": [("enc_dec_model.tokens_head.weight", "last", 0)],
    "tokens_head.bias": [("enc_dec_model.tokens_head.bias", "last", 0)],
}
VOCAB = ("encoder_embedding.word_embeddings.weight", "tokens_head.weight", "tokens_head.bias")


def default_split_rank(pp: int) -> int:
    return max(pp // 2, 1) if pp > 1 else 0


def check_layout(cfg: T5Config, tp: int, pp: int, split_rank: int | None) -> None:
    sizes = (("num_attention_heads", cfg.num_attention_heads),
             ("encoder_ffn_hidden_size", cfg.encoder_ffn_hidden_size),
             ("decoder_ffn_hidden_size", cfg.decoder_ffn_hidden_size))
    for what, n in sizes:
        if n % tp:
            raise ConfigError(f"--tensor-model-parallel-size {tp} does not divide {what}={n}")
    if pp == 1:
        return
    split = default_split_rank(pp) if split_rank is None else split_rank
    if not 0 < split < pp:
        raise ConfigError(f"--pipeline-model-parallel-split-rank {split}: must be between 1 and {pp - 1}",
                          hint="encoder stages come before it, decoder stages from it")
    for stack, n, stages in (("encoder_num_layers", cfg.encoder_num_layers, split),
                             ("decoder_num_layers", cfg.decoder_num_layers, pp - split)):
        if n % stages:
            raise ConfigError(f"{stack}={n} does not split evenly over {stages} pipeline stage(s) "
                              f"(-p {pp}, split rank {split})")


def stage_layers(cfg: T5Config, pp: int, split_rank: int | None) -> list[dict[str, list[int]]]:
    if pp == 1:
        return [{"encoder_layers": list(range(cfg.encoder_num_layers)),
                 "decoder_layers": list(range(cfg.decoder_num_layers))}]
    split = default_split_rank(pp) if split_rank is None else split_rank
    enc, dec = cfg.encoder_num_layers // split, cfg.decoder_num_layers // (pp - split)
    stages = [{"encoder_layers": list(range(s * enc, (s + 1) * enc))} for s in range(split)]
    return stages + [{"decoder_layers": list(range(s * dec, (s + 1) * dec))} for s in range(pp - split)]


def model_config(cfg: T5Config, *, tokenizer: dict[str, Any], tp: int, pp: int, split_rank: int | None,
                 divisible_by: int, precision: Any) -> dict[str, Any]:
    if cfg.encoder_ffn_hidden_size != cfg.decoder_ffn_hidden_size:
        raise ConfigError("encoder and decoder ffn_hidden_size differ: NeMo 1.x's T5 has one ffn_hidden_size")
    return {
        "target": TARGET, "precision": precision, "megatron_amp_O2": False,
        "micro_batch_size": 1, "global_batch_size": 1,
        "tensor_model_parallel_size": tp, "pipeline_model_parallel_size": pp,
        "pipeline_model_parallel_split_rank": default_split_rank(pp) if split_rank is None else split_rank,
        "seq_length": cfg.max_position_embeddings, "max_position_embeddings": cfg.max_position_embeddings,
        "num_layers": cfg.encoder_num_layers, "encoder": {"num_layers": cfg.encoder_num_layers},
        "decoder": {"num_layers": cfg.decoder_num_layers},
        "hidden_size": cfg.hidden_size, "ffn_hidden_size": cfg.encoder_ffn_hidden_size,
        "num_attention_heads": cfg.num_attention_heads, "kv_channels": cfg.kv_channels,
        "init_method_std": cfg.init_method_std, "hidden_dropout": cfg.hidden_dropout,
        "attention_dropout": cfg.attention_dropout, "layernorm_epsilon": cfg.layernorm_epsilon,
        "position_embedding_type": cfg.position_embedding_type,
        "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "relative_position_bias_self_attention_only": cfg.relative_position_bias_self_attention_only,
        "activation": cfg.activation, "normalization": cfg.normalization, "bias": cfg.bias,
        "openai_gelu": cfg.gelu_approximation == "tanh",
        "share_token_embeddings": True,
        "share_decoder_tokens_head_embeddings": cfg.share_decoder_tokens_head_embeddings,
        "make_vocab_size_divisible_by": divisible_by, "apply_query_key_layer_scaling": True,
        "bias_activation_fusion": False, "masked_softmax_fusion": True, "persist_layer_norm": True,
        "encoder_arch": "transformer", "decoder_arch": "transformer", "transformer_block_type": "pre_ln",
        "tokenizer": tokenizer,
    }


def config_from_yaml(y: dict[str, Any], padded_vocab_size: int) -> T5Config:
    if not y.get("share_token_embeddings", True):
        raise ConfigError("model_config.yaml share_token_embeddings=false: our T5 shares the encoder and decoder "
                          "token embeddings")
    if y.get("transformer_block_type", "pre_ln") != "pre_ln":
        raise ConfigError(f"model_config.yaml transformer_block_type={y['transformer_block_type']!r}: ours is pre_ln")
    enc = (y.get("encoder") or {}).get("num_layers", y["num_layers"])
    dec = (y.get("decoder") or {}).get("num_layers", y["num_layers"])
    h, heads = y["hidden_size"], y["num_attention_heads"]
    ffn = y.get("ffn_hidden_size") or 4 * h
    try:
        return T5Config(vocab_size=padded_vocab_size, hidden_size=h, num_attention_heads=heads,
                        kv_channels=y.get("kv_channels") or h // heads, encoder_num_layers=enc, decoder_num_layers=dec,
                        encoder_ffn_hidden_size=ffn, decoder_ffn_hidden_size=ffn,
                        max_position_embeddings=y.get("max_position_embeddings") or y.get("seq_length", 512),
                        position_embedding_type=y.get("position_embedding_type", "learned_absolute"),
                        relative_attention_num_buckets=y.get("relative_attention_num_buckets", 32),
                        relative_attention_max_distance=y.get("relative_attention_max_distance", 128),
                        relative_position_bias_self_attention_only=y.get("relative_position_bias_self_attention_only",
                                                                         True),
                        activation=y.get("activation", "gelu"), normalization=y.get("normalization", "layernorm"),
                        bias=y.get("bias", True), share_decoder_tokens_head_embeddings=y.get(
                            "share_decoder_tokens_head_embeddings", True),
                        layernorm_epsilon=y.get("layernorm_epsilon", 1e-5), init_method_std=y.get("init_method_std",
                                                                                                  0.02),
                        gelu_approximation="tanh" if y.get("openai_gelu", False) else "none")
    except ValueError as e:  # an option value our T5 does not know
        raise ConfigError(f"model_config.yaml: {e}") from None


def run_config(cfg: T5Config) -> dict[str, Any]:
    from .hf_t5 import run_config as keys

    return keys(cfg)
