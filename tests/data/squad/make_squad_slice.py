"""Cut the SQuAD v1.1 slices shipped in tests/data/squad from the real dev set (../shared/data/eval).

train-v1.1-slice.json: 400 questions from articles 0-39; dev-v1.1-slice.json: 100 questions from
articles 40-47 (no article in both), at most PER_ARTICLE from one article. train-v1.1-articles-0-39.json.gz:
every question of articles 0-39 (2,838): the training set for held-out runs on the dev slice. Only paragraphs
of at most MAX_CONTEXT characters are taken, so that a tiny CPU model's 128-token encoder sees most of the
paragraph. Both files keep the official
SQuAD v1.1 JSON form. The source's BIG-bench canary string is kept. Deterministic: rerunning gives the same bytes.

    python tests/data/squad/make_squad_slice.py [../shared/data/eval/squad-v1.1-dev.json.gz]
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT = HERE.parents[2].parent / "shared" / "data" / "eval" / "squad-v1.1-dev.json.gz"
MAX_CONTEXT = 600
PER_ARTICLE = 20  # questions at most from one article, for variety
# name: (articles, questions, at most per article); None: all
SLICES = {"train-v1.1-slice.json": (range(0, 40), 400, PER_ARTICLE),
          "dev-v1.1-slice.json": (range(40, 48), 100, PER_ARTICLE),
          "train-v1.1-articles-0-39.json.gz": (range(0, 40), 2838, None)}


def cut(data: list[dict], articles: range, limit: int, per_article: int | None = PER_ARTICLE) -> list[dict]:
    per_article = per_article or limit
    out, taken = [], 0
    for index in articles:
        article = data[index]
        paragraphs, here = [], 0
        for paragraph in article["paragraphs"]:
            if len(paragraph["context"]) > MAX_CONTEXT or taken >= limit or here >= per_article:
                continue
            qas = paragraph["qas"][: min(limit - taken, per_article - here)]
            taken += len(qas)
            here += len(qas)
            paragraphs.append({"context": paragraph["context"], "qas": qas})
        if paragraphs:
            out.append({"title": article["title"], "paragraphs": paragraphs})
    if taken < limit:
        raise SystemExit(f"only {taken} questions for {limit}")
    return out


def main(source: Path) -> None:
    full = json.loads(gzip.decompress(source.read_bytes()))
    data = full["data"]
    for name, (articles, limit, per_article) in SLICES.items():
        # BIG-bench's canary string stays with the data: tools that filter training corpora look for it
        doc = {"version": "1.1", "canary": full["canary"], "data": cut(data, articles, limit, per_article)}
        text = (json.dumps(doc, ensure_ascii=False, indent=None) + "\n").encode("utf-8")
        # mtime 0: the same bytes on every rerun
        (HERE / name).write_bytes(gzip.compress(text, mtime=0) if name.endswith(".gz") else text)
        print(f"{name}: {limit} questions, {len(doc['data'])} articles")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
