"""Where this process sits in a multi-process job: from torchrun or from Slurm.

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT; under
``srun`` (one task per GPU or CPU slot) we derive the same from SLURM_* so the
training code never cares which launcher started it.

Under Slurm the rendezvous address is MASTER_ADDR when the job script exports it
(train.sbatch exports the first node's NodeAddr from ``scontrol show node``, which
also works where node names are not in DNS), else the first host of the job's node
list; the port is MASTER_PORT, else one derived from the job id, the same in every
task. Only ``srun`` tasks (SLURM_STEP_ID set) count as Slurm ranks: the batch script
itself also sees SLURM_PROCID=0 and the job's SLURM_NTASKS, but it is one process.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import ConfigError

DEFAULT_MASTER_PORT = 29500


@dataclass(frozen=True)
class RunEnv:
    """Process placement. ``source`` is ``torchrun``, ``slurm`` or ``single``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = DEFAULT_MASTER_PORT
    source: str = "single"

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def torch_env(self) -> dict[str, str]:
        """The variables ``torch.distributed.init_process_group(init_method='env://')`` reads."""
        return {
            "RANK": str(self.rank),
            "WORLD_SIZE": str(self.world_size),
            "LOCAL_RANK": str(self.local_rank),
            "LOCAL_WORLD_SIZE": str(self.local_world_size),
            "MASTER_ADDR": self.master_addr,
            "MASTER_PORT": str(self.master_port),
        }


def discover_run_env(environ: Mapping[str, str] | None = None) -> RunEnv:
    """Read torchrun variables if present, else Slurm task variables (srun), else a single process."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        world = _int(env, "WORLD_SIZE")
        local_world = _int(env, "LOCAL_WORLD_SIZE", default=world)
        return RunEnv(
            rank=_int(env, "RANK"),
            world_size=world,
            local_rank=_int(env, "LOCAL_RANK", default=0),
            local_world_size=local_world,
            node_rank=_int(env, "GROUP_RANK", default=_int(env, "RANK") // max(local_world, 1)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", default=DEFAULT_MASTER_PORT),
            source="torchrun",
        )
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env  # srun task, not the batch script
    if in_step and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or "127.0.0.1"
        node_rank = _int(env, "SLURM_NODEID", default=0)
        return RunEnv(
            rank=_int(env, "SLURM_PROCID"),
            world_size=_int(env, "SLURM_NTASKS"),
            local_rank=_int(env, "SLURM_LOCALID", default=0),
            local_world_size=_tasks_on_node(env.get("SLURM_TASKS_PER_NODE"), node_rank)
            or _int(env, "SLURM_NTASKS_PER_NODE", default=1),
            node_rank=node_rank,
            master_addr=env.get("MASTER_ADDR") or expand_hostlist(nodelist)[0],
            master_port=_int(env, "MASTER_PORT", default=_port_from_job(env.get("SLURM_JOB_ID"))),
            source="slurm",
        )
    return RunEnv()


def _int(env: Mapping[str, str], key: str, *, default: int | None = None) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"environment variable {key} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"environment variable {key}={raw!r} is not an integer") from None


def _port_from_job(job_id: str | None) -> int:
    # Every task of a job derives the same port; different jobs sharing a node rarely collide.
    if not job_id or not job_id.isdigit():
        return DEFAULT_MASTER_PORT
    return 15000 + int(job_id) % 20000


def _tasks_on_node(spec: str | None, node_rank: int) -> int | None:
    """Parse SLURM_TASKS_PER_NODE like ``2(x3),1`` and pick this node's count."""
    if not spec:
        return None
    counts: list[int] = []
    for part in spec.split(","):
        m = re.fullmatch(r"(\d+)(?:\(x(\d+)\))?", part.strip())
        if not m:
            return None
        counts.extend([int(m.group(1))] * int(m.group(2) or 1))
    return counts[node_rank] if node_rank < len(counts) else None


def expand_hostlist(spec: str) -> list[str]:
    """Expand a Slurm hostlist: ``gpu[01-03,07],login1`` → gpu01 gpu02 gpu03 gpu07 login1."""
    hosts: list[str] = []
    for item in _split_top_level(spec):
        m = re.fullmatch(r"([^\[\]]*)\[([^\[\]]+)\]([^\[\]]*)", item)
        if not m:
            if "[" in item or "]" in item or not item:
                raise ConfigError(f"cannot parse Slurm node list {spec!r} near {item!r}")
            hosts.append(item)
            continue
        prefix, ranges, suffix = m.groups()
        for r in ranges.split(","):
            lo, dash, hi = r.partition("-")
            if not lo.isdigit() or (dash and not hi.isdigit()):
                raise ConfigError(f"cannot parse Slurm node list {spec!r} near {r!r}")
            width = len(lo)
            for n in range(int(lo), int(hi if dash else lo) + 1):
                hosts.append(f"{prefix}{n:0{width}d}{suffix}")
    if not hosts:
        raise ConfigError(f"Slurm node list {spec!r} is empty")
    return hosts


def _split_top_level(spec: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for ch in spec.strip():
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]
