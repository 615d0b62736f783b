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
