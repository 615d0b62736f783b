"""Rebuild tests/data/corpus/demo-en.jsonl.gz from ../shared/data (how the shipped slice was made).

English only: the first 600 chapters of the World English Bible and every English
document of the Debian Reference. Deterministic: same input files, same bytes.
Run from the repository root: python tests/data/make_demo_corpus.py [SHARED_DATA_DIR]
"""

import gzip
import json
import sys
from pathlib import Path

shared = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/data") / "corpora"
out = Path(__file__).parent / "corpus" / "demo-en.jsonl.gz"


def english(name, limit=None):
    n = 0
    with gzip.open(shared / name, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)
            if doc["lang"] == "en" and doc["text"].strip():
                yield doc
                n += 1
                if limit is not None and n >= limit:
                    return


docs = [*english("bible.web-en.rv1909-es.jsonl.gz", 600), *english("debian-reference.11lang.jsonl.gz")]
out.parent.mkdir(parents=True, exist_ok=True)
with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
    for doc in docs:
        record = {"text": doc["text"], "lang": doc["lang"], "source": doc["source"]}
        gz.write((json.dumps(record, ensure_ascii=False) + "\n").encode())
print(f"{out}: {len(docs)} documents, {sum(len(d['text'].encode()) for d in docs) / 1e6:.2f} MB of text")
