"""bignlp-evaluate squad|xquad|glue|custom: SQuAD scoring against the official v1.1 algorithm on the real dev set,
and the commands end to end on a small T5 checkpoint (evaluation artifact, per-language table, refusals)."""

from __future__ import annotations

import collections
import json
import re
import string
from pathlib import Path

import pytest
from click.testing import CliRunner
from evaluate_helpers import make_checkpoint

from bignlp_contracts import read_manifest
from bignlp_evaluate.cli import main
from bignlp_evaluate.seq2seq import load_examples, score_groups

REAL_DEV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "eval" / "squad-v1.1-dev.json.gz"
SLICE = Path(__file__).resolve().parents[3] / "tests" / "data" / "squad" / "dev-v1.1-slice.json"


# The official SQuAD v1.1 evaluation, written from its published description (normalise: lower case, drop
# punctuation and the articles a/an/the, collapse whitespace; EM and token F1, each the max over the gold answers).
def _normalise(text: str) -> str:
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


def _f1(prediction: str, gold: str) -> float:
    p, g = _normalise(prediction).split(), _normalise(gold).split()
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _official(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    em = sum(max(float(_normalise(p) == _normalise(a)) for a in golds) for p, golds in zip(predictions, answers))
    f1 = sum(max(_f1(p, a) for a in golds) for p, golds in zip(predictions, answers))
    return {"exact_match": 100.0 * em / len(predictions), "f1": 100.0 * f1 / len(predictions)}


@pytest.mark.skipif(not REAL_DEV.is_file(), reason="the real SQuAD v1.1 dev set (../shared/data/eval) is not here")
def test_squad_scoring_equals_the_official_script_on_the_real_dev_set():
    examples = load_examples("squad", REAL_DEV)
    assert len(examples) == 10565
    answers = [e.answers for e in examples]
    first = [a[0] for a in answers]
    assert score_groups("squad", examples, first)["squad"] == {"exact_match": 100.0, "f1": 100.0}
    assert score_groups("squad", examples, ["Zyxwv qqqq"] * len(examples))["squad"] == {"exact_match": 0.0, "f1": 0.0}
    # partial answers: the first word of the first gold answer, and the last answer with "The" in front
    # (torchmetrics sums in float32: equal to the reference within 1e-4 points)
    some, golds = examples[:2000], answers[:2000]
    partial = [a[0].split()[0] if i % 2 else f"The {a[-1]}!" for i, a in enumerate(golds)]
    ours, reference = score_groups("squad", some, partial)["squad"], _official(partial, golds)
    assert ours["exact_match"] == pytest.approx(reference["exact_match"], abs=1e-4)
    assert ours["f1"] == pytest.approx(reference["f1"], abs=1e-4)
    assert 0 < reference["f1"] < 100


def _run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def t5_checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("t5") / "ckpt", "t5")


def test_squad_and_xquad_commands_write_an_evaluation(t5_checkpoint, tmp_path):
    result = _run("squad", "--checkpoint", str(t5_checkpoint), "--data", str(SLICE), "--output", str(tmp_path / "e"),
                  "--device", "cpu", "--max-new-tokens", "4", "--max-source-length", "64")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "e", verify="sha256")
    assert manifest.kind == "evaluation" and set(manifest.summary["metrics"]["squad"]) == {"exact_match", "f1"}
    payload = json.loads((tmp_path / "e" / "results.json").read_text())
    assert len(payload["predictions"]) == 100
    # the artifact's scores are those of its predictions
    preds = [p["prediction"] for p in payload["predictions"]]
    golds = [p["answers"] for p in payload["predictions"]]
    assert payload["results"]["squad"] == pytest.approx(_official(preds, golds))
    xquad = tmp_path / "xq"
    xquad.mkdir()
    for lang in ("de", "en"):
        (xquad / f"xquad.{lang}.json").write_bytes(SLICE.read_bytes())
    result = _run("xquad", "--checkpoint", str(t5_checkpoint), "--data", str(xquad), "--output", str(tmp_path / "x"),
                  "--device", "cpu", "--max-new-tokens", "2", "--max-source-length", "32")
    assert result.exit_code == 0, result.output
    assert set(read_manifest(tmp_path / "x").summary["metrics"]) == {"de", "en", "average"}
    assert "| de | exact_match |" in result.output


def test_custom_and_glue_text_files(t5_checkpoint, tmp_path):
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("a first source\nanother one\n")
    tgt.write_text("x\ny\n")
    result = _run("custom", "--checkpoint", str(t5_checkpoint), "--data", str(src), "--targets", str(tgt), "--output",
                  str(tmp_path / "c"), "--device", "cpu", "--max-new-tokens", "2")
    assert result.exit_code == 0, result.output
    assert "exact_string_match" in read_manifest(tmp_path / "c").summary["metrics"]["custom"]
    tgt.write_text("only one line\n")
    result = _run("glue", "--checkpoint", str(t5_checkpoint), "--data", str(src), "--targets", str(tgt), "--output",
                  str(tmp_path / "g"), "--device", "cpu")
    assert result.exit_code != 0 and "has 2 lines but" in result.output and "has 1" in result.output
    assert not (tmp_path / "g").exists()


def test_gpt_checkpoint_refused(tmp_path):
    gpt = make_checkpoint(tmp_path / "gpt", "gpt")
    result = _run("squad", "--checkpoint", str(gpt), "--data", str(SLICE), "--output", str(tmp_path / "e"),
                  "--device", "cpu")
    assert result.exit_code != 0 and "holds a gpt model" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "e").exists()


