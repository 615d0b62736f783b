"""The mC4 recipe (mt5/download_mc4) end to end against the fixture server serving tests/data/mc4."""

from __future__ import annotations

import gzip
import json
import re
import unicodedata
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import start_fixture_server, stop_fixture_server

from bignlp_contracts import ConfigError, read_manifest, resolve_dataset
from bignlp_dataprep.cli import main
from bignlp_dataprep.recipes import load_recipe
from bignlp_dataprep.sentences import split_sentences
from bignlp_dataprep.shards import shard_of

MC4 = Path(__file__).with_name("data") / "mc4"
LANGS = ("de", "fr", "ja", "en")


@pytest.fixture(scope="module")
def server():
    url, proc = start_fixture_server(MC4)
    yield url
    stop_fixture_server(proc)


def _args(server: str, data_dir: Path) -> list[str]:
    return [f"data_dir={data_dir}", f"mc4_url={server}/files", "languages=de,fr,ja,en",
            "num_files={de: 2, fr: 1, ja: 2}",
            "max_files_per_language=2", "max_split_size=0.000002",  # 2 KB: de and en get two splits each
            "download_tokenizer_url=null", "train_tokenizer=true", "spm_train_files=2",
            "train_tokenizer_args.vocab_size=700", "train_tokenizer_args.character_coverage=1.0",
            "train_tokenizer_args.input_sentence_size=0", "download_backoff_s=0.01"]


def _texts(lang: str) -> list[str]:
    pattern = "en/c4-train.*.json.gz" if lang == "en" else f"multilingual/c4-{lang}.tfrecord-*.json.gz"
    out = []
    for path in sorted(MC4.glob(pattern)):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            out += [json.loads(line)["text"] for line in f]
    return out


def _normalized(text: str) -> str:
    """What SentencePiece's nmt_nfkc normalization keeps: NFKC text, whitespace runs as one space."""
    return " ".join(unicodedata.normalize("NFKC", text).split())


def test_config_keys(tmp_path):
    cfg = load_recipe("mt5/download_mc4", [f"data_dir={tmp_path}", "languages=[de,en]", "num_files={de: 3}"])
    assert cfg.language_list() == ["de", "en"] and cfg.use_cleaned_english
    urls = [f.source for f in cfg.file_items("en")]
    assert len(urls) == 1024 and urls[5].endswith("/en/c4-train.00005-of-01024.json.gz")
    assert cfg.file_items("de")[2].source.endswith("/multilingual/c4-de.tfrecord-00002-of-00003.json.gz")
    assert cfg.tokenizer_files()["tokenizer_model"][1] == tmp_path / "bpe" / "mt5_tokenizer.model"
    with pytest.raises(ConfigError, match="no file count for af, am, ar"):  # all: every mC4 language
        load_recipe("mt5/download_mc4", [f"data_dir={tmp_path}", "languages=all"])


