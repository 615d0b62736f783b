"""Task data (bignlp-dataprep run --config squad/v1.1|squad/v2.0|xquad|glue/<task>): sources fetched from the
local fixture server, T5 text-to-text files and prompt-learning JSONL per split, the task-data manifest."""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import start_fixture_server, stop_fixture_server

from bignlp_contracts import read_manifest
from bignlp_dataprep.cli import main
from bignlp_dataprep.tasks import load_task
from bignlp_dataprep.tasks.config import shipped_tasks

SLICE = Path(__file__).resolve().parents[3] / "tests" / "data" / "squad"
MNLI_HEADER = ("index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
               "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n")


def _squad(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _mnli_rows(n: int, offset: int = 0) -> str:
    labels = ("entailment", "neutral", "contradiction")
    return "".join(f"{i}\t1\t{i}a\tfiction\t( x )\t( y )\t(ROOT x)\t(ROOT y)\tThe premise number {i + offset}.\t"
                   f"A hypothesis {i}.\t{labels[i % 3]}\t{labels[i % 3]}\n" for i in range(n))


@pytest.fixture(scope="module")
def task_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("taskwww")
    (root / "squad").mkdir()
    for name in ("train-v1.1-slice.json", "dev-v1.1-slice.json"):
        (root / "squad" / name).write_bytes((SLICE / name).read_bytes())
    # gzip as well: the reader sniffs the magic bytes
    (root / "squad" / "dev-v1.1-slice.json.gz").write_bytes(gzip.compress((SLICE / "dev-v1.1-slice.json").read_bytes()))
    v2 = _squad(SLICE / "dev-v1.1-slice.json")
    qa = v2["data"][0]["paragraphs"][0]["qas"][0]
    qa.update(is_impossible=True, answers=[])
    (root / "squad" / "dev-v2.0.json").write_text(json.dumps(v2), encoding="utf-8")
    (root / "xquad").mkdir()
    for lang in ("en", "de"):  # XQuAD's form (SQuAD v1.1 JSON); the fixture reuses the slice's questions
        (root / "xquad" / f"xquad.{lang}.json").write_bytes((SLICE / "dev-v1.1-slice.json").read_bytes())
    with zipfile.ZipFile(root / "MNLI.zip", "w") as zf:
        zf.writestr("MNLI/train.tsv", MNLI_HEADER + _mnli_rows(12))
        zf.writestr("MNLI/dev_matched.tsv", MNLI_HEADER + _mnli_rows(6, 100))
        zf.writestr("MNLI/dev_mismatched.tsv", MNLI_HEADER + _mnli_rows(3, 200))
    url, proc = start_fixture_server(root)
    yield url
    stop_fixture_server(proc)


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_squad_v11_from_urls_one_row_per_answer_dev_first_answer(task_server, tmp_path):
    out = tmp_path / "squad"
    # /flaky/1/: the first request is cut half-way; the downloader resumes it
    result = _run("--config", "squad/v1.1", f"data_dir={out}",
                  f"train_source={task_server}/flaky/1/squad/train-v1.1-slice.json",
                  f"dev_source={task_server}/files/squad/dev-v1.1-slice.json.gz", "download_backoff_s=0")
    assert result.exit_code == 0, result.output
    assert "task-data squad/v1.1" in result.output
    manifest = read_manifest(out, verify="sha256")
    assert manifest.kind == "task-data"
    train = [q for a in _squad(SLICE / "train-v1.1-slice.json")["data"] for p in a["paragraphs"] for q in p["qas"]]
    dev_articles = _squad(SLICE / "dev-v1.1-slice.json")["data"]
    dev = [(a["title"], p["context"], q) for a in dev_articles for p in a["paragraphs"] for q in p["qas"]]
    answers = [x["text"] for q in train for x in q["answers"]]
    assert _lines(out / "t5" / "train_tgt.txt") == answers  # one row per answer
    assert len(_lines(out / "t5" / "train_src.txt")) == len(answers)
    assert _lines(out / "t5" / "validation_tgt.txt") == [q["answers"][0]["text"] for _, _, q in dev]
    title, context, q = dev[0]
    assert _lines(out / "t5" / "validation_src.txt")[0] == (
        f"Title: {title} Paragraph: {' '.join(context.split())} Question: {q['question'].strip()}")
    val = [json.loads(x) for x in _lines(out / "prompt" / "validation.jsonl")]
    test = [json.loads(x) for x in _lines(out / "prompt" / "test.jsonl")]
    assert len(val) + len(test) == len(dev) and len(val) == len(dev) // 2
    assert set(val[0]) >= {"taskname", "context", "question", "answer", "answers"}
    assert val[0]["taskname"] == "squad" and val[0]["answer"] == dev[0][2]["answers"][0]["text"]
    assert test[-1]["answers"] == [x["text"] for x in dev[-1][2]["answers"]]
    s = manifest.summary
    assert s["task"] == "squad/v1.1" and s["splits"]["train"] == {"t5": len(answers), "prompt": len(answers)}
    assert s["format"]["t5_source"] == "Title: {title} Paragraph: {context} Question: {question}"


def test_squad_v20_unanswerable_and_v11_refuses_it(task_server, tmp_path):
    train = f"{task_server}/files/squad/train-v1.1-slice.json"
    dev = f"{task_server}/files/squad/dev-v2.0.json"
    result = _run("--config", "squad/v2.0", f"data_dir={tmp_path / 'v2'}", f"train_source={train}",
                  f"dev_source={dev}")
    assert result.exit_code == 0, result.output
    assert _lines(tmp_path / "v2" / "t5" / "validation_tgt.txt")[0] == "unanswerable"
    result = _run("--config", "squad/v1.1", f"data_dir={tmp_path / 'v1'}", f"train_source={train}",
                  f"dev_source={dev}")
    assert result.exit_code != 0 and "has no answer" in result.output and "version=v2.0" in result.output
    assert not (tmp_path / "v1" / "manifest.json").exists()


def test_xquad_per_language_files(task_server, tmp_path):
    result = _run("--config", "xquad", f"data_dir={tmp_path / 'x'}", f"base_url={task_server}/files/xquad",
                  "languages=en,de")
    assert result.exit_code == 0, result.output
    for lang in ("en", "de"):
        assert len(_lines(tmp_path / "x" / "t5" / f"test_{lang}_src.txt")) == 100
        rec = json.loads(_lines(tmp_path / "x" / "prompt" / f"test_{lang}.jsonl")[0])
        assert rec["taskname"] == f"xquad_{lang}"
    assert set(read_manifest(tmp_path / "x").summary["splits"]) == {"test_en", "test_de"}


def test_glue_mnli_text_to_text(task_server, tmp_path):
    result = _run("--config", "glue/mnli", f"data_dir={tmp_path / 'g'}", f"source={task_server}/files/MNLI.zip")
    assert result.exit_code == 0, result.output
    src = _lines(tmp_path / "g" / "t5" / "train_src.txt")
    assert src[1] == "mnli hypothesis: A hypothesis 1. premise: The premise number 1."
    assert _lines(tmp_path / "g" / "t5" / "train_tgt.txt")[:3] == ["entailment", "neutral", "contradiction"]
    assert len(_lines(tmp_path / "g" / "t5" / "validation_src.txt")) == 6
    assert len(_lines(tmp_path / "g" / "t5" / "validation_mismatched_tgt.txt")) == 3
    rec = json.loads(_lines(tmp_path / "g" / "prompt" / "validation.jsonl")[0])
    assert rec == {"taskname": "mnli", "hypothesis": "A hypothesis 0.", "premise": "The premise number 100.",
                   "answer": "entailment"}


def test_bad_task_input_one_line(task_server, tmp_path):
    result = _run("--config", "glue/mnli", f"data_dir={tmp_path / 'g'}", f"source={task_server}/status/404/x.zip",
                  "download_retries=0")
    assert result.exit_code != 0 and len(result.output.strip().splitlines()) <= 2
    result = _run("--config", "squad/v1.1", f"data_dir={tmp_path / 's'}", f"train_source={tmp_path / 'nope.json'}")
    assert result.exit_code != 0 and "does not exist" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"title": "t", "paragraphs": [{"qas": []}]}]}')
    result = _run("--config", "squad/v1.1", f"data_dir={tmp_path / 'b'}", f"train_source={bad}", f"dev_source={bad}")
    assert result.exit_code != 0 and "not in SQuAD form" in result.output and "Traceback" not in result.output


def test_shipped_task_configs_load(tmp_path):
    assert shipped_tasks() == ["glue/cola", "glue/mnli", "glue/qnli", "glue/qqp", "glue/rte", "glue/sst2",
                               "glue/stsb", "glue/wnli", "squad/v1.1", "squad/v2.0", "xquad"]
    for name in shipped_tasks():
        cfg = load_task(name, [f"data_dir={tmp_path}"])
        assert all(src.startswith("https://") for src in cfg.sources().values())
