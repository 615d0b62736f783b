"""The NDv4 topology file, the CSP environment variables, and the diagnostics' verdicts."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bignlp_contracts import ConfigError
from bignlp_csp_validate.csp import CSPS, get_csp, render_env
from bignlp_csp_validate.diag import NOT_AVAILABLE, diagnose, parse_nvidia_smi
from bignlp_csp_validate.topology import (
    GPU_CLASS,
    NIC_CLASS,
    cpumap,
    documented_layout,
    ndv4_layout,
    ndv4_topology_xml,
)


def test_ndv4_topology_is_four_numa_domains_of_two_gpus_and_two_nics():
    root = ET.fromstring(ndv4_topology_xml(documented_layout()))
    assert root.tag == "system" and root.get("version") == "1"
    cpus = root.findall("cpu")
    assert [c.get("numaid") for c in cpus] == ["0", "1", "2", "3"]
    masks = []
    all_ids = []
    for cpu in cpus:
        (switch,) = cpu.findall("pci")
        assert switch.get("class") == "0x060400" and switch.get("link_speed") == "16 GT/s"
        devices = switch.findall("pci")
        classes = [d.get("class") for d in devices]
        assert classes == [GPU_CLASS, NIC_CLASS, GPU_CLASS, NIC_CLASS]  # each GPU beside its NIC
        assert all(d.get("link_width") == "16" for d in devices)
        all_ids += [d.get("busid") for d in devices]
        masks.append(int(cpu.get("affinity").replace(",", ""), 16))
    assert len(all_ids) == len(set(all_ids)) == 16
    assert sum(bin(m).count("1") for m in masks) == 96  # 4 x 24 vCPUs, disjoint
    assert masks[0] | masks[1] | masks[2] | masks[3] == (1 << 96) - 1


def test_cpumap_is_linux_format():
    assert cpumap(range(0, 24), 96) == "00000000,00000000,00ffffff"
    assert cpumap(range(24, 48), 96) == "00000000,0000ffff,ff000000"


def test_topology_source_host_without_gpus_is_a_clear_error():
    layout, origin = ndv4_layout("auto")
    assert origin == "documented" and len(layout) == 4  # this machine has no GPUs
    with pytest.raises(ConfigError, match="8 GPUs"):
        ndv4_layout("host")


def test_env_vars_follow_the_seed_for_azure():
    text = render_env(get_csp("azure"))
    for line in ("UCX_IB_PCI_RELAXED_ORDERING: auto", 'NCCL_IB_PCI_RELAXED_ORDERING: "2"', "NCCL_IB_TIMEOUT: 22",
                 "NCCL_DEBUG: INFO", "NCCL_TOPO_FILE: /opt/microsoft/ndv4-topo.xml"):
        assert line.replace('"', "") in text.replace('"', "")
    shell = render_env(get_csp("aws"), "shell")
    assert "export FI_PROVIDER=efa" in shell
    assert {c.threshold_gbps for c in CSPS.values()} == {180.0, 170.0, 35.0}
    with pytest.raises(ConfigError, match="unknown CSP 'gcp'"):
        get_csp("gcp")


def test_nvidia_smi_rows_are_judged():
    ok = parse_nvidia_smi("n1", "0, NVIDIA A100-SXM4-80GB, 00000001:00:00.0, 35, 0\n"
                                "1, NVIDIA A100-SXM4-80GB, 00000002:00:00.0, 36, 0\n")
    assert ok.status == "passed" and ok.num_gpus == 2
    bad = parse_nvidia_smi("n1", "0, NVIDIA A100-SXM4-80GB, 00000001:00:00.0, 35, 3\n")
    assert bad.failed and "3 uncorrected ECC errors" in bad.detail
    assert parse_nvidia_smi("n1", "").failed


def test_a_node_without_gpu_tools_is_not_available_not_failed(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    d = diagnose("cpu-node")
    assert d.status == NOT_AVAILABLE and not d.failed and d.tool == "none"


def test_dcgmi_failures_fail_the_node(monkeypatch, tmp_path):
    # A stand-in printing dcgmi's table layout: this machine has no DCGM.
    fake = tmp_path / "dcgmi"
    fake.write_text("#!/bin/sh\necho '| Memory  | Pass |'\necho '| PCIe    | Fail - GPU 3: replay counter |'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    d = diagnose("n7", level=1)
    assert d.failed and d.tool == "dcgmi" and "GPU 3" in d.detail
