"""SQuAD-format files (SQuAD v1.1/v2.0, XQuAD) → T5 text-to-text rows and prompt-learning records."""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bignlp_contracts import InputError

from .config import SQUAD_TEMPLATE

_NEWLINES = re.compile(r"\s*[\r\n\t\v\f\u2028\u2029\x85]+\s*")


def one_line(text: str) -> str:
    """``text`` with line breaks and tabs (and the spaces around them) as one space: one example a line."""
    return _NEWLINES.sub(" ", text).strip()


@dataclass(frozen=True)
class Question:
    """One SQuAD question with its paragraph and every gold answer (empty: unanswerable, v2.0)."""

    id: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]

    @property
    def source(self) -> str:
        """The T5 encoder input (the T5 paper's SQuAD template)."""
        return SQUAD_TEMPLATE.format(title=one_line(self.title), context=one_line(self.context),
                                     question=one_line(self.question))


def read_json(path: Path) -> dict:
    """A JSON file, plain or gzip-compressed; a malformed one is one InputError line."""
    opener = gzip.open if path.read_bytes()[:2] == b"\x1f\x8b" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None


def squad_questions(path: Path) -> Iterator[Question]:
    """The questions of a SQuAD-format file (``data[].paragraphs[].qas[]``), in file order."""
    doc = read_json(path)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise InputError(f"{path}: no 'data' list: not a SQuAD-format file")
    for a, article in enumerate(data):
        try:
            title = str(article.get("title", ""))
            for paragraph in article["paragraphs"]:
                context = paragraph["context"]
                for qa in paragraph["qas"]:
                    answers = () if qa.get("is_impossible") else tuple(x["text"] for x in qa["answers"])
                    yield Question(str(qa["id"]), title, context, qa["question"], answers)
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: article {a} ({article.get('title', '?') if isinstance(article, dict) else '?'})"
                             f" is not in SQuAD form (missing {exc})") from None


def record(q: Question, taskname: str, answer: str, *, all_answers: bool) -> dict:
    """The prompt-learning JSONL record of ``q`` (``answers``: every gold answer, for EM/F1 on validation/test)."""
    out = {"taskname": taskname, "context": one_line(q.context), "question": one_line(q.question),
           "answer": one_line(answer), "title": one_line(q.title), "id": q.id}
    if all_answers:
        out["answers"] = [one_line(a) for a in q.answers]
    return out
