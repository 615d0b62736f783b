"""Benchmark: bignlp-models' ``generate`` (KV cache) against Hugging Face's on the same weights, on CPU.

A GPT-2-shaped model (6 layers, hidden 384, 6 heads of 64, vocabulary 50,304, 1,024 positions,
tied embeddings, tanh GeLU; ~30M parameters, two thirds of them the embedding), fp32, the
same weights in both (``bignlp_models.hf_gpt2``). Greedy, 60 prompt tokens, 20 new tokens, no
stop token, batch 1 and batch 8 (the HP tool's inference shape: input 60, output 20).
Warm-up calls untimed, then timed calls alternating between the two (both see the same machine
load); new tokens per second from the median call, prefill included. Target: ratio ours/HF
>= 1.0 at both batch sizes, and the same tokens.

    python tests/bench/bench_generate.py [--threads 2] [--runs 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bignlp_models import GPTConfig, build_model, generate, num_parameters
from bignlp_models.hf_gpt2 import to_hf_gpt2

# init std 0.1 rather than 0.02: with GPT-3's small init a random model repeats its last token, which
# would make "same tokens" a weak check
CFG = GPTConfig(vocab_size=50304, max_position_embeddings=1024, num_layers=6, hidden_size=384, num_attention_heads=6,
                ffn_hidden_size=1536, kv_channels=64, hidden_dropout=0.0, attention_dropout=0.0, init_method_std=0.1)
PROMPT_TOKENS, NEW_TOKENS = 60, 20


def timed(fn) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def bench_batch(model, hf, batch: int, runs: int) -> tuple[float, float, bool]:
    """(ours tok/s, HF tok/s, same tokens) for ``batch`` prompts of PROMPT_TOKENS."""
    gen = torch.Generator().manual_seed(batch)
    prompts = torch.randint(0, CFG.vocab_size, (batch, PROMPT_TOKENS), generator=gen)
    prompt_lists = prompts.tolist()

    def ours() -> list[list[int]]:
        return generate(model, prompt_lists, max_new_tokens=NEW_TOKENS, greedy=True).tokens

    def theirs() -> list[list[int]]:
        with torch.inference_mode():
            out = hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=NEW_TOKENS,
                              do_sample=False, pad_token_id=0)
        return out[:, PROMPT_TOKENS:].tolist()

    for _ in range(2):  # warm-up: allocator, thread pool, HF's first-call set-up
        ours_tokens, hf_tokens = ours(), theirs()
    times = {"ours": [], "hf": []}
    for _ in range(runs):
        for name, fn in (("ours", ours), ("hf", theirs)):
            seconds, _ = timed(fn)
            times[name].append(seconds)
    new_tokens = batch * NEW_TOKENS
    return (new_tokens / statistics.median(times["ours"]), new_tokens / statistics.median(times["hf"]),
            ours_tokens == hf_tokens)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7, help="timed calls per model and batch size")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    model = build_model(CFG).eval()
    hf = to_hf_gpt2(model)
    print(f"== generate: greedy, fp32, {torch.get_num_threads()} threads, {num_parameters(model) / 1e6:.1f}M "
          f"parameters, {PROMPT_TOKENS} prompt tokens -> {NEW_TOKENS} new, median of {args.runs} alternating calls")
    all_ok = True
    for batch in (1, 8):
        ours_tps, hf_tps, same = bench_batch(model, hf, batch, args.runs)
        ratio = ours_tps / hf_tps
        all_ok &= same and ratio >= 1.0
        print(f"batch {batch}: HF generate {hf_tps:7.1f} tok/s | bignlp generate {ours_tps:7.1f} tok/s | "
              f"ratio {ratio:.2f} (target >= 1.00) | same tokens: {'yes' if same else 'no'}")
    print("all on target" if all_ok else "NOT all on target")


if __name__ == "__main__":
    main()
