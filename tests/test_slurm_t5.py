"""T5 and mT5 pipelines through slurm-templates/pipeline.sh on the real local Slurm cluster.

The T5 recipe (t5/download_t5_pile: 2 Pile shards and a BERT vocab.txt, 100 sentinels appended), or
mT5's (mt5/download_mc4: 2 languages and a SentencePiece model), as a dataprep array of 2 tasks that
download from the dataprep tests' fixture server on 127.0.0.1 -> finalize -> t5/tiny-cpu (mt5/tiny-cpu),
shrunk to 3 steps, on 2 emulated nodes x 1 task (DP 2 over gloo). The GPT pipeline and the chain's
failure handling are tested in test_slurm_pipeline.py; this is the same chain for the other family.
"""

from __future__ import annotations

import gzip
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import zstandard

from slurm_support import job_fields
from support import DATA, REPO, run

PIPELINE = REPO / "slurm-templates" / "pipeline.sh"
FIXTURE_SERVER = REPO / "packages" / "dataprep" / "tests" / "fixture_server.py"
TRAIN_OVERRIDES = (
    "trainer.max_steps=3 trainer.val_check_interval=3 trainer.limit_val_batches=1 trainer.log_every_n_steps=1 "
    "model.data.splits_string=90,10,0 trainer.limit_test_batches=0"
)


# Per family: the recipe and its overrides (BASE: the fixture server's /files), the training config, the pairs.
FAMILIES = {
    "t5": ("t5/download_t5_pile", "the_pile_url=BASE/pile file_numbers=0-1 download_vocab_url=BASE/bert/vocab.txt",
           "t5/tiny-cpu", ["my-t5_00_text_document", "my-t5_01_text_document"]),
    # num_files.de=1, not num_files={de: 1}: DATA_OVERRIDES is split at spaces
    "mt5": ("mt5/download_mc4", "mc4_url=BASE/mc4 languages=de,es num_files.de=1 num_files.es=1 "
            "use_cleaned_english=false download_tokenizer_url=BASE/spm/multi_unigram_8000.model",
            "mt5/tiny-cpu", ["de_text_document", "es_text_document"]),
}


def _make_www(www: Path) -> None:
    """The Pile layout (2 shards of 150 demo-en documents) + BERT vocab.txt, and mC4's (de, es of demo-multi) + SPM."""
    for sub in ("pile", "bert", "mc4/multilingual", "spm"):
        (www / sub).mkdir(parents=True)
    with gzip.open(DATA / "corpus" / "demo-en.jsonl.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(300)]
    for n in (0, 1):
        text = "".join(lines[n * 150 : (n + 1) * 150]).encode()
        (www / "pile" / f"{n:02d}.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(text))
    shutil.copy(DATA / "bert" / "vocab.txt", www / "bert" / "vocab.txt")
    with gzip.open(DATA / "corpus" / "demo-multi.jsonl.gz", "rt", encoding="utf-8") as f:
        docs = [json.loads(line) for line in f]
    for lang in ("de", "es"):
        with gzip.open(www / "mc4" / "multilingual" / f"c4-{lang}.tfrecord-00000-of-00001.json.gz", "wt") as f:
            f.writelines(json.dumps({"text": d["text"]}) + "\n" for d in docs if d["lang"] == lang)
    shutil.copy(DATA / "spm" / "multi_unigram_8000.model", www / "spm")


@pytest.fixture(scope="module")
def fixture_server(tmp_path_factory: pytest.TempPathFactory):
    """Base URL (…/files) of the dataprep tests' HTTP fixture server on 127.0.0.1, serving _make_www."""
    www = tmp_path_factory.mktemp("www")
    _make_www(www)
    proc = subprocess.Popen([sys.executable, str(FIXTURE_SERVER), str(www)], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(proc.stdout.readline())}/files"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        proc.stdout.close()


@pytest.mark.parametrize("family", FAMILIES)
def test_t5_recipe_then_training_on_two_nodes(slurm_env: dict[str, str], fixture_server: str, family: str,
                                                 tmp_path: Path):
    from bignlp_contracts import read_manifest

    recipe, data_overrides, train_config, prefixes = FAMILIES[family]
    env = {
        **slurm_env,
        "DATA_CONFIG": recipe,
        "DATA_DIR": str(tmp_path / "data"),
        "NUM_SHARDS": "2",
        "DATA_OVERRIDES": f"{data_overrides.replace('BASE', fixture_server)} download_backoff_s=0.01",
        "TRAIN_CONFIG": train_config,
        "RESULTS_DIR": str(tmp_path / "run"),
        "TRAIN_NODES": "2",
        "TRAIN_OVERRIDES": TRAIN_OVERRIDES,
        "DATAPREP_CPUS": "1",  # the templates ask for 8 and 2; each emulated node has 1
        "TRAIN_CPUS": "1",
        "LOG_DIR": str(tmp_path / "logs"),
        "WATCH_POLL_S": "0.3",
        "BIGNLP_VENV": str(Path(sys.executable).parents[1]),
    }
    out = run(["bash", str(PIPELINE)], cwd=tmp_path, env=env, timeout=240)
    ids = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()}" for p in sorted((tmp_path / "logs").glob("*.out")))
    assert out.returncode == 0 and "all stages completed" in out.stderr, f"{out.stderr}\n{logs}"

    # Each array task downloaded and preprocessed one file; finalize wrote the tokenizer with its sentinels.
    for task in (0, 1):
        log = (tmp_path / "logs" / f"bignlp-dataprep-{ids['dataprep']}_{task}.out").read_text()
        assert f"share {task} of 2: 1 file(s)" in log, log
    dataset = read_manifest(tmp_path / "data", "megatron-dataset", verify="sha256")
    assert sorted(d["prefix"] for d in dataset.summary["datasets"]) == prefixes
    assert dataset.summary["tokenizer"]["num_sentinel_tokens"] == 100

    # Trained as 2 tasks on 2 nodes (DP 2); the checkpoint is a T5 carrying the dataset's sentinels.
    train = job_fields(slurm_env, ids["train"])
    assert (train["JobState"], train["NodeList"], train["NumTasks"]) == ("COMPLETED", "n[1-2]", "2"), train
    train_log = (tmp_path / "logs" / f"bignlp-train-{ids['train']}.out").read_text()
    assert "device cpu × 2 processes (DP 2" in train_log, train_log
    manifest = read_manifest(tmp_path / "run" / "checkpoints" / "step-00000003", "model-checkpoint", verify="sha256")
    assert manifest.summary["family"] == "t5", manifest.summary
    assert manifest.summary["tokenizer"]["num_sentinel_tokens"] == 100, manifest.summary
    assert manifest.producer.slurm["job_id"] == ids["train"]
    assert manifest.inputs[0]["path"] == str((tmp_path / "data").resolve())
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("event") == "train"] == [1, 2, 3]
