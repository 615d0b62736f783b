"""Checkpoint kinds: model-checkpoint, the legacy gpt-checkpoint, and what read_checkpoint says about the rest."""

import pytest

from bignlp_contracts import (
    CHECKPOINT_KINDS,
    GPT_CHECKPOINT,
    KINDS,
    MEGATRON_DATASET,
    MODEL_CHECKPOINT,
    ArtifactError,
    Producer,
    checkpoint_dir_name,
    checkpoint_family,
    checkpoint_vocab_size,
    get_kind,
    read_checkpoint,
    set_latest_checkpoint,
    write_manifest,
)

PRODUCER = Producer("bignlp-test", "0.0.1", None)
HOW = "bignlp-train pretrain --config"


def make_checkpoint(run_dir, step=4, kind=MODEL_CHECKPOINT, summary=None, config=None, metadata=True):
    d = run_dir / "checkpoints" / checkpoint_dir_name(step)
    (d / "dcp").mkdir(parents=True)
    (d / "config.yaml").write_text("model: {}\n")
    files = ["config.yaml"]
    if metadata:
        (d / "dcp" / ".metadata").write_bytes(b"meta")
        files.append("dcp/.metadata")
    if summary is None:
        summary = {"step": step, "family": "gpt", "vocab_size": 500, "padded_vocab_size": 512,
                   "tokenizer": {"type": "gpt2-bpe", "vocab_size": 500, "eod_id": 499}}
    write_manifest(d, kind, producer=PRODUCER, files=files, summary=summary, config=config)
    return d


def test_model_checkpoint_kind():
    assert get_kind("model-checkpoint") is MODEL_CHECKPOINT and KINDS["gpt-checkpoint"] is GPT_CHECKPOINT
    assert MODEL_CHECKPOINT.kind_version == 1
    assert MODEL_CHECKPOINT.required_files == ("config.yaml", "dcp/.metadata")
    assert MODEL_CHECKPOINT.produced_by.startswith(HOW)
    assert all(w in MODEL_CHECKPOINT.description for w in ("summary.family", "summary.model", "summary.vocab_size",
                                                              "summary.tokenizer"))
    assert CHECKPOINT_KINDS == (MODEL_CHECKPOINT, GPT_CHECKPOINT)


def test_read_checkpoint_both_kinds_and_run_dir(tmp_path):
    new = make_checkpoint(tmp_path / "a")
    path, manifest = read_checkpoint(new)
    assert path == new and manifest.kind == "model-checkpoint" and checkpoint_family(manifest) == "gpt"
    legacy = make_checkpoint(tmp_path / "b", kind=GPT_CHECKPOINT,
                             summary={"step": 4, "tokenizer": {"vocab_size": 500}})
    path, manifest = read_checkpoint(legacy)
    assert manifest.kind == "gpt-checkpoint" and checkpoint_family(manifest) == "gpt"
    # a run directory: its latest complete checkpoint
    make_checkpoint(tmp_path / "a", step=8)
    set_latest_checkpoint(tmp_path / "a", tmp_path / "a" / "checkpoints" / checkpoint_dir_name(8))
    path, manifest = read_checkpoint(tmp_path / "a")
    assert path.name == "step-00000008" and manifest.summary["step"] == 8


def test_dataset_directory_is_named_as_such(tmp_path):
    d = tmp_path / "ds"
    d.mkdir()
    (d / "x.bin").write_bytes(b"")
    write_manifest(d, MEGATRON_DATASET, producer=PRODUCER, files=["x.bin"])
    with pytest.raises(ArtifactError) as exc:
        read_checkpoint(d)
    line = exc.value.one_line()
    assert "'megatron-dataset' artifact, not a model checkpoint" in line and HOW in line
    assert "\n" not in line and exc.value.exit_code == 3


def test_directory_without_manifest(tmp_path):
    with pytest.raises(ArtifactError) as exc:
        read_checkpoint(tmp_path)
    line = exc.value.one_line()
    assert "manifest.json is missing" in line and "model-checkpoint" in line and HOW in line


def test_run_dir_without_complete_checkpoint(tmp_path):
    (tmp_path / "checkpoints" / ".step-00000004.tmp").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="no complete checkpoint yet"):
        read_checkpoint(tmp_path)


def test_save_in_progress(tmp_path):
    tmp = tmp_path / "checkpoints" / ".step-00000004.tmp"
    (tmp / "dcp").mkdir(parents=True)
    with pytest.raises(ArtifactError) as exc:
        read_checkpoint(tmp)
    line = exc.value.one_line()
    assert "save in progress" in line and HOW in line


def test_manifest_without_dcp_metadata(tmp_path):
    d = make_checkpoint(tmp_path, metadata=False)
    with pytest.raises(ArtifactError) as exc:
        read_checkpoint(d)
    assert "missing required file dcp/.metadata" in exc.value.one_line() and HOW in exc.value.one_line()


def test_model_checkpoint_without_family(tmp_path):
    d = make_checkpoint(tmp_path, summary={"step": 1})
    _, manifest = read_checkpoint(d)
    with pytest.raises(ArtifactError, match="no summary.family"):
        checkpoint_family(manifest)


def test_checkpoint_vocab_size(tmp_path):
    _, m = read_checkpoint(make_checkpoint(tmp_path / "a"))
    assert checkpoint_vocab_size(m) == 500
    _, m = read_checkpoint(make_checkpoint(tmp_path / "b", kind=GPT_CHECKPOINT,
                                           summary={"tokenizer": {"vocab_size": 300}}))
    assert checkpoint_vocab_size(m) == 300
    _, m = read_checkpoint(make_checkpoint(tmp_path / "c", kind=GPT_CHECKPOINT,
                                           summary={"tokenizer": {"vocab_size": 300}},
                                           config={"model": {"tokenizer": {"vocab_size": 260}}}))
    assert checkpoint_vocab_size(m) == 260
    _, m = read_checkpoint(make_checkpoint(tmp_path / "d", kind=GPT_CHECKPOINT, summary={}))
    assert checkpoint_vocab_size(m) is None
