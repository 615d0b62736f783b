"""Fetch task files into a data directory: ``<URL base>/<task>.jsonl``, or a URL (and sha256) per task.

The files are the JSONL the harness reads (see ``tasks``); where they are served is the user's choice
(a mirror, an object store), given as ``--url-base`` or a YAML ``--urls-config``::

    lambada: {url: https://mirror.example/eval/lambada.jsonl, sha256: 5f2c...}
    boolq: https://mirror.example/eval/boolq.jsonl

Each download is ``bignlp_contracts.download``'s: resumed from ``<file>.part``, retried, checked
against its sha256 when given, renamed into place only when whole.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bignlp_contracts import ConfigError, download, is_url, load_yaml

from .tasks import TaskSpec, check_task_file


@dataclass(frozen=True)
class TaskSource:
    """Where one task's file comes from."""

    task: TaskSpec
    url: str
    sha256: str | None = None


def task_sources(specs: Sequence[TaskSpec], *, url_base: str | None = None,
                 urls: Mapping[str, Any] | None = None) -> list[TaskSource]:
    """The URL (and sha256) of each task: ``urls[name]`` first, else ``url_base/<name>.jsonl``."""
    urls = dict(urls or {})
    sources = []
    for spec in specs:
        entry = urls.get(spec.name, urls.get(spec.lm_eval_task))
        if isinstance(entry, str):
            entry = {"url": entry}
        if entry is not None and (not isinstance(entry, dict) or not isinstance(entry.get("url"), str)):
            raise ConfigError(f"urls config: {spec.name}: expected a URL or {{url: URL, sha256: HEX}}")
        if entry is None:
            if url_base is None:
                raise ConfigError(f"no URL for task {spec.name}",
                                  hint="give --url-base URL (files at URL/<task>.jsonl) or --urls-config FILE")
            entry = {"url": f"{url_base.rstrip('/')}/{spec.file_name}"}
        if not is_url(entry["url"]):
            raise ConfigError(f"{spec.name}: {entry['url']!r} is not an http(s) URL")
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or len(sha) != 64):
            raise ConfigError(f"urls config: {spec.name}: sha256 {sha!r} is not 64 hex digits",
                              hint="quote it (sha256: \"...\") so YAML keeps it a string")
        sources.append(TaskSource(spec, entry["url"], sha))
    return sources


def load_urls_config(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping task → URL or {url, sha256}."""
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of task name to URL or {{url, sha256}}")
    return data


def download_tasks(sources: Sequence[TaskSource], data_dir: str | os.PathLike, *, retries: int = 5,
                   backoff_s: float = 1.0, timeout_s: float = 60, progress: bool = True,
                   log: Callable[[str], None] | None = None) -> list[Path]:
    """Fetch each source to ``data_dir/<task>.jsonl`` (kept when already there and matching) and check its rows."""
    paths = []
    for source in sources:
        dest = Path(data_dir) / source.task.file_name
        if log:
            log(f"{source.task.name}: {source.url} → {dest}")
        download(source.url, dest, sha256=source.sha256, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s,
                 progress=progress)
        if source.task.fields:
            check_task_file(dest, source.task)
        paths.append(dest)
    return paths
