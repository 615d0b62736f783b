"""Rebuild tests/data/corpus/demo-en.jsonl.gz and demo-multi.jsonl.gz from ../shared/data (how the slices were made).

demo-en: English only, the first 600 chapters of the World English Bible and every English
document of the Debian Reference.
demo-multi (the mT5 slice): the Debian Reference in eight languages (en de fr it pt id ja zh-cn),
each language's documents in file order, skipping any that would take it past 130 KB of text,
plus the first chapters of the Spanish Reina-Valera 1909 up to 250 KB; each language's documents
spread evenly over the file (document i of n at (i + 1/2) / n), so any contiguous train/valid/test
split of it holds several languages.
Deterministic: same input files, same bytes.
Run from the repository root: python tests/data/make_demo_corpus.py [SHARED_DATA_DIR]
"""

import gzip
import json
import sys
from pathlib import Path

shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "corpora"
out_dir = Path(__file__).parent / "corpus"
MULTI_LANGS = ("en", "de", "fr", "it", "pt", "id", "ja", "zh-cn")
MULTI_BYTES_PER_LANG = 130_000
SPANISH_BIBLE_BYTES = 250_000


def documents(name, lang):
    """The non-empty documents of ``lang`` in a corpus file, in file order."""
    with gzip.open(shared / name, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc["lang"] == lang and doc["text"].strip():
                yield doc


def first(docs, limit):
    return [doc for _, doc in zip(range(limit), docs)]


def within(docs, budget, *, skip_over=True):
    """Documents in order while their text fits ``budget`` bytes (skip_over: skip one that does not, go on)."""
    out, total = [], 0
    for doc in docs:
        size = len(doc["text"].encode())
        if total + size > budget:
            if skip_over:
                continue
            break
        out.append(doc)
        total += size
    return out


def write(path, docs):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        for doc in docs:
            record = {"text": doc["text"], "lang": doc["lang"], "source": doc["source"]}
            gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
    print(f"{path}: {len(docs)} documents, {sum(len(d['text'].encode()) for d in docs) / 1e6:.2f} MB of text")


english = [*first(documents("bible.web-en.rv1909-es.jsonl.gz", "en"), 600),
           *documents("debian-reference.11lang.jsonl.gz", "en")]
write(out_dir / "demo-en.jsonl.gz", english)

per_lang = [within(documents("debian-reference.11lang.jsonl.gz", lang), MULTI_BYTES_PER_LANG) for lang in MULTI_LANGS]
per_lang.append(within(documents("bible.web-en.rv1909-es.jsonl.gz", "es"), SPANISH_BIBLE_BYTES, skip_over=False))
spread = sorted(((i + 0.5) / len(docs), k, i) for k, docs in enumerate(per_lang) for i in range(len(docs)))
write(out_dir / "demo-multi.jsonl.gz", [per_lang[k][i] for _, k, i in spread])
