"""Benchmark: bignlp-dataprep preprocess end to end vs each raw tokenizer library, same run, same text.

For GPT-2 BPE (baseline: tiktoken's own batch encoder; FACTS.md: 15.7 MB/s on 2 threads,
Megatron-LM's preprocess_data.py 2.8 MB/s; target ratio ≥ 0.8), BERT WordPiece (baseline:
HF tokenizers' encode_batch) and SentencePiece (baseline: SentencePieceProcessor.encode
with threads). Prints MB/s for both and the ratio ours/raw. The input is the shipped demo
corpus repeated to BENCH_MB megabytes (default 30) of uncompressed JSONL.

    python tests/bench/bench_dataprep.py [--mb 30] [--workers 2] [--only gpt2-bpe]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"
GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def raw_encoder():
    """tiktoken's Rust BPE built straight from the shipped vocab.json (no Python around it)."""
    import tiktoken

    vocab = json.loads((DATA / "gpt2" / "vocab.json").read_text(encoding="utf-8"))
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    byte_of = {chr(c): b for b, c in zip(bs, cs)}
    ranks = {bytes(byte_of[ch] for ch in tok): i for tok, i in vocab.items() if tok != "<|endoftext|>"}
    return tiktoken.Encoding("gpt2-bench", pat_str=GPT2_PAT, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def make_input(path: Path, mb: float) -> list[str]:
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = f.readlines()
    texts, size = [], 0
    with open(path, "w", encoding="utf-8") as out:
        while size < mb * 1e6:
            for line in lines:
                out.write(line)
                size += len(line.encode())
                texts.append(json.loads(line)["text"])
    return texts


SPM_MODEL = REPO / "packages" / "dataprep" / "tests" / "data" / "botchan_en_unigram_1000.model"


def baselines(workers: int) -> dict:
    """Per tokenizer: (raw encode function over a list of texts, our CLI's tokenizer options)."""
    import sentencepiece
    from tokenizers import BertWordPieceTokenizer

    gpt2 = raw_encoder()
    bert = BertWordPieceTokenizer(str(DATA / "bert" / "vocab.txt"), lowercase=True)
    spm = sentencepiece.SentencePieceProcessor(model_file=str(SPM_MODEL))
    return {
        "gpt2-bpe": (lambda t: gpt2.encode_ordinary_batch(t, num_threads=workers),
                     ["--vocab-file", str(DATA / "gpt2" / "vocab.json"), "--merges-file",
                      str(DATA / "gpt2" / "merges.txt")]),
        "bert-wordpiece": (lambda t: bert.encode_batch(t, add_special_tokens=False),
                           ["--vocab-file", str(DATA / "bert" / "vocab.txt")]),
        "sentencepiece": (lambda t: spm.encode(t, num_threads=workers),
                          ["--tokenizer-model", str(SPM_MODEL)]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=float, default=float(os.environ.get("BENCH_MB", 30)))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--only", choices=["gpt2-bpe", "bert-wordpiece", "sentencepiece"])
    args = ap.parse_args()
    tool = shutil.which("bignlp-dataprep", path=str(Path(sys.executable).parent)) or shutil.which("bignlp-dataprep")
    if tool is None:
        sys.exit("bignlp-dataprep is not installed: run make setup")
    tmp = Path(tempfile.mkdtemp(prefix="bignlp-bench-"))
    try:
        inp = tmp / "bench.jsonl"
        texts = make_input(inp, args.mb)
        size_mb = inp.stat().st_size / 1e6
        print(f"input: {size_mb:.1f} MB of English JSONL, {args.workers} workers/threads")
        for name, (encode, options) in baselines(args.workers).items():
            if args.only and name != args.only:
                continue
            t0 = time.perf_counter()
            encode(texts)
            raw = size_mb / (time.perf_counter() - t0)
            cmd = [tool, "preprocess", "--input", str(inp), "--output-prefix", str(tmp / name / "bench"),
                   "--json-keys", "text", "--tokenizer-type", name, *options, "--append-eod",
                   "--workers", str(args.workers)]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            ours = size_mb / (time.perf_counter() - t0)
            shutil.rmtree(tmp / name, ignore_errors=True)
            target = " (target >= 0.80)" if name == "gpt2-bpe" else ""
            print(f"{name:15s} raw library {raw:7.2f} MB/s | bignlp-dataprep end to end {ours:7.2f} MB/s | "
                  f"ratio {ours / raw:.2f}{target}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
