"""Benchmark: bignlp-convert on a checkpoint of over 1 GB — peak memory and throughput (issue 12).

A random GPT of the GPT-3 350M shape (24 layers, hidden 1024, 16 heads, ffn 4096, GPT-2's vocabulary
padded to 50,304, fp32: 1.42 GB of weights) is written as a model checkpoint, then converted

- to Hugging Face (``to_hf``: one model.safetensors, or shards), and
- to a ``.nemo`` at tensor-parallel size 2 (``to_nemo``: mp_rank_00/ and mp_rank_01/),

each in a fresh process, which reports its peak resident memory (``VmHWM``) and its resident
memory once the libraries are imported (what any Python + torch process holds before it reads a
byte). The baseline, measured in the same run between the conversions: ``cp`` of the checkpoint's
``dcp/`` files (the same bytes) to the same filesystem.

Targets: peak RSS <= 1.5 x the largest group of weights a converter holds at once + 500 MB (here the
token embedding, 206 MB: larger than a transformer layer's 50 MB); throughput (checkpoint bytes /
seconds) >= 0.5 x cp's. GNU cp copies inside the kernel (copy_file_range) and checks nothing; a
conversion must also hash every byte it writes for the output's manifest, so the run prints sha256's
own single-core speed as the floor no converter can beat on the same machine. Files are in the page
cache for both (they were just written), as for a conversion that follows training on the same node;
``--cold`` evicts them first (``posix_fadvise``).

    python tests/bench/bench_convert.py [--dir /tmp] [--repeat 2] [--cold] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_checkpoint_verify import evict  # noqa: E402  (page-cache eviction, shared; this directory is no package)

REPO = Path(__file__).resolve().parents[2]
MB = 1e6

CHILD = r"""
import json, sys, time
from pathlib import Path
import torch
from bignlp_convert.hf import to_hf
from bignlp_convert.nemo import to_nemo
torch.set_num_threads(2)
def hwm():  # this process's peak RSS (ru_maxrss would start from the parent's, which built the checkpoint)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024
imported = hwm()
kind, ckpt, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
quiet = lambda line: None
start = time.perf_counter()
if kind == "hf":
    to_hf(ckpt, out, verify="size", log=quiet)
else:
    to_nemo(ckpt, out / "model.nemo", tensor_model_parallel_size=2, pipeline_model_parallel_size=1, verify="size",
            log=quiet)
elapsed = time.perf_counter() - start
print(json.dumps({"elapsed": elapsed, "peak": hwm(),
                  "imported": imported}))
"""


def build(root: Path) -> tuple[Path, int, int]:
    """The checkpoint; its dcp/ bytes; the largest group of weights (bytes) a converter reads at once."""
    sys.path.insert(0, str(REPO / "packages" / "convert" / "tests"))
    from bignlp_convert.stream import layer_groups
    from convert_helpers import PRODUCER, tokenizer

    from bignlp_models import GPT_SPEC, GPTConfig, save_model_checkpoint

    cfg = GPTConfig(vocab_size=50304, max_position_embeddings=2048, num_layers=24, hidden_size=1024,
                    num_attention_heads=16, kv_channels=64, ffn_hidden_size=4096)
    meta = GPT_SPEC.build_meta(cfg).state_dict()
    gen = torch.Generator().manual_seed(0)
    state = {name: torch.randn(t.shape, generator=gen) * 0.02 for name, t in meta.items()}
    ckpt = root / "ckpt"
    save_model_checkpoint(ckpt, family=GPT_SPEC, config=cfg, state_dict=state, tokenizer=tokenizer("gpt"),
                          producer=PRODUCER)
    groups = layer_groups(state, GPT_SPEC)
    largest = max(sum(state[n].numel() * 4 for n in g) for g in groups)
    del state
    nbytes = sum(p.stat().st_size for p in (ckpt / "dcp").rglob("*") if p.is_file())
    return ckpt, nbytes, largest


def sha256_rate(size: int = 256 * 2**20) -> float:
    """Bytes per second hashlib's sha256 reaches on one core (best of 3)."""
    data = os.urandom(size)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        best = min(best, time.perf_counter() - start)
    return size / best


def timed_cp(ckpt: Path, root: Path, cold: bool) -> float:
    os.sync()  # no earlier run's dirty pages to write back during this one
    if cold:
        evict(ckpt)
    dest = root / "cp"
    start = time.perf_counter()
    subprocess.run(["cp", "-r", str(ckpt / "dcp"), str(dest)], check=True)
    elapsed = time.perf_counter() - start
    shutil.rmtree(dest)
    return elapsed


def convert(kind: str, ckpt: Path, root: Path, cold: bool) -> dict:
    os.sync()
    if cold:
        evict(ckpt)
    out = root / f"out-{kind}"
    res = subprocess.run([sys.executable, "-c", CHILD, kind, str(ckpt), str(out)], capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{kind} conversion failed:\n{res.stderr[-3000:]}")
    result = json.loads(res.stdout.strip().splitlines()[-1])
    result["written"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    shutil.rmtree(out)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=None, help="where to write the checkpoint and outputs [default: $TMPDIR]")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each; best times, highest peak")
    ap.add_argument("--cold", action="store_true", help="evict the checkpoint from the page cache before each run")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoint (printed) instead of deleting it")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-convert-", dir=args.dir))
    try:
        print("== building a 355M-parameter fp32 GPT checkpoint (GPT-3 350M shape) ...", flush=True)
        ckpt, nbytes, largest = build(root)
        print(f"checkpoint {nbytes / MB:,.0f} MB in dcp/; largest group of weights {largest / MB:,.0f} MB "
              f"(the token embedding); {'cold' if args.cold else 'page cache warm'}")
        cp_s, runs = [], {"hf": [], "nemo": []}
        for _ in range(args.repeat):
            for kind in runs:
                cp_s.append(timed_cp(ckpt, root, args.cold))
                runs[kind].append(convert(kind, ckpt, root, args.cold))
        cp_rate = nbytes / min(cp_s)
        print(f"cp of the same bytes: {cp_rate / MB:,.0f} MB/s (best of {len(cp_s)})")
        sha_rate = sha256_rate()
        print(f"floor: sha256 on one core {sha_rate / MB:,.0f} MB/s = {sha_rate / cp_rate:.2f} x cp -- every output "
              f"file's sha256 goes in its manifest, so no conversion here can be faster than that")
        budget = 1.5 * largest + 500 * MB
        ok = True
        for kind, label in (("hf", "to-hf (safetensors)"), ("nemo", "to-nemo TP=2")):
            best = min(r["elapsed"] for r in runs[kind])
            peak = max(r["peak"] for r in runs[kind])
            imported = max(r["imported"] for r in runs[kind])
            rate = nbytes / best
            mem_ok, speed_ok = peak <= budget, rate >= 0.5 * cp_rate
            ok &= mem_ok and speed_ok
            print(f"{label:22s} {rate / MB:7,.0f} MB/s = {rate / cp_rate:.2f} x cp ({'ok' if speed_ok else 'MISS'}, "
                  f"target >= 0.50) | peak RSS {peak / MB:,.0f} MB of budget {budget / MB:,.0f} MB "
                  f"(1.5 x {largest / MB:,.0f} + 500; {'ok' if mem_ok else 'MISS'}), after imports "
                  f"{imported / MB:,.0f} MB | wrote {runs[kind][0]['written'] / MB:,.0f} MB")
        print("all on target" if ok else "some targets missed")
        if args.keep:
            print(f"kept {ckpt}")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
