"""Benchmark: verifying a checkpoint's sha256 before a resume, against reading the same bytes.

A checkpoint as bignlp-train writes it (``dcp/`` through torch.distributed.checkpoint, one file
per rank: here FILES files, as FILES ranks of a node write; manifest with each file's size and
sha256), MB megabytes of fp32 tensors in all. Timed, best of REPEAT, each with the files in the
page cache (warm: a resume on the node that saved) and evicted from it (cold: a resume after a
requeue; ``posix_fadvise(DONTNEED)``, no root needed):

- read, 1 thread: every byte of every file read in 8 MiB chunks, one file after another;
- read, N threads: the same with N files at a time, N the verification's thread count;
- verify: ``checkpoint_problem(sha256=True)`` (bignlp_contracts.check_files, N threads);
- DCP load: ``torch.distributed.checkpoint.load`` of every tensor into preallocated ones (what a
  resume then does with the bytes).

Printed as MB/s and the ratio verify / read. Target: verify >= 0.5 x read (1 thread). sha256 runs
at 1-2 GB/s per core (SHA-NI), so against page-cache reads (several GB/s per core, memory bound)
the warm ratio depends on how many cores hash at once; cold reads are bounded by the storage.

    python tests/bench/bench_checkpoint_verify.py [--mb 512] [--files 8] [--repeat 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp

from bignlp_contracts import MODEL_CHECKPOINT, Producer, checkpoint_problem, write_manifest
from bignlp_contracts.verify import default_num_threads

CHUNK = 8 << 20


def build(root: Path, mb: int, num_files: int) -> tuple[Path, dict[str, torch.Tensor]]:
    """A checkpoint directory of ``mb`` MB in ``num_files`` dcp/ files (one per simulated rank)."""
    ckpt = root / "step-00000100"
    (ckpt / "dcp").mkdir(parents=True)
    gen = torch.Generator().manual_seed(0)
    per_file = mb * (1 << 20) // num_files // 4
    state = {}
    for rank in range(num_files):
        rows = per_file // 1024
        state[f"model.w{rank}"] = torch.randn(rows, 1024, generator=gen)
    writer = dcp.FileSystemWriter(str(ckpt / "dcp"), thread_count=num_files, single_file_per_rank=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save({"model": state}, storage_writer=writer)
    (ckpt / "config.yaml").write_text("model: {}\n")
    files = sorted(str(p.relative_to(ckpt)) for p in ckpt.rglob("*") if p.is_file())
    write_manifest(ckpt, MODEL_CHECKPOINT, producer=Producer("bench", "0"), files=files,
                   summary={"family": "gpt", "step": 100})
    return ckpt, state


def data_files(ckpt: Path) -> list[Path]:
    return sorted(p for p in ckpt.rglob("*") if p.is_file())


def evict(ckpt: Path) -> None:
    for path in data_files(ckpt):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_file(path: Path) -> int:
    view = memoryview(bytearray(CHUNK))
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            total += n
    return total


def read_all(ckpt: Path, threads: int) -> None:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(read_file, data_files(ckpt)))


def verify(ckpt: Path) -> None:
    assert checkpoint_problem(ckpt, sha256=True) is None


def dcp_load(ckpt: Path, state: dict[str, torch.Tensor]) -> None:
    template = {"model": {k: torch.empty_like(v) for k, v in state.items()}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(template, checkpoint_id=ckpt / "dcp", no_dist=True)


def best_mbps(fn, ckpt: Path, nbytes: int, repeat: int, cold: bool) -> float:
    best = float("inf")
    for _ in range(repeat):
        if cold:
            evict(ckpt)
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return nbytes / best / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=512, help="checkpoint size in MB (default 512)")
    ap.add_argument("--files", type=int, default=8, help="dcp/ files, one per simulated rank (default 8)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where to write it (default: the system temp dir)")
    args = ap.parse_args()
    threads = default_num_threads()
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-verify-") as tmp:
        ckpt, state = build(Path(tmp), args.mb, args.files)
        nbytes = sum(p.stat().st_size for p in data_files(ckpt))
        print(f"== checkpoint verification: {nbytes / 1e6:,.0f} MB in {len(data_files(ckpt))} files "
              f"({args.files} dcp/ shards), {threads} hashing threads ({os.cpu_count()} CPUs), best of {args.repeat}")
        cases = {
            "read, 1 thread": lambda: read_all(ckpt, 1),
            f"read, {threads} threads": lambda: read_all(ckpt, threads),
            f"verify (sha256, {threads} threads)": lambda: verify(ckpt),
            "DCP load": lambda: dcp_load(ckpt, state),
        }
        for cold in (False, True):
            rates = {name: best_mbps(fn, ckpt, nbytes, args.repeat, cold) for name, fn in cases.items()}
            where = "cold (evicted from the page cache)" if cold else "warm (in the page cache)"
            print(f"-- {where}")
            for name, rate in rates.items():
                print(f"  {name:28s} {rate:9,.0f} MB/s")
            verified = rates[f"verify (sha256, {threads} threads)"]
            ratio = verified / rates["read, 1 thread"]
            ok = "ok" if ratio >= 0.5 else "MISS"
            print(f"  verify / read (1 thread) ratio {ratio:.2f} {ok} (target >= 0.50); "
                  f"vs read ({threads} threads) {verified / rates[f'read, {threads} threads']:.2f}; "
                  f"verify time / DCP load time {rates['DCP load'] / verified:.2f}")


if __name__ == "__main__":
    main()
