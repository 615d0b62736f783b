"""Fetch a task's sources and write the task-data artifact (files first, manifest last)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from bignlp_contracts import (
    TASK_DATA,
    InputError,
    Manifest,
    Producer,
    atomic_output_file,
    download,
    is_url,
    remove_manifest,
    save_config,
    to_dict,
    write_manifest,
)
from bignlp_contracts.manifest import git_commit

from .. import __version__
from .config import SQUAD_TEMPLATE, GlueConfig, SquadConfig, TaskConfig, XquadConfig
from .glue import GLUE_TASKS, glue_rows
from .squad import Question, record, squad_questions

SOURCE_DIR = "source"
T5_DIR = "t5"
PROMPT_DIR = "prompt"


def fetch(cfg: TaskConfig, source: str, echo: Callable[[str], None]) -> Path:
    """``source`` (URL or path) as a file under DATA_DIR/source/ (a URL resumes a partial download)."""
    name = source.rstrip("/").rsplit("/", 1)[-1]
    dest = cfg.root / SOURCE_DIR / name
    if is_url(source):
        if not dest.is_file():
            echo(f"downloading {source}")
        return download(source, dest, sha256=cfg.sha256.get(name), retries=cfg.download_retries,
                        backoff_s=cfg.download_backoff_s, timeout_s=cfg.download_timeout_s, progress=False)
    path = Path(source)
    if not path.is_file():
        raise InputError(f"source file {path} does not exist", hint="give an existing path or an http(s) URL")
    if not dest.is_file() or dest.stat().st_size != path.stat().st_size or dest.stat().st_mtime < path.stat().st_mtime:
        dest.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output_file(dest) as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out)
    expected = cfg.sha256.get(name)
    if expected:
        from bignlp_contracts import sha256_file

        if sha256_file(dest) != expected:
            raise InputError(f"{path}: sha256 differs from sha256.{name}")
    return dest


class _Writer:
    """Writes the split files and counts what went where."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.splits: dict[str, dict[str, int]] = {}
        self.files: list[str] = []

    def text_pairs(self, split: str, rows: Iterable[tuple[str, str]]) -> None:
        rel_src, rel_tgt = f"{T5_DIR}/{split}_src.txt", f"{T5_DIR}/{split}_tgt.txt"
        (self.root / T5_DIR).mkdir(parents=True, exist_ok=True)
        n = 0
        with atomic_output_file(self.root / rel_src) as fs, atomic_output_file(self.root / rel_tgt) as ft:
            for src, tgt in rows:
                fs.write((src + "\n").encode("utf-8"))
                ft.write((tgt + "\n").encode("utf-8"))
                n += 1
        self.files += [rel_src, rel_tgt]
        self.splits.setdefault(split, {})["t5"] = n

    def jsonl(self, split: str, records: Iterable[dict]) -> None:
        rel = f"{PROMPT_DIR}/{split}.jsonl"
        (self.root / PROMPT_DIR).mkdir(parents=True, exist_ok=True)
        n = 0
        with atomic_output_file(self.root / rel) as f:
            for rec in records:
                f.write((json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8"))
                n += 1
        self.files.append(rel)
        self.splits.setdefault(split, {})["prompt"] = n


def _squad(cfg: SquadConfig, files: dict[str, Path], w: _Writer) -> None:
    taskname = cfg.taskname or "squad"
    unanswerable = cfg.unanswerable_text

    def answers(q: Question) -> tuple[str, ...]:
        return q.answers or (unanswerable,)

    train = list(squad_questions(files["train"]))
    dev = list(squad_questions(files["dev"]))
    if cfg.version == "v1.1":
        for q in train + dev:
            if not q.answers:
                raise InputError(f"question {q.id} has no answer: SQuAD v1.1 has none such",
                                 hint="set version=v2.0 for a file with unanswerable questions")
    w.text_pairs("train", ((q.source, a) for q in train for a in answers(q)))  # one row per answer
    w.text_pairs("validation", ((q.source, answers(q)[0]) for q in dev))  # the first answer
    w.jsonl("train", (record(q, taskname, a, all_answers=False) for q in train for a in answers(q)))
    cut = round(len(dev) * cfg.validation_fraction)
    w.jsonl("validation", (record(q, taskname, answers(q)[0], all_answers=True) for q in dev[:cut]))
    w.jsonl("test", (record(q, taskname, answers(q)[0], all_answers=True) for q in dev[cut:]))


def _xquad(cfg: XquadConfig, files: dict[str, Path], w: _Writer) -> None:
    for lang, path in files.items():
        qs = list(squad_questions(path))
        taskname = cfg.taskname or f"xquad_{lang}"
        w.text_pairs(f"test_{lang}", ((q.source, q.answers[0] if q.answers else "") for q in qs))
        w.jsonl(f"test_{lang}", (record(q, taskname, q.answers[0] if q.answers else "", all_answers=True)
                                 for q in qs))


def _glue(cfg: GlueConfig, files: dict[str, Path], w: _Writer) -> None:
    name = cfg.glue_task
    taskname = cfg.taskname or name
    for split in GLUE_TASKS[name].splits:
        rows = list(glue_rows(files["zip"], name, split))
        w.text_pairs(split, ((src, tgt) for src, tgt, _ in rows))
        w.jsonl(split, ({"taskname": taskname, **fields, "answer": tgt} for _, tgt, fields in rows))


def run_task(cfg: TaskConfig, *, config_name: str = "CONFIG", echo: Callable[[str], None] = print) -> Manifest:
    """Fetch ``cfg``'s sources and (re)write its task-data artifact in DATA_DIR; return the manifest."""
    started = time.monotonic()
    root = cfg.root
    root.mkdir(parents=True, exist_ok=True)
    sources = cfg.sources()
    files = {key: fetch(cfg, src, echo) for key, src in sources.items()}
    remove_manifest(root)  # incomplete from here until the manifest is written again
    w = _Writer(root)
    if isinstance(cfg, SquadConfig):
        _squad(cfg, files, w)
        fmt = {"t5_source": SQUAD_TEMPLATE, "t5_target": "answer"}
    elif isinstance(cfg, XquadConfig):
        _xquad(cfg, files, w)
        fmt = {"t5_source": SQUAD_TEMPLATE, "t5_target": "answer"}
    else:
        assert isinstance(cfg, GlueConfig)
        _glue(cfg, files, w)
        task = GLUE_TASKS[cfg.glue_task]
        fmt = {"t5_source": f"{cfg.glue_task} " + " ".join(f"{word}: {{{word}}}" for word, _ in task.fields),
               "t5_target": "label text"}
    save_config(cfg, root / "config.yaml")
    source_files = sorted(f"{SOURCE_DIR}/{p.name}" for p in files.values())
    summary = {"task": cfg.task, "source": dict(sources), "splits": w.splits, "format": fmt,
               "prompt_fields": ["taskname", "context", "question", "answer"] if not isinstance(cfg, GlueConfig)
               else ["taskname", *[word for word, _ in GLUE_TASKS[cfg.glue_task].fields], "answer"],
               "elapsed_s": round(time.monotonic() - started, 3)}
    inputs = [{"path": str(src), "role": key} for key, src in sources.items()]
    return write_manifest(root, TASK_DATA, producer=Producer("bignlp-dataprep", __version__, git_commit()),
                          files=[*source_files, *w.files, "config.yaml"], config={"config_name": config_name,
                                                                                   **to_dict(cfg)},
                          inputs=inputs, summary=summary)
