"""The CLI end to end on this machine: --local with 2 and 3 processes, bad input, help, artifact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from bignlp_contracts import read_manifest
from bignlp_csp_validate.busbw import bus_factor
from bignlp_csp_validate.cli import main
from bignlp_csp_validate.report import MISSING_MATPLOTLIB, write_artifact

SMALL = ["--min-bytes", "1K", "--max-bytes", "256K", "--iters", "3", "--warmup", "1"]


def _cli(args: list[str], env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bignlp_csp_validate", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_local_two_processes_measure_every_collective(tmp_path: Path):
    out = _cli(["run", "--local", "--nproc", "2", *SMALL, "--threshold-gbps", "0.0001",
                "--output-dir", str(tmp_path / "v")])
    assert out.returncode == 0, out.stderr[-3000:]
    assert "PASSED: all 2 node(s) passed" in out.stdout
    manifest = read_manifest(tmp_path / "v", "csp-validation", verify="sha256")
    assert manifest.summary["passed"] is True and manifest.summary["num_nodes"] == 2
    assert set(manifest.files) == {"result.json", "report.txt", "busbw.png"}
    assert (tmp_path / "v" / "busbw.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((tmp_path / "v" / "result.json").read_text())
    assert result["backend"] == "gloo" and [n["name"] for n in result["nodes"]] == ["local0", "local1"]
    assert {d["status"] for d in result["diagnostics"]} == {"not available on this node"}
    assert {m["op"] for m in result["sweep"]} == {"all_reduce", "all_gather", "reduce_scatter", "broadcast"}
    assert len(result["sweep"]) == 4 * 9  # 1K ... 256K
    for m in result["sweep"]:
        t = m["time_us"] / 1e6
        assert m["time_us"] > 0 and m["count"] * 4 == m["size_bytes"]
        assert m["algbw_gbps"] == pytest.approx(m["size_bytes"] / t / 1e9)
        assert m["busbw_gbps"] == pytest.approx(m["algbw_gbps"] * bus_factor(m["op"], 2))
    (pair,) = result["pairwise"]["pairs"]
    assert pair["nodes"] == ["local0", "local1"] and pair["size_bytes"] == 256 * 1024 and pair["passed"]
    print(out.stdout)  # the figures, for the record (pytest -s)


def test_slow_node_is_named_with_its_figure(tmp_path: Path):
    out = _cli(["run", "--local", "--nproc", "3", "--nccl", "--ops", "all_reduce", "--min-bytes", "64K",
                "--max-bytes", "64K", "--pair-bytes", "1M", "--iters", "3", "--warmup", "1", "--threshold-gbps", "0.05",
                "--output-dir", str(tmp_path / "v")], env={"BIGNLP_CSP_VALIDATE_SLOW_NODE": "local2:200"})
    assert out.returncode == 1, out.stderr[-3000:]
    assert "FAILED: 1 node(s) to replace or restart: local2" in out.stdout
    result = json.loads((tmp_path / "v" / "result.json").read_text())
    (failed,) = result["failed_nodes"]
    assert failed["node"] == "local2" and failed["busbw_gbps"] < 0.05
    assert "2 of 2 pairs below" in failed["reasons"][0]
    assert result["diagnostics"] == [] and result["tests"] == {"dcgm": False, "nccl": True}
    good = [p for p in result["pairwise"]["pairs"] if "local2" not in p["nodes"]]
    assert len(good) == 1 and good[0]["passed"]
    assert all(p["blamed"] == ["local2"] for p in result["pairwise"]["pairs"] if not p["passed"])
    assert read_manifest(tmp_path / "v", "csp-validation").summary["failed_nodes"] == ["local2"]


def test_dcgm_only_runs_no_collectives(tmp_path: Path):
    out = _cli(["run", "--local", "--nproc", "2", "--dcgm", "--output-dir", str(tmp_path / "v")])
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads((tmp_path / "v" / "result.json").read_text())
    assert result["sweep"] == [] and result["pairwise"]["pairs"] == [] and len(result["diagnostics"]) == 2
    assert "not available on this node" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--nodes", "2", "--nodelist", "hpc-[1-"], "cannot parse Slurm node list 'hpc-[1-'"),
        (["run", "--nodes", "4", "--nodelist", "hpc-[1-2]"],
         "fewer nodes than --nodes: --nodelist 'hpc-[1-2]' names 2"),
        (["run", "--nodes", "2", "--nodelist", "a,a"], "names a more than once"),
        (["run", "--local", "--min-bytes", "4M", "--max-bytes", "1M"], "0 < --min-bytes <= --max-bytes"),
        (["run", "--local", "--ops", "all_reduce,alltoall"], "unknown collective 'alltoall'"),
        (["run", "--local", "--iters", "0"], "--iters >= 1"),
        (["run", "--local", "--inject-slow-node", "n2"], "not NAME:MILLISECONDS"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, message):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.output


def test_fewer_nodes_joined_than_requested_is_an_error():
    out = _cli(["worker", "--nodes", "3", "--nccl", *SMALL],
               env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0",
                    "BIGNLP_CSP_VALIDATE_NODE_NAME": "solo"})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        "bignlp-csp-validate: error: fewer nodes than --nodes: 1 joined (solo), --nodes is 3 "
        "(fix: run one task on each node (srun --ntasks-per-node) or lower --nodes)")


def test_nccl_backend_without_gpus_is_a_config_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA GPUs")
    out = _cli(["worker", "--backend", "nccl", "--nccl", *SMALL],
               env={"RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "0"})
    assert out.returncode == 2 and "--backend nccl needs CUDA GPUs" in out.stderr.strip().splitlines()[-1]


def test_local_with_more_nodes_than_processes_is_an_error(tmp_path: Path):
    out = _cli(["run", "--local", "--nproc", "2", "--nodes", "3", "--dcgm", "--output-dir", str(tmp_path / "v")])
    assert out.returncode == 2, out.stderr[-2000:]
    assert "fewer nodes than --nodes: 2 joined (local0, local1), --nodes is 3" in out.stderr
    assert out.stderr.count("error:") == 1  # rank 1 exits quietly
    assert not (tmp_path / "v").exists()


def test_missing_nodes_without_local_is_a_usage_error():
    res = CliRunner().invoke(main, ["run"])
    assert res.exit_code == 2 and "--nodes is required" in res.output
    res = CliRunner().invoke(main, ["run", "--local", "--partition", "hpc"])
    assert res.exit_code == 2 and "drop them with --local" in res.output


def test_topology_and_env_commands(tmp_path: Path):
    res = CliRunner().invoke(main, ["topology", "--output", str(tmp_path / "ndv4-topo.xml")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "ndv4-topo.xml").read_text().startswith('<system version="1">')
    assert "documented NDv4 bus ids" in res.output
    res = CliRunner().invoke(main, ["env"])
    assert res.exit_code == 0 and all(f"# {c}:" in res.output for c in ("azure", "oci", "aws"))
    res = CliRunner().invoke(main, ["env", "--csp", "nebula"])
    assert res.exit_code == 2 and "unknown CSP 'nebula'" in res.output


@pytest.mark.parametrize("command", [[], ["run"], ["worker"], ["topology"], ["env"]])
def test_every_command_has_help_with_an_example(command):
    res = CliRunner().invoke(main, [*command, "--help"])
    assert res.exit_code == 0 and "Example:" in res.output
    assert "--inject-slow-node" not in res.output  # test-only


def test_plot_missing_matplotlib_is_a_note_not_a_failure(tmp_path: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    result = {"passed": True, "failed_nodes": [], "csp": "azure", "threshold_gbps": 1.0, "backend": "gloo",
              "device": "cpu", "num_nodes": 2, "world_size": 2, "diagnostics": [], "notes": [],
              "sweep": [{"op": "all_reduce", "size_bytes": 1024, "count": 256, "num_ranks": 2, "time_us": 10.0,
                         "algbw_gbps": 0.1, "busbw_gbps": 0.1}],
              "pairwise": {"op": "all_reduce", "size_bytes": 1024, "pairs": [], "nodes": []},
              "settings": {"ops": ["all_reduce"]}}
    write_artifact(result, tmp_path / "v")
    manifest = read_manifest(tmp_path / "v", "csp-validation")
    assert "busbw.png" not in manifest.files
    assert MISSING_MATPLOTLIB in json.loads((tmp_path / "v" / "result.json").read_text())["notes"]
