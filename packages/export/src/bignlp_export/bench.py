"""Latency and throughput of the served ensemble (seed 7.1.3's shape: input 60 / output 20 tokens, per batch size).

Our own client: ``concurrency`` threads, each with its HTTP connection, send requests of
``batch_size`` prompts of ``input_len`` tokens, greedy, ``output_len`` new tokens, back to back.
Latency is per request (p50/p90/p99, ms); throughput is sequences and generated tokens per second
over the wall time of the whole run.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from bignlp_contracts import InputError

from .client import generate, http_client, tokenize

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "people", "walk", "home",
         "from", "work", "and", "the", "sun", "sets", "behind", "tall", "hills", "near", "an", "old", "town")
FIELDS = ("batch_size", "concurrency", "requests", "input_len", "output_len", "generated_tokens_mean",
          "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_mean_ms", "sequences_per_s", "tokens_per_s")


def prompt_of_length(client, num_tokens: int) -> tuple[str, int]:
    """A prompt the served tokenizer makes ``num_tokens`` tokens of (or the closest it finds), and its length."""
    best = ("", 0)
    words = num_tokens
    for _ in range(64):
        text = " ".join(WORDS[i % len(WORDS)] for i in range(max(1, words)))
        n = len(tokenize(client, [text])[0])
        if abs(n - num_tokens) < abs(best[1] - num_tokens) or not best[0]:
            best = (text, n)
        if n == num_tokens:
            break
        words += 1 if n < num_tokens else -1
    return best


def run_point(url: str, prompt: str, *, batch_size: int, concurrency: int, requests_per_client: int,
              output_len: int, model: str = "ensemble") -> dict:
    """One (batch size, concurrency) point: every client sends ``requests_per_client`` requests."""
    latencies: list[float] = []
    generated: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def client_loop():
        client = http_client(url)
        try:
            barrier.wait()
            for _ in range(requests_per_client):
                start = time.perf_counter()
                answer = generate(client, [prompt] * batch_size, output_len, model=model, top_k=1)
                took = time.perf_counter() - start
                with lock:
                    latencies.append(took)
                    generated.extend(len(ids) for ids in answer.ids)
        except Exception as exc:  # reported below, with the point it broke
            with lock:
                errors.append(str(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise InputError(f"batch {batch_size}, concurrency {concurrency}: {errors[0]}")
    ms = np.array(latencies) * 1000.0
    sequences = len(generated)
    return {"batch_size": batch_size, "concurrency": concurrency, "requests": len(latencies),
            "output_len": output_len, "generated_tokens_mean": round(float(np.mean(generated)), 2),
            "latency_p50_ms": round(float(np.percentile(ms, 50)), 2),
            "latency_p90_ms": round(float(np.percentile(ms, 90)), 2),
            "latency_p99_ms": round(float(np.percentile(ms, 99)), 2),
            "latency_mean_ms": round(float(ms.mean()), 2),
            "sequences_per_s": round(sequences / wall, 3), "tokens_per_s": round(sum(generated) / wall, 2)}


def run_bench(url: str, *, input_len: int = 60, output_len: int = 20, batch_sizes: Sequence[int] = (1, 2, 4, 8),
              concurrency: Sequence[int] = (1,), requests_per_client: int = 10, warmup: int = 2,
              model: str = "ensemble", log: Callable[[str], None] = lambda _: None) -> list[dict]:
    """Every (batch size, concurrency) point, after ``warmup`` requests at batch 1."""
    client = http_client(url)
    try:
        prompt, actual = prompt_of_length(client, input_len)
        for _ in range(warmup):
            generate(client, [prompt], output_len, model=model, top_k=1)
    finally:
        client.close()
    rows = []
    for batch_size in batch_sizes:
        for clients in concurrency:
            row = {**run_point(url, prompt, batch_size=batch_size, concurrency=clients,
                               requests_per_client=requests_per_client, output_len=output_len, model=model),
                   "input_len": actual}
            rows.append(row)
            log(f"batch {batch_size:>3} × {clients:>2} clients: p50 {row['latency_p50_ms']:.1f} ms, "
                f"p99 {row['latency_p99_ms']:.1f} ms, {row['sequences_per_s']:.2f} seq/s, "
                f"{row['tokens_per_s']:.1f} tok/s")
    return rows


def write_results(rows: list[dict], output: str | Path) -> tuple[Path, Path]:
    """``bench.csv`` (one row per point) and ``bench.png`` (p50 latency and throughput per batch size)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = output / "bench.csv", output / "bench.png"
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for clients in sorted({r["concurrency"] for r in rows}):
        points = [r for r in rows if r["concurrency"] == clients]
        sizes = [r["batch_size"] for r in points]
        left.plot(sizes, [r["latency_p50_ms"] for r in points], marker="o", label=f"{clients} client(s)")
        right.plot(sizes, [r["sequences_per_s"] for r in points], marker="o", label=f"{clients} client(s)")
    left.set(xlabel="batch size", ylabel="p50 latency [ms]", title="latency")
    right.set(xlabel="batch size", ylabel="sequences / s", title="throughput")
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path
