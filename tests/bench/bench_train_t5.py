"""Benchmark: bignlp-train's T5 on CPU — step speed, activation memory, model FLOPs (issue 11).

The same three measurements as ``bench_train.py`` (GPT), through its helpers:

1. speed: training tokens/s of one step (forward with the padding masks, ``lm_loss`` with the loss
   mask, backward, grad clip, AdamW: the trainer's T5 step) of a ~23M-parameter T5 v1.1-style
   model (relative position bias, RMSNorm, no biases, geglu, untied head) against Hugging Face's
   ``T5ForConditionalGeneration`` of the same shape, same batch, encoder and decoder lengths,
   thread count, AdamW groups, fp32, dropout 0.1 in both. Warm-up, then alternating timed steps;
   medians. Target: ratio ours/HF >= 1.0. Tokens are encoder tokens, as the progress line counts.
2. memory: bytes one encoder layer and one decoder layer keep for backward (saved-tensor hooks),
   the model built as the trainer builds it for bf16 with the launcher's default options (learned
   absolute positions, LayerNorm with bias, geglu with ffn != 4h, tied head), against
   ``t5.activation_bytes_per_layer`` for recompute none / selective / full, one process and TP=2
   (± SP) over 2 gloo processes (per rank). Target: within 10%. The encoder output every decoder
   layer attends to is one tensor per decoder stack: measured and compared on its own line.
3. flops: the model FLOPs per encoder token the trainer uses (``T5_SPEC.flops_per_token``) against
   a count from the built model's parameters and the two sequence lengths, for every shipped t5/mt5
   config, and against torch's ``FlopCounterMode`` on a small model. Target: equal.

    python tests/bench/bench_train_t5.py [--only speed|memory|flops] [--threads 2] [--steps 8]
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import warnings
from pathlib import Path

import torch

from bignlp_models import T5_SPEC, lm_loss, num_parameters
from bignlp_models.t5 import T5, T5Config
from bignlp_train.parallelize import build_model_parts, clip_grad_norm_

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import (  # noqa: E402  (the shared mechanism; this directory is no package)
    RECOMPUTE,
    adamw,
    check_checkpoint_seen,
    compare_steps,
    layout_name,
    measure_layer,
    memory_worker,
    print_layer_case,
    run_memory_cases,
)

# ~23M parameters, T5 v1.1's options: 4 + 4 layers, hidden 384, 6 heads of 64, ffn 1024, an 8k vocabulary
SPEED = dict(vocab_size=8192, hidden_size=384, num_attention_heads=6, kv_channels=64, encoder_num_layers=4,
             decoder_num_layers=4, encoder_ffn_hidden_size=1024, decoder_ffn_hidden_size=1024,
             position_embedding_type="relative", normalization="rmsnorm", bias=False, activation="geglu",
             share_decoder_tokens_head_embeddings=False, hidden_dropout=0.1, attention_dropout=0.1,
             layernorm_epsilon=1e-6)
SEQ_ENC, SEQ_DEC = 256, 64  # T5's 512 / 128, halved
BATCH = 4

# The launcher's defaults (learned absolute, LayerNorm with bias, geglu, tied head); 3 + 3 layers, a
# per-head width with heads x kv != h (as mt5/170m) and ffn != 4h, so every term of the formula shows.
MEMORY = dict(vocab_size=8192, hidden_size=384, num_attention_heads=6, kv_channels=48, encoder_num_layers=3,
              decoder_num_layers=3, encoder_ffn_hidden_size=1024, decoder_ffn_hidden_size=1024,
              max_position_embeddings=SEQ_ENC, hidden_dropout=0.1, attention_dropout=0.1)


def hf_t5(cfg: T5Config) -> torch.nn.Module:
    """Hugging Face's T5 v1.1 of ``cfg``'s shape (gated-gelu, RMSNorm, relative bias, no biases), own lm_head."""
    from transformers import T5Config as HFConfig
    from transformers import T5ForConditionalGeneration
    from transformers.utils import logging

    logging.set_verbosity_error()
    hf_cfg = HFConfig(vocab_size=cfg.vocab_size, d_model=cfg.hidden_size, d_kv=cfg.kv_channels,
                      d_ff=cfg.encoder_ffn_hidden_size, num_layers=cfg.encoder_num_layers,
                      num_decoder_layers=cfg.decoder_num_layers, num_heads=cfg.num_attention_heads,
                      relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                      relative_attention_max_distance=cfg.relative_attention_max_distance,
                      dropout_rate=cfg.hidden_dropout, layer_norm_epsilon=cfg.layernorm_epsilon,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, decoder_start_token_id=0,
                      pad_token_id=0)
    model = T5ForConditionalGeneration(hf_cfg)
    # transformers 5 ties lm_head to the shared embedding whatever the flag: give it its own weight (v1.1).
    model.lm_head.weight = torch.nn.Parameter(torch.randn(cfg.vocab_size, cfg.hidden_size) * 0.05)
    return model


def build_ours(cfg: T5Config) -> T5:
    with torch.device("meta"):
        model = T5(cfg)
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def t5_batch(cfg: T5Config, batch: int, seq_enc: int, seq_dec: int) -> dict[str, torch.Tensor]:
    """A span-corruption-shaped batch: padding at the end of some rows, the loss on real decoder tokens."""
    enc = torch.randint(1, cfg.vocab_size, (batch, seq_enc))
    dec = torch.randint(1, cfg.vocab_size, (batch, seq_dec))
    enc_len = torch.tensor([seq_enc - 7 * i for i in range(batch)])
    dec_len = torch.tensor([seq_dec - 3 * i for i in range(batch)])
    encoder_mask = torch.arange(seq_enc)[None] < enc_len[:, None]
    decoder_mask = torch.arange(seq_dec)[None] < dec_len[:, None]
    labels = torch.randint(1, cfg.vocab_size, (batch, seq_dec))
    return dict(encoder_tokens=enc.masked_fill(~encoder_mask, 0), decoder_tokens=dec.masked_fill(~decoder_mask, 0),
                encoder_mask=encoder_mask, decoder_mask=decoder_mask, labels=labels.masked_fill(~decoder_mask, 0),
                loss_mask=decoder_mask.float())


def bench_speed(args) -> None:
    cfg = T5Config(**SPEED)
    torch.manual_seed(0)
    ours, hf = build_ours(cfg).train(), hf_t5(cfg).train()
    n_ours, n_hf = num_parameters(ours), sum(p.numel() for p in hf.parameters())
    opt_ours, opt_hf = adamw(ours), adamw(hf)
    mb = t5_batch(cfg, BATCH, SEQ_ENC, SEQ_DEC)
    hf_labels = mb["labels"].masked_fill(mb["loss_mask"] == 0, -100)  # HF's ignore index where the loss mask is 0

    def step_ours() -> None:  # trainer.T5PretrainTask.loss, then train_step's clip and AdamW
        logits = ours(mb["encoder_tokens"], decoder_tokens=mb["decoder_tokens"], encoder_mask=mb["encoder_mask"],
                      decoder_mask=mb["decoder_mask"])
        lm_loss(logits, mb["labels"], mb["loss_mask"]).backward()
        clip_grad_norm_(ours.parameters(), 1.0)
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def step_hf() -> None:  # the usual HF loop: the model's own loss on the labels
        hf(input_ids=mb["encoder_tokens"], attention_mask=mb["encoder_mask"].long(),
           decoder_input_ids=mb["decoder_tokens"], decoder_attention_mask=mb["decoder_mask"].long(),
           labels=hf_labels).loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    import transformers

    print(f"== speed: T5 training step, fp32, {torch.get_num_threads()} threads, batch {BATCH} x {SEQ_ENC} encoder / "
          f"{SEQ_DEC} decoder tokens, {cfg.encoder_num_layers} + {cfg.decoder_num_layers} layers, hidden "
          f"{cfg.hidden_size}, {cfg.num_attention_heads} heads of {cfg.kv_channels}, ffn "
          f"{cfg.encoder_ffn_hidden_size} geglu, vocab {cfg.vocab_size}, relative bias, rmsnorm, no bias, untied head, "
          f"dropout {cfg.hidden_dropout}; parameters ours {n_ours:,} / HF {n_hf:,} (transformers "
          f"{transformers.__version__}, attention {hf.config._attn_implementation})")
    compare_steps(step_ours, step_hf, tokens=BATCH * SEQ_ENC, args=args,
                  names=("bignlp-train T5", "HF T5ForConditionalGeneration"))



# ---------------------------------------------------------------- activation memory


def memory_cases(tp: int, sp: bool, memory: dict | None = None) -> list[dict]:
    """Every recompute setting's bytes for encoder layer 1 and decoder layer 1 on this process (a rank of a
    TP group when tp > 1), the model built as the trainer builds it for ``trainer.precision=bf16``."""
    from torch.distributed.device_mesh import init_device_mesh

    cfg = T5Config(**(memory or MEMORY))
    mesh = init_device_mesh("cpu", (1, 1, tp), mesh_dim_names=("pp", "dp", "tp"))
    torch.manual_seed(0)
    mb = t5_batch(cfg, BATCH, SEQ_ENC, SEQ_DEC)
    results = []
    for case in RECOMPUTE:
        torch.manual_seed(0)
        model = build_model_parts(T5_SPEC, cfg, torch.device("cpu"), mesh, sequence_parallel=sp,
                                  recompute=RECOMPUTE[case], param_dtype=torch.bfloat16)[0]
        model.train()
        forward = functools.partial(model, mb["encoder_tokens"], decoder_tokens=mb["decoder_tokens"],
                                    encoder_mask=mb["encoder_mask"], decoder_mask=mb["decoder_mask"])
        for stack in ("encoder", "decoder"):
            total, records = measure_layer(getattr(model, f"{stack}_layers")["1"], forward)
            check_checkpoint_seen(case, records)
            results.append(dict(case=case, stack=stack, tp=tp, sp=sp, bytes=total, records=records))
    with torch.no_grad():  # the logits this rank materialises: vocabulary-parallel under TP
        logits = forward()
    local = logits.to_local() if hasattr(logits, "to_local") else logits
    results.append(dict(case="logits", stack="head", tp=tp, sp=sp, bytes=local.numel() * local.element_size(),
                        records=[]))
    return results


def bench_memory(args) -> None:
    cfg = T5Config(**MEMORY)
    s_e, s_d, b, h, a = SEQ_ENC, SEQ_DEC, BATCH, cfg.hidden_size, cfg.num_attention_heads
    p, f = a * cfg.kv_channels, cfg.encoder_ffn_hidden_size
    print(f"== memory: bytes saved for backward by one T5 encoder / decoder layer, trainer.precision=bf16 (FSDP2 bf16 "
          f"compute), launcher defaults (learned absolute, layernorm + bias, geglu, tied head), dropout "
          f"{cfg.hidden_dropout}/{cfg.attention_dropout}; s_enc={s_e} s_dec={s_d} b={b} h={h} a={a} "
          f"p=a·kv={p} f={f}; sbh in each stack's own s")
    results = run_memory_cases(memory_cases, __file__)
    missed, total = [], 0
    for r in results:
        layout = layout_name(r["tp"], r["sp"])
        total += 1
        if r["case"] == "logits":
            want = b * s_d * cfg.vocab_size * 2 / r["tp"]  # bf16 logits of this rank's vocabulary slice
            ok = r["bytes"] == want
            print(f"logits            {layout:20s} measured {r['bytes'] / 2**20:7.2f} MiB | b·s_dec·V·2/t "
                  f"{want / 2**20:7.2f} MiB | {'ok' if ok else 'MISS'} (target equal)")
        else:
            want = T5_SPEC.activation_bytes_per_layer(
                cfg, seq_length=s_e, seq_length_dec=s_d, micro_batch_size=b, tensor_parallel_size=r["tp"],
                sequence_parallel=r["sp"], recompute=None if r["case"] == "none" else r["case"], stack=r["stack"])
            unit = (s_d if r["stack"] == "decoder" else s_e) * b * h
            layer = [rec for rec in r["records"] if rec["how"] != "per-stack input"]
            ok = print_layer_case(f"{r['stack']:7s} {r['case']:9s} {layout:20s}", r["bytes"], want, unit,
                                  verbose=args.verbose, records=layer)
        if not ok:
            missed.append(f"{r['stack']} {r['case']} {layout}")
    # The encoder output: one tensor each decoder layer's cross-attention keeps a reference to (per stack).
    for r in results:
        if r["stack"] != "decoder":
            continue
        shared = [rec for rec in r["records"] if rec["how"] == "per-stack input" and rec["dtype"] == "bfloat16"]
        want = 2 * s_e * b * h / (r["tp"] if r["sp"] else 1)
        got = sum(rec["bytes"] for rec in shared)
        ok = got == want
        total += 1
        others = sum(rec["bytes"] for rec in r["records"] if rec["how"] == "per-stack input") - got
        print(f"encoder output, per decoder stack, {r['case']:9s} {layout_name(r['tp'], r['sp']):20s} measured "
              f"{got / 2**20:5.2f} MiB | 2·s_enc·b·h{'/t' if r['sp'] else ''} {want / 2**20:5.2f} MiB | "
              f"{'ok' if ok else 'MISS'} (target equal){f'; masks {others:,} bytes' if others else ''}")
        if not ok:
            missed.append(f"encoder output {r['case']} {layout_name(r['tp'], r['sp'])}")
    print(f"{total - len(missed)} of {total} cases on target (layers within 10% of the formula, logits and the "
          f"encoder output equal)" + (f"; outside: {', '.join(missed)} (their tensors are listed under each)"
                                      if missed else ""))


# ---------------------------------------------------------------- model FLOPs


def independent_flops_per_sample(model: T5, seq_enc: int, seq_dec: int) -> int:
    """6 FLOPs per weight and token it multiplies, + 12·p per query-key pair (QKᵀ and scores·V, forward and
    backward), read off the built model: which stack a weight sits in says how many tokens go through it."""
    cfg = model.cfg
    n = 0
    for name, param in model.named_parameters():
        if param.ndim != 2 or "position" in name or (name.startswith("encoder_embedding.word_embeddings")
                                                     and not cfg.share_decoder_tokens_head_embeddings):
            continue  # lookups, not multiplies (a tied token embedding is multiplied as the output layer)
        tokens = seq_enc if name.startswith("encoder_layers.") or ".cross_attention.linear_kv." in name else seq_dec
        n += param.numel() * tokens
    attention = 0
    for name, module in model.named_modules():
        if name.endswith("self_attention.linear_qkv"):
            s = seq_enc if name.startswith("encoder_layers.") else seq_dec
            attention += 12 * (module.out_features // 3) * s * s
        elif name.endswith("cross_attention.linear_q"):
            attention += 12 * module.out_features * seq_dec * seq_enc
    return 6 * n + attention


def bench_flops(args) -> None:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from bignlp_train.config import load_train_config

    print("== flops: model FLOPs per encoder token, trainer (T5_SPEC.flops_per_token(arch, seq_length, "
          "seq_length_dec)) vs 6 FLOPs per weight and token through it + 12·p·s_q·s_k per attention, counted "
          "from the built model")
    print("   encoder layers' weights and cross-attention's linear_kv see s_enc tokens, the other decoder weights "
          "and the output layer s_dec; lookups (embeddings, position tables) are not multiplies")
    # BERT cased / mT5's SentencePiece / the shipped 8,000-piece slice, + 100 sentinels
    vocab = {"t5": 28996 + 100, "mt5": 250000 + 100, "mt5/tiny-cpu": 8000 + 100}
    names = ["t5/tiny-cpu", "t5/220m", "t5/3b", "t5/11b", "t5/23b", "t5/41b",
             "mt5/tiny-cpu", "mt5/170m", "mt5/390m", "mt5/3b", "mt5/11b", "mt5/23b"]
    for name in names:
        cfg = load_train_config(name)
        arch = cfg.model.architecture(vocab.get(name) or vocab[name.split("/")[0]])
        s_e, s_d = cfg.model.sequence_lengths  # what the trainer passes to flops_per_token
        with torch.device("meta"):  # shapes only: no memory even for 41B
            model = T5(arch)
        independent = independent_flops_per_sample(model, s_e, s_d) / s_e
        reported = T5_SPEC.flops_per_token(arch, s_e, s_d)
        same = "equal" if reported == independent else "DIFFERENT"
        print(f"{name:13s} params {num_parameters(model) / 1e6:9.1f}M  s {s_e:4d}/{s_d:4d} | trainer "
              f"{reported:.6e} | counted {independent:.6e} | {same} (target equal)")
    # and what torch runs: a small model's forward + backward under torch's FLOP counter (fp32, no dropout)
    for kind in ("t5", "mt5"):
        arch = T5Config(**{**SPEED, "vocab_size": 512, "hidden_dropout": 0.0, "attention_dropout": 0.0,
                           **({"position_embedding_type": "learned_absolute", "normalization": "layernorm",
                               "bias": True, "share_decoder_tokens_head_embeddings": True} if kind == "t5" else {})})
        model = build_ours(arch)
        mb = t5_batch(arch, 2, 64, 16)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(mb["encoder_tokens"], decoder_tokens=mb["decoder_tokens"]).float().sum().backward()
        reported = 2 * 64 * T5_SPEC.flops_per_token(arch, 64, 16)
        same = "equal" if counter.get_total_flops() == reported else "DIFFERENT"
        print(f"torch FlopCounterMode, {'launcher defaults' if kind == 't5' else 'T5 v1.1 options'} (2 x 64/16 "
              f"tokens): {counter.get_total_flops():.6e} | trainer {reported:.6e} | {same} (target equal)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["speed", "memory", "flops"])
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="torch threads for the speed bench")
    ap.add_argument("--steps", type=int, default=int(os.environ.get("BENCH_STEPS", 8)), help="timed steps per model")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--verbose", action="store_true", help="print every memory case's tensors, not just misses")
    ap.add_argument("--memory-worker", metavar="DIR", help=argparse.SUPPRESS)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    if args.memory_worker:
        memory_worker(args.memory_worker, memory_cases)
        return
    torch.set_num_threads(args.threads)
    for name, run in (("flops", bench_flops), ("memory", bench_memory), ("speed", bench_speed)):
        if args.only in (None, name):
            run(args)


if __name__ == "__main__":
    main()
