"""numa_mapping: the CPU set of every mode on synthetic sysfs trees, bad options, and a real 2-process run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import tiny_overrides

from bignlp_contracts import ConfigError
from bignlp_train.affinity import (
    NumaMappingConfig,
    Topology,
    apply_numa_mapping,
    format_cpu_list,
    map_cpus,
    parse_cpu_list,
    read_topology,
)
from bignlp_train.config import load_train_config


def write_sysfs(root: Path, *, sockets: int, nodes_per_socket: int, cores_per_node: int, threads: int) -> Path:
    """A sysfs tree numbered as Linux does: the first threads of all cores, then their siblings."""
    num_cores = sockets * nodes_per_socket * cores_per_node
    system = root / "devices/system"
    (system / "cpu").mkdir(parents=True)
    (system / "cpu/online").write_text(f"0-{num_cores * threads - 1}\n")
    per_node: dict[int, list[int]] = {}
    for core in range(num_cores):
        node = core // cores_per_node
        socket = node // nodes_per_socket
        cpus = [core + t * num_cores for t in range(threads)]
        per_node.setdefault(node, []).extend(cpus)
        for cpu in cpus:
            topo = system / f"cpu/cpu{cpu}/topology"
            topo.mkdir(parents=True)
            (topo / "physical_package_id").write_text(f"{socket}\n")
            (topo / "thread_siblings_list").write_text(format_cpu_list(cpus) + "\n")
    for node, cpus in per_node.items():
        (system / f"node/node{node}").mkdir(parents=True)
        (system / f"node/node{node}/cpulist").write_text(format_cpu_list(cpus) + "\n")
    return root


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Topology:
    """2 sockets × 2 NUMA nodes × 4 cores × 2 threads: node n has cores 4n..4n+3, CPUs c and c+16."""
    return read_topology(write_sysfs(tmp_path_factory.mktemp("sys"), sockets=2, nodes_per_socket=2,
                                     cores_per_node=4, threads=2))


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Topology:
    """One node, two single-thread cores (this machine's shape)."""
    return read_topology(write_sysfs(tmp_path_factory.mktemp("sys"), sockets=1, nodes_per_socket=1,
                                     cores_per_node=2, threads=1))


def cpus(text: str) -> frozenset[int]:
    return frozenset(parse_cpu_list(text))


def mapping(topology: Topology, n: int, gpu_nodes=None, **options) -> list[str]:
    opts = NumaMappingConfig(**options)
    return [format_cpu_list(map_cpus(topology, opts, r, n, gpu_nodes)) for r in range(n)]


EIGHT_GPUS = [0, 0, 1, 1, 2, 2, 3, 3]  # two GPUs per NUMA node, as on a DGX


def test_read_topology(big, small):
    assert big.node_of[0] == 0 and big.node_of[16] == 0 and big.node_of[4] == 1 and big.node_of[31] == 3
    assert big.socket_of[7] == 0 and big.socket_of[8] == 1 and big.socket_of[24] == 1
    assert big.siblings[:2] == ((0, 16), (1, 17)) and len(big.siblings) == 16
    assert small.siblings == ((0,), (1,)) and set(small.node_of.values()) == {0}


def test_read_topology_without_numa_dirs(tmp_path):
    root = write_sysfs(tmp_path, sockets=1, nodes_per_socket=1, cores_per_node=2, threads=2)
    shutil.rmtree(root / "devices/system/node")
    topo = read_topology(root)
    assert set(topo.node_of) == {0, 1, 2, 3} and set(topo.node_of.values()) == {0}


@pytest.mark.parametrize("options, want", [
    ({"mode": "unique_contiguous"},
     ["0-1,16-17", "2-3,18-19", "4-5,20-21", "6-7,22-23", "8-9,24-25", "10-11,26-27", "12-13,28-29", "14-15,30-31"]),
    ({"mode": "unique_interleaved"},
     ["0,2,16,18", "1,3,17,19", "4,6,20,22", "5,7,21,23", "8,10,24,26", "9,11,25,27", "12,14,28,30",
      "13,15,29,31"]),
    ({"mode": "single"}, ["0,16", "0,16", "4,20", "4,20", "8,24", "8,24", "12,28", "12,28"]),
    ({"mode": "single_unique"}, ["0,16", "1,17", "4,20", "5,21", "8,24", "9,25", "12,28", "13,29"]),
    ({"mode": "all"}, ["0-3,16-19"] * 2 + ["4-7,20-23"] * 2 + ["8-11,24-27"] * 2 + ["12-15,28-31"] * 2),
    ({"mode": "unique_contiguous", "cores": "single_logical"},
     ["0-1", "2-3", "4-5", "6-7", "8-9", "10-11", "12-13", "14-15"]),
    ({"mode": "unique_contiguous", "max_cores": 1},
     ["0,16", "2,18", "4,20", "6,22", "8,24", "10,26", "12,28", "14,30"]),
    ({"mode": "unique_contiguous", "scope": "socket"},  # 4 GPUs per socket share its 8 cores
     ["0-1,16-17", "2-3,18-19", "4-5,20-21", "6-7,22-23", "8-9,24-25", "10-11,26-27", "12-13,28-29",
      "14-15,30-31"]),
    ({"mode": "all", "scope": "socket", "cores": "single_logical"}, ["0-7"] * 4 + ["8-15"] * 4),
], ids=["contiguous", "interleaved", "single", "single_unique", "all", "single_logical", "max_cores1",
        "socket", "all-socket-single_logical"])
def test_eight_gpus_on_four_nodes(big, options, want):
    assert mapping(big, 8, EIGHT_GPUS, **options) == want


def test_balanced_gives_everyone_the_smallest_share(big):
    gpus = [0, 0, 0, 1]  # node 0: 3 processes (1 core each), node 1: one process (4 cores unless balanced)
    assert mapping(big, 4, gpus, balanced=True) == ["0,16", "1,17", "2,18", "4,20"]
    assert mapping(big, 4, gpus, balanced=False) == ["0,16", "1,17", "2,18", "4-7,20-23"]


def test_without_gpus_ranks_spread_over_domains(big):
    # 2 processes, 4 nodes: each takes 2 nodes (8 cores, the default max_cores)
    assert mapping(big, 2) == ["0-7,16-23", "8-15,24-31"]
    assert mapping(big, 2, max_cores=2) == ["0-1,16-17", "8-9,24-25"]
    # unknown GPU placement (numa_node -1 is reported as None) falls back to the same spread
    assert mapping(big, 8, [None] * 8) == mapping(big, 8, EIGHT_GPUS)
    assert mapping(big, 1, mode="all", max_cores=None) == ["0-31"]


def test_this_machines_shape(small):
    assert mapping(small, 2) == ["0", "1"]
    assert mapping(small, 2, mode="unique_interleaved") == ["0", "1"]
    assert mapping(small, 2, mode="all") == ["0-1", "0-1"]
    assert mapping(small, 2, mode="single") == ["0", "0"]
    assert mapping(small, 1) == ["0-1"]


def test_restrict_to_allowed_cpus(big):
    assert mapping(big.restrict(cpus("4-7,20-23")), 2) == ["4-5,20-21", "6-7,22-23"]


def test_too_few_cores_is_a_config_error(big, small):
    with pytest.raises(ConfigError, match=r"below numa_mapping.min_cores=4"):
        mapping(big, 8, EIGHT_GPUS, min_cores=4)
    with pytest.raises(ConfigError, match=r"single_unique: 3 processes share node 0, which has only 2"):
        mapping(small, 3, mode="single_unique")


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no sched_setaffinity on this OS")
def test_more_processes_than_cores_runs_unpinned_with_shared_threads(tmp_path):
    """The seed's defaults with 4 processes on 2 cores: a warning from local rank 0, no pinning, no error."""
    import torch

    allowed, threads = os.sched_getaffinity(0), torch.get_num_threads()
    sysfs = write_sysfs(tmp_path, sockets=1, nodes_per_socket=1, cores_per_node=max(allowed) + 1, threads=1)
    lines: list[str] = []
    world = 2 * len(allowed)  # always more processes than cores
    try:
        for rank in (0, 1):
            assert apply_numa_mapping(NumaMappingConfig(), local_rank=rank, local_world_size=world, gpu=False,
                                      sysfs_root=sysfs, log=lines.append) is None
            assert os.sched_getaffinity(0) == allowed
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    assert len(lines) == 1 and lines[0].startswith(f"numa_mapping skipped, the {world} processes share CPUs"), lines


@pytest.mark.parametrize("override, fragment", [
    ("numa_mapping.mode=bogus", "numa_mapping.mode"),
    ("numa_mapping.scope=rack", "numa_mapping.scope"),
    ("numa_mapping.cores=physical", "numa_mapping.cores"),
    ("numa_mapping.min_cores=0", "numa_mapping.min_cores must be at least 1"),
    ("numa_mapping.max_cores=2", "numa_mapping.max_cores=2 is below numa_mapping.min_cores=4"),
])
def test_bad_option_is_a_config_error(override, fragment):
    extra = ["numa_mapping.min_cores=4"] if "max_cores" in override else []
    with pytest.raises(ConfigError) as info:
        load_train_config("gpt3/tiny-cpu", [*extra, override])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_bad_option_on_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu",
                          "numa_mapping.mode=bogus"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "numa_mapping.mode" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="Linux only")
def test_two_workers_pin_themselves(dataset, tmp_path):
    """A real --nproc-per-node 2 run: each worker reports the affinity it set, as the mapping says."""
    out = subprocess.run(
        [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
         *tiny_overrides(dataset, tmp_path, "trainer.max_steps=1", "trainer.limit_test_batches=0",
                         "numa_mapping.max_cores=null")],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    topology = read_topology().restrict(os.sched_getaffinity(0))
    reported = dict(re.findall(r"^local rank (\d)/2: CPUs (\S+) ", out.stderr, re.MULTILINE))
    for rank in (0, 1):
        want = map_cpus(topology, NumaMappingConfig(max_cores=None), rank, 2)
        if want == frozenset(os.sched_getaffinity(0)):
            assert str(rank) not in reported  # nothing narrowed: no change, no line
        else:
            assert cpus(reported[str(rank)]) == want, out.stderr
    if len(os.sched_getaffinity(0)) == 2:  # this machine: one CPU each
        assert reported == {"0": "0", "1": "1"}
