"""GLUE tasks from their zips of TSV files → T5 text-to-text rows (the T5 paper's task prefixes)."""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import InputError

from .squad import one_line


@dataclass(frozen=True)
class GlueTask:
    """Where a task's TSVs are and how a row becomes (source, target, prompt record fields)."""

    zip_name: str  # DIR in DIR.zip and in the paths inside it
    splits: dict[str, str]  # our split name → TSV file inside DIR/
    fields: tuple[tuple[str, str], ...]  # (prefix word in the source, TSV column), in source order
    label: str  # TSV column of the label
    labels: Callable[[str], str]  # TSV label → target text
    header: bool = True


def _names(*names: str) -> Callable[[str], str]:
    def label(value: str) -> str:
        return names[int(value)]
    return label


def _stsb(value: str) -> str:
    return f"{round(float(value) * 5) / 5:.1f}"  # T5: the score rounded to the nearest 0.2


GLUE_TASKS: dict[str, GlueTask] = {
    "cola": GlueTask("CoLA", {"train": "train.tsv", "validation": "dev.tsv"}, (("sentence", "3"),), "1",
                     _names("unacceptable", "acceptable"), header=False),
    "sst2": GlueTask("SST-2", {"train": "train.tsv", "validation": "dev.tsv"}, (("sentence", "sentence"),), "label",
                     _names("negative", "positive")),
    "qqp": GlueTask("QQP", {"train": "train.tsv", "validation": "dev.tsv"},
                    (("question1", "question1"), ("question2", "question2")), "is_duplicate",
                    _names("not_duplicate", "duplicate")),
    "stsb": GlueTask("STS-B", {"train": "train.tsv", "validation": "dev.tsv"},
                     (("sentence1", "sentence1"), ("sentence2", "sentence2")), "score", _stsb),
    "mnli": GlueTask("MNLI", {"train": "train.tsv", "validation": "dev_matched.tsv",
                              "validation_mismatched": "dev_mismatched.tsv"},
                     (("hypothesis", "sentence2"), ("premise", "sentence1")), "gold_label", str),
    "qnli": GlueTask("QNLI", {"train": "train.tsv", "validation": "dev.tsv"},
                     (("question", "question"), ("sentence", "sentence")), "label", str),
    "rte": GlueTask("RTE", {"train": "train.tsv", "validation": "dev.tsv"},
                    (("sentence1", "sentence1"), ("sentence2", "sentence2")), "label", str),
    "wnli": GlueTask("WNLI", {"train": "train.tsv", "validation": "dev.tsv"},
                     (("sentence1", "sentence1"), ("sentence2", "sentence2")), "label",
                     _names("not_entailment", "entailment")),
}


def _cell(row: list[str], column: str, columns: dict[str, int]) -> str:
    """``row``'s cell of ``column``: a header name, or (a file without header) its index."""
    return row[columns[column]] if columns else row[int(column)]


def glue_rows(zip_path: Path, name: str, split: str) -> Iterator[tuple[str, str, dict]]:
    """(source, target, fields) of each labelled row of ``split``; a malformed row is one InputError line."""
    task = GLUE_TASKS[name]
    member = f"{task.zip_name}/{task.splits[split]}"
    try:
        with zipfile.ZipFile(zip_path) as zf:
            raw = zf.read(member).decode("utf-8")
    except KeyError:
        raise InputError(f"{zip_path}: has no {member}") from None
    except (zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{zip_path}: cannot read {member} ({type(exc).__name__}: {exc})") from None
    reader = csv.reader(io.StringIO(raw), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader) if task.header else None
    columns = {c: i for i, c in enumerate(header)} if header else {}
    for line, row in enumerate(reader, start=2 if header else 1):
        if not row:
            continue
        try:
            fields = {word: one_line(_cell(row, col, columns)) for word, col in task.fields}
            target = task.labels(_cell(row, task.label, columns))
        except (KeyError, IndexError, ValueError) as exc:
            raise InputError(f"{zip_path}:{member}:{line}: not a {name} row ({type(exc).__name__}: {exc})") from None
        source = f"{name} " + " ".join(f"{word}: {text}" for word, text in fields.items())
        yield source, target, fields
