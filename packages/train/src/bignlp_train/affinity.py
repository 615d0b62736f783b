"""CPU/NUMA affinity per local rank (the seed's ``numa_mapping``).

A worker that runs on whichever cores the scheduler picks pays for remote memory and
for threads hopping between sockets. Each worker therefore pins itself, before any
heavy work, to CPUs near its GPU: the cores of the GPU's NUMA node (``scope: node``)
or of its socket (``scope: socket``), split among the local ranks that share them.
Without GPUs (or when the kernel reports no NUMA node for one) the local ranks are
spread over the domains in order: rank ``r`` of ``n`` takes the domains
``[r·D/n, (r+1)·D/n)`` (at least one).

``map_cpus`` is a pure function of a ``Topology`` (read from sysfs by
``read_topology``, or built by hand in tests), the options and the rank; ``apply_numa_mapping``
reads the machine, maps and calls ``os.sched_setaffinity``. Modes, over the physical
cores of a process's domain (hyperthread siblings stay together):

- ``all``: every core of the domain (up to ``max_cores``);
- ``single``: the domain's first core, shared by all its processes;
- ``single_unique``: one core per process, the i-th process the i-th core;
- ``unique_contiguous``: each process an exclusive block of consecutive cores;
- ``unique_interleaved``: each process every k-th core (k = processes in the domain).

``cores: single_logical`` keeps one logical CPU per physical core, ``all_logical`` all of
its hyperthreads. ``balanced`` gives every process the same number of physical cores (the
smallest share over all domains); ``min_cores``/``max_cores`` bound the physical cores per process.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bignlp_contracts import ConfigError

MODES = ("all", "single", "single_unique", "unique_interleaved", "unique_contiguous")
SCOPES = ("node", "socket")
CORES = ("all_logical", "single_logical")


@dataclass(frozen=True, kw_only=True)
class NumaMappingConfig:
    """The seed's ``numa_mapping`` section (same keys, same defaults)."""

    enable: bool = True  # false: leave the CPU affinity as the process got it
    mode: Literal["all", "single", "single_unique", "unique_interleaved", "unique_contiguous"] = "unique_contiguous"
    scope: Literal["node", "socket"] = "node"  # the domain a GPU's cores come from
    cores: Literal["all_logical", "single_logical"] = "all_logical"  # hyperthreads too, or one per core
    balanced: bool = True  # every process the same number of physical cores
    min_cores: int = 1  # physical cores per process at least (fewer: error)
    max_cores: int | None = 8  # physical cores per process at most; null: no cap

    def __post_init__(self) -> None:
        for key, value, allowed in (("mode", self.mode, MODES), ("scope", self.scope, SCOPES),
                                    ("cores", self.cores, CORES)):
            if value not in allowed:
                raise ConfigError(f"numa_mapping.{key}={value!r} is not supported",
                                  hint=f"use one of {', '.join(allowed)}")
        if self.min_cores < 1:
            raise ConfigError(f"numa_mapping.min_cores must be at least 1, got {self.min_cores}")
        if self.max_cores is not None and self.max_cores < self.min_cores:
            raise ConfigError(f"numa_mapping.max_cores={self.max_cores} is below numa_mapping.min_cores="
                              f"{self.min_cores}", hint="raise max_cores, or set it to null for no cap")


