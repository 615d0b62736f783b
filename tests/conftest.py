"""Fixtures for the cross-package tests (helpers live in support.py)."""

from pathlib import Path

import pytest

from support import DATA


@pytest.fixture(scope="session")
def gpt2_files() -> tuple[Path, Path]:
    return DATA / "gpt2" / "vocab.json", DATA / "gpt2" / "merges.txt"


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    return DATA / "corpus" / "demo-en.jsonl.gz"
