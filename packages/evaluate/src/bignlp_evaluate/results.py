"""lm-eval's results as the seed's table (README 7.1.1): one row per task and metric."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# lm-eval metric → the seed's label, in the order the seed's table lists them
METRICS = {
    "acc": "Accuracy",
    "acc_norm": "Accuracy Norm",
    "perplexity": "PPL",
    "word_perplexity": "Word PPL",
    "byte_perplexity": "Byte PPL",
    "bits_per_byte": "Bits per Byte",
}
PERCENT = {"acc", "acc_norm"}


@dataclass(frozen=True)
class Row:
    task: str  # the name the user asked for (lambada, wikitext2)
    metric: str  # lm-eval's metric name (acc, word_perplexity)
    value: float
    stderr: float | None

    @property
    def label(self) -> str:
        return METRICS.get(self.metric, self.metric)

    def shown(self) -> str:
        """``38.70%`` for accuracies, ``25.8`` style (4 significant digits) for the rest."""
        if math.isnan(self.value):
            return "nan"
        return f"{100 * self.value:.2f}%" if self.metric in PERCENT else f"{self.value:.4g}"


def table_rows(results: Mapping[str, Mapping], task_names: Mapping[str, str]) -> list[Row]:
    """Rows of lm-eval's ``results["results"]``, for the tasks ``task_names`` maps (lm-eval name → ours).

    Metrics in ``METRICS`` come first in its order, then any other numeric metric a passed-through
    task reports; stderr is None where lm-eval gives none ("N/A").
    """
    rows = []
    for lm_name, ours in task_names.items():
        found = results.get(lm_name, {})
        values: dict[str, tuple[float, float | None]] = {}
        for key, value in found.items():
            metric, _, filt = key.partition(",")
            if not filt or metric.endswith("_stderr") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            err = found.get(f"{metric}_stderr,{filt}")
            values.setdefault(metric, (float(value), float(err) if isinstance(err, (int, float)) else None))
        order = [m for m in METRICS if m in values] + sorted(m for m in values if m not in METRICS)
        rows += [Row(ours, m, *values[m]) for m in order]
    return rows


def markdown_table(rows: Sequence[Row], model: str = "value") -> str:
    """The seed's layout: the task named on its first row only."""
    lines = [f"| Task | Metric | {model} |", "| --- | --- | --- |"]
    previous = None
    for row in rows:
        lines.append(f"| {row.task if row.task != previous else ''} | {row.label} | {row.shown()} |")
        previous = row.task
    return "\n".join(lines) + "\n"


def csv_table(rows: Sequence[Row]) -> str:
    """task, metric, value, stderr (full precision, empty stderr where none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["task", "metric", "value", "stderr"])
    for row in rows:
        writer.writerow([row.task, row.metric, repr(row.value), "" if row.stderr is None else repr(row.stderr)])
    return out.getvalue()


def metrics_summary(rows: Sequence[Row]) -> dict[str, dict[str, float]]:
    """task → metric → value (the manifest's ``summary.metrics``)."""
    summary: dict[str, dict[str, float]] = {}
    for row in rows:
        summary.setdefault(row.task, {})[row.metric] = row.value
    return summary
