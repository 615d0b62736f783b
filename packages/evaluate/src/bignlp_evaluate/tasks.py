"""The seed's evaluation tasks, their offline files, and the lm-eval task overrides that read them.

Each standard task is a stock lm-evaluation-harness task (its prompts and metrics unchanged) whose
dataset is one JSONL file in ``--data-dir`` in the task's own schema. ``write_task_overrides`` writes,
per task, a YAML that ``include:``s the stock task file, keeps its ``task:`` name and swaps the Hub
dataset for ``dataset_path: json`` over that file; lm-eval finds them through ``TaskManager(include_path=...)``.
Any other lm-eval task name passes through: from ``DIR/<name>.jsonl`` when that file exists (the task's
evaluation split), else as lm-eval ships it (from the Hub or its cache).
"""

from __future__ import annotations

import difflib
import functools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bignlp_contracts import ConfigError, InputError


@dataclass(frozen=True)
class TaskSpec:
    """One task to run: the seed's name, lm-eval's, and where its data comes from."""

    name: str  # the seed's (lambada, wikitext2) or an lm-eval task name passed through
    lm_eval_task: str  # the task lm-eval runs (lambada_openai, wikitext, wikitext103)
    stock_yaml: str | None  # relative to lm_eval/tasks; None: found through lm-eval's task index
    split: str | None  # the split evaluated; None: read from the stock task (pass-through)
    fields: dict[str, type | tuple[type, ...]]  # required fields of a row and their JSON types
    description: str = ""

    @property
    def file_name(self) -> str:
        return f"{self.name}.jsonl"


_STR, _INT, _LIST = str, int, list
STANDARD_TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("lambada", "lambada_openai", "lambada/lambada_openai.yaml", "test", {"text": _STR},
             "last-word prediction (acc, perplexity): text, the passage whose last word is predicted"),
    TaskSpec("boolq", "boolq", "super_glue/boolq/default.yaml", "validation",
             {"passage": _STR, "question": _STR, "label": _INT}, "yes/no questions: label 0 = no, 1 = yes"),
    TaskSpec("race", "race", "race/race.yaml", "test", {"article": _STR, "problems": _STR},
             "reading comprehension (high): problems is a Python-literal list of {answer: A-D, options[4], "
             "question}; the last problem is asked, the earlier ones are shown answered"),
    TaskSpec("piqa", "piqa", "piqa/piqa.yaml", "validation",
             {"goal": _STR, "sol1": _STR, "sol2": _STR, "label": _INT}, "physical commonsense: label 0/1 = sol1/sol2"),
    TaskSpec("hellaswag", "hellaswag", "hellaswag/hellaswag.yaml", "validation",
             {"activity_label": _STR, "ctx_a": _STR, "ctx_b": _STR, "endings": _LIST, "label": (_STR, _INT)},
             "sentence completion: four endings, label \"0\"..\"3\""),
    TaskSpec("winogrande", "winogrande", "winogrande/default.yaml", "validation",
             {"sentence": _STR, "option1": _STR, "option2": _STR, "answer": _STR},
             "pronoun resolution (xl): sentence with one _, answer \"1\"/\"2\""),
    TaskSpec("wikitext2", "wikitext", "wikitext/wikitext.yaml", "test", {"page": _STR},
             "perplexity over whole documents (wikitext-2-raw-v1, document level): page"),
    TaskSpec("wikitext103", "wikitext103", "wikitext/wikitext.yaml", "test", {"page": _STR},
             "as wikitext2, over wikitext-103-raw-v1's test documents"),
)}
ALL_TASKS = "all_tasks"
# lm-eval's names of the standard tasks also select them (lambada_openai → lambada)
_ALIASES = {t.lm_eval_task: t.name for t in STANDARD_TASKS.values() if t.lm_eval_task != t.name}


def lm_eval_tasks_dir() -> Path:
    """lm-eval's shipped task YAMLs (``lm_eval/tasks``)."""
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def parse_task_names(tasks: str | Sequence[str]) -> list[str]:
    """``"lambada,boolq"``, ``["lambada", "boolq"]`` or ``all_tasks`` → names in order, without repeats."""
    items = tasks.split(",") if isinstance(tasks, str) else [str(t) for t in tasks]
    names: list[str] = []
    for item in (i.strip() for i in items):
        expanded = list(STANDARD_TASKS) if item == ALL_TASKS else [_ALIASES.get(item, item)] if item else []
        names += [n for n in expanded if n not in names]
    if not names:
        raise ConfigError("no task given", hint=f"run.tasks: a comma list of {', '.join(STANDARD_TASKS)}, or "
                                                f"{ALL_TASKS}, or lm-eval task names")
    return names


