"""``run`` with every tokenizer, and the custom recipe's own SentencePiece training (train_tokenizer_args)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from dataprep_helpers import (
    MERGES,
    PILE_SHARDS,
    VOCAB,
    make_www,
    slice_file,
    start_fixture_server,
    stop_fixture_server,
)

from bignlp_contracts import ConfigError, read_manifest, resolve_dataset
from bignlp_dataprep.cli import main
from bignlp_dataprep.config import PreprocessConfig
from bignlp_dataprep.preprocess import preprocess
from bignlp_dataprep.recipes import load_recipe

BERT_VOCAB = Path(__file__).resolve().parents[3] / "tests" / "data" / "bert" / "vocab.txt"
SPM_MODEL = Path(__file__).with_name("data") / "botchan_en_unigram_1000.model"
CUSTOM = "generic/custom_dataset"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    www = make_www(tmp_path_factory.mktemp("www"))  # pile/NN.jsonl.zst, gpt2/
    (www / "bert").mkdir()
    shutil.copy(BERT_VOCAB, www / "bert" / "vocab.txt")
    shutil.copy(SPM_MODEL, www / SPM_MODEL.name)
    shutil.copy(slice_file(30, "zstd"), www / "corpus.jsonl.zst")
    url, proc = start_fixture_server(www)
    yield url
    stop_fixture_server(proc)


@pytest.fixture(scope="module")
def tokenizer_json(tmp_path_factory) -> Path:
    from tokenizers import ByteLevelBPETokenizer

    path = tmp_path_factory.mktemp("hf") / "tokenizer.json"
    ByteLevelBPETokenizer(str(VOCAB), str(MERGES), add_prefix_space=False).save(str(path))
    return path


def _run(*args: str):
    return CliRunner().invoke(main, ["run", *args], catch_exceptions=False)


# --- configs ----------------------------------------------------------------------------------------------------


def test_tokenizer_keys_per_type(tmp_path):
    t5 = load_recipe("gpt3/download_gpt3_pile", [f"data_dir={tmp_path}", "tokenizer_type=BertWordPieceCase",
                                                 "download_vocab_url=http://h/v.txt", "download_merges_url=null"])
    assert {k: (u, p.name) for k, (u, p) in t5.tokenizer_files().items()} == {"vocab_file": ("http://h/v.txt",
                                                                                         "vocab.txt")}
    sp = load_recipe(CUSTOM, [f"data_dir={tmp_path}", "raw_dataset_files=[a.jsonl]", "tokenizer_model=http://h/m.model"])
    assert sp.tokenizer_type == "sentencepiece"
    assert sp.tokenizer_files() == {"tokenizer_model": ("http://h/m.model", tmp_path / "bpe" / "m.model")}
    trained = load_recipe(CUSTOM, [f"data_dir={tmp_path}", "raw_dataset_files=[a.jsonl]", "train_tokenizer=true",
                                   "train_tokenizer_args.input=t.txt", "train_tokenizer_args.vocab_size=500"])
    assert trained.tokenizer_type == "sentencepiece" and trained.train_tokenizer_args.input == ("t.txt",)
    assert trained.tokenizer_files()["tokenizer_model"][1] == tmp_path / "bpe" / "custom_sp_tokenizer.model"


@pytest.mark.parametrize("overrides, message", [
    ([], "custom_dataset needs a tokenizer"),
    (["tokenizer_type=huggingface"], "tokenizer_type huggingface needs tokenizer_file"),
    (["tokenizer_type=BertWordPieceCase"], "tokenizer_type bert-wordpiece-case needs vocab_file"),
    (["vocab_file=v.json"], "tokenizer_type gpt2-bpe needs merge_file"),
    (["train_tokenizer=true", "tokenizer_type=GPT2BPETokenizer"], "train_tokenizer trains a SentencePiece model"),
    (["train_tokenizer=true", "train_tokenizer_args.model_type=bpe2"], "model_type"),
    (["train_tokenizer=true", "train_tokenizer_args.vocab_sise=9"], "did you mean train_tokenizer_args.vocab_size?"),
])
def test_bad_tokenizer_keys(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(CUSTOM, [f"data_dir={tmp_path}", "raw_dataset_files=[a.jsonl]", *overrides])


# --- every tokenizer through the custom recipe ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["bert-wordpiece-case", "sentencepiece", "huggingface"])
def test_custom_recipe_with_each_tokenizer(server, tokenizer_json, tmp_path, kind):
    data_dir = tmp_path / "data"
    keys = {
        "bert-wordpiece-case": ([f"vocab_file={server}/files/bert/vocab.txt"], {"vocab_file": str(BERT_VOCAB)}),
        "sentencepiece": ([f"tokenizer_model={server}/files/{SPM_MODEL.name}"], {"tokenizer_model": str(SPM_MODEL)}),
        "huggingface": ([f"tokenizer_file={tokenizer_json}"], {"tokenizer_file": str(tokenizer_json)}),
    }[kind]
    res = _run("--config", CUSTOM, f"data_dir={data_dir}", f"raw_dataset_files=[{server}/files/corpus.jsonl.zst]",
               f"tokenizer_type={kind}", *keys[0])
    assert res.exit_code == 0, res.output
    (ref,) = resolve_dataset(data_dir, verify="sha256")
    expected = preprocess(PreprocessConfig(input=(str(slice_file(30, "zstd")),), output_prefix=str(tmp_path / "x"),
                                           tokenizer_type=kind, append_eod=True, **keys[1]))
    assert ref.prefix.with_suffix(".bin").read_bytes() == (tmp_path / "x_text_document.bin").read_bytes()
    assert ref.prefix.with_suffix(".idx").read_bytes() == (tmp_path / "x_text_document.idx").read_bytes()
    summary = read_manifest(data_dir).summary["tokenizer"]
    assert summary == expected.summary["tokenizer"]
    for key, source in keys[1].items():
        assert (data_dir / summary[key]).read_bytes() == Path(source).read_bytes()
    # another tokenizer is another settings hash: the pair is redone, not kept
    res = _run("--config", CUSTOM, f"data_dir={data_dir}", f"raw_dataset_files=[{server}/files/corpus.jsonl.zst]",
               f"vocab_file={VOCAB}", f"merge_file={MERGES}", "tokenizer_type=gpt2-bpe")
    assert res.exit_code == 0 and "redoing it" in res.stderr, res.output
    assert read_manifest(data_dir).summary["tokenizer"]["type"] == "gpt2-bpe"


def test_pile_recipe_settings_cover_the_tokenizer_files(server, tmp_path):
    """A changed vocabulary file changes the settings hash, so finalize refuses the old pairs."""
    from bignlp_dataprep.recipe_tokenizer import ensure_tokenizer
    from bignlp_dataprep.runner import preprocess_settings

    cfg = load_recipe(CUSTOM, [f"data_dir={tmp_path}", "raw_dataset_files=[a.jsonl]", "tokenizer_type=bert-wordpiece",
                               f"vocab_file={tmp_path / 'v.txt'}"])
    (tmp_path / "v.txt").write_text("[UNK]\n[SEP]\na\n")
    before = preprocess_settings(cfg, ensure_tokenizer(cfg), cfg.items()[0])
    (tmp_path / "v.txt").write_text("[UNK]\n[SEP]\nb\n")
    after = preprocess_settings(cfg, ensure_tokenizer(cfg), cfg.items()[0])
    assert before["tokenizer_type"] == "bert-wordpiece-lowercase"
    assert before["tokenizer_sha256"] != after["tokenizer_sha256"]


# --- SentencePiece trained by the custom recipe -----------------------------------------------------------------


def _train_args(server: str, data_dir: Path, local: Path) -> list[str]:
    return [f"data_dir={data_dir}", f"raw_dataset_files=[{local},{server}/files/corpus.jsonl.zst]",
            "train_tokenizer=true", "train_tokenizer_args.vocab_size=400",
            "train_tokenizer_args.character_coverage=1.0", "train_tokenizer_args.model_type=unigram",
            "output_name=sp", "download_backoff_s=0.01"]


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_custom_recipe_trains_sentencepiece_once_for_two_shares(server, tmp_path):
    import sentencepiece
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    local = slice_file(12, "gzip")
    data_dir = tmp_path / "data"
    args = _train_args(server, data_dir, local)
    res = _run("--config", CUSTOM, "--rank", "1", "--world-size", "2", *args)  # share 1 trains, on both files
    assert res.exit_code == 0, res.output
    assert "tokenizer: 1 done" in res.output and "share 1 of 2: 1 file(s) 01" in res.output
    model = data_dir / "bpe" / "custom_sp_tokenizer.model"
    marker = json.loads((data_dir / ".bignlp-done" / "tokenizer" / "model.json").read_text())
    assert marker["settings"]["inputs"] == [str(local), f"{server}/files/corpus.jsonl.zst"]
    res = _run("--config", CUSTOM, "--rank", "0", "--world-size", "2", *args)
    assert res.exit_code == 0 and "tokenizer: 0 done, 1 already done" in res.output, res.output
    res = _run("--config", CUSTOM, "--step", "finalize", *args)
    assert res.exit_code == 0, res.output

    sp = sentencepiece.SentencePieceProcessor(model_file=str(model))
    assert sp.get_piece_size() == 400 and (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (0, 1, 2, 3)
    manifest = read_manifest(data_dir)
    tok = manifest.summary["tokenizer"]
    assert tok == {"type": "sentencepiece", "tokenizer_model": "tokenizer/custom_sp_tokenizer.model",
                   "vocab_size": 400, "eod_id": 3}
    assert (data_dir / tok["tokenizer_model"]).read_bytes() == model.read_bytes()
    refs = resolve_dataset(data_dir, verify="sha256")
    with gzip.open(local, "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f]
    ds = IndexedDataset(str(refs[0].prefix))
    assert len(ds.document_indices) - 1 == len(texts)
    first = [int(t) for t in ds[0]]
    assert first[-1] == 3 and sp.decode(first[:-1]) == " ".join(texts[0].split())
    # the same model as `preprocess --tokenizer-model` with it
    preprocess(PreprocessConfig(input=(str(local),), output_prefix=str(tmp_path / "ref" / "x"),
                                tokenizer_type="sentencepiece", tokenizer_model=str(model), append_eod=True))
    assert (tmp_path / "ref" / "x_text_document.bin").read_bytes() == refs[0].prefix.with_suffix(".bin").read_bytes()
    # other trainer options: retrained, and every pair redone with the new model
    res = _run("--config", CUSTOM, *args, "train_tokenizer_args.vocab_size=300")
    assert res.exit_code == 0 and "tokenizer: 1 done" in res.output and "preprocess: 2 done" in res.output
    assert read_manifest(data_dir).summary["tokenizer"]["vocab_size"] == 300


def test_finalize_without_a_trained_model_says_what_to_run(server, tmp_path):
    res = _run("--config", CUSTOM, "--step", "finalize", *_train_args(server, tmp_path / "d", slice_file(12, "gzip")))
    assert res.exit_code == 3 and "SentencePiece model is not trained" in res.stderr


def test_train_tokenizer_on_a_text_file(tmp_path):
    from bignlp_dataprep.recipe_tokenizer import train_recipe_tokenizer

    text = tmp_path / "train.txt"
    text.write_text("".join(json.loads(line)["text"] + "\n" for line in slice_file(12).read_text().splitlines()))
    cfg = load_recipe(CUSTOM, [f"data_dir={tmp_path / 'd'}", "raw_dataset_files=[a.jsonl]", "train_tokenizer=true",
                               f"train_tokenizer_args.input={text}", "train_tokenizer_args.vocab_size=300",
                               "train_tokenizer_args.model_type=bpe", f"bpe_save_dir={tmp_path / 'sp'}"])
    assert train_recipe_tokenizer(cfg) is True and train_recipe_tokenizer(cfg) is False
    assert (tmp_path / "sp" / "custom_sp_tokenizer.model").is_file()
    assert (tmp_path / "sp" / "custom_sp_tokenizer.vocab").read_text().count("\n") == 300


# --- The Pile for T5: BERT WordPiece vocab.txt downloaded from download_vocab_url --------------------------------


def test_t5_pile_end_to_end(server, tmp_path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    data_dir = tmp_path / "data"
    res = _run("--config", "t5/download_t5_pile", f"data_dir={data_dir}", f"the_pile_url={server}/files/pile",
               f"file_numbers=0-{PILE_SHARDS - 1}", f"download_vocab_url={server}/files/bert/vocab.txt")
    assert res.exit_code == 0, res.output
    refs = resolve_dataset(data_dir, verify="sha256")
    assert [r.prefix.name for r in refs] == [f"my-t5_{n:02d}_text_document" for n in range(PILE_SHARDS)]
    assert (data_dir / "bpe" / "vocab.txt").read_bytes() == BERT_VOCAB.read_bytes()
    summary = read_manifest(data_dir).summary["tokenizer"]
    # the recipe's num_sentinel_tokens: 100: <extra_id_0..99> appended after the 30,522 entries of vocab.txt
    assert summary == {"type": "bert-wordpiece-case", "vocab_file": "tokenizer/vocab.txt", "vocab_size": 30622,
                       "eod_id": 102, "num_sentinel_tokens": 100}
    assert (data_dir / "tokenizer" / "vocab.txt").read_bytes() == BERT_VOCAB.read_bytes()
    for ref in refs:
        ds = IndexedDataset(str(ref.prefix))
        assert len(ds) == ref.entry["num_sequences"] and 102 not in ds[0]  # append_eod: False for T5
    # shard 01 is what `preprocess --tokenizer-type bert-wordpiece-case --split-sentences` makes of the same
    # text (without sentinels: they change the vocabulary, not the documents' ids); its tokens are those of
    # the unsplit documents, only the index holds a sequence per sentence
    www_text = tmp_path / "01.jsonl"
    www_text.write_bytes(_fetch(f"{server}/files/pile/01.jsonl"))
    for name, split in (("x", True), ("unsplit", False)):
        preprocess(PreprocessConfig(input=(str(www_text),), output_prefix=str(tmp_path / name / "x"),
                                    tokenizer_type="BertWordPieceCase", vocab_file=str(BERT_VOCAB),
                                    split_sentences=split))
        assert (tmp_path / name / "x_text_document.bin").read_bytes() == \
            refs[1].prefix.with_suffix(".bin").read_bytes()
    assert (tmp_path / "x" / "x_text_document.idx").read_bytes() == refs[1].prefix.with_suffix(".idx").read_bytes()
    assert read_manifest(data_dir).summary["split_sentences"] is True
    assert refs[1].entry["num_sequences"] > 5 * refs[1].entry["num_documents"]


def _fetch(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url) as resp:
        return resp.read()


def test_two_shares_started_together_train_once(server, tmp_path):
    import subprocess
    import sys

    args = _train_args(server, tmp_path / "data", slice_file(12, "gzip"))
    cmd = [sys.executable, "-m", "bignlp_dataprep", "run", "--config", CUSTOM, "--world-size", "2"]
    procs = [subprocess.Popen([*cmd, "--rank", str(r), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    trained = ["tokenizer: 1 done" in out for out, _ in outs]
    assert sorted(trained) == [False, True], outs  # one trained, the other waited for it on the lock
    assert _run("--config", CUSTOM, "--step", "finalize", *args).exit_code == 0
    assert len(resolve_dataset(tmp_path / "data")) == 2


def test_train_tokenizer_cli_reads_plain_text(tmp_path):
    text = tmp_path / "train.txt"
    text.write_text("".join(json.loads(line)["text"] + "\n" for line in slice_file(12).read_text().splitlines()))
    res = CliRunner().invoke(main, ["train-tokenizer", "--input", str(text), "--input-format", "text",
                                    "--model-prefix", str(tmp_path / "sp"), "--vocab-size", "300"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "sp.vocab").read_text().count("\n") == 300
