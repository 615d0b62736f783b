"""Static checks of the Pants build (Pants itself cannot run on our machines) and package layout."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

from support import REPO

PACKAGES = sorted(p for p in (REPO / "packages").iterdir() if (p / "pyproject.toml").exists())
DESIGN_TOP_LEVEL = {"packages", "slurm-templates", "Makefile", "pants.toml", "tests", "README.md"}
# Libraries: imported by the stages, no CLI of their own.
LIBRARIES = {"contracts", "tokenizers", "models"}


def _build_calls(path: Path) -> list[ast.Call]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n.value for n in tree.body if isinstance(n, ast.Expr) and isinstance(n.value, ast.Call)]


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _literal(node):
    return ast.literal_eval(node) if node is not None else None


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(_norm(re.split(r"[<>=!~\[ ;]", line)[0]))
    return names


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_top_level_is_the_design_card():
    visible = {p.name for p in REPO.iterdir() if not p.name.startswith(".")} - {"dist", "results", "build"}
    assert visible == DESIGN_TOP_LEVEL


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_package_shape(pkg: Path):
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    stage = pkg.name
    assert meta["name"] == f"bignlp-{stage}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", meta["version"])
    module = "bignlp_" + stage.replace("-", "_")
    assert (pkg / "src" / module / "__init__.py").is_file()
    for doc in ("README.md", "CHANGELOG.md", "BUILD"):
        assert (pkg / doc).is_file(), f"{pkg.name} lacks {doc}"
    assert list((pkg / "tests").glob("test_*.py")), f"{pkg.name} has no tests"
    if stage in LIBRARIES:
        assert "scripts" not in meta, f"{pkg.name} is a library: no console script"
    else:
        assert meta["scripts"] == {f"bignlp-{stage}": f"{module}.cli:main"}
        assert (pkg / "src" / module / "__main__.py").is_file()


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_build_file_agrees_with_pyproject(pkg: Path):
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    calls = {c.func.id: c for c in _build_calls(pkg / "BUILD")}
    assert {"python_sources", "python_tests", "python_distribution"} <= set(calls)
    dist = calls["python_distribution"]
    assert _literal(_kw(dist, "generate_setup")) is False
    artifact = _kw(dist, "provides")
    assert isinstance(artifact, ast.Call) and artifact.func.id == "python_artifact"
    assert _literal(_kw(artifact, "name")) == meta["name"]
    assert _literal(_kw(artifact, "version")) == meta["version"]


def _resolves(call: ast.Call) -> set[str]:
    node = _kw(call, "resolve")
    if node is None:
        return {"python-default"}
    if isinstance(node, ast.Call):  # parametrize("a", "b")
        return {_literal(a) for a in node.args}
    return {_literal(node)}


def _third_party(specs: list[str]) -> set[str]:
    names = {_norm(re.split(r"[<>=!~\[ ;]", d)[0]) for d in specs}
    return {n for n in names if not n.startswith("bignlp-")}


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_third_party_dependencies_are_in_the_packages_resolves(pkg: Path):
    meta = tomllib.loads((pkg / "pyproject.toml").read_text())["project"]
    calls = {c.func.id: c for c in _build_calls(pkg / "BUILD")}
    checks = [
        (_third_party(meta.get("dependencies", [])), _resolves(calls["python_sources"])),
        (_third_party(meta.get("optional-dependencies", {}).get("test", [])), _resolves(calls["python_tests"])),
    ]
    for deps, resolves in checks:
        for resolve in resolves:
            reqs = _requirement_names(REPO / "packages" / f"requirements-{resolve.replace('python-', '')}.txt")
            assert deps <= reqs, f"{pkg.name}: add {sorted(deps - reqs)} to the {resolve} requirements"
    if "torch" in _third_party(meta.get("dependencies", [])):
        assert _resolves(calls["python_sources"]) == {"torch"}, "torch belongs to the torch resolve only"
    else:
        assert "python-default" in _resolves(calls["python_sources"]), f"{pkg.name} must install without torch"


def test_pants_toml_names_existing_resolves():
    conf = tomllib.loads((REPO / "pants.toml").read_text())
    resolves = set(conf["python"]["resolves"])
    assert resolves == {"python-default", "torch"}
    used = set()
    for build in [REPO / "packages" / "BUILD", *(p / "BUILD" for p in PACKAGES)]:
        for call in _build_calls(build):
            if _kw(call, "resolve") is not None:
                used |= _resolves(call)
    assert used <= resolves
    for build in (REPO / "packages").glob("*/BUILD"):
        assert build.parent in PACKAGES


_RUN_BY_PATH = re.compile(r"""with_name\(\s*["']([\w.-]+\.py)["']\s*\)""")


def _test_util_sources(build: Path) -> set[str]:
    sources: set[str] = set()
    for call in _build_calls(build):
        if call.func.id in ("python_test_utils", "python_sources", "python_tests", "resources", "files"):
            sources.update(_literal(_kw(call, "sources")) or [])
    return sources


@pytest.mark.parametrize("pkg", PACKAGES, ids=lambda p: p.name)
def test_helpers_run_by_path_are_in_the_build(pkg: Path):
    """A script a test starts by path (``Path(__file__).with_name("worker.py")``) must be a source of the BUILD
    file, or Pants leaves it out of the sandbox and the test fails there though it passes here."""
    declared = _test_util_sources(pkg / "BUILD")
    patterns = [re.compile(re.escape(s).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*") + "$") for s in declared]
    for test in sorted((pkg / "tests").glob("*.py")):
        for name in _RUN_BY_PATH.findall(test.read_text()):
            rel = f"tests/{name}"
            assert any(p.match(rel) for p in patterns), f"{pkg.name}/BUILD: add {rel} (run by path by {test.name})"
