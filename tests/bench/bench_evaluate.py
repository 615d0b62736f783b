"""Benchmark: ``bignlp-evaluate harness`` against lm-eval's own ``hf`` backend, same model, same requests.

A GPT-2-shaped model (6 layers, hidden 384, 6 heads, vocabulary 50,304, 1,024 positions; ~30M
parameters, random weights) is saved as a model checkpoint and exported with ``bignlp-convert
to-hf``. The task data: lambada-format documents cut from the demo corpus shipped in tests/data
(real English; the last word is the continuation), 2,000 requests. Timed, each in a fresh process
with the same threads and batch size:

- ours: ``bignlp-evaluate harness --checkpoint CKPT --tasks lambada``;
- the reference: ``lm_eval --model hf --model_args pretrained=HF_DIR`` on the same task override.

Wall time includes start-up and loading for both. Target: ours >= 1.0x as fast, and the same
accuracy and perplexity (1e-4).

    python tests/bench/bench_evaluate.py [--docs 2000] [--threads 2] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def lambada_docs(count: int, words: int = 48) -> list[dict]:
    """``count`` passages of about ``words`` words from the demo corpus, each ending on a whole word."""
    docs = []
    with gzip.open(REPO / "tests" / "data" / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            tokens = re.sub(r"\s+", " ", json.loads(line)["text"]).strip().split(" ")
            for start in range(0, len(tokens) - words, words):
                passage = " ".join(tokens[start:start + words])
                if re.search(r"[A-Za-z]{3,}$", passage):  # a word to predict, not punctuation
                    docs.append({"text": passage})
                    if len(docs) == count:
                        return docs
    raise SystemExit(f"the demo corpus gives only {len(docs)} passages; ask for fewer --docs")


def build(root: Path) -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO / "packages" / "evaluate" / "tests"))
    from evaluate_helpers import PRODUCER, gpt2_tokenizer

    from bignlp_models import GPT_SPEC, GPTConfig, save_model_checkpoint

    cfg = GPTConfig(vocab_size=50304, max_position_embeddings=1024, num_layers=6, hidden_size=384,
                    num_attention_heads=6, kv_channels=64, ffn_hidden_size=1536)
    torch.manual_seed(0)
    model = GPT_SPEC.model_class(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    save_model_checkpoint(root / "ckpt", family=GPT_SPEC, config=cfg, state_dict=model.state_dict(),
                          tokenizer=gpt2_tokenizer(), producer=PRODUCER)
    run([str(BIN / "bignlp-convert"), "to-hf", "--checkpoint", str(root / "ckpt"), "--output", str(root / "hf")])
    return root / "ckpt", root / "hf"


def run(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{out.stderr[-3000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=2000, help="lambada-format documents (one request each)")
    ap.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads of both")
    ap.add_argument("--batch-size", type=int, default=8, help="requests per forward, both")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(root / "hf_datasets"), "TOKENIZERS_PARALLELISM": "false"}
    print(f"== a 30M-parameter GPT, {args.docs} lambada-format requests from the demo corpus, "
          f"{args.threads} threads, batch {args.batch_size}", flush=True)
    ckpt, hf_dir = build(root)
    data = root / "data"
    data.mkdir()
    (data / "lambada.jsonl").write_text("".join(json.dumps(d) + "\n" for d in lambada_docs(args.docs)))
    from bignlp_evaluate.tasks import resolve_tasks, write_task_overrides

    include = root / "include"
    include.mkdir()
    write_task_overrides(resolve_tasks(["lambada"]), data, include)

    ours_s = run([str(BIN / "bignlp-evaluate"), "harness", "--checkpoint", str(ckpt), "--tasks", "lambada",
                  "--data-dir", str(data), "--output", str(root / "ours"), "--batch-size", str(args.batch_size),
                  "--device", "cpu"], env)
    hf_s = run([str(BIN / "lm_eval"), "--model", "hf", "--model_args",
                f"pretrained={hf_dir},dtype=float32,max_length=1024", "--tasks", "lambada_openai",
                "--include_path", str(include), "--batch_size", str(args.batch_size), "--device", "cpu",
                "--output_path", str(root / "hf_out")], env)
    ours = json.loads((root / "ours" / "results.json").read_text())["results"]["lambada_openai"]
    ref_file = next((root / "hf_out").rglob("results_*.json"))
    ref = json.loads(ref_file.read_text())["results"]["lambada_openai"]
    same = (abs(ours["acc,none"] - ref["acc,none"]) <= 1e-4
            and math.isclose(ours["perplexity,none"], ref["perplexity,none"], rel_tol=1e-4))
    print(f"bignlp-evaluate harness  {ours_s:7.1f} s  acc {ours['acc,none']:.4f}  perplexity "
          f"{ours['perplexity,none']:.6g}")
    print(f"lm_eval --model hf       {hf_s:7.1f} s  acc {ref['acc,none']:.4f}  perplexity {ref['perplexity,none']:.6g}")
    ratio = hf_s / ours_s
    print(f"speed ours/hf {ratio:.2f}x ({'ok' if ratio >= 1.0 else 'MISS'}, target >= 1.0); "
          f"numbers {'equal' if same else 'DIFFER'}")


if __name__ == "__main__":
    main()
