"""Benchmark: a served GPT (tritonserver, the ensemble over HTTP) against Hugging Face ``generate`` in-process.

A GPT-2-shaped model (6 layers, hidden 384, 6 heads of 64, the GPT-2 vocabulary, 1,024 positions;
~30M parameters), random weights, saved as a model checkpoint; ``bignlp-convert to-hf`` exports the
same weights as a GPT2LMHeadModel and ``bignlp-export triton`` as a repository that
``bignlp-export serve`` runs (its own process group, 127.0.0.1, stopped at the end).

1. Latency at batch 1, input 60 / output 20 tokens, greedy: the median request through the served
   ensemble (HTTP, tokenizer and detokenizer included) vs the median ``generate`` of the HF model
   in this process on the same prompt ids (both on the same cores, one after the other).
   Target: ratio served / HF <= 1.25.
2. Throughput: 8 concurrent clients vs 1 client, batch 1 each (dynamic batching merges the 8).
   Target: >= 3x.

    python tests/bench/bench_export.py [--runs 9] [--threads 2]
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from bignlp_export.bench import prompt_of_length, run_point
from bignlp_export.client import generate as served_generate
from bignlp_export.client import http_client, tokenize

from bignlp_contracts import Producer
from bignlp_models import GPT_SPEC, GPTConfig, padded_vocab_size, save_model_checkpoint
from bignlp_tokenizers import TokenizerSpec, build_tokenizer

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INPUT_LEN, OUTPUT_LEN = 60, 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_checkpoint(out: Path) -> Path:
    tok = build_tokenizer(TokenizerSpec("gpt2-bpe", vocab_file=str(REPO / "tests/data/gpt2/vocab.json"),
                                        merges_file=str(REPO / "tests/data/gpt2/merges.txt")))
    cfg = GPTConfig(vocab_size=padded_vocab_size(tok.vocab_size, 128), max_position_embeddings=1024, num_layers=6,
                    hidden_size=384, num_attention_heads=6, ffn_hidden_size=1536, kv_channels=64,
                    init_method_std=0.1)
    torch.manual_seed(0)
    model = GPT_SPEC.model_class(cfg)
    save_model_checkpoint(out, family=GPT_SPEC, config=cfg, state_dict=model.state_dict(), tokenizer=tok,
                          producer=Producer("bench_export", "0"))
    return out


def run(*args: str) -> None:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        sys.exit(f"{' '.join(map(str, args[:3]))} failed: {result.stderr.strip()[-2000:]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2, help="torch threads, in this process and the server's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        tmp = Path(tmp)
        checkpoint = make_checkpoint(tmp / "ckpt")
        run(BIN / "bignlp-convert", "to-hf", "--checkpoint", checkpoint, "--output", tmp / "hf")
        run(BIN / "bignlp-export", "triton", "--checkpoint", checkpoint, "--output", tmp / "repo",
            "--max-batch-size", "8", f"triton_deployment.num_threads={args.threads}",
            "triton_deployment.max_queue_delay_microseconds=10000")
        ports = [free_port() for _ in range(3)]
        url = f"127.0.0.1:{ports[0]}"
        serve = subprocess.Popen([str(BIN / "bignlp-export"), "serve", "--repository", str(tmp / "repo"),
                                  "--http-port", str(ports[0]), "--grpc-port", str(ports[1]),
                                  "--metrics-port", str(ports[2]), "--log-file", str(tmp / "triton.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 300
            while True:
                if serve.poll() is not None or time.monotonic() > deadline:
                    sys.exit(f"bignlp-export serve did not come up: {serve.stderr.read()[-2000:]}")
                try:
                    with urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=2) as reply:
                        if reply.status == 200:
                            break
                except OSError:
                    time.sleep(0.5)
            bench(url, tmp / "hf", args.runs)
        finally:
            serve.send_signal(signal.SIGTERM)  # serve stops tritonserver's process group
            serve.wait(timeout=60)


def bench(url: str, hf_dir: Path, runs: int) -> None:
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(hf_dir).eval()
    client = http_client(url)
    try:
        prompt, length = prompt_of_length(client, INPUT_LEN)
        ids = torch.tensor([tokenize(client, [prompt])[0]])

        def served():
            return served_generate(client, [prompt], OUTPUT_LEN, top_k=1).ids[0]

        def theirs():
            with torch.inference_mode():
                out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=OUTPUT_LEN,
                                  min_new_tokens=OUTPUT_LEN, do_sample=False, pad_token_id=0)
            return out[0, ids.shape[1]:].tolist()

        for _ in range(2):
            served_tokens, hf_tokens = served(), theirs()
        times = {"served": [], "hf": []}
        for _ in range(runs):
            for name, fn in (("served", served), ("hf", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    finally:
        client.close()
    served_s, hf_s = statistics.median(times["served"]), statistics.median(times["hf"])
    print(f"latency, batch 1, input {length} / output {OUTPUT_LEN} tokens (median of {runs}):")
    print(f"  served (tritonserver, ensemble over HTTP)  {served_s * 1000:8.1f} ms  ({len(served_tokens)} tokens)")
    print(f"  Hugging Face generate, in-process          {hf_s * 1000:8.1f} ms")
    print(f"  ratio served / HF = {served_s / hf_s:.3f}   (target <= 1.25)   same tokens: {served_tokens == hf_tokens}")
    one = run_point(url, prompt, batch_size=1, concurrency=1, requests_per_client=16, output_len=OUTPUT_LEN)
    eight = run_point(url, prompt, batch_size=1, concurrency=8, requests_per_client=8, output_len=OUTPUT_LEN)
    print("throughput, batch 1 per request:")
    print(f"  1 client   {one['sequences_per_s']:7.2f} seq/s   p50 {one['latency_p50_ms']:7.1f} ms")
    print(f"  8 clients  {eight['sequences_per_s']:7.2f} seq/s   p50 {eight['latency_p50_ms']:7.1f} ms")
    print(f"  ratio 8 clients / 1 client = {eight['sequences_per_s'] / one['sequences_per_s']:.2f}   (target >= 3)")


if __name__ == "__main__":
    main()
