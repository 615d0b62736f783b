"""Rebuild the mC4-layout fixture from ../shared/data/corpora/debian-reference.11lang.jsonl.gz.

Run from the repository root: python packages/dataprep/tests/data/mc4/make_mc4_fixture.py
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[6] / "shared" / "data" / "corpora" / "debian-reference.11lang.jsonl.gz"
HERE = Path(__file__).parent
# language → documents per file (the -of-N count is the number of files)
LAYOUT = {"de": [2, 1], "fr": [2], "ja": [1, 1], "en": [2, 1]}
MAX_CHARS = {"ja": 700}  # CJK is 3 bytes a character: keep every language at a few KB


def _cut(text: str, limit: int) -> str:
    """The first lines of ``text`` up to ``limit`` characters."""
    out = ""
    for line in text.split("\n"):
        if len(out) + len(line) + 1 > limit:
            break
        out += line + "\n"
    return out.strip() or text[:limit]


def main() -> None:
    docs: dict[str, list[dict]] = {lang: [] for lang in LAYOUT}
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            if d["lang"] in docs and len(docs[d["lang"]]) < sum(LAYOUT[d["lang"]]):
                text = _cut(d["text"], MAX_CHARS.get(d["lang"], 1500))
                n = len(docs[d["lang"]])
                docs[d["lang"]].append({"text": text, "timestamp": "2020-01-01T00:00:00Z",
                                        "url": f"https://www.debian.org/doc/manuals/debian-reference/{d['lang']}/{n}"})
    for lang, per_file in LAYOUT.items():
        start = 0
        for index, n in enumerate(per_file):
            if lang == "en":  # cleaned English: en/c4-train.NNNNN-of-01024.json.gz
                path = HERE / "en" / f"c4-train.{index:05d}-of-01024.json.gz"
            else:
                path = HERE / "multilingual" / f"c4-{lang}.tfrecord-{index:05d}-of-{len(per_file):05d}.json.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            body = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[lang][start : start + n])
            path.write_bytes(gzip.compress(body.encode("utf-8"), mtime=0))
            start += n


if __name__ == "__main__":
    main()
