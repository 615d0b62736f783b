"""The ``bignlp-train`` YAML of a base config and of each search candidate.

Key for key the shipped ``gpt3/*`` and ``t5/*`` training configs (the seed's NeMo keys), so
``bignlp-train show-config --config base_cfg_5b.yaml`` resolves it and ``pretrain`` trains it.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import yaml

from bignlp_contracts import atomic_write_text

from .basecfg import ModelShape, learning_rate


def _max_time(days: float) -> str:
    """``DD:HH:MM:SS`` half an hour short of ``days``, so the last checkpoint lands inside the allocation."""
    total = max(60, int(days * 86400) - 1800)
    d, rest = divmod(total, 86400)
    h, rest = divmod(rest, 3600)
    return f"{d:02d}:{h:02d}:{rest // 60:02d}:{rest % 60:02d}"


def _fit_gbs(gbs: int, mbs: int, dp: int) -> int:
    """The table's GBS moved to the nearest multiple of MBS × DP (bignlp-train requires it)."""
    unit = mbs * dp
    return max(unit, round(gbs / unit) * unit)


def base_train_config(model_type: str, shape: ModelShape, *, size_in_b: float, layout: dict, num_nodes: int,
                      gpus_per_node: int, days: float, num_tokens_in_b: float, precision: str = "bf16",
                      accelerator: str = "gpu") -> dict:
    """A complete bignlp-train config for ``shape`` on ``num_nodes`` for ``days`` (the launcher's base config)."""
    tp, pp, mbs = layout["tp"], layout["pp"], layout["mbs"]
    dp = max(1, num_nodes * gpus_per_node // (tp * pp))
    gbs = _fit_gbs(layout["gbs"], mbs, dp)
    seq = shape.seq_length
    max_steps = max(1, int(num_tokens_in_b * 1e9 / (gbs * seq)))
    lr = learning_rate(model_type, size_in_b)
    big = size_in_b > 8  # the seed's 20b/40b/175b: selective recomputation with SP
    cfg = {
        "run": {"name": f"{model_type}_{size_in_b:g}b", "results_dir": None,
                "time_limit": _max_time(days + 1800 / 86400).replace(":", "-", 1), "dependency": "singleton"},
        "trainer": {"num_nodes": num_nodes, "devices": gpus_per_node, "accelerator": accelerator,
                    "precision": precision, "max_steps": max_steps, "max_time": _max_time(days),
                    "log_every_n_steps": 10, "val_check_interval": min(2000, max_steps),
                    "limit_val_batches": 50, "limit_test_batches": 50, "accumulate_grad_batches": 1,
                    "gradient_clip_val": 1.0},
        "exp_manager": {"exp_dir": None, "name": f"megatron_{model_type if model_type != 'gpt3' else 'gpt'}",
                        "explicit_log_dir": None, "resume_if_exists": True, "resume_ignore_no_checkpoint": True,
                        "create_checkpoint_callback": True,
                        "checkpoint_callback_params": {"monitor": "val_loss", "save_top_k": 10, "mode": "min",
                                                       "every_n_steps": None}},
    }
    common = {"micro_batch_size": mbs, "global_batch_size": gbs, "tensor_model_parallel_size": tp,
              "pipeline_model_parallel_size": pp}
    if shape.family == "gpt":
        a = shape.arch
        cfg["model"] = {
            **common, "virtual_pipeline_model_parallel_size": None,
            "sequence_parallel": big and tp > 1,
            "activations_checkpoint_granularity": "selective" if big else "full",
            "activations_checkpoint_method": None if big else "block",
            "activations_checkpoint_num_layers": None if big else 0,
            "encoder_seq_length": seq, "max_position_embeddings": seq, "num_layers": a.num_layers,
            "hidden_size": a.hidden_size, "ffn_hidden_size": a.ffn_hidden_size,
            "num_attention_heads": a.num_attention_heads, "init_method_std": round(0.64 / math.sqrt(a.hidden_size), 6),
            "hidden_dropout": 0.1, "attention_dropout": 0.1, "kv_channels": None, "layernorm_epsilon": 1e-5,
            "make_vocab_size_divisible_by": 128, "seed": 1234,
            "tokenizer": {"library": "megatron", "type": "GPT2BPETokenizer", "vocab_file": None, "merge_file": None,
                          "vocab_size": None},
            "optim": {"name": "distributed_fused_adam", "lr": lr, "weight_decay": 0.1, "betas": [0.9, 0.95],
                      "sched": {"name": "CosineAnnealing", "warmup_steps": int(0.0015 * max_steps),
                                "constant_steps": int(0.166 * max_steps), "min_lr": round(0.1 * lr, 10),
                                "max_steps": None}},
            "data": {"data_prefix": None, "splits_string": "99990,8,2", "seq_length": None, "num_workers": 2,
                     "index_mapping_dir": None, "reset_position_ids": False, "reset_attention_mask": False,
                     "eod_mask_loss": False, "data_impl": "mmap", "skip_warmup": True, "dataloader_type": "single"},
        }
        return cfg
    a = shape.arch
    mt5 = model_type == "mt5"
    cfg["model"] = {
        **common, "pipeline_model_parallel_split_rank": None, "sequence_parallel": False,
        "activations_checkpoint_granularity": None, "activations_checkpoint_method": None,
        "activations_checkpoint_num_layers": None, "seq_length": seq, "max_position_embeddings": seq,
        "num_layers": a.encoder_num_layers, "hidden_size": a.hidden_size, "ffn_hidden_size": a.encoder_ffn_hidden_size,
        "num_attention_heads": a.num_attention_heads, "init_method_std": 0.015, "hidden_dropout": 0.1,
        "attention_dropout": 0.1, "position_embedding_type": "learned_absolute", "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128, "relative_position_bias_self_attention_only": True,
        "kv_channels": a.kv_channels, "layernorm_epsilon": 1e-5, "bias": True, "normalization": "layernorm",
        "activation": "geglu", "share_token_embeddings": True, "share_decoder_tokens_head_embeddings": True,
        "encoder": {"num_layers": None, "ffn_hidden_size": None},
        "decoder": {"num_layers": None, "ffn_hidden_size": None},
        "make_vocab_size_divisible_by": 128, "seed": 1234,
        "tokenizer": {"library": "sentencepiece" if mt5 else "megatron",
                      "type": "SentencePieceTokenizer" if mt5 else "BertWordPieceCase",
                      "vocab_file": None, "merge_file": None, "vocab_size": None, "num_sentinel_tokens": 100},
        "optim": {"name": "fused_adam", "lr": lr, "weight_decay": 0.01, "betas": [0.9, 0.999],
                  "sched": {"name": "WarmupAnnealing", "warmup_ratio": 0.01, "min_lr": lr / 10, "max_steps": None}},
        "data": {"data_prefix": None, "index_mapping_dir": None, "data_impl": "mmap",
                 "splits_string": "999892,99,9" if mt5 else "999982,9,9", "seq_length": None,
                 "seq_length_dec": shape.seq_length_dec, "skip_warmup": True, "num_workers": 0,
                 "dataloader_type": "single", "masked_lm_prob": 0.15, "dataset_type": "t5", "short_seq_prob": 0.0,
                 "max_ngram_size": 10, "mean_ngram_size": None, "geometric_dist": True, "permutation": False,
                 "whole_word_masking": not mt5, "favor_longer_ngrams": False, "respect_document_boundaries": True},
    }
    return cfg


def candidate_train_config(base: dict, candidate, *, num_nodes: int, gpus_per_node: int, max_steps: int,
                           max_minutes: float, run_dir: Path, data_prefix, wandb=None) -> dict:
    """The base config with a candidate's layout, cut to a short measured run (no checkpoints, no validation)."""
    cfg = copy.deepcopy(base)
    m = cfg["model"]
    m.update({"tensor_model_parallel_size": candidate.tp, "pipeline_model_parallel_size": candidate.pp,
              "micro_batch_size": candidate.mbs, "global_batch_size": candidate.gbs,
              "sequence_parallel": candidate.sp})
    if "virtual_pipeline_model_parallel_size" in m:
        m["virtual_pipeline_model_parallel_size"] = candidate.vp if candidate.vp > 1 else None
    if candidate.recompute == "selective":
        m.update(activations_checkpoint_granularity="selective", activations_checkpoint_method=None,
                 activations_checkpoint_num_layers=None)
    elif candidate.act_ckpt_layers > 0:
        m.update(activations_checkpoint_granularity="full", activations_checkpoint_method="block",
                 activations_checkpoint_num_layers=candidate.act_ckpt_layers)
    else:
        m.update(activations_checkpoint_granularity=None, activations_checkpoint_method=None,
                 activations_checkpoint_num_layers=None)
    if data_prefix is not None:
        m["data"]["data_prefix"] = list(data_prefix) if isinstance(data_prefix, (list, tuple)) else [1.0, data_prefix]
    m["data"]["splits_string"] = "100,0,0"  # no validation or test in a measured run: all data to train
    # the full run's learning-rate schedule, cut short (its warmup + constant steps exceed a short run)
    m["optim"]["sched"]["max_steps"] = m["optim"]["sched"]["max_steps"] or cfg["trainer"]["max_steps"]
    seconds = max(60, int(max_minutes * 60))
    cfg["trainer"].update(num_nodes=num_nodes, devices=gpus_per_node, max_steps=max_steps, log_every_n_steps=1,
                          val_check_interval=max_steps, limit_val_batches=0, limit_test_batches=0,
                          max_time=f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}")
    cfg["run"]["name"] = candidate.name
    cfg["exp_manager"].update(explicit_log_dir=str(run_dir), create_checkpoint_callback=False,
                              resume_if_exists=False, name=candidate.name)
    if wandb is not None and wandb.enable:
        cfg["exp_manager"].update(create_wandb_logger=True,
                                  wandb_logger_kwargs={"project": wandb.project, "name": candidate.name})
        if wandb.api_key_file:
            cfg["wandb_api_key_file"] = wandb.api_key_file
    return cfg


def write_yaml(path: Path, cfg: dict, header: str = "") -> None:
    """Write a train config atomically, with a comment header."""
    text = "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(cfg, sort_keys=False)
    atomic_write_text(path, text)
