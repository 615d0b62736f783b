"""What bignlp-hptool's tests share: the repository's shipped demo corpus, a slice of it as JSONL."""

from __future__ import annotations

import gzip
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
DATA = REPO / "tests" / "data"


def corpus_slice(tmp: Path, num_docs: int = 300) -> Path:
    """The first ``num_docs`` documents of the demo corpus as ``tmp/slice.jsonl``."""
    out = tmp / "slice.jsonl"
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt") as f, open(out, "w") as g:
        for i, line in enumerate(f):
            if i >= num_docs:
                break
            g.write(line)
    return out
