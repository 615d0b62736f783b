"""Fixtures for the cross-package tests (helpers live in support.py)."""

from pathlib import Path

import pytest

from slurm_support import local_slurm_cluster
from support import DATA


def pytest_configure(config):
    # `make test` (and CI) runs -m "not slow", staying well under an hour on 2 cores; `make test-all` runs these too
    config.addinivalue_line("markers", "slow: a long end-to-end case; make test skips it, make test-all runs it")


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
