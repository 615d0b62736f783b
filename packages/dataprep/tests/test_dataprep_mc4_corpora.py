"""The multilingual corpora of ../shared/data/corpora through the mC4 path into an mT5 dataset.

Every document of the five corpora is sorted into its mC4 language (20 of them), packed as
``json.gz`` files in the ``allenai/c4`` layout (English as cleaned C4, ``en/c4-train.*``),
served by the fixture server, and run through ``bignlp-dataprep run --config mt5/download_mc4``
with a SentencePiece model trained by our own trainer. To keep the test short, each language takes
at most CAP_BYTES of text (whole documents, in order) from each corpus that has it.
"""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import REPO, start_fixture_server, stop_fixture_server

from bignlp_contracts import read_manifest, resolve_dataset
from bignlp_dataprep.cli import main
from bignlp_dataprep.sentences import split_sentences

CORPORA = REPO.parent / "shared" / "data" / "corpora"  # tests/support.py's SHARED_DATA / "corpora"
CAP_BYTES = 30_000
FILES_PER_LANGUAGE = 2
# corpus language tags → mC4 codes (mC4 has one Portuguese and one Chinese)
MC4_CODE = {"pt-br": "pt", "pt-BR": "pt", "zh-cn": "zh", "zh-tw": "zh", "zh_CN": "zh"}

pytestmark = pytest.mark.skipif(not CORPORA.is_dir(), reason=f"{CORPORA} is absent (shared data not mounted)")


def _documents() -> dict[str, list[dict]]:
    """mC4 language → documents {"text", "url", "timestamp"}: at most CAP_BYTES of text per corpus, in order."""
    by_lang: dict[str, list[dict]] = {}
    size: dict[tuple[str, str], int] = {}

    def add(lang: str, text: str, source: str) -> None:
        lang = MC4_CODE.get(lang, lang)
        n = len(text.encode())
        corpus = source.split(":", 1)[0].split("#", 1)[0]
        if not text.strip() or size.get((lang, corpus), 0) + n > CAP_BYTES:
            return
        size[lang, corpus] = size.get((lang, corpus), 0) + n
        by_lang.setdefault(lang, []).append({"text": text, "timestamp": "2019-04-25T12:57:54Z",
                                             "url": f"file:///{source}"})

    for path in sorted(CORPORA.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                doc = json.loads(line)
                add(doc["lang"], doc["text"], f"{path.name}:{doc.get('source', '')}")
    paragraphs = CORPORA.joinpath("botchan.en.txt").read_text(encoding="utf-8").split("\n\n")
    for i, para in enumerate(paragraphs):
        add("en", para.strip(), f"botchan.en.txt#{i}")
    return by_lang


def _pack(root: Path, docs: dict[str, list[dict]]) -> None:
    """multilingual/c4-{lang}.tfrecord-0000i-of-00002.json.gz and en/c4-train.0000i-of-01024.json.gz."""
    for lang, items in docs.items():
        half = (len(items) + 1) // 2
        for i, part in enumerate((items[:half], items[half:])):
            if lang == "en":
                path = root / "en" / f"c4-train.{i:05d}-of-01024.json.gz"
            else:
                path = root / "multilingual" / f"c4-{lang}.tfrecord-{i:05d}-of-{FILES_PER_LANGUAGE:05d}.json.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(gzip.compress("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in part).encode()))


def _normalized(text: str) -> str:
    """What SentencePiece's nmt_nfkc normalization keeps: NFKC text without control characters (the fortunes
    have backspace overstrikes), whitespace runs as one space."""
    text = "".join(c for c in text if c.isspace() or unicodedata.category(c) != "Cc")
    return " ".join(unicodedata.normalize("NFKC", text).split())


def test_every_language_of_the_corpora_becomes_an_mt5_dataset(tmp_path):
    import sentencepiece
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = _documents()
    langs = sorted(docs)
    assert len(langs) >= 20 and {"en", "ja", "ru", "zh", "ko", "el", "vi"} <= set(langs)
    _pack(tmp_path / "www", docs)
    url, proc = start_fixture_server(tmp_path / "www")
    try:
        data_dir = tmp_path / "data"
        others = ",".join(f"{lang}: {FILES_PER_LANGUAGE}" for lang in langs if lang != "en")
        res = CliRunner().invoke(main, [
            "run", "--config", "mt5/download_mc4", f"data_dir={data_dir}", f"mc4_url={url}/files",
            f"languages={','.join(langs)}", f"num_files={{{others}}}", "max_files_per_language=2",
            "download_tokenizer_url=null", "train_tokenizer=true", "spm_train_files=2",
            "train_tokenizer_args.vocab_size=6000", "train_tokenizer_args.character_coverage=1.0",
            "train_tokenizer_args.input_sentence_size=0", "workers=1", "download_backoff_s=0.01",
        ], catch_exceptions=False)
    finally:
        stop_fixture_server(proc)
    assert res.exit_code == 0, res.output
    assert f"({len(langs)} datasets, {sum(map(len, docs.values())):,} documents" in res.stdout

    manifest = read_manifest(data_dir, verify="sha256")
    summary = manifest.summary
    assert summary["tokenizer"]["type"] == "sentencepiece"
    assert summary["tokenizer"]["tokenizer_model"] == "tokenizer/mt5_tokenizer.model"
    assert [d["prefix"] for d in summary["datasets"]] == [f"{lang}_text_document" for lang in langs]
    assert summary["input_bytes"] == sum(len(json.dumps(d, ensure_ascii=False).encode()) + 1
                                         for items in docs.values() for d in items)
    assert not any(summary["skipped"].values())
    sp = sentencepiece.SentencePieceProcessor(model_file=str(data_dir / "tokenizer" / "mt5_tokenizer.model"))
    assert sp.get_piece_size() == 6000 and (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    refs = {r.prefix.name: r for r in resolve_dataset(data_dir)}
    for lang in langs:
        ds = IndexedDataset(str(refs[f"{lang}_text_document"].prefix))
        assert len(ds.document_indices) - 1 == len(docs[lang]), lang
        decoded = []
        for d in range(len(ds.document_indices) - 1):
            ids = [int(t) for s in range(ds.document_indices[d], ds.document_indices[d + 1]) for t in ds[s]]
            assert sp.unk_id() not in ids, lang
            decoded.append(sp.decode(ids))
        # split_sentences: True, each sentence encoded alone; a sentence after 。 without a space starts with "▁"
        assert decoded == [_normalized(" ".join(split_sentences(d["text"]))) for d in docs[lang]], lang
