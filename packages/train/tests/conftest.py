"""Fixtures for bignlp-train's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_helpers import make_dataset, make_t5_dataset


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> Path:
    """Prefix of a 200-document dataset with a 512-token vocabulary."""
    return make_dataset(tmp_path_factory.mktemp("data") / "toy")


@pytest.fixture(scope="session")
def other_dataset(tmp_path_factory) -> Path:
    """A second dataset with the same tokenizer, for blends."""
    return make_dataset(tmp_path_factory.mktemp("data2") / "other", name="other", seed=1, num_docs=120)


@pytest.fixture(scope="session")
def t5_dataset(tmp_path_factory) -> Path:
    """Prefix of a 200-document span-corruption dataset: WordPiece vocabulary with 100 sentinels."""
    return make_t5_dataset(tmp_path_factory.mktemp("t5data") / "t5toy")
