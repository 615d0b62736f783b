"""Dependencies point one way: stages → models → tokenizers → contracts; no stage imports another stage.

Read from the source (every ``import``/``from`` in each package's src/ and tests/), not from a
running interpreter, so the check also covers modules a test run never imports.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from support import REPO

# What each library may import besides itself; a stage may import every library, never another stage.
LIBRARIES = {"contracts": set(), "tokenizers": {"contracts"}, "models": {"contracts", "tokenizers"}}
PACKAGES = sorted(p.name for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").exists())


def _module(package: str) -> str:
    return "bignlp_" + package.replace("-", "_")


def _bignlp_imports(path: Path) -> set[str]:
    """The bignlp packages a file imports (absolute imports only; relative ones stay inside the package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name.startswith("bignlp_")}
    return found


def _allowed(package: str) -> set[str]:
    own = {package}
    if package in LIBRARIES:
        return own | LIBRARIES[package]
    return own | set(LIBRARIES)


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_the_dependency_direction(package: str):
    modules = {_module(p): p for p in PACKAGES}
    allowed = {_module(p) for p in _allowed(package)}
    for where in ("src", "tests"):
        for path in sorted((REPO / "packages" / package / where).rglob("*.py")):
            bad = _bignlp_imports(path) - allowed
            assert not bad, (f"{path.relative_to(REPO)} imports {', '.join(sorted(bad))} "
                             f"({', '.join(sorted(modules.get(b, b) for b in bad))}): "
                             + ("a stage never imports another stage; share it through a library or an artifact"
                                if package not in LIBRARIES else "a library imports only the libraries below it"))


@pytest.mark.parametrize("package", PACKAGES)
def test_imported_packages_are_declared_dependencies(package: str):
    meta = tomllib.loads((REPO / "packages" / package / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[<>=!~\[ ;]", d)[0] for d in meta.get("dependencies", [])}
    used = set()
    for path in (REPO / "packages" / package / "src").rglob("*.py"):
        used |= _bignlp_imports(path)
    used -= {_module(package)}
    missing = {m.replace("_", "-") for m in used} - declared
    assert not missing, f"packages/{package}/pyproject.toml: add {sorted(missing)} to dependencies"


def test_the_check_catches_a_stage_importing_a_stage(tmp_path):
    bad = tmp_path / "x.py"
    bad.write_text("from bignlp_dataprep.tokenizers import build_tokenizer\nimport bignlp_models.gpt\n")
    assert _bignlp_imports(bad) == {"bignlp_dataprep", "bignlp_models"}
    assert "bignlp_dataprep" not in {_module(p) for p in _allowed("train")}
