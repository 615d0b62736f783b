"""``final_results/``: the CSV (the launcher's columns + predicted vs measured), the top-N log, the plot."""

from __future__ import annotations

from pathlib import Path

from bignlp_contracts import atomic_write_text

from .basecfg import ModelShape

LAUNCHER_COLUMNS = ["Model Name", "Model Size", "TP", "PP", "MBS", "Act Ckpt Layers", "Num Layers", "Hidden Size",
                    "FFN Hidden Size", "GBS", "Nodes", "GPUs per Node", "Time per Step", "Samples per Second",
                    "Model TFLOPS / GPU", "Model TFLOPS Aggregate", "Config Name"]


def result_rows(candidates, shape: ModelShape, *, model_type: str, size_in_b: float, gpus_per_node: int) -> list[dict]:
    """One row per candidate: measured figures where it ran, predictions always."""
    rows = []
    flops = shape.flops_per_token()
    for c in candidates:
        lay, p = c.layout, c.prediction
        gpus = lay.tp * lay.pp * lay.dp
        t = c.measured_step_time_s
        samples = lay.gbs / t if t else None
        tflops_agg = samples * shape.seq_length * flops / 1e12 if samples else None
        rows.append({
            "Model Name": model_type, "Model Size": size_in_b, "TP": lay.tp, "PP": lay.pp, "MBS": lay.mbs,
            "Act Ckpt Layers": "selective" if lay.recompute == "selective" else lay.act_ckpt_layers,
            "Num Layers": shape.num_layers, "Hidden Size": shape.hidden_size,
            "FFN Hidden Size": shape.ffn_hidden_size, "GBS": lay.gbs, "Nodes": c.nodes, "GPUs per Node": gpus_per_node,
            "Time per Step": t, "Samples per Second": samples,
            "Model TFLOPS / GPU": tflops_agg / gpus if tflops_agg else None, "Model TFLOPS Aggregate": tflops_agg,
            "Config Name": c.name, "VP": lay.vp, "SP": lay.sp,
            "Predicted Time per Step": p.step_time_s, "Predicted Samples per Second": lay.gbs / p.step_time_s,
            "Predicted Memory GB": p.memory_gb, "Predicted Accounted Memory GB": p.accounted_memory_gb,
            "Measured Memory GB": c.measured_memory_gb, "Measured CUDA Peak GB": c.measured_cuda_peak_gb,
            "Steps Measured": c.num_steps_measured, "Status": c.status, "Reason": c.reason,
        })
    return rows


def write_results(rows: list[dict], final: Path, *, top_n: int, title: str) -> dict[str, Path]:
    """Write the CSV (fastest measured first, then by prediction), the top-N log and the PNG; return their paths."""
    import pandas as pd

    final.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(rows)
    df["_measured"] = df["Samples per Second"].notna()
    df = df.sort_values(["_measured", "Samples per Second", "Predicted Samples per Second"],
                        ascending=[False, False, False]).drop(columns="_measured")
    csv_path = final / "final_summary.csv"
    atomic_write_text(csv_path, df.to_csv(index=False))
    measured = df[df["Samples per Second"].notna()].head(top_n)
    lines = [f"{title}: top {len(measured)} of {len(df)} candidates by measured throughput", ""]
    for i, (_, r) in enumerate(measured.iterrows(), 1):
        lines.append(f"{i:>2}. {r['Config Name']}: {r['Samples per Second']:.3f} samples/s, "
                     f"{r['Time per Step']:.3f} s/step (predicted {r['Predicted Time per Step']:.3f} s, "
                     f"{r['Predicted Memory GB']:.2f} GB)")
    if measured.empty:
        lines.append("no candidate was measured (see Status and Reason in final_summary.csv)")
    top_path = final / f"top_{top_n}_configs.log"
    atomic_write_text(top_path, "\n".join(lines) + "\n")
    png_path = final / "throughput_predicted_vs_measured.png"
    plot(df, png_path, title)
    return {"csv": csv_path, "top": top_path, "png": png_path}


def plot(df, path: Path, title: str) -> None:
    """Predicted vs measured samples/s of every measured candidate, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    m = df[df["Samples per Second"].notna()]
    if not m.empty:
        ax.scatter(m["Predicted Samples per Second"], m["Samples per Second"])
        for _, r in m.iterrows():
            ax.annotate(r["Config Name"], (r["Predicted Samples per Second"], r["Samples per Second"]), fontsize=7)
        hi = max(m["Predicted Samples per Second"].max(), m["Samples per Second"].max()) * 1.1
        ax.plot([0, hi], [0, hi], "--", color="grey", label="measured = predicted")
        ax.legend()
    ax.set_xlabel("predicted samples/s")
    ax.set_ylabel("measured samples/s")
    ax.set_title(title)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
