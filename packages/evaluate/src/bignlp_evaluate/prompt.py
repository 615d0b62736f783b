"""``bignlp-evaluate prompt``: a prompt-learned GPT, T5 or mT5 on its tasks' test JSONL, exact match and F1.

The prompt checkpoint names its frozen base (``summary.base``: path, manifest sha256, tokenizer); the
base is checked against that pin before anything runs (another tokenizer, then another manifest: one
line each). Each line goes through its task's template (``bignlp_models.prompt_template``, as training
built it) without the answer; the model generates greedily until ``<eos>`` (``max_new_tokens`` as the
task recorded it, or the flag). ``--disable-virtual-tokens`` evaluates the same base on the same
templates with the virtual tokens left out (the seed's ``disable_special_tokens``): what the prompts
add. Scores: SQuAD exact match and F1 (torchmetrics' ``SQuAD``, the official v1.1 normalisation),
per task and over all lines. Output: an ``evaluation`` artifact (results.json with per-task metrics
and every prediction, results.md, results.csv, config.yaml).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bignlp_contracts import (
    EVALUATION,
    InputError,
    Producer,
    atomic_directory,
    format_duration,
    git_commit,
    input_record,
    slurm_job_record,
    write_manifest,
)

from . import __version__
from .harness import PACKAGE, check_output
from .results import Row, csv_table, markdown_table, metrics_summary


def read_prompt_data(path: str | Path, tasks: dict) -> list[tuple[str, dict]]:
    """(file:line, fields) of every line of ``path``; ``InputError`` naming the line for a malformed one, a task the
    prompt checkpoint does not hold, or a missing template field."""
    from bignlp_models.prompt_template import template_fields

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--data {path}: no such file")
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                data = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{where}: not a JSON line ({exc})") from None
            if not isinstance(data, dict) or not isinstance(data.get("taskname"), str):
                raise InputError(f"{where}: a prompt-learning line is a JSON object with a taskname")
            task = tasks.get(data["taskname"])
            if task is None:
                raise InputError(f"{where}: task {data['taskname']!r} is not in the prompt checkpoint",
                                 hint=f"it holds: {', '.join(tasks)}")
            for name in template_fields(task["prompt_template"]):
                if name not in data:
                    raise InputError(f"{where}: task {data['taskname']!r}: prompt_template field {{{name}}} is not "
                                     f"in the data (the line has: {', '.join(k for k in data if k != 'taskname')})")
            rows.append((where, data))
    if not rows:
        raise InputError(f"--data {path}: no lines")
    return rows


def squad_scores(predictions: list[str], answers: list[list[str]]) -> dict[str, float]:
    """exact_match and f1 (0-100) as the official SQuAD v1.1 script computes them (torchmetrics' SQuAD)."""
    from torchmetrics.text import SQuAD

    preds = [{"prediction_text": p, "id": str(i)} for i, p in enumerate(predictions)]
    target = [{"answers": {"answer_start": [0] * len(a), "text": a}, "id": str(i)} for i, a in enumerate(answers)]
    scores = SQuAD()(preds, target)
    return {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"])}


def evaluate_prompts(prompt_checkpoint: str | Path, *, data: str | Path, output: str | Path,
                     base: str | Path | None = None, disable_virtual_tokens: bool = False, batch_size: int = 16,
                     max_new_tokens: int | None = None, device: str = "cpu", config: dict[str, Any] | None = None,
                     log: Callable[[str], None] | None = None, progress_every_s: float = 10.0) -> Path:
    """Generate answers for ``data`` with ``prompt_checkpoint``'s prompts on its base; write an ``evaluation``
    artifact at ``output`` (new or empty). ``base``: the base model-checkpoint when it moved (it must still be
    the one the prompts pin). Returns ``output``."""
    from bignlp_models import generate, load_model
    from bignlp_models.prompt import base_record, check_base_pin, install_prompts, load_prompt_checkpoint
    from bignlp_models.prompt_template import PromptTemplate, encode_example, roles_of

    log = log or (lambda _line: None)
    output = check_output(output)
    prompts_ckpt = load_prompt_checkpoint(prompt_checkpoint)
    pinned = prompts_ckpt.base
    base_path = base or pinned.get("path")
    record = base_record(base_path)
    check_base_pin(pinned, record, what=f"prompt checkpoint {prompt_checkpoint}")
    rows = read_prompt_data(data, prompts_ckpt.tasks)
    templates = {name: PromptTemplate.from_dict(t) for name, t in prompts_ckpt.tasks.items()}

    log(f"loading base {base_path} ({device})")
    loaded = load_model(base_path, device=device)
    family, tokenizer, vocab = loaded.family.name, loaded.tokenizer, loaded.vocab_size
    roles = roles_of(tokenizer, family)
    if not disable_virtual_tokens:
        install_prompts(loaded.model, rows=prompts_ckpt.rows)
    cfg = loaded.config
    relative = getattr(cfg, "position_embedding_type", "") == "relative"
    positions = None if relative else cfg.max_position_embeddings

    def new_tokens(name: str) -> int:
        return max_new_tokens or int(prompts_ckpt.tasks[name].get("max_new_tokens") or 32)

    encoded, skipped = [], []
    for where, fields in rows:
        template = templates[fields["taskname"]]
        budget = None if positions is None else (positions - new_tokens(template.taskname) if family != "t5"
                                                 else positions)
        ex = encode_example(template, fields, tokenizer, offset=template.offset, vocab_size=vocab, family=family,
                            roles=roles, max_length=budget, with_answer=False)
        if ex is None:  # as training does: skipped, and said (log, results.json, summary)
            skipped.append(where)
            continue
        prompt = [t for t in ex.prompt if t < vocab] if disable_virtual_tokens else ex.prompt
        answer = fields.get(template.answer_field)
        answers = [str(a) for a in answer] if isinstance(answer, list) else [str(answer)]
        encoded.append((where, fields["taskname"], prompt, answers))
    if skipped:
        log(f"skipped {len(skipped)} line(s) longer than the model takes, with nothing left to cut in their "
            f"truncate_field (first: {skipped[0]}); scored: {len(encoded)}")
    if not encoded:
        raise InputError(f"{data}: every line is longer than the model takes (first: {skipped[0]})",
                         hint="set truncate_field in the task's template, or use a base with more positions")

    order = sorted(range(len(encoded)), key=lambda i: (encoded[i][1], len(encoded[i][2])))
    predictions: list[str | None] = [None] * len(encoded)
    specials = {roles.eos, roles.pad} | ({roles.sentinel} if roles.sentinel is not None else set())
    started = last = time.monotonic()
    done = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        task_of = {encoded[i][1] for i in chunk}
        steps = max(new_tokens(name) for name in task_of)
        kwargs = {"decoder_start_token_id": roles.bos} if family == "t5" else {}
        out = generate(loaded.model, [encoded[i][2] for i in chunk], max_new_tokens=steps, greedy=True,
                       stop_token_ids=[roles.eos], pad_id=roles.pad, **kwargs)
        for i, tokens in zip(chunk, out.tokens):
            predictions[i] = tokenizer.decode([t for t in tokens if t not in specials]).strip()
        done += len(chunk)
        now = time.monotonic()
        if now - last >= progress_every_s or done == len(order):
            rate = done / max(now - started, 1e-9)
            eta = format_duration((len(order) - done) / rate)
            log(f"generated {done}/{len(order)} answers | {rate:.1f}/s | ETA {eta}")
            last = now

    per_task: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(e[1] for e in encoded):
        idx = [i for i, e in enumerate(encoded) if e[1] == name]
        per_task[name] = squad_scores([predictions[i] for i in idx], [encoded[i][3] for i in idx])
    overall = squad_scores(predictions, [e[3] for e in encoded])
    table = [Row(name, metric, value, None) for name, scores in per_task.items() for metric, value in scores.items()]
    if len(per_task) > 1:
        table += [Row("all", metric, value, None) for metric, value in overall.items()]
    results = {"results": per_task, "overall": overall, "disable_virtual_tokens": disable_virtual_tokens,
               "predictions": [{"line": e[0], "taskname": e[1], "prediction": p, "answers": e[3]}
                               for e, p in zip(encoded, predictions)], "skipped": skipped}
    with atomic_directory(output) as tmp:
        (tmp / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        (tmp / "results.md").write_text(markdown_table(table, model=Path(prompt_checkpoint).name))
        (tmp / "results.csv").write_text(csv_table(table))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        write_manifest(tmp, EVALUATION,
                       producer=Producer(PACKAGE, __version__, git_commit(Path(__file__).parent), slurm_job_record()),
                       files=["results.json", "results.md", "results.csv", "config.yaml"], config=config or {},
                       inputs=[input_record(prompt_checkpoint), input_record(record["path"]), input_record(data)],
                       summary={"tasks": list(per_task), "metrics": metrics_summary(table), "family": family,
                                "disable_virtual_tokens": disable_virtual_tokens, "num_examples": len(encoded),
                                "skipped_too_long": len(skipped)})
    log(f"wrote {output}")
    return output
