"""csp-validate on the local 2-node Slurm cluster: the template, a node made slow, `run` through srun."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from slurm_support import job_fields, sbatch, wait_gone
from support import REPO, console_script, run

TEMPLATE = REPO / "slurm-templates" / "csp-validate.sbatch"
VENV = str(Path(sys.executable).parents[1])


def _submit(slurm_env: dict[str, str], tmp_path: Path, extra_env: dict[str, str]) -> tuple[dict, Path]:
    env = {**slurm_env, "BIGNLP_VENV": VENV, "OUTPUT_DIR": str(tmp_path / "validation"), **extra_env}
    out = tmp_path / "csp-%j.out"
    job = sbatch(env, ["--nodes=2", "--ntasks-per-node=1", "-o", str(out), str(TEMPLATE)], tmp_path)
    wait_gone(slurm_env, job, timeout_s=120)
    return job_fields(slurm_env, job), tmp_path / f"csp-{job}.out"


def test_template_measures_two_nodes(slurm_env: dict[str, str], tmp_path: Path):
    fields, log = _submit(slurm_env, tmp_path, {"THRESHOLD_GBPS": "0.0001", "MAX_BYTES": "1M", "ITERS": "3",
                                                "WARMUP": "1"})
    text = log.read_text()
    assert fields["JobState"] == "COMPLETED" and fields["ExitCode"] == "0:0", text[-3000:]
    result = json.loads((tmp_path / "validation" / "result.json").read_text())
    assert [n["name"] for n in result["nodes"]] == ["n1", "n2"] and result["launcher"] == "slurm"
    assert result["passed"] and result["num_nodes"] == 2 and result["backend"] == "gloo"
    assert [d["status"] for d in result["diagnostics"]] == ["not available on this node"] * 2
    assert len(result["sweep"]) == 4 * 11  # 4 collectives x 1K..1M
    for m in result["sweep"]:
        factor = {"all_reduce": 1.0, "broadcast": 1.0}.get(m["op"], 0.5)  # 2(n-1)/n and (n-1)/n at n=2
        assert m["busbw_gbps"] > 0 and abs(m["busbw_gbps"] - m["algbw_gbps"] * factor) < 1e-9
    (pair,) = result["pairwise"]["pairs"]
    assert pair["nodes"] == ["n1", "n2"] and pair["passed"]
    assert "PASSED: all 2 node(s) passed" in text and "n1 - n2" in text
    print(text)  # the figures for 2 emulated nodes (pytest -s)


def test_template_names_the_slow_node(slurm_env: dict[str, str], tmp_path: Path):
    fields, log = _submit(slurm_env, tmp_path, {
        "BIGNLP_CSP_VALIDATE_SLOW_NODE": "n2:200", "TESTS": "nccl", "THRESHOLD_GBPS": "0.05",
        "MIN_BYTES": "64K", "MAX_BYTES": "64K", "PAIR_BYTES": "1M", "ITERS": "3", "WARMUP": "1"})
    text = log.read_text()
    assert fields["JobState"] == "FAILED" and fields["ExitCode"] == "1:0", text[-3000:]
    result = json.loads((tmp_path / "validation" / "result.json").read_text())
    (failed,) = result["failed_nodes"]
    assert failed["node"] == "n2" and failed["busbw_gbps"] < 0.05
    # One pair only, but n1 waited inside the collective for n2: n2 is the straggler (see pairwise.py).
    assert "n1 waited for this node (a straggler)" in failed["reasons"][0]
    (pair,) = result["pairwise"]["pairs"]
    assert pair["blamed"] == ["n2"] and pair["wait_us"]["n1"] > 10 * pair["wait_us"]["n2"]
    assert "FAILED: 1 node(s) to replace or restart: n2" in text
    assert "TEST INJECTION: node n2 slept 200 ms" in text


def test_run_checks_the_request_and_runs_through_srun(slurm_env: dict[str, str], tmp_path: Path):
    cli = console_script("bignlp-csp-validate")
    bad = [
        (["--nodes", "2", "--partition", "nosuch"], "unknown partition 'nosuch'; this cluster has: debug"),
        (["--nodes", "3", "--nodelist", "n[1-3]", "--partition", "debug"], "node(s) n3 of --nodelist 'n[1-3]'"),
        (["--nodes", "3", "--partition", "debug"], "fewer nodes than --nodes: partition 'debug' has 2 node(s)"),
        (["--nodes", "2", "--nodelist", "n[1-2"], "cannot parse Slurm node list 'n[1-2'"),
    ]
    for args, message in bad:
        out = run([cli, "run", *args], env=slurm_env, cwd=tmp_path, timeout=60)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0], (args, out.stderr)
    out = run([cli, "run", "--nodes", "2", "--nodelist", "n[1-2]", "--partition", "debug", "--backend", "gloo",
               "--nccl", "--ops", "all_reduce", "--max-bytes", "64K", "--iters", "3", "--warmup", "1",
               "--threshold-gbps", "0.0001", "--output-dir", str(tmp_path / "v")],
              env=slurm_env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "srun --nodes=2 --ntasks-per-node=1" in out.stderr and "PASSED: all 2 node(s) passed" in out.stdout
    result = json.loads((tmp_path / "v" / "result.json").read_text())
    assert [n["name"] for n in result["nodes"]] == ["n1", "n2"]
