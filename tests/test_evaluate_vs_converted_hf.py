"""THE check of bignlp-evaluate: its harness model and lm-eval's own ``hf`` backend score the same tasks alike.

A small random GPT checkpoint is exported with ``bignlp-convert to-hf``; lm-eval's ``HFLM`` loads that
directory as any Hugging Face model (``AutoModelForCausalLM`` and ``AutoTokenizer`` from the files
the export wrote) and ``bignlp-evaluate harness`` scores the checkpoint itself, both on the stock
lm-eval tasks over the same local files. Accuracies must agree to 1e-4 (absolute), perplexities to
1e-4 (relative), on all eight of the seed's tasks.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO, console_script

sys.path.insert(0, str(REPO / "packages" / "evaluate" / "tests"))
from bignlp_evaluate.tasks import STANDARD_TASKS, resolve_tasks, write_task_overrides  # noqa: E402
from evaluate_helpers import TASK_DATA, make_checkpoint  # noqa: E402  (the evaluate package's test helpers)

RELATIVE = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval-vs-hf")
    os.environ.update(OFFLINE, HF_DATASETS_CACHE=str(root / "hf_datasets"))
    make_checkpoint(root / "gpt", "gpt")
    out = subprocess.run([console_script("bignlp-convert"), "to-hf", "--checkpoint", str(root / "gpt"),
                          "--output", str(root / "hf")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


@pytest.fixture(scope="module")
def ours(work) -> dict:
    out = subprocess.run([console_script("bignlp-evaluate"), "harness", "--checkpoint", str(work / "gpt"),
                          "--tasks", "all_tasks", "--data-dir", str(TASK_DATA), "--output", str(work / "eval"),
                          "--batch-size", "3", "--device", "cpu"],
                         capture_output=True, text=True, timeout=900, env={**os.environ, **OFFLINE})
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((work / "eval" / "results.json").read_text())["results"]


@pytest.fixture(scope="module")
def reference(work) -> dict:
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    config = json.loads((work / "hf" / "config.json").read_text())
    lm = HFLM(pretrained=str(work / "hf"), batch_size=2, max_length=config["n_positions"], device="cpu")
    specs = resolve_tasks(list(STANDARD_TASKS))
    (work / "include").mkdir()
    write_task_overrides(specs, TASK_DATA, work / "include")
    results = lm_eval.simple_evaluate(model=lm, tasks=[s.lm_eval_task for s in specs], bootstrap_iters=0,
                                      task_manager=TaskManager(include_path=str(work / "include"),
                                                               include_defaults=False),
                                      log_samples=False)
    return results["results"]


@pytest.mark.parametrize("task", list(STANDARD_TASKS))
def test_same_metrics_as_lm_eval_hf_backend_on_the_converted_model(ours, reference, task):
    lm_name = STANDARD_TASKS[task].lm_eval_task
    got, want = ours[lm_name], reference[lm_name]
    metrics = [k for k, v in want.items() if "," in k and "_stderr" not in k and isinstance(v, float)]
    assert metrics, want
    for key in metrics:
        name = key.split(",")[0]
        if name in RELATIVE:
            assert math.isclose(got[key], want[key], rel_tol=1e-4), (task, key, got[key], want[key])
        else:
            assert abs(got[key] - want[key]) <= 1e-4, (task, key, got[key], want[key])
    assert got["sample_len"] == want["sample_len"]


def test_every_metric_of_the_seed_table_is_reported(work, ours):
    summary = json.loads((work / "eval" / "manifest.json").read_text())["summary"]["metrics"]
    assert set(summary) == set(STANDARD_TASKS)
    assert set(summary["lambada"]) == {"acc", "perplexity"}
    assert set(summary["piqa"]) == set(summary["hellaswag"]) == {"acc", "acc_norm"}
    for wiki in ("wikitext2", "wikitext103"):
        assert set(summary[wiki]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
