"""Fixtures for bignlp-evaluate's tests: a small random GPT checkpoint, the task files, a local HTTP server."""

from __future__ import annotations

import os

import pytest
import torch

# lm-eval must never reach for the Hub in a test: every task reads tests/data
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _two_threads():
    # The machines CI runs on have 2 cores; other test processes may share them.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def gpt_checkpoint(tmp_path_factory):
    from evaluate_helpers import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "gpt", "gpt")


@pytest.fixture(scope="session")
def t5_checkpoint(tmp_path_factory):
    from evaluate_helpers import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "t5", "t5")


@pytest.fixture(scope="session")
def hf_datasets_cache(tmp_path_factory):
    """datasets' cache for the task files, outside the user's ~/.cache."""
    path = tmp_path_factory.mktemp("hf_datasets")
    os.environ["HF_DATASETS_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def task_server():
    """(base URL, served directory) of ``task_server.py`` run as a subprocess on 127.0.0.1, stopped by PID after."""
    import subprocess
    import sys
    from pathlib import Path

    from evaluate_helpers import TASK_DATA

    proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("task_server.py")), str(TASK_DATA)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        yield f"http://127.0.0.1:{port}", TASK_DATA
    finally:
        proc.terminate()  # this one process, by its PID
        proc.wait(timeout=10)
