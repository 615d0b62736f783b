"""Downstream task data (SQuAD v1.1/v2.0, XQuAD, GLUE) as a ``task-data`` artifact.

``bignlp-dataprep run --config squad/v1.1 data_dir=DIR`` fetches the task's files (URLs through the
resumable downloader, or local paths), then writes, per split, the T5 text-to-text files
``t5/{split}_src.txt`` / ``t5/{split}_tgt.txt`` (one example a line) and the prompt-learning JSONL
``prompt/{split}.jsonl``, the source files under ``source/``, and the manifest last. Layout and
schemas: packages/dataprep/README.md ("Task data").
"""

from __future__ import annotations

from .config import TASK_CONFIGS_DIR, GlueConfig, SquadConfig, TaskConfig, XquadConfig, is_task_config, load_task
from .run import run_task

__all__ = ["TASK_CONFIGS_DIR", "GlueConfig", "SquadConfig", "TaskConfig", "XquadConfig", "is_task_config",
           "load_task", "run_task"]
