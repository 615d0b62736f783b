"""Rebuild tests/data/eval/lambada.jsonl: a LAMBADA-format file of text the demo never trains on.

Chapters 601 onwards of the World English Bible (demo-en.jsonl.gz holds chapters 1-600), cut into
passages of whole sentences of 30 to 80 words; each passage's final punctuation is dropped so it
ends on a word, the word lm-eval's lambada_openai task asks the model to predict (`text` only,
as that task reads it). The first 200 such passages. Deterministic: same input file, same bytes.
Run from the repository root: python tests/data/make_demo_lambada.py [SHARED_DATA_DIR]
"""

import gzip
import json
import re
import sys
from pathlib import Path

shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "corpora"
out = Path(__file__).parent / "eval" / "lambada.jsonl"
SKIP_CHAPTERS, PASSAGES, MIN_WORDS, MAX_WORDS = 600, 200, 30, 80


def chapters():
    with gzip.open(shared / "bible.web-en.rv1909-es.jsonl.gz", "rt", encoding="utf-8") as f:
        english = (json.loads(line) for line in f)
        for i, doc in enumerate(d for d in english if d["lang"] == "en" and d["text"].strip()):
            if i >= SKIP_CHAPTERS:
                yield doc["text"]


def passages():
    for text in chapters():
        sentences = re.split(r"(?<=[.!?])\s+", re.sub(r"\s+", " ", text).strip())
        current: list[str] = []
        for sentence in sentences:
            current.append(sentence)
            words = sum(len(s.split()) for s in current)
            if words > MAX_WORDS:
                current = [sentence]
            elif words >= MIN_WORDS:
                passage = re.sub(r"[^A-Za-z]+$", "", " ".join(current))
                if re.search(r" [A-Za-z]{3,}$", passage):  # ends on a real word
                    yield passage
                current = []


out.parent.mkdir(parents=True, exist_ok=True)
rows = [p for _, p in zip(range(PASSAGES), passages())]
out.write_text("".join(json.dumps({"text": p}, ensure_ascii=False) + "\n" for p in rows), encoding="utf-8")
print(f"{out}: {len(rows)} passages")
