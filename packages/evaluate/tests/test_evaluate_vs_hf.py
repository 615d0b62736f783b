"""THE check: our harness model and lm-eval's own ``hf`` backend score the same tasks alike.

Both run the stock lm-eval tasks over the same local files (tests/data); the reference is ``HFLM``
given a transformers ``GPT2LMHeadModel`` holding the checkpoint's weights (``bignlp_models.hf_gpt2``)
and the GPT-2 tokenizer the checkpoint carries. Accuracies must agree to 1e-4 (absolute),
perplexities to 1e-4 (relative), on all eight of the seed's tasks.
"""

from __future__ import annotations

import json
import math

import pytest
from evaluate_helpers import REPO_DATA, TASK_DATA

from bignlp_evaluate.harness import evaluate_checkpoint
from bignlp_evaluate.tasks import STANDARD_TASKS, resolve_tasks, write_task_overrides

RELATIVE = {"perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}


@pytest.fixture(scope="module")
def ours(gpt_checkpoint, tmp_path_factory, hf_datasets_cache):
    out = tmp_path_factory.mktemp("eval") / "eval_all"
    evaluate_checkpoint(gpt_checkpoint, tasks="all_tasks", data_dir=TASK_DATA, output=out, batch_size=3)
    return out


@pytest.fixture(scope="module")
def reference(gpt_checkpoint, tmp_path_factory, hf_datasets_cache):
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager
    from transformers import GPT2TokenizerFast

    from bignlp_models import load_model
    from bignlp_models.hf_gpt2 import to_hf_gpt2

    loaded = load_model(gpt_checkpoint)
    hf = to_hf_gpt2(loaded.model)
    tokenizer = GPT2TokenizerFast.from_pretrained(str(REPO_DATA / "gpt2"))
    lm = HFLM(pretrained=hf, tokenizer=tokenizer, batch_size=2, max_length=loaded.config.max_position_embeddings,
              device="cpu")
    include = tmp_path_factory.mktemp("include")
    specs = resolve_tasks(list(STANDARD_TASKS))
    write_task_overrides(specs, TASK_DATA, include)
    results = lm_eval.simple_evaluate(model=lm, tasks=[s.lm_eval_task for s in specs], bootstrap_iters=0,
                                      task_manager=TaskManager(include_path=str(include), include_defaults=False),
                                      log_samples=False)
    return results["results"]


@pytest.mark.parametrize("task", list(STANDARD_TASKS))
def test_same_metrics_as_lm_eval_hf_backend(ours, reference, task):
    lm_name = STANDARD_TASKS[task].lm_eval_task
    got = json.loads((ours / "results.json").read_text())["results"][lm_name]
    want = reference[lm_name]
    metrics = [k for k, v in want.items() if "," in k and "_stderr" not in k and isinstance(v, float)]
    assert metrics, want
    for key in metrics:
        name = key.split(",")[0]
        if name in RELATIVE:
            assert math.isclose(got[key], want[key], rel_tol=1e-4), (task, key, got[key], want[key])
        else:
            assert abs(got[key] - want[key]) <= 1e-4, (task, key, got[key], want[key])
    assert got["sample_len"] == want["sample_len"]


def test_every_metric_of_the_seed_table_is_reported(ours):
    summary = json.loads((ours / "manifest.json").read_text())["summary"]["metrics"]
    assert set(summary) == set(STANDARD_TASKS)
    assert set(summary["lambada"]) == {"acc", "perplexity"}
    assert set(summary["piqa"]) == set(summary["hellaswag"]) == {"acc", "acc_norm"}
    for wiki in ("wikitext2", "wikitext103"):
        assert set(summary[wiki]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