@dataclass(frozen=True)
class Topology:
    """Which logical CPUs exist, and where: NUMA node, socket and physical core of each."""

    node_of: dict[int, int]  # logical CPU -> NUMA node
    socket_of: dict[int, int]  # logical CPU -> socket (physical package)
    siblings: tuple[tuple[int, ...], ...]  # physical cores: their logical CPUs, lowest first

    def restrict(self, allowed: Iterable[int]) -> Topology:
        """The CPUs of ``allowed`` only (a cgroup or Slurm cpuset may hide some)."""
        keep = set(allowed) & set(self.node_of)
        cores = tuple(c for c in (tuple(x for x in core if x in keep) for core in self.siblings) if c)
        return Topology({c: n for c, n in self.node_of.items() if c in keep},
                        {c: s for c, s in self.socket_of.items() if c in keep}, cores)

    def domains(self, scope: str) -> dict[int, list[tuple[int, ...]]]:
        """Domain id (NUMA node or socket) -> its physical cores, in CPU order."""
        where = self.node_of if scope == "node" else self.socket_of
        out: dict[int, list[tuple[int, ...]]] = {}
        for core in sorted(self.siblings):
            out.setdefault(where[core[0]], []).append(core)
        return dict(sorted(out.items()))

    def socket_of_node(self, node: int) -> int | None:
        """The socket NUMA node ``node`` belongs to (None: no CPU of ours on it)."""
        return next((self.socket_of[c] for c, n in self.node_of.items() if n == node), None)


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's list format: ``"0-3,8,10-11"`` -> [0, 1, 2, 3, 8, 10, 11]."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def format_cpu_list(cpus: Iterable[int]) -> str:
    """The inverse of ``parse_cpu_list``: [0, 1, 2, 5] -> ``"0-2,5"``."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive CPUs
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(f"{lo}-{hi}" if hi > lo else str(lo) for lo, hi in runs)


def read_topology(sysfs_root: str | Path = "/sys") -> Topology:
    """Build the topology from sysfs: ``devices/system/node/node*/cpulist`` and each online CPU's
    ``topology/physical_package_id`` and ``thread_siblings_list``.

    A kernel without NUMA support has no ``node*`` directories: all CPUs are then node 0.
    """
    system = Path(sysfs_root) / "devices/system"
    cpu_dir = system / "cpu"
    online_file = cpu_dir / "online"
    if online_file.is_file():
        online = parse_cpu_list(online_file.read_text())
    else:
        online = sorted(int(p.name[3:]) for p in cpu_dir.glob("cpu[0-9]*"))
    if not online:
        raise ConfigError(f"no CPUs found under {cpu_dir}", hint="set numa_mapping.enable=false")
    node_of = {}
    for node_dir in sorted((system / "node").glob("node[0-9]*")):
        for cpu in parse_cpu_list((node_dir / "cpulist").read_text()):
            node_of[cpu] = int(node_dir.name[4:])
    socket_of, cores = {}, set()
    for cpu in online:
        topo = cpu_dir / f"cpu{cpu}" / "topology"
        package = topo / "physical_package_id"
        socket_of[cpu] = int(package.read_text()) if package.is_file() else 0
        sib = topo / "thread_siblings_list"
        group = [c for c in parse_cpu_list(sib.read_text()) if c in online] if sib.is_file() else [cpu]
        cores.add(tuple(sorted(group or [cpu])))
        node_of.setdefault(cpu, 0)
    return Topology({c: node_of[c] for c in online}, socket_of, tuple(sorted(cores)))


def _domain_groups(num_domains: int, local_world_size: int) -> list[tuple[int, ...]]:
    """Without GPU placement: local rank r's domain indices, ``[r·D/n, (r+1)·D/n)``, at least one."""
    n, d = local_world_size, num_domains
    return [tuple(range(r * d // n, max((r + 1) * d // n, r * d // n + 1))) for r in range(n)]


def map_cpus(topology: Topology, options: NumaMappingConfig, local_rank: int, local_world_size: int,
             gpu_nodes: Sequence[int | None] | None = None) -> frozenset[int]:
    """The logical CPUs local rank ``local_rank`` of ``local_world_size`` should run on.

    ``gpu_nodes[i]``: the NUMA node of local rank i's GPU (None or negative: unknown); when
    given and all known, each rank takes its cores from its GPU's domain, else ranks are
    spread over the domains in order. Raises ``ConfigError`` when the machine has too few
    cores for the options.
    """
    if not 0 <= local_rank < local_world_size:
        raise ValueError(f"local rank {local_rank} outside local world size {local_world_size}")
    domains = topology.domains(options.scope)
    ids = list(domains)
    known = gpu_nodes is not None and len(gpu_nodes) == local_world_size and all(
        g is not None and g >= 0 for g in gpu_nodes)
    if known:
        def domain_of_gpu(node: int) -> int:
            domain = node if options.scope == "node" else topology.socket_of_node(node)
            if domain not in domains:  # a GPU on a CPU-less node: fall back to the first domain
                return 0
            return ids.index(domain)
        groups = [(domain_of_gpu(g),) for g in gpu_nodes]
    else:
        groups = _domain_groups(len(ids), local_world_size)
    mine = groups[local_rank]
    peers = [r for r in range(local_world_size) if groups[r] == mine]
    index = peers.index(local_rank)

    def pool(group: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [core for i in group for core in domains[ids[i]]]

    cores = pool(mine)
    where = f"{options.scope} {'+'.join(str(ids[i]) for i in mine)}"
    mode = options.mode
    if mode == "all":
        chosen = cores
    elif mode == "single":
        chosen = cores[:1]
    elif mode == "single_unique":
        if index >= len(cores):
            raise ConfigError(f"numa_mapping.mode=single_unique: {len(peers)} processes share {where}, which has "
                              f"only {len(cores)} physical cores",
                              hint="use numa_mapping.mode=single or start fewer processes")
        chosen = [cores[index]]
    else:
        share = len(cores) // len(peers)
        if options.balanced:
            share = min(len(pool(g)) // sum(1 for h in groups if h == g) for g in set(groups))
        if options.max_cores is not None:
            share = min(share, options.max_cores)
        if share < options.min_cores:
            raise ConfigError(
                f"numa_mapping: {len(peers)} processes on {where} ({len(cores)} physical cores) get {share} cores "
                f"each, below numa_mapping.min_cores={options.min_cores}",
                hint="lower numa_mapping.min_cores, use numa_mapping.mode=all, or start fewer processes")
        if mode == "unique_contiguous":
            start = index * (len(cores) // len(peers))
            chosen = cores[start:start + share]
        else:  # unique_interleaved
            chosen = cores[index::len(peers)][:share]
    if options.max_cores is not None:
        chosen = chosen[:options.max_cores]
    if mode == "all" and len(chosen) < options.min_cores:
        raise ConfigError(f"numa_mapping: {where} has {len(chosen)} physical cores, below numa_mapping.min_cores="
                          f"{options.min_cores}", hint="lower numa_mapping.min_cores")
    keep = (lambda core: core) if options.cores == "all_logical" else (lambda core: core[:1])
    return frozenset(cpu for core in chosen for cpu in keep(core))


def gpu_numa_nodes(sysfs_root: str | Path = "/sys") -> list[int | None]:
    """The NUMA node of each visible CUDA device, from ``bus/pci/devices/<bus id>/numa_node`` (None: unknown)."""
    import torch

    nodes: list[int | None] = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        bus, device, domain = (getattr(props, k, None) for k in ("pci_bus_id", "pci_device_id", "pci_domain_id"))
        node = None
        if bus is not None and device is not None:
            path = Path(sysfs_root) / "bus/pci/devices" / f"{domain or 0:04x}:{bus:02x}:{device:02x}.0" / "numa_node"
            if path.is_file():
                node = int(path.read_text())
        nodes.append(node if node is not None and node >= 0 else None)
    return nodes


def apply_numa_mapping(options: NumaMappingConfig, *, local_rank: int, local_world_size: int,
                       gpu: bool, sysfs_root: str | Path = "/sys",
                       log: Callable[[str], None] | None = None) -> frozenset[int] | None:
    """Pin this process to its CPUs (``os.sched_setaffinity``); return them, or None when disabled.

    The mapping is made within the CPUs the process may use now (a cgroup or Slurm cpuset
    may allow fewer than the machine has). When the set shrinks, torch's intra-op thread
    count follows it, so the threads do not crowd the cores they were given.
    """
    if not options.enable or not hasattr(os, "sched_setaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    topology = read_topology(sysfs_root).restrict(allowed)
    gpu_nodes = None
    if gpu:
        per_device = gpu_numa_nodes(sysfs_root)
        if per_device:
            gpu_nodes = [per_device[r % len(per_device)] for r in range(local_world_size)]
    log = log or (lambda line: print(line, file=sys.stderr, flush=True))  # every rank: not the rank-0 log
    import torch

    try:
        cpus = map_cpus(topology, options, local_rank, local_world_size, gpu_nodes)
    except ConfigError as exc:
        # The seed's defaults on a machine with fewer cores than processes (a laptop, a test box):
        # run unpinned rather than refuse, but share the cores instead of oversubscribing them.
        torch.set_num_threads(max(1, len(allowed) // local_world_size))
        if local_rank == 0:
            log(f"numa_mapping skipped, the {local_world_size} processes share CPUs {format_cpu_list(allowed)}: "
                f"{exc.one_line()}")
        return None
    if cpus == allowed:
        return cpus  # nothing to narrow (one process on the machine, say): no change, no line
    os.sched_setaffinity(0, cpus)
    torch.set_num_threads(len(cpus))
    log(f"local rank {local_rank}/{local_world_size}: CPUs {format_cpu_list(os.sched_getaffinity(0))} "
        f"(numa_mapping mode={options.mode}, scope={options.scope}, cores={options.cores})")
    return cpus
