"""Fixtures for bignlp-export's tests: tiny checkpoints (convert's test helper), repositories, a real server.

The checkpoints come from ``packages/convert/tests/convert_helpers.make_checkpoint`` (random GPT, T5
and mT5 models with the real tokenizers the repo ships), imported rather than copied.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "convert" / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True)
def _two_threads():
    # The machines CI runs on have 2 cores; other test processes may share them.
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def gpt_checkpoint(tmp_path_factory):
    from convert_helpers import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "gpt", "gpt")[0]


@pytest.fixture(scope="session")
def gpt_repo(tmp_path_factory, gpt_checkpoint):
    from bignlp_export.repository import export_repository

    repo = tmp_path_factory.mktemp("repo") / "gpt"
    export_repository(gpt_checkpoint, repo, max_batch_size=8, num_threads=1)
    return repo


@pytest.fixture(scope="session")
def triton_install():
    """nvidia-pytriton's tritonserver from .venv-triton (`make triton-env`), or a skip saying so."""
    from bignlp_contracts import ConfigError
    from bignlp_export.server import find_triton

    try:
        return find_triton()
    except ConfigError as exc:
        pytest.skip(f"no tritonserver ({exc.message}): run `make triton-env`")


@pytest.fixture(scope="session")
def gpt_server(gpt_repo, triton_install, tmp_path_factory):
    """`bignlp-export serve` on the GPT repository (127.0.0.1, free ports); SIGTERM by PID at the end, checked."""
    from export_helpers import served

    with served(gpt_repo, tmp_path_factory.mktemp("serve")) as server:
        yield server
