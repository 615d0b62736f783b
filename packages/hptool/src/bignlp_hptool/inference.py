"""The inference search: serve a checkpoint at each point of a grid with ``bignlp-export`` and measure it.

For every maximum batch size (``inference_settings.max_batch_sizes``) and instance count (ours:
``inference_settings.instance_counts``) the checkpoint is exported (``bignlp-export triton``), served on
free local ports (``bignlp-export serve``), measured with ``bignlp-export bench`` at ``input_seq_len`` /
``output_seq_len`` with as many concurrent clients as instances, each sending full batches, and the
server is stopped (SIGTERM to its PID). A tensor parallel size TP is served with each instance's matrices
split over TP devices, one process each (``bignlp-export triton --tensor-parallel``); a pipeline parallel
size PP with each instance's layers spread over PP devices (``--pipeline-parallel``). An instance does one
or the other: a point with both above 1 is recorded as not measured, with that reason; a TP that does not
divide the model's heads fails at export, with export's reason. A point within ``max_latency_ms`` (p90) is
admissible; the CSV ranks those by throughput per GPU (tokens/s over TP × PP; instances share one machine here).
The tool runs the export stage as commands; it never imports it.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import ConfigError, atomic_write_text
from bignlp_contracts.launch import free_port

from .config import HPToolConfig

COLUMNS = ["TP", "PP", "Max Batch Size", "Instances", "Concurrency", "Input Length", "Output Length",
           "Latency p50 (ms)", "Latency p90 (ms)", "Latency p99 (ms)", "Sequences per Second", "Tokens per Second",
           "Tokens per Second per GPU", "Within Latency", "Status", "Reason"]
READY_TIMEOUT_S = 300


@dataclass
class Point:
    tp: int
    pp: int
    max_batch_size: int
    instances: int
    status: str = "pending"
    reason: str = ""
    bench: dict | None = None


def export_command() -> list[str]:
    here = Path(sys.executable).parent / "bignlp-export"
    found = str(here) if here.exists() else shutil.which("bignlp-export")
    if not found:
        raise ConfigError("bignlp-export is not installed: the inference search serves the model with it",
                          hint="pip install bignlp-export (or make setup)")
    return [found]


def _run(cmd: list[str], log_path: Path, timeout_s: float) -> tuple[int, str]:
    with open(log_path, "a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        try:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s).returncode
        except subprocess.TimeoutExpired:
            return -1, f"timed out after {timeout_s:.0f} s"
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    return rc, lines[-1][:300] if lines else ""


def measure_point(point: Point, cfg: HPToolConfig, workdir: Path, log) -> None:
    """Export, serve, bench and stop one point; fills ``point.bench`` or its failure reason."""
    s = cfg.inference_settings
    name = f"tp{point.tp}_pp{point.pp}_bs{point.max_batch_size}_i{point.instances}"
    out_dir = workdir / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    log_path = out_dir / "search.log"
    tool = export_command()
    rc, last = _run([*tool, "triton", "--checkpoint", str(s.checkpoint), "--output", str(out_dir / "repo"),
                     "--max-batch-size", str(point.max_batch_size), "--instances", str(point.instances),
                     "--pipeline-parallel", str(point.pp), "--tensor-parallel", str(point.tp)],
                    log_path, 600)
    if rc != 0:
        point.status, point.reason = "failed", f"export: {last}"
        return
    http, grpc, metrics = (free_port() for _ in range(3))
    serve_out = out_dir / "serve.out"
    with open(serve_out, "w") as out:
        proc = subprocess.Popen([*tool, "serve", "--repository", str(out_dir / "repo"), "--http-port", str(http),
                                 "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                                 "--ready-timeout", str(READY_TIMEOUT_S)], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S + 10
        while "\nhttp " not in "\n" + serve_out.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = [x for x in serve_out.read_text(errors="replace").splitlines() if x.strip()][-1:]
                point.status, point.reason = "failed", f"serve: {tail[0][:300] if tail else 'not ready'}"
                return
            time.sleep(0.5)
        log(f"  {name}: serving on 127.0.0.1:{http}, measuring")
        rc, last = _run([*tool, "bench", "--url", f"127.0.0.1:{http}", "--input-len", str(s.input_seq_len),
                         "--output-len", str(s.output_seq_len), "--batch-sizes", str(point.max_batch_size),
                         "--concurrency", str(point.instances), "--requests", str(s.requests_per_point),
                         "--output", str(out_dir / "bench")], log_path, 1800)
        if rc != 0:
            point.status, point.reason = "failed", f"bench: {last}"
            return
        with open(out_dir / "bench" / "bench.csv") as f:
            point.bench = next(csv.DictReader(f))
        point.status = "measured"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # serve stops its server's process group
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def run_inference_search(cfg: HPToolConfig, logs: Path, log) -> dict:
    """Measure every grid point; write ``inference/final_summary.csv`` and a top-N log. Returns the files."""
    s = cfg.inference_settings
    if not s.checkpoint:
        raise ConfigError("run_inference_hp_search needs inference_settings.checkpoint (the model to serve)",
                          hint="set inference_settings.checkpoint=DIR (a model checkpoint or training run directory)")
    if not Path(s.checkpoint).exists():
        raise ConfigError(f"inference_settings.checkpoint={s.checkpoint}: no such checkpoint or run directory")
    root = Path(s.logs) if s.logs else logs / "inference"
    points = [Point(tp, pp, b, k) for tp in s.tensor_parallel_sizes for pp in s.pipeline_parallel_sizes
              for b in s.max_batch_sizes for k in s.instance_counts]
    log(f"inference search: {len(points)} points ({s.input_seq_len} in / {s.output_seq_len} out, "
        f"latency limit {s.max_latency_ms:g} ms) in {root}")
    for p in points:
        if p.tp > 1 and p.pp > 1:
            p.status, p.reason = "not-measured", ("a served instance splits its matrices (TP) or spreads its layers "
                                                  "(PP) over devices, not both")
            continue
        measure_point(p, cfg, root, log)
        log(f"  tp{p.tp}_pp{p.pp}_bs{p.max_batch_size}_i{p.instances}: {p.status}"
            + (f", p90 {float(p.bench['latency_p90_ms']):.0f} ms, {float(p.bench['tokens_per_s']):.1f} tokens/s"
               if p.bench else f" ({p.reason})"))
    rows = []
    for p in points:
        b = p.bench or {}
        p90 = float(b["latency_p90_ms"]) if b else None
        tokens = float(b["tokens_per_s"]) if b else None
        rows.append({"TP": p.tp, "PP": p.pp, "Max Batch Size": p.max_batch_size, "Instances": p.instances,
                     "Concurrency": p.instances, "Input Length": s.input_seq_len, "Output Length": s.output_seq_len,
                     "Latency p50 (ms)": b.get("latency_p50_ms"), "Latency p90 (ms)": b.get("latency_p90_ms"),
                     "Latency p99 (ms)": b.get("latency_p99_ms"), "Sequences per Second": b.get("sequences_per_s"),
                     "Tokens per Second": b.get("tokens_per_s"),
                     "Tokens per Second per GPU": tokens / (p.tp * p.pp) if tokens is not None else None,
                     "Within Latency": (p90 <= s.max_latency_ms) if p90 is not None else None,
                     "Status": p.status, "Reason": p.reason})
    rows.sort(key=lambda r: (r["Within Latency"] is not True, -(r["Tokens per Second per GPU"] or 0.0)))
    root.mkdir(parents=True, exist_ok=True)
    csv_path = root / "final_summary.csv"
    with open(csv_path.with_suffix(".csv.tmp"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in rows)
    os.replace(csv_path.with_suffix(".csv.tmp"), csv_path)
    best = [r for r in rows if r["Within Latency"]][: s.top_n]
    lines = [f"top {len(best)} within {s.max_latency_ms:g} ms (p90), by tokens/s per GPU:"]
    lines += [f"{i:>2}. TP {r['TP']}, PP {r['PP']}, max batch {r['Max Batch Size']}, {r['Instances']} instance(s): "
              f"p90 {r['Latency p90 (ms)']} ms, {r['Tokens per Second']} tokens/s" for i, r in enumerate(best, 1)]
    top = root / f"top_{s.top_n}_configs.log"
    atomic_write_text(top, "\n".join(lines) + "\n")
    log(f"inference csv: {csv_path}")
    return {"inference_csv": csv_path, "inference_top": top}
