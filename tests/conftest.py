"""Fixtures for the cross-package tests (helpers live in support.py)."""

from pathlib import Path

import pytest

from slurm_support import local_slurm_cluster
from support import DATA


@pytest.fixture(scope="session")
def gpt2_files() -> tuple[Path, Path]:
    return DATA / "gpt2" / "vocab.json", DATA / "gpt2" / "merges.txt"


@pytest.fixture(scope="session")
def demo_corpus() -> Path:
    return DATA / "corpus" / "demo-en.jsonl.gz"


@pytest.fixture(scope="session")
def slurm_env():
    """Client environment (SLURM_CONF, PATH) of one private 2-node cluster shared by the session."""
    yield from local_slurm_cluster()
