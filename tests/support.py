"""Helpers for the cross-package tests: real console scripts, shipped data.

(Not named conftest.py: package test directories have their own, and two importable
``conftest`` modules collide.)
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SHARED_DATA = REPO.parent / "shared" / "data"
BIN = Path(sys.executable).parent


def console_script(name: str) -> str:
    """Path of an installed console script (next to the running interpreter, else on PATH)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed (run make setup)")
    return found


def run(args: list[str], *, cwd: Path | None = None, timeout: float = 600, env: dict | None = None):
    """Run a command, capturing text output; never raises on a non-zero exit."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)