# SQuAD v2.0's official evaluation, written from its published description: as v1.1, but a gold answer that
# normalises to nothing is dropped, an unanswerable question's gold is the empty answer, and F1 against or of an
# empty answer is 1 when both are empty, else 0.
def _official_v2(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    def f1(p: str, g: str) -> float:
        pt, gt = _normalise(p).split(), _normalise(g).split()
        return float(pt == gt) if not pt or not gt else _f1(p, g)

    em_all, f1_all = [], []
    for p, golds in zip(predictions, answers):
        golds = [g for g in golds if _normalise(g)] or [""]
        em_all.append(max(float(_normalise(p) == _normalise(g)) for g in golds))
        f1_all.append(max(f1(p, g) for g in golds))
    return {"exact_match": 100.0 * sum(em_all) / len(em_all), "f1": 100.0 * sum(f1_all) / len(f1_all)}


def _v2_file(path: Path) -> Path:
    """The shipped v1.1 slice with every third question made unanswerable, as v2.0 marks them."""
    doc = json.loads(SLICE.read_text())
    n = 0
    for article in doc["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                if n % 3 == 0:
                    qa["is_impossible"], qa["plausible_answers"], qa["answers"] = True, qa["answers"], []
                n += 1
    path.write_text(json.dumps(doc))
    return path


def test_squad_v2_scoring_follows_the_official_v2_rules(tmp_path):
    from bignlp_evaluate.prompt import squad_scores
    from bignlp_evaluate.seq2seq import squad_v2_scores

    # answerable questions only: v2.0's scores are v1.1's (torchmetrics, an independent implementation)
    v1 = load_examples("squad", SLICE)
    partial = [e.answers[0].split()[0] if i % 2 else f"the {e.answers[-1]}" for i, e in enumerate(v1)]
    ours, reference = squad_v2_scores(partial, [e.answers for e in v1]), squad_scores(partial, [e.answers for e in v1])
    assert ours["exact_match"] == pytest.approx(reference["exact_match"], abs=1e-4)
    assert ours["f1"] == pytest.approx(reference["f1"], abs=1e-4)
    # with unanswerable questions: "unanswerable" is the empty answer; every rule of the script
    examples = load_examples("squad", _v2_file(tmp_path / "dev-v2.json"))
    golds = [e.answers for e in examples]
    assert sum(not g for g in golds) == 34 and all(g for g in golds[1::3])
    preds = [("Unanswerable " if i % 4 else "no idea") if not g else (g[0] if i % 2 else "unanswerable")
             for i, g in enumerate(golds)]
    scores = score_groups("squad", examples, preds)["squad"]
    empty = ["" if p.strip().lower() == "unanswerable" else p for p in preds]
    assert scores["exact_match"] == pytest.approx(_official_v2(empty, golds)["exact_match"])
    assert scores["f1"] == pytest.approx(_official_v2(empty, golds)["f1"])
    no = [i for i, g in enumerate(golds) if not g]
    has = [i for i, g in enumerate(golds) if g]
    assert scores["NoAns_exact_match"] == pytest.approx(100.0 * sum(1 for i in no if i % 4) / len(no))
    assert scores["HasAns_exact_match"] == pytest.approx(100.0 * sum(1 for i in has if i % 2) / len(has))
    assert 0 < scores["NoAns_f1"] < 100 and 0 < scores["HasAns_f1"] < 100
    # a different no-answer text
    custom = score_groups("squad", examples, ["" if not g else g[0] for g in golds], unanswerable="none")["squad"]
    assert custom["exact_match"] == 100.0


def test_squad_command_scores_a_v2_file(t5_checkpoint, tmp_path):
    data = _v2_file(tmp_path / "dev-v2.json")
    result = _run("squad", "--checkpoint", str(t5_checkpoint), "--data", str(data), "--output", str(tmp_path / "e"),
                  "--device", "cpu", "--max-new-tokens", "2", "--max-source-length", "32",
                  "--unanswerable-text", "no answer")
    assert result.exit_code == 0, result.output
    metrics = read_manifest(tmp_path / "e").summary["metrics"]["squad"]
    assert {"exact_match", "f1", "HasAns_f1", "NoAns_f1", "NoAns_exact_match"} <= set(metrics)
    payload = json.loads((tmp_path / "e" / "results.json").read_text())
    assert sum(not p["answers"] for p in payload["predictions"]) == 34
    assert "|  | NoAns_f1 |" in result.output


def test_two_processes_give_the_answers_of_one(t5_checkpoint, tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = []
    for name, nproc in (("one", "1"), ("two", "2")):
        cmd = [sys.executable, "-m", "bignlp_evaluate", "squad", "--checkpoint", str(t5_checkpoint), "--data",
               str(SLICE), "--output", str(tmp_path / name), "--device", "cpu", "--max-new-tokens", "3",
               "--max-source-length", "48", "--batch-size", "7", "--nproc-per-node", nproc]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stderr.count("loading ") == 1  # one progress stream (rank 0's)
        results.append(json.loads((tmp_path / name / "results.json").read_text()))
    assert results[0]["predictions"] == results[1]["predictions"] and len(results[1]["predictions"]) == 100
    assert results[0]["results"] == results[1]["results"]
    assert [read_manifest(tmp_path / d).summary["processes"] for d in ("one", "two")] == [1, 2]