def resolve_tasks(names: Iterable[str], known_lm_eval_tasks: Iterable[str] | None = None) -> list[TaskSpec]:
    """The ``TaskSpec`` of each name: a standard task, or an lm-eval task passed through.

    ``known_lm_eval_tasks``: lm-eval's task names (read from its index when None, which takes seconds
    and happens only when a name is not a standard one). An unknown name is a ``ConfigError`` naming
    the closest known ones.
    """
    names = list(names)
    others = [n for n in names if n not in STANDARD_TASKS]
    known = set(known_lm_eval_tasks) if known_lm_eval_tasks is not None else (
        set(lm_eval_task_names()) if others else set())
    specs = []
    for name in names:
        if name in STANDARD_TASKS:
            specs.append(STANDARD_TASKS[name])
        elif name in known:
            specs.append(TaskSpec(name, name, None, None, {}, "an lm-eval task, passed through"))
        else:
            pool = sorted(set(STANDARD_TASKS) | {ALL_TASKS} | known)
            close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"standard tasks: {', '.join(STANDARD_TASKS)} or {ALL_TASKS}; any lm-eval task name also works")
            raise ConfigError(f"unknown task {name!r}", hint=hint)
    return specs


def lm_eval_task_names() -> list[str]:
    """Every task, group and tag name lm-eval ships (indexing them takes seconds, once per process)."""
    return _stock_task_manager().all_tasks


@functools.lru_cache(maxsize=1)
def _stock_task_manager():
    from lm_eval.tasks import TaskManager

    return TaskManager()


def missing_task_files(specs: Sequence[TaskSpec], data_dir: str | os.PathLike) -> list[Path]:
    """The standard tasks' files not in ``data_dir``."""
    return [Path(data_dir) / s.file_name for s in specs
            if s.stock_yaml is not None and not (Path(data_dir) / s.file_name).is_file()]


def check_task_file(path: str | os.PathLike, spec: TaskSpec) -> int:
    """Rows of ``path`` (JSONL), each checked for the fields ``spec`` needs; returns the row count.

    A row that is not a JSON object, or lacks a field or has one of another type, is an
    ``InputError`` naming the file and line.
    """
    path = Path(path)
    rows = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: not JSON ({exc.msg} at column {exc.colno})",
                                 hint=f"one JSON object a line; {spec.name} rows have {_fields_text(spec)}") from None
            if not isinstance(row, dict):
                raise InputError(f"{where}: a JSON {type(row).__name__}, expected an object with "
                                 f"{_fields_text(spec)}")
            for field, kind in spec.fields.items():
                if field not in row:
                    raise InputError(f"{where}: no field {field!r} ({spec.name} rows have {_fields_text(spec)})")
                if not isinstance(row[field], kind) or isinstance(row[field], bool):
                    raise InputError(f"{where}: field {field!r} is a {type(row[field]).__name__}, expected "
                                     f"{_type_text(kind)}")
            rows += 1
    if rows == 0:
        raise InputError(f"{path}: no rows", hint=f"one JSON object a line with {_fields_text(spec)}")
    return rows


def _type_text(kind: type | tuple[type, ...]) -> str:
    names = {str: "string", int: "integer", list: "list", float: "number"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _fields_text(spec: TaskSpec) -> str:
    return ", ".join(spec.fields) or "the task's fields"


def write_task_overrides(specs: Sequence[TaskSpec], data_dir: str | os.PathLike, include_dir: str | os.PathLike,
                         ) -> list[TaskSpec]:
    """Write an lm-eval task YAML per task reading ``data_dir``; returns the tasks left to lm-eval's own data.

    A standard task's file must exist (see ``missing_task_files``) and is checked row by row first.
    A passed-through task gets an override when ``DIR/<name>.jsonl`` exists.
    """
    data_dir, include_dir = Path(data_dir).resolve(), Path(include_dir)
    stock_dir = lm_eval_tasks_dir()
    online = []
    for spec in specs:
        path = data_dir / spec.file_name
        if spec.stock_yaml is None:
            if not path.is_file():
                online.append(spec)
                continue
            stock, split = _stock_of(spec.lm_eval_task)
        else:
            check_task_file(path, spec)
            stock, split = stock_dir / spec.stock_yaml, spec.split
        override = {
            "include": str(stock),
            "task": spec.lm_eval_task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(path)}},
            # only the evaluated split exists in the file; fewshot and training splits are not read
            "training_split": None, "validation_split": None, "test_split": None,
            f"{split}_split": split,
        }
        (include_dir / f"{spec.lm_eval_task}.yaml").write_text(yaml.safe_dump(override, sort_keys=False))
    return online


def _stock_of(task: str) -> tuple[Path, str]:
    """The YAML of lm-eval task ``task`` and the split it evaluates (test, else validation)."""
    entry = _stock_task_manager().task_index.get(task)
    if entry is None or entry.yaml_path is None:
        raise ConfigError(f"lm-eval task {task!r} has no YAML to read a local file through",
                          hint=f"remove {task}.jsonl from --data-dir to run it on lm-eval's own data")
    cfg = yaml.load(Path(entry.yaml_path).read_text(), Loader=_TolerantLoader) or {}
    for parent in [cfg.get("include")] if isinstance(cfg.get("include"), str) else []:
        base = yaml.load((Path(entry.yaml_path).parent / parent).read_text(), Loader=_TolerantLoader) or {}
        cfg = {**base, **cfg}
    split = "test" if cfg.get("test_split") else "validation" if cfg.get("validation_split") else None
    if split is None:
        raise ConfigError(f"lm-eval task {task!r} has neither a test nor a validation split")
    return Path(entry.yaml_path), split


class _TolerantLoader(yaml.SafeLoader):
    """Reads lm-eval task YAMLs without resolving their ``!function`` tags."""


_TolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: None)
