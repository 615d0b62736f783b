"""The training HP search: candidate grid → memory filter → ranking → short bignlp-train runs → results.

Every candidate is checked (divisibility, then the memory model against ``gpu_memory_gb`` less
the safety margin) before anything starts; the ``limit_search_runs`` admitted candidates with the
best predicted throughput run as ``bignlp-train pretrain --nproc-per-node N`` on this machine,
each stopped by ``max_steps_per_run`` / ``max_minutes_per_run``. Candidates needing more than one
node are recorded as not launched: Slurm launching through ``slurm-templates/`` is a later issue.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from bignlp_contracts import ConfigError, atomic_write_text, dump_config

from .basecfg import ModelShape
from .config import HPToolConfig
from .hardware import GPUKind
from .perf import Layout, PerfConstants, Prediction, predict
from .trainyaml import candidate_train_config, write_yaml

MARKER = "hptool_search.json"
WARMUP_STEPS = 5  # the launcher skips the first 5 steps' timings


@dataclass
class Candidate:
    """One layout: its prediction, what happened to it and what was measured."""

    layout: Layout
    nodes: int
    prediction: Prediction
    status: str = "candidate"  # admitted, predicted-OOM, launched, measured, failed, not-launched
    reason: str = ""
    measured_step_time_s: float | None = None
    measured_memory_gb: float | None = None  # the worst rank's accounted total (bignlp-train's memory records)
    measured_cuda_peak_gb: float | None = None  # its torch.cuda.max_memory_allocated, on GPUs
    num_steps_measured: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.layout.name


def _powers(limit: int) -> list[int]:
    return [2**i for i in range(int(math.log2(max(1, limit))) + 1)]


def layout_problem(shape: ModelShape, layout: Layout) -> str | None:
    """Why a layout cannot train this model (bignlp-train's own checks), or None."""
    a = shape.arch
    if a.num_attention_heads % layout.tp:
        return f"num_attention_heads {a.num_attention_heads} % TP {layout.tp} != 0"
    if layout.sp and shape.seq_length % layout.tp:
        return f"seq_length {shape.seq_length} % TP {layout.tp} != 0 (sequence parallel)"
    if shape.family == "gpt":
        if a.num_layers % (layout.pp * layout.vp):
            return f"num_layers {a.num_layers} % (PP {layout.pp} x virtual {layout.vp}) != 0"
    elif layout.pp > 1:
        enc = (layout.pp + 1) // 2
        if layout.pp == 1 or layout.pp % 2 or a.encoder_num_layers % enc or a.decoder_num_layers % (layout.pp - enc):
            return (f"encoder/decoder layers {a.encoder_num_layers}/{a.decoder_num_layers} "
                    f"do not split over PP {layout.pp}")
    if layout.dp == 0:
        return f"TP x PP = {layout.tp * layout.pp} does not divide the GPUs of whole nodes"
    if layout.gbs % (layout.mbs * layout.dp):
        return f"GBS {layout.gbs} % (MBS {layout.mbs} x DP {layout.dp}) != 0"
    m = layout.num_micro_batches
    if layout.pp > 1 and (m < layout.pp or (layout.vp > 1 and m % layout.pp)):
        return f"{m} micro-batches per step for PP {layout.pp}{' interleaved' if layout.vp > 1 else ''}"
    return None


def candidate_grid(cfg: HPToolConfig, shape: ModelShape, gbs: int) -> list[tuple[Layout, int]]:
    """Every (layout, nodes) of the search space (``auto`` lists: the heuristics below)."""
    ts = cfg.train_settings
    gpn = ts.gpus_per_node
    layers = shape.num_layers if shape.family == "gpt" else shape.arch.encoder_num_layers
    tps = ts.tensor_parallel_sizes if ts.tensor_parallel_sizes != "auto" else [
        t for t in _powers(min(8, gpn)) if shape.num_attention_heads % t == 0]
    pps = ts.pipeline_parallel_sizes if ts.pipeline_parallel_sizes != "auto" else [
        p for p in _powers(min(32, shape.num_layers)) if (shape.num_layers % p == 0)]
    auto_mbs = [1, 2, 4, 8] + ([16, 32] if shape.family == "t5" else [])
    mbss = ts.micro_batch_sizes if ts.micro_batch_sizes != "auto" else auto_mbs
    vps = ts.virtual_pipeline_sizes if ts.virtual_pipeline_sizes != "auto" else [1, 2]
    out = []
    for tp, pp, mbs, vp in itertools.product(tps, pps, mbss, vps):
        if vp > 1 and (pp == 1 or shape.family == "t5"):
            continue
        nodes = ts.override_search_num_nodes if ts.override_search_num_nodes != "auto" else math.ceil(tp * pp / gpn)
        world = nodes * gpn
        dp = world // (tp * pp) if world % (tp * pp) == 0 else 0  # 0: refused by layout_problem
        per_stage = max(1, layers // pp)
        ckpts = ts.act_ckpt_layers if ts.act_ckpt_layers != "auto" else sorted({0, 1, per_stage // 2, per_stage})
        modes = [(None, k) for k in ckpts if k <= per_stage]
        if ts.search_selective_recompute:
            modes.append(("selective", 0))
        sps = [False, True] if (tp > 1 and ts.search_sequence_parallel) else [False]
        for (rc, k), sp in itertools.product(modes, sps):
            layout = Layout(tp=tp, pp=pp, dp=dp, mbs=mbs, gbs=gbs, vp=vp, sp=sp,
                            recompute="full" if k > 0 else rc, act_ckpt_layers=k)
            out.append((layout, nodes))
    return out


def admit(cfg: HPToolConfig, shape: ModelShape, kind: GPUKind, gbs: int,
          constants: PerfConstants | None = None) -> list[Candidate]:
    """The grid, each candidate predicted and marked admitted or predicted-OOM, best predicted tokens/s per GPU first.

    Layouts bignlp-train would refuse are dropped; when explicit TP/PP lists leave none, a
    ConfigError says why each (TP, PP) fails.
    """
    ts = cfg.train_settings
    constants = constants or PerfConstants()
    budget = ts.gpu_memory_gb * (1 - ts.memory_margin)
    out, problems = [], {}
    for layout, nodes in candidate_grid(cfg, shape, gbs):
        problem = layout_problem(shape, layout)
        if problem:
            problems.setdefault((layout.tp, layout.pp), problem)
            continue
        p = predict(shape, layout, kind, gpus_per_node=ts.gpus_per_node, constants=constants)
        c = Candidate(layout, nodes, p)
        if p.memory_gb > budget:
            c.status, c.reason = "predicted-OOM", (f"predicted {p.memory_gb:.2f} GB > {budget:.2f} GB "
                                                   f"({ts.gpu_memory_gb:g} GB less {ts.memory_margin:.0%} margin)")
        else:
            c.status = "admitted"
        out.append(c)
    if not any(c.status == "admitted" for c in out):
        why = "; ".join(f"TP {tp} PP {pp}: {p}" for (tp, pp), p in sorted(problems.items()))
        ooms = sorted({(c.layout.tp, c.layout.pp) for c in out})
        if ooms:
            best = min(out, key=lambda c: c.prediction.memory_gb)
            why += ("; " if why else "") + (f"TP/PP {', '.join(f'{t}/{p}' for t, p in ooms)}: over the memory budget "
                                            f"(smallest predicted {best.prediction.memory_gb:.2f} GB, {best.name}, "
                                            f"budget {budget:.2f} GB)")
        raise ConfigError(f"no candidate layout fits: {why or 'the grid is empty'}",
                          hint="widen tensor_parallel_sizes / pipeline_parallel_sizes, lower micro_batch_sizes, "
                               "or raise gpu_memory_gb")
    # per GPU: candidates run on different node counts; the full run's throughput scales with its GPUs
    out.sort(key=lambda c: (c.status != "admitted",
                            -c.prediction.tokens_per_s / (c.layout.tp * c.layout.pp * c.layout.dp)))
    return out


def claim_logs_dir(cfg: HPToolConfig, logs: Path) -> None:
    """Refuse a ``logs`` directory holding another search; mark it as this one's."""
    fingerprint = hashlib.sha256(dump_config(cfg).encode()).hexdigest()[:16]
    marker = logs / MARKER
    if marker.is_file():
        other = json.loads(marker.read_text())
        if other.get("fingerprint") != fingerprint:
            raise ConfigError(f"logs directory {logs} holds another search ({other.get('search_config')}, "
                              f"config {other.get('fingerprint')})",
                              hint="give this search its own train_settings.logs, or remove that directory")
    elif logs.is_dir() and any(logs.iterdir()):
        raise ConfigError(f"logs directory {logs} is not empty and holds no HP search",
                          hint="give the search an empty or new train_settings.logs")
    logs.mkdir(parents=True, exist_ok=True)
    atomic_write_text(marker, json.dumps({"search_config": cfg.search_config_value, "fingerprint": fingerprint}))


def train_command() -> list[str]:
    """How to start bignlp-train: the console script next to this interpreter, else on PATH."""
    here = Path(sys.executable).parent / "bignlp-train"
    if here.exists():
        return [str(here)]
    found = shutil.which("bignlp-train")
    if not found:
        raise ConfigError("bignlp-train is not installed: the search launches it for every candidate",
                          hint="pip install bignlp-train (or make setup)")
    return [found]


def read_step_times(metrics: Path) -> list[float]:
    """``step_time_s`` of every train record, in step order."""
    if not metrics.is_file():
        return []
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r["step_time_s"] for r in records if r.get("event") == "train" and "step_time_s" in r]


def read_memory(metrics: Path) -> dict | None:
    """The ``memory/*`` values of the rank holding the most (``total_peak_bytes``) in the run's last
    ``memory`` records (bignlp-train writes one per rank on ``trainer.memory_step``), or None."""
    if not metrics.is_file():
        return None
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    records = [r for r in records if r.get("event") == "memory"]
    if not records:
        return None
    last = max(r["step"] for r in records)
    return max((r for r in records if r["step"] == last), key=lambda r: r.get("memory/total_peak_bytes", 0))


def measure(times: list[float]) -> tuple[float | None, int]:
    """Median step time past the warm-up (the first 5 steps, or 1 in runs of up to 7) and the steps used."""
    skip = WARMUP_STEPS if len(times) > WARMUP_STEPS + 2 else min(1, len(times) - 1)
    used = times[skip:]
    return (statistics.median(used), len(used)) if used else (None, 0)


def launch(candidate: Candidate, train_cfg: dict, *, config_path: Path, run_dir: Path, timeout_s: float,
           log) -> None:
    """Run one candidate with bignlp-train on this machine; record its measured step time or why it failed."""
    nproc = candidate.layout.tp * candidate.layout.pp * candidate.layout.dp
    if run_dir.exists():
        shutil.rmtree(run_dir)
    write_yaml(config_path, train_cfg, header=f"bignlp-hptool candidate {candidate.name}")
    cmd = [*train_command(), "pretrain", "--config", str(config_path), "--nproc-per-node", str(nproc)]
    log(f"launching {candidate.name} ({nproc} processes): {' '.join(cmd)}")
    candidate.status = "launched"
    log_path = run_dir.parent / f"{candidate.name}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        with open(log_path, "w") as out:
            rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s, env=env).returncode
    except subprocess.TimeoutExpired:
        rc, candidate.reason = None, f"killed after {timeout_s:.0f} s"
    record_result(candidate, rc, run_dir=run_dir, log_path=log_path, log=log)


def record_result(candidate: Candidate, rc: int | None, *, run_dir: Path, log_path: Path, log) -> None:
    """The candidate's measured step time from its run's metrics.jsonl, or why it failed (``rc``: its exit code)."""
    times = read_step_times(run_dir / "metrics.jsonl")
    candidate.measured_step_time_s, candidate.num_steps_measured = measure(times)
    memory = read_memory(run_dir / "metrics.jsonl")
    if memory is not None:
        candidate.measured_memory_gb = memory["memory/total_peak_bytes"] / 1024**3
        if "memory/cuda_peak_allocated_bytes" in memory:
            candidate.measured_cuda_peak_gb = memory["memory/cuda_peak_allocated_bytes"] / 1024**3
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    tail = [line for line in lines if line.strip()][-1:]
    if rc in (0, 75) and candidate.measured_step_time_s is not None:
        candidate.status = "measured"
        if rc == 75:
            candidate.reason = "stopped by max_minutes_per_run"
    else:
        candidate.status = "failed"
        oom = any("out of memory" in line.lower() for line in lines)
        candidate.reason = candidate.reason or ("out of memory" if oom else
                                                f"exit {rc}: {tail[0][:300] if tail else 'no output'}")
    log(f"  {candidate.name}: {candidate.status}"
        + (f", {candidate.measured_step_time_s:.3f} s/step (predicted {candidate.prediction.step_time_s:.3f})"
           if candidate.measured_step_time_s else "")
        + (f", {candidate.measured_memory_gb:.3f} GB held (predicted {candidate.prediction.accounted_memory_gb:.3f})"
           if candidate.measured_memory_gb else "") + (f" ({candidate.reason})" if candidate.reason else ""))


def run_candidates(cfg: HPToolConfig, candidates: list[Candidate], base: dict, logs: Path, log) -> None:
    """Launch the ``limit_search_runs`` best admitted candidates, one after another."""
    ts = cfg.train_settings
    admitted = [c for c in candidates if c.status == "admitted"]
    chosen = admitted[: ts.limit_search_runs]
    for c in admitted[ts.limit_search_runs:]:
        c.status, c.reason = "not-launched", f"beyond limit_search_runs={ts.limit_search_runs}"
    if chosen and ts.data_prefix is None:
        raise ConfigError("train_settings.data_prefix is not set: the search runs need a dataset to train on",
                          hint="set train_settings.data_prefix=[1.0,DIR/NAME_text_document], or --dry-run")
    if cfg.cluster_type == "bcm":
        from .slurm import run_on_slurm

        run_on_slurm(cfg, chosen, base, logs, log)
        return
    for c in chosen:
        if c.nodes > 1:
            c.status, c.reason = "not-launched", (f"needs {c.nodes} nodes: cluster_type=local launches on this "
                                                  "machine (cluster_type=bcm submits to Slurm)")
            continue
        train_cfg = candidate_train_config(base, c.layout, num_nodes=c.nodes, gpus_per_node=ts.gpus_per_node,
                                           max_steps=ts.max_steps_per_run, max_minutes=ts.max_minutes_per_run,
                                           run_dir=logs / "training_logs" / c.name, data_prefix=ts.data_prefix,
                                           wandb=cfg.wandb)
        launch(c, train_cfg, config_path=logs / "candidate_configs" / f"{c.name}.yaml",
               run_dir=logs / "training_logs" / c.name, timeout_s=ts.max_minutes_per_run * 60 + 180, log=log)
