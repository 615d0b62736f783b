"""Evaluation config: the shipped launcher config, a launcher-form file, overrides, unknown keys; task names."""

from __future__ import annotations

import pytest

from bignlp_contracts import ConfigError
from bignlp_evaluate.config import load_evaluation_config, shipped_configs
from bignlp_evaluate.results import Row, markdown_table
from bignlp_evaluate.tasks import STANDARD_TASKS, parse_task_names, resolve_tasks


@pytest.mark.parametrize("name", shipped_configs())
def test_every_shipped_config_loads(name):
    cfg = load_evaluation_config(name)
    assert cfg.run.tasks == "all_tasks"


def test_launcher_keys_and_interpolations():
    cfg = load_evaluation_config("gpt3/evaluate_all", ["run.model_train_name=gpt3_126m", "base_results_dir=/r",
                                                       "evaluation.model.eval_batch_size=16"])
    assert cfg.run.name == "eval_all_gpt3_126m"
    assert cfg.run.results_dir == "/r/gpt3_126m/eval_all"
    assert cfg.model.checkpoint_folder == "/r/gpt3_126m/results/checkpoints"
    assert cfg.model.eval_batch_size == 16 and cfg.model.precision == "bf16"


def test_a_launcher_file_with_its_evaluation_section(tmp_path):
    path = tmp_path / "conf.yaml"
    path.write_text("evaluation:\n  run:\n    tasks: lambada\n    train_dir: /t\n  model:\n"
                    "    checkpoint_folder: ${evaluation.run.train_dir}/results/checkpoints\n    precision: 32\n")
    cfg = load_evaluation_config(path)
    assert cfg.run.tasks == "lambada" and cfg.model.checkpoint_folder == "/t/results/checkpoints"


def test_unknown_key_and_bad_values():
    with pytest.raises(ConfigError, match="eval_batch_size"):
        load_evaluation_config(None, ["model.eval_batch_sise=3"])
    with pytest.raises(ConfigError, match="precision"):
        load_evaluation_config(None, ["model.precision=8"])
    with pytest.raises(ConfigError, match="at least 1"):
        load_evaluation_config(None, ["model.eval_batch_size=0"])


def test_task_names():
    assert parse_task_names("all_tasks") == list(STANDARD_TASKS)
    assert parse_task_names("lambada_openai, piqa,lambada") == ["lambada", "piqa"]
    assert parse_task_names(["wikitext103", "wikitext2"]) == ["wikitext103", "wikitext2"]
    assert [s.lm_eval_task for s in resolve_tasks(["wikitext2", "wikitext103", "lambada"])] == [
        "wikitext", "wikitext103", "lambada_openai"]
    assert resolve_tasks(["arc_easy"], known_lm_eval_tasks=["arc_easy"])[0].stock_yaml is None
    with pytest.raises(ConfigError, match="did you mean hellaswag"):
        resolve_tasks(["helaswag"], known_lm_eval_tasks=[])
    with pytest.raises(ConfigError, match="no task"):
        parse_task_names(" , ")


def test_markdown_table_in_the_seed_form():
    rows = [Row("piqa", "acc", 0.6121, None), Row("piqa", "acc_norm", 0.6197, None),
            Row("wikitext2", "word_perplexity", 31.349, None)]
    assert markdown_table(rows, "126M").splitlines() == [
        "| Task | Metric | 126M |", "| --- | --- | --- |", "| piqa | Accuracy | 61.21% |",
        "|  | Accuracy Norm | 61.97% |", "| wikitext2 | Word PPL | 31.35 |"]
