"""Task-data recipes: which files make a task and how its examples are written (frozen configs).

A task recipe YAML (shipped under ``tasks/configs/`` or a path) names its kind in ``dataset``:
``squad`` (v1.1 or v2.0), ``xquad`` or ``glue``. Sources are http(s) URLs (fetched with the
resumable, verified downloader into ``DATA_DIR/source/``) or local paths (copied there), plain or
``.gz``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bignlp_contracts import ConfigError, apply_overrides, load_config, load_yaml
from bignlp_contracts.config import resolve_config_path

TASK_CONFIGS_DIR = Path(__file__).parent / "configs"
SQUAD_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/"
XQUAD_URL = "https://github.com/google-deepmind/xquad/raw/master/"
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
# The T5 paper's source template for SQuAD (and the seed's fine_tuning/t5/squad.yaml data).
SQUAD_TEMPLATE = "Title: {title} Paragraph: {context} Question: {question}"


@dataclass(frozen=True, kw_only=True)
class TaskConfig:
    """Keys every task recipe has."""

    data_dir: str | None = None  # the task-data artifact directory
    taskname: str = ""  # the prompt-learning JSONL's taskname (default: the task's own name)
    # Expected sha256 of a source file, by its file name (e.g. {train-v1.1.json: <hex>}); others are not checked.
    sha256: dict[str, str] = field(default_factory=dict)
    # Download attempts after the first; attempt k waits download_backoff_s * 2**(k-1) s. Then exit 75 (requeue).
    download_retries: int = 5
    download_backoff_s: float = 1.0
    download_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if not self.data_dir:
            raise ConfigError("data_dir is not set", hint="give data_dir=DIR (the task-data artifact directory)")
        if self.download_retries < 0:
            raise ConfigError("download_retries must be >= 0")

    @property
    def root(self) -> Path:
        return Path(str(self.data_dir))

    @property
    def task(self) -> str:
        """The task's name in the manifest (squad/v1.1, xquad, glue/mnli)."""
        raise NotImplementedError


@dataclass(frozen=True, kw_only=True)
class SquadConfig(TaskConfig):
    """SQuAD v1.1 or v2.0: train (one T5 row per answer) and dev (first answer); prompt JSONL train/validation/test."""

    dataset: Literal["squad"] = "squad"
    version: Literal["v1.1", "v2.0"] = "v1.1"
    train_source: str | None = None  # URL or path; null: the official URL of ``version``
    dev_source: str | None = None
    # The prompt-learning validation split: this share of the dev questions (in file order); test: the rest.
    validation_fraction: float = 0.5
    # v2.0: the target of an unanswerable question.
    unanswerable_text: str = "unanswerable"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.validation_fraction < 1.0:
            raise ConfigError(f"validation_fraction must lie in (0, 1), got {self.validation_fraction}")

    @property
    def task(self) -> str:
        return f"squad/{self.version}"

    def sources(self) -> dict[str, str]:
        """split → URL or path."""
        return {"train": self.train_source or f"{SQUAD_URL}train-{self.version}.json",
                "dev": self.dev_source or f"{SQUAD_URL}dev-{self.version}.json"}


@dataclass(frozen=True, kw_only=True)
class XquadConfig(TaskConfig):
    """XQuAD (the SQuAD v1.1 dev questions in 11 more languages; one test split per language)."""

    dataset: Literal["xquad"] = "xquad"
    base_url: str = XQUAD_URL  # holds xquad.{lang}.json
    languages: tuple[str, ...] = XQUAD_LANGUAGES

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.languages:
            raise ConfigError("languages: give at least one", hint=f"e.g. languages=[{','.join(XQUAD_LANGUAGES)}]")

    @property
    def task(self) -> str:
        return "xquad"

    def sources(self) -> dict[str, str]:
        base = self.base_url if "://" in self.base_url else self.base_url.rstrip("/") + "/"
        return {lang: f"{base.rstrip('/')}/xquad.{lang}.json" for lang in self.languages}


@dataclass(frozen=True, kw_only=True)
class GlueConfig(TaskConfig):
    """One GLUE task from its zip of TSV files, as T5's text-to-text ("mnli hypothesis: … premise: …")."""

    dataset: Literal["glue"] = "glue"
    glue_task: str = "mnli"
    source: str | None = None  # the task's zip (URL or path); null: GLUE_URL + its name

    def __post_init__(self) -> None:
        super().__post_init__()
        from .glue import GLUE_TASKS

        if self.glue_task not in GLUE_TASKS:
            raise ConfigError(f"glue_task {self.glue_task!r} is not a GLUE task this tool writes",
                              hint=f"one of {', '.join(GLUE_TASKS)}")

    @property
    def task(self) -> str:
        return f"glue/{self.glue_task}"

    def sources(self) -> dict[str, str]:
        from .glue import GLUE_TASKS

        return {"zip": self.source or f"{GLUE_URL}{GLUE_TASKS[self.glue_task].zip_name}.zip"}


_KINDS: dict[str, type[TaskConfig]] = {"squad": SquadConfig, "xquad": XquadConfig, "glue": GlueConfig}


def _data(name_or_path: str | os.PathLike) -> dict[str, Any] | None:
    """The YAML of a shipped task name or a path, or None when it is neither (a corpus recipe, say)."""
    candidate = Path(str(name_or_path))
    path = None
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        path = candidate
    elif (TASK_CONFIGS_DIR / f"{name_or_path}.yaml").is_file():
        path = TASK_CONFIGS_DIR / f"{name_or_path}.yaml"
    if path is None:
        return None
    data = load_yaml(path)
    return data if isinstance(data, Mapping) and data.get("dataset") in _KINDS else None


def is_task_config(name_or_path: str | os.PathLike) -> bool:
    """Whether ``run --config`` names a task recipe (else a corpus recipe)."""
    return _data(name_or_path) is not None


def load_task(name_or_path: str | os.PathLike, overrides: Sequence[str] = ()) -> TaskConfig:
    """A shipped task recipe (``squad/v1.1``, ``xquad``, ``glue/mnli``) or a YAML path, with ``key=value`` overrides."""
    data = _data(name_or_path)
    if data is None:
        resolve_config_path(str(name_or_path), TASK_CONFIGS_DIR)  # the "did you mean" error
        raise ConfigError(f"{name_or_path}: dataset must be one of {', '.join(_KINDS)}")
    data = apply_overrides(dict(data), overrides)
    if isinstance(data.get("languages"), str):
        data["languages"] = [x.strip() for x in data["languages"].split(",") if x.strip()]
    return load_config(_KINDS[data["dataset"]], data)


def shipped_tasks() -> list[str]:
    """Names of the task recipes that ship with the package."""
    return sorted(str(p.relative_to(TASK_CONFIGS_DIR).with_suffix("")) for p in TASK_CONFIGS_DIR.rglob("*.yaml"))
