"""``--nproc-per-node 2``: lm-eval splits every task's documents over two gloo processes; the results equal one's."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

from evaluate_helpers import TASK_DATA

from bignlp_evaluate.tasks import STANDARD_TASKS

TASKS = "lambada,hellaswag,wikitext2"  # one of each request kind: loglikelihood, multiple choice, rolling


def _run(checkpoint, output, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "bignlp_evaluate", "harness", "--checkpoint", str(checkpoint), "--tasks", TASKS,
           "--data-dir", str(TASK_DATA), "--output", str(output), "--batch-size", "3", "--device", "cpu", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads((output / "results.json").read_text())["results"], out


def test_two_processes_give_the_results_of_one(gpt_checkpoint, tmp_path, hf_datasets_cache):
    one, _ = _run(gpt_checkpoint, tmp_path / "one")
    two, out = _run(gpt_checkpoint, tmp_path / "two", "--nproc-per-node", "2")
    assert out.stderr.count("loading ") == 1  # one progress stream (rank 0's)
    for task in TASKS.split(","):
        name = STANDARD_TASKS[task].lm_eval_task
        metrics = [k for k, v in one[name].items() if "," in k and "_stderr" not in k and isinstance(v, float)]
        assert metrics
        for key in metrics:  # summed in another order: equal up to float rounding
            assert math.isclose(two[name][key], one[name][key], rel_tol=1e-9, abs_tol=1e-12), (name, key)
        assert two[name]["sample_len"] == one[name]["sample_len"]
    manifests = [json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("one", "two")]
    assert [m["summary"]["processes"] for m in manifests] == [1, 2]
    assert manifests[0]["summary"]["metrics"].keys() == manifests[1]["summary"]["metrics"].keys()


def test_nproc_refuses_an_existing_output_before_starting(gpt_checkpoint, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("taken")
    cmd = [sys.executable, "-m", "bignlp_evaluate", "harness", "--checkpoint", str(gpt_checkpoint), "--tasks",
           "lambada", "--data-dir", str(TASK_DATA), "--output", str(tmp_path / "out"), "--nproc-per-node", "2"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "not empty" in out.stderr


def test_layers_split_over_two_devices_give_the_results_of_one(gpt_checkpoint, tmp_path, hf_datasets_cache):
    from bignlp_evaluate.harness import evaluate_checkpoint

    results = []
    for name, device in (("one", "cpu"), ("split", "cpu,cpu")):
        out = evaluate_checkpoint(gpt_checkpoint, tasks="lambada", data_dir=TASK_DATA, output=tmp_path / name,
                                  batch_size=3, device=device)
        results.append(json.loads((out / "results.json").read_text())["results"]["lambada_openai"])
    assert results[0]["acc,none"] == results[1]["acc,none"]
    assert math.isclose(results[0]["perplexity,none"], results[1]["perplexity,none"], rel_tol=1e-9)
