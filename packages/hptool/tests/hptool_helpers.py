"""What bignlp-hptool's tests share: the repository's shipped demo corpus, a slice of it as JSONL, and the
installed console scripts."""

from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import pytest

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


def script(name: str) -> str:
    """The console script ``name`` beside this Python (else on PATH), or a skip saying to install it."""
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (make setup)")
    return found
