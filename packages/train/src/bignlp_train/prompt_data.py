"""Prompt-learning data: JSONL lines of the tasks being learned, tokenized, batched and ordered.

A line is ``{"taskname": ..., <the template's fields>}``. How one example becomes ids (pieces, virtual
token ids, truncation of ``truncate_field``, <eos>, T5's ``<extra_id_0>`` layout) is
``bignlp_models.prompt_template``, which ``bignlp-evaluate prompt`` reads too. Here: reading the files
(a bad line named by file:line), checking that every line has its template's fields, counting the
examples skipped as too long, padding micro-batches, and the seeded per-epoch order that makes a
resumed run read exactly what an uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from bignlp_contracts import InputError
from bignlp_models.prompt_template import Example, Roles, encode_example

from .config.prompt import TaskTemplate


@dataclass(frozen=True)
class Row:
    """One JSONL line: where it came from and its fields."""

    source: str  # "file:line"
    data: dict


def read_rows(paths: Sequence[str], what: str) -> list[Row]:
    """Every line of the JSONL ``paths`` (``InputError`` naming file and line for one that is not an object)."""
    rows = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{what}: {path}: no such file")
        with open(p, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError as exc:
                    raise InputError(f"{path}:{number}: not a JSON line ({exc})") from None
                if not isinstance(data, dict) or not isinstance(data.get("taskname"), str):
                    raise InputError(f"{path}:{number}: a prompt-learning line is a JSON object with a taskname")
                rows.append(Row(f"{path}:{number}", data))
    return rows


def check_fields(rows: Sequence[Row], templates: dict[str, TaskTemplate], *, need_answer: bool = True) -> None:
    """Every line of a task has each field of its template (``InputError`` for the first that lacks one)."""
    for row in rows:
        template = templates.get(row.data["taskname"])
        if template is None:
            continue
        for name in template.fields:
            if name == template.answer_field and not need_answer:
                continue
            if name not in row.data:
                have = ", ".join(k for k in row.data if k != "taskname")
                raise InputError(f"{row.source}: task {template.taskname!r}: prompt_template field {{{name}}} is not "
                                 f"in the data (the line has: {have})")


def encode_rows(rows: Sequence[Row], templates: dict[str, TaskTemplate], offsets: dict[str, int], tokenizer, *,
                vocab_size: int, family: str, roles: Roles, max_length: int | None,
                max_decoder_length: int | None = None) -> tuple[list[Example], dict[str, int]]:
    """The examples of the tasks in ``templates``, and per task how many were skipped as too long."""
    examples, skipped = [], {name: 0 for name in templates}
    for row in rows:
        name = row.data["taskname"]
        if name not in templates:
            continue
        ex = encode_example(templates[name], row.data, tokenizer, offset=offsets[name], vocab_size=vocab_size,
                            family=family, roles=roles, max_length=max_length, max_decoder_length=max_decoder_length)
        if ex is None:
            skipped[name] += 1
        else:
            examples.append(ex)
    return examples, skipped


def collate(examples: Sequence[Example], *, family: str, pad: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors of a micro-batch (GPT: tokens/labels/loss_mask; T5: encoder and decoder with masks)."""
    def pad_to(rows: list[list[int]], fill: int) -> torch.Tensor:
        longest = max(len(r) for r in rows)
        return torch.tensor([r + [fill] * (longest - len(r)) for r in rows], dtype=torch.long)

    batch = {"tokens": pad_to([e.tokens for e in examples], pad), "labels": pad_to([e.labels for e in examples], pad),
             "loss_mask": pad_to([e.loss_mask for e in examples], 0)}
    if family == "t5":
        batch["encoder_tokens"] = pad_to([e.prompt for e in examples], pad)
        batch["encoder_mask"] = pad_to([[1] * len(e.prompt) for e in examples], 0).bool()
        batch["decoder_mask"] = pad_to([[1] * len(e.tokens) for e in examples], 0).bool()
    return batch


def sample_order(num_examples: int, num_samples: int, start: int, *, seed: int, shuffle: bool) -> Iterator[int]:
    """Example indices for samples ``start .. start + num_samples - 1``: epoch after epoch, each a permutation
    seeded by (seed, epoch), so a resumed run reads exactly what an uninterrupted one would."""
    epoch_cache: dict[int, np.ndarray] = {}
    for sample in range(start, start + num_samples):
        epoch, position = divmod(sample, num_examples)
        if epoch not in epoch_cache:
            epoch_cache.clear()
            epoch_cache[epoch] = (np.random.default_rng([seed, epoch]).permutation(num_examples) if shuffle
                                  else np.arange(num_examples))
        yield int(epoch_cache[epoch][position])
