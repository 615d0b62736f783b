"""GPU diagnostics on one node: ``dcgmi diag -r LEVEL`` when DCGM is installed, else ``nvidia-smi`` queries.

A node without either tool (a CPU node, a login node) gets the status
``not available on this node``: that is reported, and is not a failure of the node.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import asdict, dataclass

NOT_AVAILABLE = "not available on this node"
_SMI_FIELDS = ("index", "name", "pci.bus_id", "temperature.gpu", "ecc.errors.uncorrected.volatile.total")


@dataclass(frozen=True)
class Diagnosis:
    """What one node's diagnostics found. ``status``: passed, failed or ``NOT_AVAILABLE``."""

    node: str
    tool: str
    status: str
    num_gpus: int = 0
    detail: str = ""

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    def to_dict(self) -> dict:
        return asdict(self)


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess | str:
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"{args[0]} did not finish within {timeout_s:.0f} s"
    except OSError as exc:
        return f"{args[0]} could not run: {exc}"


def run_dcgmi(node: str, level: int, timeout_s: float) -> Diagnosis:
    """``dcgmi diag -r level``: any test reported as Fail (or a non-zero exit) fails the node."""
    out = _run(["dcgmi", "diag", "-r", str(level)], timeout_s)
    if isinstance(out, str):
        return Diagnosis(node, "dcgmi", "failed", detail=out)
    text = out.stdout + out.stderr
    failures = [" ".join(line.replace("|", " ").split()) for line in text.splitlines() if "fail" in line.lower()]
    if out.returncode != 0 or failures:
        detail = "; ".join(failures[:5]) or f"dcgmi exited with {out.returncode}: {text.strip()[-300:]}"
        return Diagnosis(node, "dcgmi", "failed", detail=detail)
    return Diagnosis(node, "dcgmi", "passed", detail=f"dcgmi diag -r {level}: no test failed")


def parse_nvidia_smi(node: str, csv_text: str) -> Diagnosis:
    """Judge ``nvidia-smi --query-gpu=...`` CSV rows: an uncorrected ECC error fails the node."""
    rows = [[c.strip() for c in line.split(",")] for line in csv_text.splitlines() if line.strip()]
    bad = []
    for row in rows:
        if len(row) < len(_SMI_FIELDS):
            bad.append(f"unreadable row {','.join(row)!r}")
            continue
        ecc = row[4]
        if ecc.isdigit() and int(ecc) > 0:
            bad.append(f"GPU {row[0]} ({row[2]}): {ecc} uncorrected ECC errors")
    if not rows:
        return Diagnosis(node, "nvidia-smi", "failed", detail="nvidia-smi lists no GPU")
    if bad:
        return Diagnosis(node, "nvidia-smi", "failed", num_gpus=len(rows), detail="; ".join(bad))
    names = sorted({r[1] for r in rows})
    return Diagnosis(node, "nvidia-smi", "passed", num_gpus=len(rows),
                     detail=f"{len(rows)} x {', '.join(names)}; no uncorrected ECC errors")


def run_nvidia_smi(node: str, timeout_s: float) -> Diagnosis:
    """Query every GPU's identity, temperature and uncorrected ECC count."""
    out = _run(["nvidia-smi", f"--query-gpu={','.join(_SMI_FIELDS)}", "--format=csv,noheader,nounits"], timeout_s)
    if isinstance(out, str):
        return Diagnosis(node, "nvidia-smi", "failed", detail=out)
    if out.returncode != 0:
        return Diagnosis(node, "nvidia-smi", "failed", detail=(out.stderr or out.stdout).strip()[-300:])
    return parse_nvidia_smi(node, out.stdout)


def diagnose(node: str, *, level: int = 3, timeout_s: float = 1800.0) -> Diagnosis:
    """Run the best diagnostic this node has; ``NOT_AVAILABLE`` if it has none."""
    if shutil.which("dcgmi"):
        return run_dcgmi(node, level, timeout_s)
    if shutil.which("nvidia-smi"):
        return run_nvidia_smi(node, timeout_s)
    return Diagnosis(node, "none", NOT_AVAILABLE, detail="neither dcgmi nor nvidia-smi is installed")
