"""The NCCL topology file for Azure NDv4 (ND96asr_v4), the seed's ``gentopo.sh`` job.

Inside an NDv4 VM, NCCL cannot see the PCIe switches that pair each A100 with its
HDR InfiniBand NIC (the hypervisor hides them), so without a topology file it picks
poor GPU-NIC pairings. The file tells it the real structure: 4 NUMA domains of 24
vCPUs, each with one PCIe Gen4 x16 switch holding 2 GPUs and 2 ConnectX-6 NICs.

``ndv4_layout(source="host")`` reads the bus ids from the node (``nvidia-smi`` for the
GPUs, ``/sys/class/infiniband`` for the NICs, sysfs for NUMA nodes and CPU masks);
``"documented"`` uses the bus ids the VM image exposes; ``"auto"`` tries the host and
falls back to the documented layout. The XML is NCCL's ``NCCL_TOPO_FILE`` format.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from itertools import zip_longest
from pathlib import Path
from xml.sax.saxutils import quoteattr

from bignlp_contracts import ConfigError

GPU_CLASS = "0x030200"  # 3D controller (A100)
NIC_CLASS = "0x020700"  # InfiniBand controller (ConnectX-6)
LINK_SPEED = "16 GT/s"  # PCIe Gen4
LINK_WIDTH = "16"
NUM_DOMAINS = 4
CPUS_PER_DOMAIN = 24
NUM_CPUS = NUM_DOMAINS * CPUS_PER_DOMAIN

# Bus ids as the NDv4 VM shows them: GPUs on domains 0001-0004 and 000b-000e, NICs on 0101-0108.
DOCUMENTED_GPUS = ("0001:00:00.0", "0002:00:00.0", "0003:00:00.0", "0004:00:00.0",
                   "000b:00:00.0", "000c:00:00.0", "000d:00:00.0", "000e:00:00.0")
DOCUMENTED_NICS = tuple(f"01{i:02x}:00:00.0" for i in range(1, 9))


@dataclass(frozen=True)
class NumaDomain:
    """One NUMA domain: its CPU mask (Linux cpumap format) and the devices behind its PCIe switch."""

    numa_id: int
    affinity: str
    gpus: tuple[str, ...]
    nics: tuple[str, ...]


def cpumap(cpus: range | list[int], num_cpus: int = NUM_CPUS) -> str:
    """CPU set → Linux ``cpumap`` text: 32-bit hex words, most significant first, comma-separated."""
    mask = 0
    for c in cpus:
        mask |= 1 << c
    words = (num_cpus + 31) // 32
    return ",".join(f"{(mask >> (32 * w)) & 0xFFFFFFFF:08x}" for w in reversed(range(words)))


def documented_layout() -> list[NumaDomain]:
    """The NDv4 structure from its documentation: GPUs and NICs two by two per NUMA domain."""
    return [
        NumaDomain(
            numa_id=d,
            affinity=cpumap(range(d * CPUS_PER_DOMAIN, (d + 1) * CPUS_PER_DOMAIN)),
            gpus=DOCUMENTED_GPUS[2 * d : 2 * d + 2],
            nics=DOCUMENTED_NICS[2 * d : 2 * d + 2],
        )
        for d in range(NUM_DOMAINS)
    ]


def _sysfs_numa(busid: str) -> int | None:
    path = Path("/sys/bus/pci/devices") / busid.lower() / "numa_node"
    try:
        node = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return node if node >= 0 else None


def _host_gpus() -> list[str]:
    if not shutil.which("nvidia-smi"):
        return []
    out = subprocess.run(["nvidia-smi", "--query-gpu=pci.bus_id", "--format=csv,noheader"],
                         capture_output=True, text=True, timeout=60, check=False)
    if out.returncode != 0:
        return []
    # nvidia-smi prints 00000001:00:00.0; sysfs and NCCL use a 4-digit domain.
    return [line.strip().lower()[-12:] for line in out.stdout.splitlines() if line.strip()]


def _host_nics() -> list[str]:
    root = Path("/sys/class/infiniband")
    if not root.is_dir():
        return []
    found = []
    for dev in sorted(root.iterdir()):
        try:
            found.append((dev / "device").resolve().name.lower())
        except OSError:
            continue
    return found


def host_layout() -> list[NumaDomain] | None:
    """The GPUs and IB NICs this node shows, grouped by NUMA node; None if it is not an 8+8 machine."""
    gpus, nics = _host_gpus(), _host_nics()
    if len(gpus) != 8 or len(nics) != 8:
        return None
    domains: dict[int, tuple[list[str], list[str]]] = {}
    for kind, devs in ((0, gpus), (1, nics)):
        for busid in devs:
            node = _sysfs_numa(busid)
            if node is None:
                return None
            domains.setdefault(node, ([], []))[kind].append(busid)
    layout = []
    for node in sorted(domains):
        try:
            affinity = Path(f"/sys/devices/system/node/node{node}/cpumap").read_text().strip()
        except OSError:
            return None
        g, n = domains[node]
        layout.append(NumaDomain(numa_id=node, affinity=affinity, gpus=tuple(sorted(g)), nics=tuple(sorted(n))))
    return layout


def ndv4_layout(source: str = "auto") -> tuple[list[NumaDomain], str]:
    """(layout, where it came from: ``host`` or ``documented``)."""
    if source not in ("auto", "host", "documented"):
        raise ConfigError(f"unknown topology source {source!r}; use auto, host or documented")
    if source != "documented":
        layout = host_layout()
        if layout is not None:
            return layout, "host"
        if source == "host":
            raise ConfigError(
                "this node does not show 8 GPUs (nvidia-smi) and 8 InfiniBand NICs (/sys/class/infiniband) "
                "with their NUMA nodes, so its NDv4 topology cannot be read",
                hint="run it on an NDv4 node (sbatch -N 1), or use --source documented",
            )
    return documented_layout(), "documented"


def ndv4_topology_xml(layout: list[NumaDomain]) -> str:
    """NCCL topology XML for ``layout``: one ``<cpu>`` per NUMA domain, one PCIe switch per ``<cpu>``."""
    lines = ['<system version="1">']
    for i, dom in enumerate(layout):
        lines.append(
            f"  <cpu numaid={quoteattr(str(dom.numa_id))} affinity={quoteattr(dom.affinity)} arch=\"x86_64\" "
            'vendor="AuthenticAMD" familyid="23" modelid="49">'
        )
        # The hidden switch gets a bus id outside every real domain, one per NUMA domain.
        lines.append(f'    <pci busid="ffff:ff:{i + 1:02x}.0" class="0x060400" '
                     f'link_speed="{LINK_SPEED}" link_width="{LINK_WIDTH}">')
        pairs = zip_longest(dom.gpus, dom.nics)  # GPU, its NIC, next GPU, its NIC
        for busid, cls in [(b, c) for g, n in pairs for b, c in ((g, GPU_CLASS), (n, NIC_CLASS)) if b]:
            lines.append(f"      <pci busid={quoteattr(busid)} class=\"{cls}\" "
                         f'link_speed="{LINK_SPEED}" link_width="{LINK_WIDTH}"/>')
        lines.append("    </pci>")
        lines.append("  </cpu>")
    lines.append("</system>")
    return "\n".join(lines) + "\n"
