"""The sbatch templates parse, and every bignlp-* option they pass exists in that CLI's --help."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import REPO, console_script, run

TEMPLATES = sorted((REPO / "slurm-templates").glob("*.sbatch"))


def _commands(text: str) -> list[tuple[str, str, set[str]]]:
    """(tool, subcommand, {--options}) for each bignlp-* call, following backslash continuations."""
    joined = re.sub(r"\\\n", " ", text)
    found = []
    for line in joined.splitlines():
        if line.lstrip().startswith("#"):
            continue
        m = re.search(r"\b(bignlp-[a-z-]+)\s+([a-z][a-z-]*)", line)
        if m:
            found.append((m.group(1), m.group(2), set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", line[m.end():]))))
    return found


def test_templates_exist():
    names = {t.name for t in TEMPLATES}
    assert {"dataprep.sbatch", "dataprep-array.sbatch", "dataprep-finalize.sbatch", "train.sbatch"} <= names


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_bash_syntax(template: Path):
    out = run(["bash", "-n", str(template)])
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_options_exist_in_cli_help(template: Path):
    text = template.read_text()
    assert text.startswith("#!/bin/bash") and "#SBATCH" in text
    commands = _commands(text)
    assert commands, f"{template.name} runs no bignlp-* command"
    for tool, sub, options in commands:
        out = run([console_script(tool), sub, "--help"])
        assert out.returncode == 0, f"{tool} {sub} --help failed: {out.stderr}"
        missing = {o for o in options if o not in out.stdout}
        assert not missing, f"{template.name}: {tool} {sub} has no option(s) {sorted(missing)}"


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_missing_required_parameter_is_one_clear_line(template: Path, tmp_path: Path):
    out = run(["bash", str(template)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "set " in lines[0], out.stderr
