"""One rank of a validation job: diagnostics, the bandwidth sweep, the pair tests, the verdict.

Every rank of the job calls :func:`validate` (under ``srun``, ``torchrun`` or the local
launcher). A node is the set of ranks that report the same node name; rank 0 gathers
everything and returns the result, which :mod:`.report` turns into the artifact.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from bignlp_contracts import ConfigError, RunEnv

from . import __version__
from .bench import measure, pick_backend
from .busbw import COLLECTIVES, check_collective, human_size, message_sizes
from .csp import get_csp
from .diag import NOT_AVAILABLE, Diagnosis, diagnose
from .pairwise import PairResult, blamed, judge_nodes, round_robin

PAIR_OP = "all_reduce"  # the node-to-node figure the CSP thresholds are stated for


@dataclass(frozen=True)
class ValidateOptions:
    """What to run and how to judge it (the CLI's options, typed)."""

    run_dcgm: bool = True
    run_nccl: bool = True
    csp: str = "azure"
    threshold_gbps: float | None = None  # None: the CSP's default
    min_bytes: int = 1024
    max_bytes: int = 1 << 30
    pair_bytes: int | None = None  # None: max_bytes
    warmup: int = 5
    iters: int = 20
    ops: tuple[str, ...] = COLLECTIVES
    backend: str = "auto"
    dcgm_level: int = 3
    expected_nodes: int | None = None
    timeout_s: float = 1800.0
    slow_node: str | None = None  # test only: "NAME:MS" sleeps MS before each collective on node NAME

    @property
    def threshold(self) -> float:
        return self.threshold_gbps if self.threshold_gbps is not None else get_csp(self.csp).threshold_gbps

    def check(self) -> None:
        """Reject option values that cannot work, before any process group exists."""
        if not (self.run_dcgm or self.run_nccl):
            raise ConfigError("nothing to run: both the diagnostics and the bandwidth tests are off")
        message_sizes(self.min_bytes, self.max_bytes)
        if self.warmup < 0 or self.iters < 1:
            raise ConfigError(f"--warmup must be >= 0 and --iters >= 1, got {self.warmup} and {self.iters}")
        if self.threshold <= 0:
            raise ConfigError(f"--threshold-gbps must be positive, got {self.threshold:g}")
        for op in self.ops:
            check_collective(op)
        if self.expected_nodes is not None and self.expected_nodes < 1:
            raise ConfigError(f"--nodes must be at least 1, got {self.expected_nodes}")
        parse_slow_node(self.slow_node)


def parse_slow_node(spec: str | None) -> tuple[str, float] | None:
    """``NAME:MS`` → (node name, delay in seconds)."""
    if not spec:
        return None
    name, _, ms = spec.rpartition(":")
    try:
        delay = float(ms) / 1000
    except ValueError:
        delay = -1.0
    if not name or delay <= 0:
        raise ConfigError(f"slow-node injection {spec!r} is not NAME:MILLISECONDS (e.g. n2:200)")
    return name, delay


class Progress:
    """Rank 0's progress lines on stderr, with an ETA from the work done so far."""

    def __init__(self, total_units: float, enabled: bool) -> None:
        self.total, self.done, self.enabled, self.start = total_units, 0.0, enabled, time.monotonic()
        self.last = -1.0

    def step(self, units: float, what: str, *, force: bool = False) -> None:
        """Count ``units`` of work done; print at most one line a second unless ``force``."""
        self.done += units
        now = time.monotonic()
        if not self.enabled or (not force and now - self.last < 1.0):
            return
        self.last = now
        elapsed = now - self.start
        eta = elapsed * (self.total - self.done) / self.done if self.done else float("nan")
        pct = 100 * self.done / self.total if self.total else 100
        eta_text = str(dt.timedelta(seconds=round(eta))) if math.isfinite(eta) else "?"
        sys.stderr.write(f"bignlp-csp-validate: {pct:5.1f}% {what} (elapsed {elapsed:.1f} s, eta {eta_text})\n")
        sys.stderr.flush()


def _units(size: int, n_calls: int) -> float:
    return n_calls * (size + 64 * 1024)  # bytes plus a latency term, so small sizes are not free


def _gather_nodes(node_name: str, world: int) -> dict[str, list[int]]:
    names: list[str | None] = [None] * world
    dist.all_gather_object(names, node_name)
    nodes: dict[str, list[int]] = {}
    for rank, name in enumerate(names):
        nodes.setdefault(str(name), []).append(rank)
    return nodes


def validate(opts: ValidateOptions, *, node_name: str, run_env: RunEnv) -> dict | None:
    """Run this rank's part of the validation; rank 0 returns the result dict, the others None.

    Raises ConfigError (on every rank) when fewer nodes joined than ``opts.expected_nodes``.
    """
    opts.check()
    slow = parse_slow_node(opts.slow_node)
    backend, device = pick_backend(opts.backend)
    if device.type == "cuda":
        torch.cuda.set_device(run_env.local_rank % torch.cuda.device_count())
    os.environ.update(run_env.torch_env())
    dist.init_process_group(backend, init_method="env://", timeout=dt.timedelta(seconds=opts.timeout_s))
    try:
        return _validate(opts, node_name=node_name, run_env=run_env, backend=backend, device=device, slow=slow)
    finally:
        dist.destroy_process_group()


def _validate(opts, *, node_name, run_env, backend, device, slow) -> dict | None:
    rank, world = dist.get_rank(), dist.get_world_size()
    lead = rank == 0
    nodes = _gather_nodes(node_name, world)
    node_names = list(nodes)
    if opts.expected_nodes is not None and len(nodes) < opts.expected_nodes:
        raise ConfigError(
            f"fewer nodes than --nodes: {len(nodes)} joined ({', '.join(node_names)}), --nodes is "
            f"{opts.expected_nodes}",
            hint="run one task on each node (srun --ntasks-per-node) or lower --nodes",
        )
    delay_s = slow[1] if slow and slow[0] == node_name else 0.0
    notes: list[str] = []
    if slow:
        notes.append(f"TEST INJECTION: node {slow[0]} slept {slow[1] * 1000:g} ms before each collective call")

    diagnostics = _diagnostics(opts, node_name, nodes, rank, world)

    sizes = message_sizes(opts.min_bytes, opts.max_bytes)
    pair_bytes = opts.pair_bytes or opts.max_bytes
    rounds = round_robin(node_names) if opts.run_nccl else []
    calls = opts.warmup + opts.iters
    sweep_units = sum(_units(s, calls) for s in sizes) * len(opts.ops) if opts.run_nccl and world > 1 else 0
    progress = Progress(sweep_units + len(rounds) * _units(pair_bytes, calls), enabled=lead)

    sweep = []
    if opts.run_nccl and world > 1:
        for op in opts.ops:
            for size in sizes:
                m, _ = measure(op, size, ranks=list(range(world)), device=device, warmup=opts.warmup,
                               iters=opts.iters, delay_s=delay_s)
                sweep.append(m.to_dict())
                progress.step(_units(size, calls), f"{op} {human_size(size)}: busbw {m.busbw_gbps:.3f} GB/s",
                              force=size == sizes[-1])
    elif opts.run_nccl:
        notes.append("a single rank: no collective to measure")

    pairs = []
    for i, round_pairs in enumerate(rounds):
        groups = [(pair, sorted(nodes[pair[0]] + nodes[pair[1]])) for pair in round_pairs]
        handles = [dist.new_group(ranks) for _, ranks in groups]
        mine = None
        for (pair, ranks), group in zip(groups, handles):
            if rank in ranks:
                m, waits = measure(PAIR_OP, pair_bytes, group=group, ranks=ranks, device=device,
                                   warmup=opts.warmup, iters=opts.iters, delay_s=delay_s, with_waits=True)
                by_rank = dict(zip(ranks, waits))
                # A node's wait is its least-waiting rank's: that rank is the one the others waited for.
                wait_us = {n: min(by_rank[r] for r in nodes[n]) for n in pair}
                if rank == ranks[0]:
                    mine = {"nodes": list(pair), **m.to_dict(), "wait_us": wait_us}
        found: list = [None] * world
        dist.all_gather_object(found, mine)
        pairs += [p for p in found if p is not None]
        for group in handles:
            dist.destroy_process_group(group)
        progress.step(_units(pair_bytes, calls), f"node-pair round {i + 1}/{len(rounds)}", force=i == len(rounds) - 1)
    dist.barrier()
    if not lead:
        return None
    return _result(opts, nodes=nodes, backend=backend, device=device, diagnostics=diagnostics, sweep=sweep,
                   pairs=pairs, pair_bytes=pair_bytes, run_env=run_env, notes=notes)


def _diagnostics(opts, node_name, nodes, rank, world) -> list[dict]:
    mine = None
    if opts.run_dcgm and rank == nodes[node_name][0]:  # one diagnostic per node, on its first rank
        mine = diagnose(node_name, level=opts.dcgm_level, timeout_s=opts.timeout_s).to_dict()
    found: list = [None] * world
    dist.all_gather_object(found, mine)
    return [d for d in found if d is not None]


def _result(opts, *, nodes, backend, device, diagnostics, sweep, pairs, pair_bytes, run_env, notes) -> dict:
    threshold = opts.threshold
    node_names = list(nodes)
    failed: dict[str, dict] = {}
    for d in diagnostics:
        diag = Diagnosis(**d)
        if diag.failed:
            failed.setdefault(diag.node, {"node": diag.node, "reasons": [], "busbw_gbps": None})
            failed[diag.node]["reasons"].append(f"{diag.tool}: {diag.detail}")
    if diagnostics and all(d["status"] == NOT_AVAILABLE for d in diagnostics):
        notes.append(f"GPU diagnostics: {NOT_AVAILABLE} (no dcgmi or nvidia-smi on any node)")
    verdicts = []
    if opts.run_nccl and len(node_names) >= 2:
        results = [PairResult(tuple(p["nodes"]), p["busbw_gbps"], p["wait_us"]) for p in pairs]
        for p, r in zip(pairs, results):
            p["passed"] = p["busbw_gbps"] >= threshold
            p["blamed"] = sorted(blamed(r, threshold))
        verdicts = judge_nodes(results, node_names, threshold)
        for v in verdicts:
            if v.failed:
                entry = failed.setdefault(v.node, {"node": v.node, "reasons": [], "busbw_gbps": None})
                entry["busbw_gbps"] = v.median_busbw_gbps
                entry["reasons"].append(f"{PAIR_OP} bus bandwidth: {v.reason}")
    elif opts.run_nccl:
        notes.append("a single node: no node-to-node test")
    return {
        "passed": not failed,
        "failed_nodes": [failed[n] for n in node_names if n in failed],
        "csp": opts.csp,
        "threshold_gbps": threshold,
        "backend": backend,
        "device": device.type,
        "torch_version": torch.__version__,
        "num_nodes": len(node_names),
        "world_size": sum(len(r) for r in nodes.values()),
        "launcher": run_env.source,
        "nodes": [{"name": n, "ranks": r} for n, r in nodes.items()],
        "tests": {"dcgm": opts.run_dcgm, "nccl": opts.run_nccl},
        "diagnostics": diagnostics,
        "sweep": sweep,
        "pairwise": {
            "op": PAIR_OP,
            "size_bytes": pair_bytes,
            "pairs": pairs,
            "nodes": [vars(v) for v in verdicts],
        },
        "settings": {"min_bytes": opts.min_bytes, "max_bytes": opts.max_bytes, "warmup": opts.warmup,
                     "iters": opts.iters, "ops": list(opts.ops), "dcgm_level": opts.dcgm_level},
        "notes": notes,
        "producer": {"package": "bignlp-csp-validate", "version": __version__},
    }