@pytest.mark.parametrize("overrides, message", [
    (["languages=de,xx", "num_files={de: 1}"], "languages: xx not in mC4"),
    (["languages=de,fr", "num_files={de: 1}"], "num_files: no file count for fr"),
    (["languages=de", "num_files={de: 1}", "train_tokenizer=true"], "train_tokenizer and download_tokenizer_url"),
    (["languages=de", "num_files={de: 1}", "tokenizer_type=gpt2-bpe", "download_tokenizer_url=null"],
     "needs vocab_file"),
])
def test_bad_keys(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe("mt5/download_mc4", [f"data_dir={tmp_path}", *overrides])


def test_sizes_file_and_splits(tmp_path):
    sizes = tmp_path / "sizes.txt"
    sizes.write_text("".join(f"{p.stat().st_size}  {p.name}\n" for p in sorted(MC4.rglob("*.json.gz"))))
    cfg = load_recipe("mt5/download_mc4", [*_args("http://127.0.0.1:9", tmp_path / "d"), f"sizes_file={sizes}"])
    items = cfg.items()  # no server at port 9: every size comes from the list
    assert [(i.id, i.prefix, len(i.parts)) for i in items] == [
        ("de-s00", "de_00", 1), ("de-s01", "de_01", 1), ("fr-s00", "fr", 1), ("ja-s00", "ja", 2),
        ("en-s00", "en_00", 1), ("en-s01", "en_01", 1)]
    assert items[3].size == sum(p.stat().st_size for p in MC4.glob("multilingual/c4-ja.*"))


def test_mc4_two_shares_then_finalize(server, tmp_path):
    import sentencepiece
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    data_dir = tmp_path / "data"
    args = _args(server, data_dir)
    outputs = []
    for rank in (0, 1):
        res = CliRunner().invoke(main, ["run", "--config", "mt5/download_mc4", "--rank", str(rank), "--world-size", "2",
                                        *args], catch_exceptions=False)
        assert res.exit_code == 0, res.output
        outputs.append(res.output)
    assert "tokenizer: 1 done" in outputs[0] and "tokenizer: 0 done, 1 already done" in outputs[1]
    # shares balanced by bytes (sizes from HTTP HEAD, cached for both shares)
    cfg = load_recipe("mt5/download_mc4", args)
    items = cfg.items()
    assert json.loads((data_dir / "raw" / "sizes.json").read_text()) and all(i.size for i in items)
    loads = [sum(i.size for i in shard_of(items, r, 2, sizes=[i.size for i in items])) for r in (0, 1)]
    assert max(loads) - min(loads) <= max(i.size for i in items)
    for rank in (0, 1):
        mine = [i.id for i in shard_of(items, rank, 2, sizes=[i.size for i in items])]
        assert f"share {rank} of 2: {len(mine)} file(s) {' '.join(mine)}" in outputs[rank]

    res = CliRunner().invoke(main, ["run", "--config", "mt5/download_mc4", "--step", "finalize", *args])
    assert res.exit_code == 0, res.output
    manifest = read_manifest(data_dir)
    assert manifest.summary["tokenizer"]["tokenizer_model"] == "tokenizer/mt5_tokenizer.model"
    # num_sentinel_tokens: 100, then the T5 roles the model lacks (<cls>, <sep>, <mask>, <bos>), as NeMo appends them
    assert manifest.summary["tokenizer"]["num_sentinel_tokens"] == 100
    assert manifest.summary["tokenizer"]["vocab_size"] == 700 + 100 + 4
    refs = {r.prefix.name: r for r in resolve_dataset(data_dir, verify="sha256")}
    assert sorted(refs) == sorted(f"{p}_text_document" for p in ("de_00", "de_01", "fr", "ja", "en_00", "en_01"))
    sp = sentencepiece.SentencePieceProcessor(model_file=str(data_dir / "tokenizer" / "mt5_tokenizer.model"))
    assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
    for lang in LANGS:
        decoded = []
        for name in sorted(n for n in refs if n.split("_")[0] == lang):
            ds = IndexedDataset(str(refs[name].prefix))
            for d in range(len(ds.document_indices) - 1):
                seqs = range(ds.document_indices[d], ds.document_indices[d + 1])
                ids = [int(t) for s in seqs for t in ds[s]]
                assert sp.unk_id() not in ids
                decoded.append(sp.decode(ids))
        # split_sentences: True, each sentence encoded alone; a sentence after 。 without a space starts with "▁"
        expected = [_normalized(" ".join(split_sentences(t))) for t in _texts(lang)]
        assert [_normalized(t) for t in decoded] == expected, lang


def test_files_already_on_disk(tmp_path):
    """download_mc4=False: the json.gz files are in DATA_DIR/raw; sizes by stat, nothing fetched."""
    import shutil

    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    for path in MC4.glob("multilingual/c4-fr.*.json.gz"):
        shutil.copy(path, raw / path.name)
    res = CliRunner().invoke(main, ["run", "--config", "mt5/download_mc4", f"data_dir={tmp_path / 'data'}",
                                    "download_mc4=false", "languages=fr", "num_files={fr: 1}",
                                    "download_tokenizer_url=null", "tokenizer_type=sentencepiece",
                                    f"tokenizer_model={MC4.parent / 'botchan_en_unigram_1000.model'}"])
    assert res.exit_code == 0, res.output
    assert "download: 0 done, 1 already done or not needed" in res.output
    assert [r.prefix.name for r in resolve_dataset(tmp_path / "data")] == ["fr_text_document"]
