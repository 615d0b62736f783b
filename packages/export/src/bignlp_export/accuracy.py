"""The seed's export accuracy test: lambada last-word accuracy through the served ensemble, greedy.

Scored as lm-evaluation-harness scores ``lambada_openai``'s ``acc`` (what ``bignlp-evaluate harness``
reports): the context is the passage without its last word, the target is `` `` + that word; the
target's tokens are those of context + target after the context's (lm-eval's ``_encode_pair``,
both tokenized by the served ``preprocessing``), and a passage counts when greedy generation of
that many tokens through the ensemble gives exactly them (lm-eval's ``is_greedy``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from bignlp_contracts import InputError, format_duration

from .client import generate, http_client, tokenize


def read_lambada(path: str | Path) -> list[str]:
    """The ``text`` of each line of a lambada JSONL file; InputError naming file:line for a bad one."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (lambada JSONL, one {{\"text\": ...}} a line)")
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            text = json.loads(line)["text"]
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{number}: not a JSON object with a \"text\" string") from None
        if not isinstance(text, str) or len(text.split(" ")) < 2:
            raise InputError(f"{path}:{number}: \"text\" must be a passage of at least two words")
        texts.append(text)
    if not texts:
        raise InputError(f"{path}: no passages")
    return texts


def split_passage(text: str) -> tuple[str, str]:
    """(context, target) as lambada_openai builds them, with lm-eval's move of trailing spaces to the target."""
    words = text.split(" ")
    context, target = " ".join(words[:-1]), " " + words[-1]
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, target = context[:-spaces], context[-spaces:] + target
    return context, target


def lambada_accuracy(url: str, data: str | Path, *, model: str = "ensemble", batch_size: int = 8,
                     max_positions: int | None = None, log: Callable[[str], None] = lambda _: None,
                     progress_every_s: float = 10.0) -> dict:
    """{"accuracy", "correct", "total", "results": [per passage: target, answer, correct]} through ``url``."""
    texts = read_lambada(data)
    client = http_client(url)
    results = []
    started = last = time.monotonic()
    try:
        for start in range(0, len(texts), batch_size):
            chunk = texts[start:start + batch_size]
            pairs = [split_passage(t) for t in chunk]
            context_ids = tokenize(client, [c for c, _ in pairs])
            whole_ids = tokenize(client, [c + t for c, t in pairs])
            targets = [whole[len(ctx):] for ctx, whole in zip(context_ids, whole_ids)]
            for i, (ctx, target) in enumerate(zip(context_ids, targets)):
                if max_positions and len(ctx) + len(target) > max_positions:
                    raise InputError(f"{data}:{start + i + 1}: passage of {len(ctx) + len(target)} tokens is longer "
                                     f"than the model's {max_positions} positions")
            answer = generate(client, [c for c, _ in pairs], [max(1, len(t)) for t in targets], model=model, top_k=1)
            for (context, target), want, got, text in zip(pairs, targets, answer.ids, answer.texts):
                results.append({"context": context, "target": target, "answer": text, "correct": got == want})
            now = time.monotonic()
            if now - last < progress_every_s and len(results) < len(texts):
                continue  # a line every progress_every_s seconds, and the last one
            last, elapsed = now, now - started
            eta = elapsed / len(results) * (len(texts) - len(results))
            log(f"accuracy: {len(results)}/{len(texts)} passages, {sum(r['correct'] for r in results)} right, "
                f"{format_duration(elapsed)} elapsed, ETA {format_duration(eta)}")
    finally:
        client.close()
    correct = sum(r["correct"] for r in results)
    return {"accuracy": correct / len(results), "correct": correct, "total": len(results), "results": results}
