"""``bignlp-dataprep run``: The Pile and custom recipes end to end against the local HTTP fixture server."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from dataprep_helpers import (
    DEMO,
    MERGES,
    PILE_SHARDS,
    VOCAB,
    artifact_files,
    config,
)

from bignlp_contracts import ConfigError, read_manifest, resolve_dataset
from bignlp_dataprep.cli import main
from bignlp_dataprep.preprocess import preprocess
from bignlp_dataprep.recipes import CustomConfig, PileConfig, load_recipe, shipped_recipes

PILE = "gpt3/download_gpt3_pile"


def _pile_args(server: str, data_dir: Path, route: str = "files") -> list[str]:
    return [f"the_pile_url={server}/{route}/pile", f"file_numbers=0-{PILE_SHARDS - 1}", f"data_dir={data_dir}",
            f"download_vocab_url={server}/files/gpt2/vocab.json",
            f"download_merges_url={server}/files/gpt2/merges.txt", "download_backoff_s=0.01"]


def _run(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["run", *args], env=env, catch_exceptions=False)


def _error_line(res) -> str:
    """The one error line (progress lines, "download 00: URL", may come before it)."""
    lines = res.stderr.strip().splitlines()
    assert [ln for ln in lines if ln.startswith("bignlp-dataprep")] == lines[-1:], res.stderr
    assert lines[-1].startswith("bignlp-dataprep: error: ")
    return lines[-1]


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory) -> Path:
    """The Pile recipe run once, in one process, with every step."""
    data_dir = tmp_path_factory.mktemp("pile-ref") / "data"
    res = _run("--config", PILE, *_pile_args(server, data_dir))
    assert res.exit_code == 0, res.output
    return data_dir


def _same_artifact(a: Path, b: Path) -> None:
    assert artifact_files(a) == artifact_files(b)
    def normalized(d: Path) -> str:  # the runs differ only in data_dir and the server route
        return re.sub(r"/(slow/\d+|files)/pile", "/pile", (d / "config.yaml").read_text().replace(str(d), "D"))

    assert normalized(a) == normalized(b)
    assert read_manifest(a).summary["datasets"] == read_manifest(b).summary["datasets"]


# --- configs ----------------------------------------------------------------------------------------------------


def test_shipped_recipes_load_with_the_seed_keys(tmp_path):
    assert shipped_recipes() == ["generic/custom_dataset", PILE, "mt5/download_mc4", "t5/download_t5_pile"]
    pile = load_recipe(PILE, [f"data_dir={tmp_path}", "file_numbers=0"])
    assert isinstance(pile, PileConfig) and pile.file_numbers == "0" and pile.tokenizer_type == "gpt2-bpe"
    assert pile.rm_downloaded and pile.rm_extracted and pile.vocab_save_dir == f"{tmp_path}/bpe"
    assert [i.source for i in pile.items()] == ["https://mystic.the-eye.eu/public/AI/pile/train/00.jsonl.zst"]
    custom = load_recipe("generic/custom_dataset", [f"data_dir={tmp_path}", "raw_dataset_files=[a.jsonl]",
                                                   "vocab_file=v.json", "merge_file=m.txt"])
    assert isinstance(custom, CustomConfig) and custom.items()[0].input == Path("a.jsonl")


@pytest.mark.parametrize("override, message", [
    ("file_number=1", "unknown config key file_number (fix: did you mean file_numbers?)"),
    ("file_numbers=1-", "file_numbers '1-': cannot parse '1-'"),
    ("data_dir=null", "data_dir is not set"),
])
def test_bad_recipe_keys(tmp_path, override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_recipe(PILE, [f"data_dir={tmp_path}", override])


def test_run_help_documents_every_option():
    res = CliRunner().invoke(main, ["run", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output
    assert all(p.help for p in main.commands["run"].params if isinstance(p, click.Option))


# --- The Pile ---------------------------------------------------------------------------------------------------


def test_pile_end_to_end(reference: Path, www: Path, tmp_path: Path):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    refs = resolve_dataset(reference, verify="sha256")
    assert [r.prefix.name for r in refs] == [f"my-gpt3_{n:02d}_text_document" for n in range(PILE_SHARDS)]
    for ref in refs:
        ds = IndexedDataset(str(ref.prefix))
        assert len(ds) == ref.entry["num_sequences"] and ds.document_indices[-1] == len(ds)
    assert refs[0].tokenizer_file("vocab_file").read_bytes() == VOCAB.read_bytes()
    # rm_downloaded / rm_extracted: no intermediates left; every step has its markers
    assert sorted(p.name for p in (reference / "raw").iterdir()) == []
    for step in ("download", "extract", "preprocess"):
        assert len(list((reference / ".bignlp-done" / step).glob("*.json"))) == PILE_SHARDS
    # the pair of shard 01 is what `bignlp-dataprep preprocess` makes of the same text
    preprocess(config([www / "pile/01.jsonl"], tmp_path / "x"))
    assert (tmp_path / "x_text_document.bin").read_bytes() == (reference / "my-gpt3_01_text_document.bin").read_bytes()
    assert (tmp_path / "x_text_document.idx").read_bytes() == (reference / "my-gpt3_01_text_document.idx").read_bytes()


def test_rerun_skips_finished_work(server, reference):
    res = _run("--config", PILE, *_pile_args(server, reference))
    assert res.exit_code == 0, res.output
    assert "preprocess: 0 done, 3 already done" in res.output and "artifact:" in res.output


def test_array_shares_then_finalize_equal_single_run(server, reference, tmp_path):
    data_dir = tmp_path / "data"
    args = _pile_args(server, data_dir)
    res = _run("--config", PILE, "--step", "download,extract,preprocess", "--rank", "0", "--world-size", "2", *args)
    assert res.exit_code == 0 and "share 0 of 2: 2 file(s) 00 02" in res.output, res.output
    early = _run("--config", PILE, "--step", "finalize", *args)
    assert early.exit_code == 3
    assert "item(s) 01 of 3 are not preprocessed" in early.stderr and "file_numbers=1" in early.stderr
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    for step in ("download", "extract", "preprocess"):  # one step at a time, share from the Slurm array variables
        res = _run("--config", PILE, "--step", step, *args, env=env)
        assert res.exit_code == 0 and "share 1 of 2: 1 file(s) 01" in res.output, res.output
    assert not (data_dir / "manifest.json").exists()
    res = _run("--config", PILE, "--step", "finalize", *args)
    assert res.exit_code == 0, res.output
    assert len(resolve_dataset(data_dir)) == PILE_SHARDS
    _same_artifact(reference, data_dir)


def test_kill_9_mid_download_then_rerun_gives_the_same_bytes(server, reference, tmp_path):
    data_dir = tmp_path / "data"
    cmd = [sys.executable, "-m", "bignlp_dataprep", "run", "--config", PILE, *_pile_args(server, data_dir, "slow/20")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part = data_dir / "raw" / "01.jsonl.zst.part"
    deadline = time.monotonic() + 60
    while not (part.exists() and part.stat().st_size > 0) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert (data_dir / ".bignlp-done/preprocess/00.json").exists()
    assert not (data_dir / ".bignlp-done/download/01.json").exists() and not (data_dir / "manifest.json").exists()
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    _same_artifact(reference, data_dir)
    assert not [p for p in data_dir.rglob("*") if p.name.endswith((".tmp", ".part"))]


def test_changed_settings_redo_preprocessing_and_shares_leave_finalize_out(server, www, reference, tmp_path):
    data_dir = tmp_path / "data"
    args = [*_pile_args(server, data_dir), "file_numbers=0", "rm_extracted=false"]
    res = _run("--config", PILE, "--rank", "0", "--world-size", "2", *args)  # step all, one share: no finalize
    assert res.exit_code == 0 and "--step finalize" in res.output and not (data_dir / "manifest.json").exists()
    assert _run("--config", PILE, "--step", "finalize", *args, "append_eod=false").exit_code == 3  # stale marker
    res = _run("--config", PILE, *args, "append_eod=false")
    assert res.exit_code == 0 and "redoing it" in res.stderr, res.output
    assert resolve_dataset(data_dir)[0].entry["num_tokens"] < resolve_dataset(reference)[0].entry["num_tokens"]
    # the reference run deleted its extracted files: redoing needs them, and the error says how to get them back
    res = _run("--config", PILE, *_pile_args(server, reference), "append_eod=false")
    assert res.exit_code == 3 and "is gone" in _error_line(res) and ".bignlp-done/*/00.json" in _error_line(res)


def test_files_already_on_disk_are_not_downloaded(www, tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "02.jsonl.zst").write_bytes((www / "pile/02.jsonl.zst").read_bytes())
    (tmp_path / "bpe").mkdir()
    for f in (VOCAB, MERGES):
        (tmp_path / "bpe" / f.name).write_bytes(f.read_bytes())
    res = _run("--config", PILE, f"data_dir={tmp_path / 'data'}", "download_the_pile=false", "file_numbers=2",
               "download_vocab_url=null", "download_merges_url=null", f"vocab_save_dir={tmp_path / 'bpe'}",
               f"merges_save_dir={tmp_path / 'bpe'}")
    assert res.exit_code == 0, res.output
    assert "download: 0 done, 1 already done or not needed" in res.output
    assert (raw / "02.jsonl.zst").is_file()  # the user's file: never deleted
    assert [r.prefix.name for r in resolve_dataset(tmp_path / "data")] == ["my-gpt3_02_text_document"]


def test_sha256sums_are_applied(server, tmp_path):
    args = [*_pile_args(server, tmp_path / "d"), "file_numbers=0", "preprocess_data=false",
            f"sha256sums_url={server}/files/pile/sha256sums.txt"]
    assert _run("--config", PILE, *args).exit_code == 0
    bad = tmp_path / "sums.txt"
    bad.write_text(f"{'0' * 64}  01.jsonl.zst\n")
    res = _run("--config", PILE, *_pile_args(server, tmp_path / "e"), "file_numbers=1", f"sha256sums_url={bad}")
    assert res.exit_code == 4 and "sha256 mismatch" in _error_line(res)


@pytest.mark.parametrize("route, code, message", [
    ("missing", 4, "/missing/pile/00.jsonl.zst failed: HTTP 404"),
    ("status/503", 75, "failed after 3 attempts: HTTP Error 503"),
])
def test_download_failures_exit_codes(server, tmp_path, route, code, message):
    res = _run("--config", PILE, *_pile_args(server, tmp_path / "d", route), "file_numbers=0", "download_retries=2")
    assert res.exit_code == code, res.output
    assert message in _error_line(res)


def test_flag_misuse(tmp_path):
    res = CliRunner().invoke(main, ["run", "--config", PILE, "--rank", "1", f"data_dir={tmp_path}"])
    assert res.exit_code == 2 and "--rank and --world-size together" in res.output
    res = _run("--config", PILE, "--step", "download,tokenize", f"data_dir={tmp_path}")
    assert res.exit_code == 2 and "unknown step tokenize" in res.stderr


# --- custom corpus ----------------------------------------------------------------------------------------------


def test_custom_recipe_with_a_local_file_and_a_url(server, www, tmp_path):
    data_dir = tmp_path / "data"
    res = _run("--config", "generic/custom_dataset", f"data_dir={data_dir}",
               f"raw_dataset_files=[{DEMO},{server}/files/pile/02.jsonl.zst]", f"vocab_file={VOCAB}",
               f"merge_file={server}/files/gpt2/merges.txt", "output_name=mine", "workers=2")
    assert res.exit_code == 0, res.output
    refs = resolve_dataset(data_dir)
    assert [r.prefix.name for r in refs] == ["mine_00_text_document", "mine_01_text_document"]
    preprocess(config([DEMO], tmp_path / "ref" / "x"))
    assert (tmp_path / "ref/x_text_document.bin").read_bytes() == (data_dir / "mine_00_text_document.bin").read_bytes()
    assert (data_dir / "raw" / "01-02.jsonl.zst").is_file()  # rm_downloaded is off by default here
    assert (data_dir / "tokenizer" / "merges.txt").read_bytes() == MERGES.read_bytes()


# --- the sbatch templates, with srun/scontrol stand-ins ----------------------------------------------------------


def _fake_slurm(tmp_path: Path) -> dict:
    """PATH with an ``srun`` that runs its command and an ``scontrol`` that records its arguments."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    # srun's own options (--ntasks=1, --cpus-per-task=N, container flags) come first, then the command
    (bin_dir / "srun").write_text('#!/bin/bash\nwhile [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
    (bin_dir / "scontrol").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/scontrol.log\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin"}


def test_array_and_finalize_templates(server, reference, tmp_path):
    templates = Path(__file__).resolve().parents[3] / "slurm-templates"
    data_dir = tmp_path / "data"
    overrides = " ".join(a for a in _pile_args(server, data_dir) if not a.startswith("data_dir="))
    env = {**os.environ, **_fake_slurm(tmp_path), "CONFIG": PILE, "DATA_DIR": str(data_dir), "OVERRIDES": overrides,
           "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_COUNT": "2"}
    array = ["bash", str(templates / "dataprep-array.sbatch")]
    for task in ("0", "1"):
        res = subprocess.run(array, env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 0, res.stderr
    res = subprocess.run(["bash", str(templates / "dataprep-finalize.sbatch")], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    _same_artifact(reference, data_dir)
    # a download that keeps failing: exit 75 and the task is requeued
    failing = {**env, "SLURM_ARRAY_TASK_ID": "1", "DATA_DIR": str(tmp_path / "other"),
               "OVERRIDES": f"the_pile_url={server}/status/503/pile download_retries=0"}
    res = subprocess.run(array, env=failing, capture_output=True, text=True, timeout=120)
    assert res.returncode == 75 and (tmp_path / "scontrol.log").read_text() == "requeue 77_1\n"
