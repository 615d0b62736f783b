"""Byte identity with Megatron-LM's preprocess_data.py, as far as it can be run offline.

Megatron-LM's ``tools/preprocess_data.py`` and ``megatron/training`` are not on any package registry
(megatron-core's wheel and sdist hold only ``megatron/core``). What it runs is: megatron-core's
``build_tokenizer`` (``megatron.core.tokenizers``; for ``GPT2BPETokenizer`` a ``MegatronHFTokenizer``
over transformers' ``GPT2Tokenizer``), its ``Encoder.encode`` loop (restated in
``dataprep_helpers.megatron_documents``), and megatron-core's ``IndexedDatasetBuilder``. This test
runs megatron-core's real tokenizer builder and builder in a subprocess, offline: transformers
resolves the name ``gpt2`` in a local Hugging Face cache holding the real GPT-2 files
(``../shared/data/gpt2-hf``) and a config naming the model type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dataprep_helpers import REPO, config, demo_lines

from bignlp_dataprep.preprocess import preprocess

pytest.importorskip("transformers", reason="transformers is not installed (megatron-core's GPT2BPETokenizer uses it)")
pytest.importorskip("megatron.core", reason="megatron-core is not installed")

GPT2_HF = REPO.parent / "shared" / "data" / "gpt2-hf"
SNAPSHOT = "0" * 40
SPECIAL = "special <|endoftext|> text inside a document"

MEGATRON = r"""
import sys
from pathlib import Path
from types import SimpleNamespace

from megatron.core.datasets.indexed_dataset import DType
from megatron.core.tokenizers.text.utils.build_tokenizer import build_tokenizer

from dataprep_helpers import MERGES, VOCAB, megatron_core_files, megatron_documents, texts_of

# the arguments preprocess_data.py passes for --tokenizer-type GPT2BPETokenizer --vocab-file --merge-file
args = SimpleNamespace(tokenizer_type="GPT2BPETokenizer", vocab_file=str(VOCAB), merge_file=str(MERGES),
                       tokenizer_special_tokens=None, tokenizer_hf_use_fast=False, trust_remote_code=False,
                       tokenizer_hf_include_special_tokens=False, tokenizer_metadata=None)
tokenizer = build_tokenizer(args)
docs = megatron_documents(texts_of(Path(sys.argv[1])), lambda ss: [tokenizer.tokenize(s) for s in ss],
                          append_eod=True, eod=tokenizer.eod)
megatron_core_files(Path(sys.argv[2]), docs, DType.optimal_dtype(tokenizer.vocab_size))
print(tokenizer.eod, tokenizer.vocab_size)
"""


def _megatron(tmp_path: Path, src: Path, out: Path) -> tuple[bytes, bytes]:
    cache = tmp_path / "hf-cache"
    snapshot = cache / "models--gpt2" / "snapshots" / SNAPSHOT
    if not snapshot.is_dir():
        snapshot.mkdir(parents=True)
        for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
            (snapshot / name).write_bytes((GPT2_HF / name).read_bytes())
        (snapshot / "config.json").write_text('{"model_type": "gpt2"}\n')
        (cache / "models--gpt2" / "refs").mkdir()
        (cache / "models--gpt2" / "refs" / "main").write_text(SNAPSHOT)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", MEGATRON, str(src), str(out)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.split()[-2:] == ["50256", "50257"]
    return (out / "ref.bin").read_bytes(), (out / "ref.idx").read_bytes()


@pytest.mark.skipif(not GPT2_HF.is_dir(), reason=f"{GPT2_HF} is absent (shared data not mounted)")
def test_megatron_core_tokenizer_and_builder_give_our_bytes(tmp_path):
    edge = ["Hello world! It's 2024, isn't it? We'll see; they've gone.", "  leading and trailing spaces  ",
            "tabs\tand\nnewlines\r\nand CRLF\n\n\nruns", "ünïcödé, 日本語のテキスト, emoji 😀👍🏽", "", " ",
            "1234567890 3.14159 1e-5 0x1F", "\u00a0non-breaking\u2028line separator\u0085next line"]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(demo_lines(40)) + "".join(json.dumps({"text": t}) + "\n" for t in edge), encoding="utf-8")
    ours = tmp_path / "ours" / "x"
    preprocess(config([src], ours, workers=2, batch_mb=0.05))
    theirs = _megatron(tmp_path, src, tmp_path / "megatron")
    assert (Path(f"{ours}_text_document.bin").read_bytes(), Path(f"{ours}_text_document.idx").read_bytes()) == theirs


@pytest.mark.skipif(not GPT2_HF.is_dir(), reason=f"{GPT2_HF} is absent (shared data not mounted)")
def test_literal_endoftext_in_a_document_is_where_we_differ(tmp_path):
    """megatron-core's tokenizer turns the text <|endoftext|> into id 50256; we keep it as text (tiktoken's
    encode_ordinary, Megatron-LM's legacy GPT2BPETokenizer), so EOD marks only document ends."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"text": SPECIAL}) + "\n")
    ours = tmp_path / "ours" / "x"
    preprocess(config([src], ours))
    bin_theirs, _ = _megatron(tmp_path, src, tmp_path / "megatron")
    bin_ours = Path(f"{ours}_text_document.bin").read_bytes()
    eod = (50256).to_bytes(2, "little")
    assert bin_theirs.count(eod) == 2 and bin_ours.count(eod) == 1 and bin_ours.endswith(eod)
