"""The CLI: help everywhere, an end-to-end harness run from the shipped config, and one-line refusals
that leave no complete-looking artifact."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner
from evaluate_helpers import TASK_DATA

from bignlp_contracts import read_manifest, sha256_file
from bignlp_evaluate.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _error_line(result) -> str:
    lines = [x for x in result.stderr.splitlines() if x.startswith("bignlp-evaluate: error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [[], ["harness"], ["download"]])
def test_every_command_has_help_with_an_example(command):
    result = _run(*command, "--help")
    assert result.exit_code == 0
    assert "Example" in result.output or not command


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "bignlp_evaluate", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and "0.1.0" in result.stdout


def test_harness_from_the_launcher_config(gpt_checkpoint, tmp_path, hf_datasets_cache):
    out = tmp_path / "results" / "gpt3_126m" / "eval_all"
    result = _run("harness", "--config", "gpt3/evaluate_all", "--checkpoint", str(gpt_checkpoint),
                  "run.tasks=[lambada,wikitext2]", f"base_results_dir={tmp_path / 'results'}",
                  "run.model_train_name=gpt3_126m", f"run.data_dir={TASK_DATA}", "model.precision=32",
                  "model.eval_batch_size=2", "model.device=cpu")
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out / "results.md")
    assert "loglikelihood: 4/4 (100%)" in result.stderr  # the progress line of each request kind
    assert "loglikelihood_rolling windows:" in result.stderr
    manifest = read_manifest(out, verify="sha256")
    assert manifest.kind == "evaluation"
    ckpt_input = manifest.inputs[0]
    assert ckpt_input["manifest_sha256"] == sha256_file(gpt_checkpoint / "manifest.json")
    assert {i["path"].rsplit("/", 1)[-1] for i in manifest.inputs[1:]} == {"lambada.jsonl", "wikitext2.jsonl"}
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [(r["task"], r["metric"]) for r in rows] == [
        ("lambada", "acc"), ("lambada", "perplexity"),
        ("wikitext2", "word_perplexity"), ("wikitext2", "byte_perplexity"), ("wikitext2", "bits_per_byte")]
    table = (out / "results.md").read_text()
    assert "| lambada | Accuracy |" in table and "|  | PPL |" in table and "| wikitext2 | Word PPL |" in table
    assert json.loads((out / "results.json").read_text())["results"]["wikitext"]["sample_len"] == 2
    assert manifest.config["model"]["eval_batch_size"] == 2
    # an evaluation is never overwritten
    again = _run("harness", "--checkpoint", str(gpt_checkpoint), "--tasks", "lambada", "--data-dir", str(TASK_DATA),
                 "--output", str(out))
    assert again.exit_code == 2 and "already exists" in _error_line(again)


def _harness(checkpoint, data_dir, out, tasks="lambada"):
    return _run("harness", "--checkpoint", str(checkpoint), "--tasks", tasks, "--data-dir", str(data_dir),
                "--output", str(out))


def test_unknown_task_names_the_closest(gpt_checkpoint, tmp_path):
    result = _harness(gpt_checkpoint, TASK_DATA, tmp_path / "out", tasks="lambda,piqa")
    assert result.exit_code == 2
    assert "unknown task 'lambda'" in _error_line(result) and "lambada" in _error_line(result)
    assert not (tmp_path / "out").exists()


def test_missing_task_file_names_it_and_the_download_command(gpt_checkpoint, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(TASK_DATA / "piqa.jsonl", data)
    result = _harness(gpt_checkpoint, data, tmp_path / "out", tasks="piqa,boolq")
    assert result.exit_code == 4
    line = _error_line(result)
    assert f"no task file {data / 'boolq.jsonl'}" in line and "bignlp-evaluate download --tasks boolq" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("row", "says"), [
    ('{"goal": "x", "sol1": "a", "sol2": "b", "label": 0', "not JSON"),
    ('{"goal": "x", "sol1": "a", "label": 0}', "no field 'sol2'"),
    ('{"goal": "x", "sol1": "a", "sol2": "b", "label": "0"}', "field 'label' is a str, expected integer"),
    ('["goal"]', "a JSON list"),
])
def test_malformed_task_file_names_file_and_line(gpt_checkpoint, tmp_path, row, says):
    data = tmp_path / "data"
    data.mkdir()
    good = (TASK_DATA / "piqa.jsonl").read_text().splitlines()[0]
    (data / "piqa.jsonl").write_text(f"{good}\n{row}\n")
    result = _harness(gpt_checkpoint, data, tmp_path / "out", tasks="piqa")
    assert result.exit_code == 4
    assert f"{data / 'piqa.jsonl'}:2: " in _error_line(result) and says in _error_line(result)
    assert not (tmp_path / "out").exists()


def test_t5_checkpoint_is_refused_before_loading(t5_checkpoint, tmp_path):
    result = _harness(t5_checkpoint, TASK_DATA, tmp_path / "out")
    assert result.exit_code == 3
    assert "t5" in _error_line(result) and "decoder-only" in _error_line(result)
    assert not (tmp_path / "out").exists()


def test_no_checkpoint_and_bad_config_values(tmp_path):
    result = _run("harness", "--tasks", "lambada", "--data-dir", str(TASK_DATA), "--output", str(tmp_path / "o"))
    assert result.exit_code == 2 and "no checkpoint" in _error_line(result)
    result = _run("harness", "--config", "gpt3/evaluate_all", "model.precison=32")
    assert result.exit_code == 2 and "precision" in _error_line(result)  # the close match
    result = _run("harness", "--config", "gpt3/evaluate_all", "model.model_type=nemo-t5")
    assert result.exit_code == 2 and "GPT" in _error_line(result)


def test_another_lm_eval_task_passes_through_from_a_local_file(gpt_checkpoint, tmp_path, hf_datasets_cache):
    data = tmp_path / "data"
    data.mkdir()
    rows = ['{"question": "Which is a liquid?", "choices": {"text": ["stone", "water"], "label": ["A", "B"]}, '
            '"answerKey": "B"}',
            '{"question": "What melts ice?", "choices": {"text": ["heat", "cold"], "label": ["A", "B"]}, '
            '"answerKey": "A"}']
    (data / "arc_easy.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    result = _harness(gpt_checkpoint, data, out, tasks="arc_easy")
    assert result.exit_code == 0, result.output
    summary = read_manifest(out).summary
    assert set(summary["metrics"]["arc_easy"]) == {"acc", "acc_norm"}
    assert json.loads((out / "results.json").read_text())["results"]["arc_easy"]["sample_len"] == 2
