"""Seq2seq tasks for fine-tuned T5/mT5: ``bignlp-evaluate squad|xquad|glue|custom``.

Each example's source is framed as ``bignlp-train finetune`` frames it (``<bos> source <eos>``, a source
longer than the model was fine-tuned on keeping its tail), the answer generated greedily with the KV
cache (``bignlp_models.generate``) from ``<bos>`` until ``<eos>``, and scored:

- ``squad``: a SQuAD-format JSON (``.json`` or ``.json.gz``) or a ``task-data`` artifact of ``squad/v1.1``
  or ``squad/v2.0`` (its ``source/`` dev file): exact match and F1 against every gold answer, 0-100, as the
  official v1.1 script computes them (torchmetrics' ``SQuAD``); with SQuAD v2.0's unanswerable questions,
  as the official v2.0 script does (an unanswerable question's gold is the empty answer, which an output
  equal to ``unanswerable_text``, the target ``bignlp-dataprep`` trains for it, stands for), with the
  answerable (``HasAns_*``) and unanswerable (``NoAns_*``) questions also scored apart;
- ``xquad``: XQuAD's ``xquad.{lang}.json`` files (a directory holding them, or a ``task-data`` artifact of
  ``xquad``): the same scores per language and their mean (the seed's 7.3.1 table);
- ``glue`` / ``custom``: parallel source/target text files (``--data SRC --targets TGT``, or a ``task-data``
  artifact's ``validation`` split): accuracy (``glue``) or exact string match (``custom``), the share of
  outputs equal to their target after stripping, 0-100.

The result is an ``evaluation`` artifact (results.json with every prediction, results.md/csv tables,
config.yaml, manifest.json last).
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import string
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bignlp_contracts import (
    EVALUATION,
    ArtifactError,
    InputError,
    Producer,
    atomic_directory,
    format_duration,
    git_commit,
    input_record,
    read_checkpoint,
    read_manifest,
    slurm_job_record,
    write_manifest,
)

from . import __version__
from .harness import PACKAGE, check_output, process_group
from .prompt import squad_scores
from .results import Row, csv_table, markdown_table, metrics_summary

KINDS = ("squad", "xquad", "glue", "custom")
SQUAD_TEMPLATE = "Title: {title} Paragraph: {context} Question: {question}"
UNANSWERABLE = "unanswerable"  # bignlp-dataprep squad/v2.0's unanswerable_text
_NEWLINES = re.compile(r"\s*[\r\n\t\v\f\u2028\u2029\x85]+\s*")


@dataclass(frozen=True)
class Example:
    group: str  # the language (xquad) or the task name: a table row each
    source: str
    answers: list[str]  # empty: unanswerable (SQuAD v2.0)


def _one_line(text: str) -> str:
    return _NEWLINES.sub(" ", text).strip()


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        return json.loads(text)
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({type(exc).__name__}: {exc})") from None


def squad_examples(path: Path, group: str) -> list[Example]:
    """Every question of a SQuAD-format file, with all its gold answers (none: unanswerable, v2.0)."""
    doc = _read_json(path)
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        raise InputError(f"{path}: no 'data' list: not a SQuAD-format file")
    out = []
    for a, article in enumerate(data):
        try:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    answers = [] if qa.get("is_impossible") else [x["text"] for x in qa["answers"]]
                    out.append(Example(group, SQUAD_TEMPLATE.format(
                        title=_one_line(str(article.get("title", ""))), context=_one_line(paragraph["context"]),
                        question=_one_line(qa["question"])), answers))
        except (KeyError, TypeError) as exc:
            raise InputError(f"{path}: article {a} is not in SQuAD form (missing {exc})") from None
    if not out:
        raise InputError(f"{path}: no questions")
    return out


def _task_data(path: Path) -> dict | None:
    """A task-data artifact's manifest summary, or None when ``path`` is not one."""
    if not (path.is_dir() and (path / "manifest.json").is_file()):
        return None
    manifest = read_manifest(path)
    if manifest.kind != "task-data":
        raise InputError(f"--data {path} is a {manifest.kind} artifact, not task data",
                         hint="bignlp-dataprep run --config squad/v1.1|xquad|glue/<task> data_dir=DIR makes one")
    return manifest.summary


