"""The Slurm side of ``run``: check the request against the cluster, then ``srun`` the workers.

Checks (each a one-line ConfigError): the node list parses (Slurm hostlist syntax),
``--nodes`` is not more than the list or the partition holds, the partition exists,
and every listed node belongs to it (``sinfo``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Sequence

from bignlp_contracts import ConfigError, expand_hostlist


def _sinfo(args: list[str]) -> list[str]:
    out = subprocess.run(["sinfo", "-h", *args], capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        raise ConfigError(f"sinfo {' '.join(args)} failed: {(out.stderr or out.stdout).strip()[:300]}",
                          hint="check that Slurm's controller is reachable (SLURM_CONF, scontrol ping)")
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def check_request(num_nodes: int, nodelist: str | None, partition: str | None) -> list[str] | None:
    """Validate ``--nodes/--nodelist/--partition``; return the expanded node list (None if not given)."""
    if num_nodes < 1:
        raise ConfigError(f"--nodes must be at least 1, got {num_nodes}")
    hosts = expand_hostlist(nodelist) if nodelist else None
    if hosts is not None:
        dupes = sorted(h for h, count in Counter(hosts).items() if count > 1)
        if dupes:
            raise ConfigError(f"--nodelist {nodelist!r} names {', '.join(dupes)} more than once")
        if num_nodes > len(hosts):
            raise ConfigError(
                f"fewer nodes than --nodes: --nodelist {nodelist!r} names {len(hosts)} node(s), --nodes is {num_nodes}",
                hint="list more nodes or lower --nodes",
            )
    if not shutil.which("sinfo") or not shutil.which("srun"):
        raise ConfigError("Slurm is not installed on this machine (no sinfo/srun)",
                          hint="run on the cluster's login node, or use --local --nproc N on one machine")
    if partition:
        partitions = [p.rstrip("*") for p in _sinfo(["-o", "%P"])]
        if partition not in partitions:
            raise ConfigError(f"unknown partition {partition!r}; this cluster has: {', '.join(partitions) or 'none'}",
                              hint="pick one of them (sinfo lists them)")
    members = set(_sinfo(["-N", "-o", "%N", *(["-p", partition] if partition else [])]))
    if hosts is not None:
        unknown = [h for h in hosts if h not in members]
        if unknown:
            where = f"partition {partition!r}" if partition else "this cluster"
            raise ConfigError(f"node(s) {', '.join(unknown)} of --nodelist {nodelist!r} are not in {where}",
                              hint="use the names sinfo prints")
    elif num_nodes > len(members):
        where = f"partition {partition!r}" if partition else "this cluster"
        raise ConfigError(f"fewer nodes than --nodes: {where} has {len(members)} node(s), --nodes is {num_nodes}")
    return hosts


def srun_command(num_nodes: int, nodelist: str | None, partition: str | None, tasks_per_node: int,
                 worker_args: Sequence[str]) -> list[str]:
    """``srun`` one worker per GPU (or one per node) across the requested nodes."""
    cmd = ["srun", f"--nodes={num_nodes}", f"--ntasks-per-node={tasks_per_node}", "--kill-on-bad-exit=1",
           "--job-name=bignlp-csp-validate"]
    if nodelist:
        cmd.append(f"--nodelist={nodelist}")
    if partition:
        cmd.append(f"--partition={partition}")
    return [*cmd, sys.executable, "-m", "bignlp_csp_validate", "worker", *worker_args]
