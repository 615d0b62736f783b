"""BigNLPLM beyond the task scores: generation against lm-eval's hf backend, long inputs, progress lines."""

from __future__ import annotations

import pytest
from evaluate_helpers import REPO_DATA
from lm_eval.api.instance import Instance

from bignlp_evaluate.progress import Progress, format_duration


@pytest.fixture(scope="module")
def both(gpt_checkpoint):
    from lm_eval.models.huggingface import HFLM
    from transformers import GPT2TokenizerFast

    from bignlp_evaluate.lm import BigNLPLM
    from bignlp_models import load_model
    from bignlp_models.hf_gpt2 import to_hf_gpt2

    loaded = load_model(gpt_checkpoint)
    lines: list[str] = []
    ours = BigNLPLM(loaded, batch_size=2, log=lines.append, progress_every_s=0.0)
    hf = HFLM(pretrained=to_hf_gpt2(loaded.model), tokenizer=GPT2TokenizerFast.from_pretrained(str(REPO_DATA / "gpt2")),
              batch_size=2, max_length=loaded.config.max_position_embeddings, device="cpu")
    return ours, hf, lines


def _requests(kind: str, args: list[tuple]) -> list[Instance]:
    return [Instance(request_type=kind, doc={}, arguments=a, idx=i) for i, a in enumerate(args)]


def test_generate_until_matches_hf_greedy_and_stops_at_the_stop_sequence(both):
    ours, hf, _ = both
    prompts = ["The river flows north through the valley", "Question: How do you keep bread fresh?\nAnswer:",
               "A"]
    args = [(p, {"until": ["\n\n", "."], "max_gen_toks": 12, "do_sample": False}) for p in prompts]
    got = ours.generate_until(_requests("generate_until", args), disable_tqdm=True)
    want = hf.generate_until(_requests("generate_until", args), disable_tqdm=True)
    assert got == want
    assert all("." not in text and "\n\n" not in text for text in got)


def test_long_contexts_keep_their_end_as_hf_does(both):
    ours, hf, _ = both
    context = " ".join(["the harbour town sits on a narrow bay"] * 20)  # > 64 positions
    args = [(context, " and the boats"), ("", "The cup fell"), ("Sam gave Alex a ride", " home")]
    got = ours.loglikelihood(_requests("loglikelihood", args), disable_tqdm=True)
    want = hf.loglikelihood(_requests("loglikelihood", args), disable_tqdm=True)
    for (a, greedy_a), (b, greedy_b) in zip(got, want):
        assert a == pytest.approx(b, rel=1e-5) and greedy_a == greedy_b


def test_progress_lines_count_requests(both):
    ours, _, lines = both
    lines.clear()
    ours.loglikelihood(_requests("loglikelihood", [("a b", " c")] * 5))
    assert lines[-1].startswith("loglikelihood: 5/5 (100%)") and "done in" in lines[-1]
    assert "ETA" in lines[0]


def test_progress_eta_and_durations():
    now = [0.0]
    lines: list[str] = []
    progress = Progress("windows", 100, lines.append, every_s=5, clock=lambda: now[0])
    now[0] = 10.0
    progress.update(25)
    now[0] = 12.0
    progress.update(5)  # within 5 s of the last line: quiet
    assert lines == ["windows: 25/100 (25%), 2.5/s, ETA 30s"]
    assert [format_duration(s) for s in (5, 75, 3700)] == ["5s", "1m15s", "1h01m"]
