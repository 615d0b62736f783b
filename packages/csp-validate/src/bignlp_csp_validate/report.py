"""The validation result as a human table, a PNG plot, and a ``csp-validation`` artifact.

Artifact directory (built under a temporary name and renamed, manifest written last):
``result.json`` (everything measured, see the README), ``report.txt`` (the table
printed on stdout), ``busbw.png`` (bus bandwidth against message size, when
matplotlib is installed) and ``manifest.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from bignlp_contracts import Producer, atomic_directory, get_kind, git_commit, write_manifest

from . import __version__
from .busbw import human_size

PLOT_NAME = "busbw.png"
MISSING_MATPLOTLIB = "matplotlib is not installed: no plot (pip install 'bignlp-csp-validate[plot]')"


def render_table(result: dict) -> str:
    """nccl-tests-style columns for the sweep and the pairs, then the verdict and the nodes to replace."""
    out = [f"# bignlp-csp-validate: {result['num_nodes']} node(s), {result['world_size']} rank(s), "
           f"backend {result['backend']} on {result['device']}, csp {result['csp']}, "
           f"threshold {result['threshold_gbps']:g} GB/s"]
    out.append("#")
    out.append("# GPU diagnostics")
    for d in result["diagnostics"]:
        detail = f"  {d['detail']}" if d["detail"] else ""
        out.append(f"#   {d['node']:<20} {d['tool']:<10} {d['status']}{detail}")
    if not result["diagnostics"]:
        out.append("#   (not run: --nccl)")
    if result["sweep"]:
        out.append("#")
        out.append(f"# {'op':<15}{'size(B)':>12}{'count':>12}{'time(us)':>12}{'algbw(GB/s)':>13}{'busbw(GB/s)':>13}")
        for m in result["sweep"]:
            out.append(f"  {m['op']:<15}{m['size_bytes']:>12}{m['count']:>12}{m['time_us']:>12.1f}"
                       f"{m['algbw_gbps']:>13.3f}{m['busbw_gbps']:>13.3f}")
    pw = result["pairwise"]
    if pw["pairs"]:
        out.append("#")
        out.append(f"# node pairs: {pw['op']} of {human_size(pw['size_bytes'])}")
        out.append(f"# {'pair':<35}{'time(us)':>12}{'busbw(GB/s)':>13}  result")
        for p in pw["pairs"]:
            verdict = "ok" if p["passed"] else f"BELOW THRESHOLD, blamed: {', '.join(p['blamed'])}"
            out.append(f"  {' - '.join(p['nodes']):<35}{p['time_us']:>12.1f}{p['busbw_gbps']:>13.3f}  {verdict}")
    for note in result["notes"]:
        out.append(f"# note: {note}")
    out.append("#")
    if result["passed"]:
        out.append(f"PASSED: all {result['num_nodes']} node(s) passed")
    else:
        names = ", ".join(f["node"] for f in result["failed_nodes"])
        out.append(f"FAILED: {len(result['failed_nodes'])} node(s) to replace or restart: {names}")
        for f in result["failed_nodes"]:
            fig = f" ({f['busbw_gbps']:.3f} GB/s)" if f["busbw_gbps"] is not None else ""
            out.append(f"  {f['node']}{fig}: {'; '.join(f['reasons'])}")
    return "\n".join(out) + "\n"


def plot_busbw(result: dict, path: Path) -> bool:
    """Bus bandwidth against message size, one line per collective; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 5))
    for op in result["settings"]["ops"]:
        rows = [m for m in result["sweep"] if m["op"] == op]
        if rows:
            ax.plot([m["size_bytes"] for m in rows], [m["busbw_gbps"] for m in rows], marker="o", label=op)
    ax.axhline(result["threshold_gbps"], color="red", linestyle="--", label="node-pair threshold")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.set_ylabel("bus bandwidth (GB/s)")
    ax.set_title(f"{result['num_nodes']} nodes, {result['world_size']} ranks, {result['backend']}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def write_artifact(result: dict, output_dir: str | Path, *, config: dict | None = None) -> Path:
    """Write the result artifact atomically (a complete directory with its manifest, or nothing)."""
    output_dir = Path(output_dir)
    with atomic_directory(output_dir) as tmp:
        files = ["result.json", "report.txt"]
        if result["sweep"]:
            if plot_busbw(result, tmp / PLOT_NAME):
                files.append(PLOT_NAME)
            else:
                result["notes"].append(MISSING_MATPLOTLIB)
        (tmp / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        (tmp / "report.txt").write_text(render_table(result))
        write_manifest(
            tmp,
            get_kind("csp-validation"),
            producer=Producer("bignlp-csp-validate", __version__, git_commit()),
            files=files,
            config=config or {},
            summary={"passed": result["passed"], "num_nodes": result["num_nodes"],
                     "failed_nodes": [f["node"] for f in result["failed_nodes"]],
                     "threshold_gbps": result["threshold_gbps"], "backend": result["backend"]},
        )
    return output_dir