def _lines(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text") from None
    return lines[:-1] if lines and lines[-1] == "" else lines


def unanswerable_text(data: Path) -> str:
    """What a model fine-tuned on ``data`` answers to an unanswerable question: the task-data artifact's
    ``unanswerable_text``, else bignlp-dataprep's default."""
    if _task_data(Path(data)) is None:
        return UNANSWERABLE
    config = read_manifest(Path(data)).config
    return str((config if isinstance(config, dict) else {}).get("unanswerable_text") or UNANSWERABLE)


def load_examples(kind: str, data: Path, targets: Path | None = None) -> list[Example]:
    """The examples of ``kind`` from ``data`` (see the module docstring for what each kind reads)."""
    data = Path(data)
    summary = _task_data(data)
    if kind == "squad":
        if summary is not None:
            dev = Path(str(summary.get("source", {}).get("dev", ""))).name
            return squad_examples(data / "source" / dev, "squad")
        return squad_examples(data, "squad")
    if kind == "xquad":
        files = sorted(data.glob("source/xquad.*.json") if summary is not None else
                       (data.glob("xquad.*.json*") if data.is_dir() else [data]))
        if not files:
            raise InputError(f"--data {data}: no xquad.<lang>.json files")
        out = []
        for f in files:
            lang = f.name.split(".")[1] if f.name.startswith("xquad.") else f.stem
            out += squad_examples(f, lang)
        return out
    if summary is not None:
        src, tgt = data / "t5" / "validation_src.txt", data / "t5" / "validation_tgt.txt"
        group = str(summary.get("task", kind)).split("/")[-1]
    else:
        if targets is None:
            raise InputError(f"{kind}: --targets TGT_FILE is needed with a source file (or give a task-data "
                             "directory as --data)")
        src, tgt, group = data, Path(targets), kind
    sources, answers = _lines(src), _lines(tgt)
    if len(sources) != len(answers):
        raise InputError(f"{src} has {len(sources)} lines but {tgt} has {len(answers)}: one example a line each")
    if not sources:
        raise InputError(f"{src}: no examples")
    return [Example(group, s, [t]) for s, t in zip(sources, answers)]


def check_seq2seq(checkpoint: Path) -> None:
    _, manifest = read_checkpoint(checkpoint)
    family = manifest.summary.get("family", "gpt")
    if family != "t5":
        raise ArtifactError(f"checkpoint {checkpoint} holds a {family} model; squad/xquad/glue/custom evaluate a "
                            "fine-tuned seq2seq (T5/mT5) model",
                            hint="give a checkpoint written by bignlp-train finetune (or evaluate a GPT with "
                                 "bignlp-evaluate harness)")


def _lengths(loaded: Any) -> tuple[int, int]:
    """(source tokens, new tokens) the checkpoint was fine-tuned with (its config), else its position limits."""
    model_cfg = (loaded.manifest.config or {}).get("model", {}) if isinstance(loaded.manifest.config, dict) else {}
    positions = getattr(loaded.config, "max_position_embeddings", 512)
    src = int(model_cfg.get("seq_length") or positions)
    new = int((model_cfg.get("data") or {}).get("seq_length_dec") or 32)
    if getattr(loaded.config, "position_embedding_type", "") != "relative":
        src, new = min(src, positions), min(new, positions)
    return src, new


def evaluate_seq2seq(kind: str, checkpoint: str | Path, *, data: str | Path, output: str | Path,
                     targets: str | Path | None = None, batch_size: int = 16, max_new_tokens: int | None = None,
                     max_source_length: int | None = None, device: str = "cpu", config: dict | None = None,
                     unanswerable: str | None = None, log: Callable[[str], None] | None = None,
                     progress_every_s: float = 10.0) -> Path | None:
    """Generate and score ``kind``'s examples from ``data`` with ``checkpoint``; write an ``evaluation`` artifact
    at ``output`` (new or empty). ``unanswerable``: the output that means "no answer" (SQuAD v2.0; default
    the task data's ``unanswerable_text``). Under torchrun, srun or ``--nproc-per-node`` every process generates
    a share of the examples and rank 0 scores them all. Returns ``output`` (None on the other ranks)."""
    from bignlp_models import load_model

    if kind not in KINDS:
        raise InputError(f"unknown seq2seq task {kind!r}", hint=f"one of {', '.join(KINDS)}")
    log = log or (lambda _line: None)
    output = check_output(output)
    check_seq2seq(Path(checkpoint))
    examples = load_examples(kind, Path(data), None if targets is None else Path(targets))
    with process_group(device) as (rank, world_size, device):
        say = log if rank == 0 else (lambda _line: None)  # one progress stream: rank 0's
        say(f"loading {checkpoint} ({device}); {len(examples)} examples"
            + (f" over {world_size} processes" if world_size > 1 else ""))
        loaded = load_model(checkpoint, device=device)
        answers, src_len, steps = _generate_answers(
            loaded, examples, rank=rank, world_size=world_size, batch_size=batch_size, max_new_tokens=max_new_tokens,
            max_source_length=max_source_length, log=say, progress_every_s=progress_every_s)
        shares = [answers]
        if world_size > 1:  # every rank's answers to rank 0, which scores and writes
            import torch.distributed as dist

            shares = [None] * world_size if rank == 0 else None
            dist.gather_object(answers, shares, dst=0)
    if rank != 0:
        return None
    predictions = [""] * len(examples)
    for share in shares:
        for i, text in share:
            predictions[i] = text
    results = score_groups(kind, examples, predictions, unanswerable=unanswerable or unanswerable_text(Path(data)))
    table = [Row(group, metric, value / 100.0 if metric in ("accuracy", "exact_string_match") else value, None)
             for group, scores in results.items() for metric, value in scores.items()]
    payload = {"task": kind, "results": results,
               "predictions": [{"group": e.group, "prediction": p, "answers": e.answers}
                               for e, p in zip(examples, predictions)]}
    with atomic_directory(output) as tmp:
        (tmp / "results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "results.md").write_text(markdown_table(table, model=Path(loaded.path).name))
        (tmp / "results.csv").write_text(csv_table(table))
        (tmp / "config.yaml").write_text(yaml.safe_dump(config or {}, sort_keys=False))
        inputs = [input_record(loaded.path), input_record(data)]
        if targets is not None:
            inputs.append(input_record(targets))
        write_manifest(tmp, EVALUATION,
                       producer=Producer(PACKAGE, __version__, git_commit(Path(__file__).parent), slurm_job_record()),
                       files=["results.json", "results.md", "results.csv", "config.yaml"], config=config or {},
                       inputs=inputs,
                       summary={"tasks": list(results), "metrics": metrics_summary(table), "family": "t5",
                                "num_examples": len(examples), "max_new_tokens": steps,
                                "max_source_length": src_len, "processes": world_size})
    log(f"wrote {output}")
    return output


def _normalise(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles a/an/the, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text).split())


_PUNCTUATION = set(string.punctuation)


def _v2_f1(prediction: str, gold: str) -> float:
    p, g = _normalise(prediction).split(), _normalise(gold).split()
    if not p or not g:  # v2.0: an empty answer scores 1 against an empty answer only
        return float(p == g)
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def squad_v2_scores(predictions: list[str], answers: list[list[str]], *,
                    unanswerable: str = UNANSWERABLE) -> dict[str, float]:
    """exact_match and f1 (0-100) as the official SQuAD v2.0 script computes them, over all questions and apart
    for the answerable (``HasAns_*``) and unanswerable (``NoAns_*``) ones. An unanswerable question's gold is
    the empty answer; a prediction equal to ``unanswerable`` (ignoring case and surrounding space) is empty."""
    no_answer = unanswerable.strip().lower()
    em, f1 = [], []
    for prediction, golds in zip(predictions, answers):
        pred = "" if prediction.strip().lower() == no_answer else prediction
        golds = [g for g in golds if _normalise(g)] or [""]  # the script drops answers that normalise to nothing
        em.append(max(float(_normalise(pred) == _normalise(g)) for g in golds))
        f1.append(max(_v2_f1(pred, g) for g in golds))
    out = {"exact_match": 100.0 * sum(em) / len(em), "f1": 100.0 * sum(f1) / len(f1)}
    for name, keep in (("HasAns", True), ("NoAns", False)):
        idx = [i for i, golds in enumerate(answers) if bool(golds) == keep]
        if idx:
            out[f"{name}_exact_match"] = 100.0 * sum(em[i] for i in idx) / len(idx)
            out[f"{name}_f1"] = 100.0 * sum(f1[i] for i in idx) / len(idx)
    return out


def _generate_answers(loaded: Any, examples: list[Example], *, rank: int, world_size: int, batch_size: int,
                      max_new_tokens: int | None, max_source_length: int | None, log: Callable[[str], None],
                      progress_every_s: float) -> tuple[list[tuple[int, str]], int, int]:
    """This rank's (example index, answer) pairs (every ``world_size``-th example by source length, from
    ``rank``), and the source and answer token lengths used."""
    from bignlp_models import generate

    tok = loaded.tokenizer
    bos = tok.bos_id if tok.bos_id is not None else tok.cls_id
    eos = tok.eos_id if tok.eos_id is not None else tok.sep_id
    pad = tok.pad_id if tok.pad_id is not None else 0
    if bos is None or eos is None:
        raise ArtifactError(f"{loaded.path}: its tokenizer has no bos/eos (or cls/sep) to frame sources with")
    src_len, new_default = _lengths(loaded)
    src_len = max_source_length or src_len
    steps = max_new_tokens or new_default
    prompts = []
    for ids in tok.encode_batch([e.source for e in examples]):
        keep = src_len - 2
        prompts.append([bos, *(ids[len(ids) - keep:] if len(ids) > keep else ids), eos])
    # sorted by length (fewer pads), dealt round-robin so that every rank gets short and long ones
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))[rank::world_size]
    answers: list[tuple[int, str]] = []
    started = last = time.monotonic()
    for first in range(0, len(order), batch_size):
        chunk = order[first:first + batch_size]
        out = generate(loaded.model, [prompts[i] for i in chunk], max_new_tokens=steps, greedy=True,
                       stop_token_ids=[eos], pad_id=pad, vocab_size=loaded.vocab_size, decoder_start_token_id=bos)
        for i, tokens in zip(chunk, out.tokens):
            answers.append((i, tok.decode([t for t in tokens if t != eos], skip_special_tokens=True).strip()))
        done, now = first + len(chunk), time.monotonic()
        if now - last >= progress_every_s or done == len(order):
            rate = done / max(now - started, 1e-9)
            log(f"generated {done}/{len(order)}" + (" (rank 0's share)" if world_size > 1 else "")
                + f" | {rate:.1f}/s | ETA {format_duration((len(order) - done) / rate)}")
            last = now
    return answers, src_len, steps


