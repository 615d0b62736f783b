"""Look inside a finished dataset artifact: counts from the index, token-length histograms, documents detokenized."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bignlp_contracts import ArtifactError, ConfigError, atomic_write_bytes, resolve_dataset
from bignlp_tokenizers import tokenizer_from_summary

from .indexed import IndexedDatasetReader


def inspect_dataset(path: str | os.PathLike, *, num_show: int = 0) -> dict[str, Any]:
    """Validate the artifact at ``path`` (a directory or one prefix in it) and describe it.

    Counts come from the ``.idx`` files themselves and must agree with the
    manifest; ``num_show`` > 0 also decodes the first documents of each dataset.
    """
    refs = resolve_dataset(path, verify="sha256")
    tok = refs[0].tokenizer
    tokenizer = None
    if num_show:
        tokenizer = tokenizer_from_summary(tok, refs[0].artifact_dir)
    datasets = []
    for ref in refs:
        try:
            reader = IndexedDatasetReader.open(ref.prefix)
        except ValueError as exc:
            raise ArtifactError(str(exc)) from None
        entry: dict[str, Any] = {
            "prefix": ref.prefix.name,
            "num_documents": reader.num_documents,
            "num_sequences": len(reader.sequence_lengths),
            "num_tokens": int(reader.sequence_lengths.sum()),
            "dtype": reader.dtype.name,
        }
        for key, value in entry.items():
            if key != "prefix" and ref.entry.get(key) != value:
                raise ArtifactError(f"{ref.prefix}: index says {key}={value}, the manifest {ref.entry.get(key)}")
        shown = []
        if tokenizer is not None:
            for i in range(min(num_show, reader.num_documents)):
                shown.append(tokenizer.decode(reader.document(i).tolist()))
        datasets.append({**entry, "shown": shown, "doc_lengths": document_lengths(reader)})
    return {"artifact_dir": str(refs[0].artifact_dir), "tokenizer": tok, "datasets": datasets}


def document_lengths(reader: IndexedDatasetReader) -> np.ndarray:
    """Tokens per document (its sequences summed; 0 for an empty document), from the index alone."""
    ends = np.zeros(len(reader.sequence_lengths) + 1, dtype=np.int64)
    np.cumsum(reader.sequence_lengths, out=ends[1:])
    docs = np.asarray(reader.document_indices, dtype=np.int64)
    return ends[docs[1:]] - ends[docs[:-1]]


def histogram_bins(lengths: np.ndarray) -> list[tuple[int, int, int]]:
    """Power-of-two buckets of document lengths: (low, high inclusive, count), empty documents as (0, 0, n).

    Buckets run from the first non-empty one to the last; documents span orders of magnitude,
    so doubling widths show the shape where equal widths would put everything in one bar.
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if not len(lengths):
        return []
    out = []
    if (empty := int((lengths == 0).sum())):
        out.append((0, 0, empty))
    pos = lengths[lengths > 0]
    if len(pos):
        exp = np.floor(np.log2(pos)).astype(np.int64)  # 1 → 0, 2..3 → 1, 4..7 → 2, ...
        counts = np.bincount(exp)
        first = int(np.flatnonzero(counts)[0])
        out += [(1 << k, (1 << (k + 1)) - 1, int(counts[k])) for k in range(first, len(counts))]
    return out


def histogram_text(lengths: np.ndarray, width: int = 40) -> list[str]:
    """The histogram as text lines: bucket, count, share, a bar; then min/median/mean/p99/max."""
    bins = histogram_bins(lengths)
    if not bins:
        return ["  (no documents)"]
    total = len(lengths)
    top = max(c for _, _, c in bins)
    label_w = len(f"{bins[-1][0]:,}-{bins[-1][1]:,}")
    lines = []
    for lo, hi, count in bins:
        label = f"{lo:,}" if lo == hi else f"{lo:,}-{hi:,}"
        bar = "#" * (round(width * count / top) if count else 0)
        lines.append(f"  {label:>{label_w}} tokens {count:>12,} {100 * count / total:5.1f}% {bar}")
    q = np.percentile(lengths, [50, 99])
    lines.append(f"  min {int(lengths.min()):,}, median {q[0]:,.0f}, mean {float(lengths.mean()):,.1f}, "
                 f"p99 {q[1]:,.0f}, max {int(lengths.max()):,} tokens per document")
    return lines


def histogram_png(datasets: Sequence[dict[str, Any]], path: str | os.PathLike) -> Path:
    """Plot every dataset's document-length histogram (log-spaced bins) into a PNG, written atomically."""
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--histogram-png needs matplotlib, which is not installed",
                          hint="pip install 'bignlp-dataprep[plot]' (or leave --histogram-png out)") from None
    import io

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot as plt

    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ConfigError(f"--histogram-png {path}: the file name must end in .png")
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    top = max((int(d["doc_lengths"].max()) for d in datasets if len(d["doc_lengths"])), default=1)
    edges = 2.0 ** np.arange(0, int(np.log2(max(top, 1))) + 2)
    for d in datasets:
        lengths = d["doc_lengths"]
        ax.hist(lengths[lengths > 0], bins=edges, histtype="step", linewidth=1.5,
                label=f"{d['prefix']} ({d['num_documents']:,} docs)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("tokens per document")
    ax.set_ylabel("documents")
    ax.set_title("Document length histogram")
    if len(datasets) <= 12:
        ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path
