"""The data of tests/bench/squad_heldout.sh: an English pretraining corpus, SQuAD slices, synthetic cloze questions.

Writes into OUT_DIR (deterministic: rerunning gives the same bytes):

- ``corpus-en.jsonl``: the English documents of SHARED_DATA/corpora (the World English Bible chapters,
  the English Debian Reference, Botchan in 20-paragraph documents) and tests/data/corpus/demo-en, as
  ``{"text": ...}`` lines for ``bignlp-dataprep preprocess``. No SQuAD text: benchmark data stays out of
  pretraining.
- ``train-articles-0-39.json``: every question of SQuAD v1.1 dev articles 0-39 on paragraphs of at most
  900 characters (6,616 questions; a 256-token source keeps the whole paragraph).
- ``heldout-articles-40-47.json``: every question of articles 40-47 on paragraphs of at most 600 characters
  (388; ``tests/data/squad/dev-v1.1-slice.json``'s 100 are among them). No article is in both files.
- ``cloze_src.txt`` / ``cloze_tgt.txt``: SQuAD-shaped questions made from the same English corpus (not
  from SQuAD): ``Title: T Paragraph: P Question: Q`` where Q is one of P's sentences with a 1-3 word span
  replaced by who/what/how many, and the target is that span. They teach a small model what SQuAD's
  few thousand questions do not: find the question's words in the paragraph and copy what stands there.

    python tests/bench/squad_heldout_data.py SHARED_DATA OUT_DIR
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from collections.abc import Iterator
from pathlib import Path

DEMO_CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "demo-en.jsonl.gz"
BIBLE = "corpora/bible.web-en.rv1909-es.jsonl.gz"
DEBIAN = "corpora/debian-reference.11lang.jsonl.gz"
BOTCHAN = "corpora/botchan.en.txt"
SQUAD_DEV = "eval/squad-v1.1-dev.json.gz"
TRAIN_ARTICLES, TRAIN_MAX_CONTEXT = range(0, 40), 900
HELDOUT_ARTICLES, HELDOUT_MAX_CONTEXT = range(40, 48), 600
CLOZE_PARAGRAPH_CHARS = 700  # about SQuAD's paragraph length; fits 256 tokens with the question
CLOZE_PER_PARAGRAPH = 2
STOPWORDS = frozenset((
    "the", "a", "an", "of", "and", "to", "in", "that", "is", "was", "he", "she", "it", "they", "his", "her",
    "their", "i", "you", "we", "for", "with", "on", "as", "at", "by", "be", "this", "not", "or", "but", "from",
    "are", "were", "had", "have", "has", "him", "them", "said", "all", "which", "will", "shall", "my", "your",
    "me", "us"))


def english_documents(shared: Path) -> Iterator[tuple[str, str]]:
    """(title, text) of every English document of the shared corpora."""
    for name, title in ((BIBLE, None), (DEBIAN, "Debian Reference")):
        with gzip.open(shared / name, "rt", encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                if row.get("lang") == "en":
                    yield title or row["source"].rsplit(":", 1)[-1], row["text"]
    paragraphs = (shared / BOTCHAN).read_text(encoding="utf-8").split("\n\n")
    for i in range(0, len(paragraphs), 20):
        yield "Botchan", "\n\n".join(paragraphs[i:i + 20])


def write_corpus(shared: Path, path: Path) -> int:
    """The pretraining corpus as JSONL; returns its document count."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        texts = [text for _, text in english_documents(shared)]
        with gzip.open(DEMO_CORPUS, "rt", encoding="utf-8") as f:
            texts += [json.loads(line)["text"] for line in f]
        for text in texts:
            out.write(json.dumps({"text": text}) + "\n")
            count += 1
    return count


def squad_slice(dev: dict, articles: range, max_context: int) -> dict:
    """The questions of ``articles`` on paragraphs of at most ``max_context`` characters, in SQuAD form."""
    data = []
    for index in articles:
        article = dev["data"][index]
        paragraphs = [p for p in article["paragraphs"] if len(p["context"]) <= max_context]
        if paragraphs:
            data.append({"title": article["title"], "paragraphs": paragraphs})
    return {"version": dev["version"], "data": data}


def paragraphs_of(text: str) -> Iterator[str]:
    """``text`` cut at sentence ends into paragraphs of about CLOZE_PARAGRAPH_CHARS."""
    sentences = [s for s in re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text)) if s]
    paragraph: list[str] = []
    for sentence in sentences:
        if paragraph and sum(map(len, paragraph)) + len(sentence) > CLOZE_PARAGRAPH_CHARS:
            yield " ".join(paragraph)
            paragraph = []
        paragraph.append(sentence)
    if paragraph:
        yield " ".join(paragraph)


def cloze_question(sentence: str, rng: random.Random) -> tuple[str, str] | None:
    """(question, answer): ``sentence`` with a 1-3 word span starting at a content word replaced by a wh-word."""
    words = sentence.split()
    if not 6 <= len(words) <= 40:
        return None
    starts = [i for i, w in enumerate(words) if (bare := re.sub(r"\W", "", w)) and bare.lower() not in STOPWORDS]
    if not starts:
        return None
    start = rng.choice(starts)
    length = min(rng.choice((1, 1, 2, 2, 3)), len(words) - start)
    answer = " ".join(w for w in (re.sub(r"^\W+|\W+$", "", w) for w in words[start:start + length]) if w)
    if not answer:
        return None
    wh = "who" if answer[0].isupper() else "how many" if answer[0].isdigit() else "what"
    question = " ".join(words[:start] + [wh] + words[start + length:])
    return re.sub(r"[.!?,;:]+$", "", question) + "?", answer


def write_cloze(shared: Path, src: Path, tgt: Path, seed: int = 0) -> int:
    """Synthetic SQuAD-form questions from the English corpora; returns their count."""
    rng, count = random.Random(seed), 0
    with src.open("w", encoding="utf-8") as s, tgt.open("w", encoding="utf-8") as t:
        for title, text in english_documents(shared):
            for paragraph in paragraphs_of(text):
                if len(paragraph) < 200:
                    continue
                sentences = re.split(r"(?<=[.!?])\s+", paragraph)
                for sentence in rng.sample(sentences, min(CLOZE_PER_PARAGRAPH, len(sentences))):
                    if qa := cloze_question(sentence, rng):
                        s.write(f"Title: {title} Paragraph: {paragraph} Question: {qa[0]}\n")
                        t.write(qa[1] + "\n")
                        count += 1
    return count


def main(shared: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    print(f"corpus-en.jsonl: {write_corpus(shared, out / 'corpus-en.jsonl')} documents")
    with gzip.open(shared / SQUAD_DEV, "rt", encoding="utf-8") as f:
        dev = json.load(f)
    for name, articles, max_context in (("train-articles-0-39.json", TRAIN_ARTICLES, TRAIN_MAX_CONTEXT),
                                        ("heldout-articles-40-47.json", HELDOUT_ARTICLES, HELDOUT_MAX_CONTEXT)):
        cut = squad_slice(dev, articles, max_context)
        (out / name).write_text(json.dumps(cut), encoding="utf-8")
        print(f"{name}: {sum(len(p['qas']) for a in cut['data'] for p in a['paragraphs'])} questions")
    print(f"cloze_src.txt: {write_cloze(shared, out / 'cloze_src.txt', out / 'cloze_tgt.txt')} questions")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]))