def score_groups(kind: str, examples: list[Example], predictions: list[str], *,
                 unanswerable: str = UNANSWERABLE) -> dict[str, dict[str, float]]:
    """Per group (language, task) and, with several, their mean ("average"): exact_match/f1 for squad/xquad
    (0-100; SQuAD v2.0's scoring and its HasAns/NoAns parts when a group holds an unanswerable question),
    accuracy (glue) or exact_string_match (custom) in percent."""
    groups = list(dict.fromkeys(e.group for e in examples))
    out: dict[str, dict[str, float]] = {}
    for g in groups:
        idx = [i for i, e in enumerate(examples) if e.group == g]
        if kind in ("squad", "xquad"):
            preds, golds = [predictions[i] for i in idx], [examples[i].answers for i in idx]
            out[g] = (squad_v2_scores(preds, golds, unanswerable=unanswerable) if not all(golds)
                      else squad_scores(preds, golds))
        else:
            name = "accuracy" if kind == "glue" else "exact_string_match"
            hits = sum(predictions[i].strip() == examples[i].answers[0].strip() for i in idx)
            out[g] = {name: 100.0 * hits / len(idx)}
    if len(groups) > 1:
        metrics = [m for m in out[groups[0]] if all(m in out[g] for g in groups)]
        out["average"] = {m: sum(out[g][m] for g in groups) / len(groups) for m in metrics}
    return out
