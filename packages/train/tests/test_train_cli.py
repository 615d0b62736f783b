"""CLI: help on every command, python -m, exit codes of purpose-built failures."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner
from train_helpers import tiny_overrides

from bignlp_train.cli import main


@pytest.mark.parametrize("args", [["--help"], ["pretrain", "--help"], ["show-config", "--help"]])
def test_help(args):
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0
    assert "Usage:" in result.output
    if args != ["--help"]:
        assert "Example:" in result.output


def test_python_dash_m():
    out = subprocess.run([sys.executable, "-m", "bignlp_train", "--help"], capture_output=True, text=True, check=True)
    assert "pretrain" in out.stdout and "show-config" in out.stdout


def test_missing_data_prefix_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       f"exp_manager.explicit_log_dir={tmp_path}"])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "model.data.data_prefix is not set" in result.stderr and "bignlp-dataprep" in result.stderr


def test_missing_dataset_exits_3(tmp_path):
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(tmp_path / "none" / "x_text_document", tmp_path / "run")])
    assert result.exit_code == 3
    assert result.stderr.count("\n") == 1 and "bignlp-dataprep preprocess" in result.stderr


def test_bad_layout_under_torchrun_fails_before_joining(dataset, tmp_path, monkeypatch):
    # rank 0 of 3 (torchrun variables, no peers): the layout check must fail before any rendezvous
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu", *tiny_overrides(dataset, tmp_path)])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "model.global_batch_size=4 is not a multiple of model.micro_batch_size=2 × data-parallel size 3" in (
        result.stderr)


def test_errors_are_one_line_on_a_fresh_interpreter(dataset, tmp_path):
    # megatron-core is imported for the first time here: its import-time warnings must not leak
    args = [sys.executable, "-m", "bignlp_train", "pretrain", "--config", "gpt3/tiny-cpu",
            *tiny_overrides(dataset, tmp_path, "model.data.splits_string=99990,8,2")]
    out = subprocess.run(args, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "leaves the valid split" in out.stderr, out.stderr
    assert not (tmp_path / "config.yaml").exists()  # refused before writing anything
