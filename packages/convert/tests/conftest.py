"""Fixtures for bignlp-convert's tests."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _two_threads():
    # The machines CI runs on have 2 cores; other test processes may share them.
    torch.set_num_threads(2)
