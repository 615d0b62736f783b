import json
import os

import pytest

from bignlp_contracts import (
    MEGATRON_DATASET,
    ArtifactError,
    Producer,
    atomic_directory,
    checkpoint_dir_name,
    input_record,
    latest_checkpoint,
    read_manifest,
    resolve_dataset,
    set_latest_checkpoint,
    write_manifest,
)
from bignlp_contracts.atomic import atomic_output_file
from bignlp_contracts.manifest import slurm_job_record

PRODUCER = Producer("bignlp-test", "0.0.1", None)


def make_dataset(d, name="toy"):
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{name}_text_document.bin").write_bytes(b"\x00" * 10)
    (d / f"{name}_text_document.idx").write_bytes(b"MMIDIDX\x00\x00")
    summary = {
        "datasets": [{"prefix": f"{name}_text_document", "json_key": "text", "num_documents": 1}],
        "tokenizer": {"type": "gpt2-bpe", "vocab_size": 50257, "eod_id": 50256},
    }
    return write_manifest(
        d, MEGATRON_DATASET, producer=PRODUCER, files=[f"{name}_text_document.bin", f"{name}_text_document.idx"],
        summary=summary,
    )


def test_write_and_read(tmp_path):
    m = make_dataset(tmp_path / "ds")
    back = read_manifest(tmp_path / "ds", "megatron-dataset", verify="sha256")
    assert back.files == m.files and back.kind_version == 1
    data = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert set(data) >= {"kind", "kind_version", "producer", "created_at", "inputs", "config", "files", "summary"}
    assert data["files"]["toy_text_document.bin"]["size"] == 10


def test_missing_manifest_says_how_to_produce(tmp_path):
    (tmp_path / "ds").mkdir()
    with pytest.raises(ArtifactError) as exc:
        read_manifest(tmp_path / "ds", "megatron-dataset")
    line = exc.value.one_line()
    assert "manifest.json is missing" in line and "bignlp-dataprep preprocess" in line
    assert exc.value.exit_code == 3


def test_missing_directory(tmp_path):
    with pytest.raises(ArtifactError, match="no such directory"):
        read_manifest(tmp_path / "nope", "megatron-dataset")


def test_truncated_file_detected(tmp_path):
    make_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "toy_text_document.bin").write_bytes(b"\x00" * 4)
    with pytest.raises(ArtifactError, match="toy_text_document.bin is 4 bytes, the manifest says 10"):
        read_manifest(tmp_path / "ds", "megatron-dataset")


def test_corrupt_file_detected_by_sha(tmp_path):
    make_dataset(tmp_path / "ds")
    (tmp_path / "ds" / "toy_text_document.bin").write_bytes(b"\x01" * 10)
    read_manifest(tmp_path / "ds", "megatron-dataset")  # size check passes
    with pytest.raises(ArtifactError, match="sha256"):
        read_manifest(tmp_path / "ds", "megatron-dataset", verify="sha256")


def test_wrong_kind_and_version(tmp_path):
    make_dataset(tmp_path / "ds")
    with pytest.raises(ArtifactError, match="expected 'gpt-checkpoint'"):
        read_manifest(tmp_path / "ds", "gpt-checkpoint")
    p = tmp_path / "ds" / "manifest.json"
    data = json.loads(p.read_text())
    data["kind_version"] = 99
    p.write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="kind_version 99"):
        read_manifest(tmp_path / "ds", "megatron-dataset")


def test_resolve_dataset_dir_and_prefix(tmp_path):
    make_dataset(tmp_path / "ds")
    (ref,) = resolve_dataset(tmp_path / "ds")
    assert ref.prefix == tmp_path / "ds" / "toy_text_document"
    assert resolve_dataset(tmp_path / "ds" / "toy_text_document.bin")[0].prefix == ref.prefix
    with pytest.raises(ArtifactError, match="no dataset with this prefix"):
        resolve_dataset(tmp_path / "ds" / "other_text_document")


def test_input_record(tmp_path):
    make_dataset(tmp_path / "ds")
    rec = input_record(tmp_path / "ds")
    assert rec["kind"] == "megatron-dataset" and len(rec["manifest_sha256"]) == 64
    f = tmp_path / "raw.jsonl"
    f.write_text("{}\n")
    assert input_record(f)["size"] == 3


def test_atomic_directory_and_latest(tmp_path):
    run = tmp_path / "run"
    for step in (10, 20):
        with atomic_directory(run / "checkpoints" / checkpoint_dir_name(step)) as tmp:
            (tmp / "manifest.json").write_text("{}")
        set_latest_checkpoint(run, run / "checkpoints" / checkpoint_dir_name(step))
    assert latest_checkpoint(run).name == "step-00000020"
    # a dangling pointer falls back to the newest complete directory
    (run / "checkpoints" / "latest").write_text("step-00000030\n")
    assert latest_checkpoint(run).name == "step-00000020"


def test_atomic_directory_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_directory(target) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("boom")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_file_failure_keeps_old(tmp_path):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output_file(p) as f:
        f.write(b"new")
        raise RuntimeError("boom")
    assert p.read_bytes() == b"old" and list(tmp_path.iterdir()) == [p]


def test_atomic_writes_get_normal_permissions(tmp_path):
    import os
    import stat

    from bignlp_contracts import atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "f.txt", "x")
        with atomic_directory(tmp_path / "d") as tmp:
            (tmp / "a").write_text("y")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755


def test_remove_abandoned_checkpoint_writes(tmp_path):
    from bignlp_contracts import remove_abandoned_checkpoint_writes

    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step-00000008.abc.tmp" / "dcp").mkdir(parents=True)
    (ckpts / ".step-00000006.old-123").mkdir()
    (ckpts / "step-00000006").mkdir()
    (ckpts / "step-00000006" / "manifest.json").write_text("{}")
    removed = remove_abandoned_checkpoint_writes(tmp_path)
    assert sorted(p.name for p in removed) == [".step-00000006.old-123", ".step-00000008.abc.tmp"]
    assert [p.name for p in ckpts.iterdir()] == ["step-00000006"]
    assert remove_abandoned_checkpoint_writes(tmp_path / "none") == []


def _clear_slurm(monkeypatch):
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


def test_manifest_records_the_slurm_array_task(tmp_path, monkeypatch):
    _clear_slurm(monkeypatch)
    monkeypatch.setenv("SLURM_JOB_ID", "4711")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "4709")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu[01-02]")
    make_dataset(tmp_path / "ds")
    data = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    expected = {"job_id": "4711", "array_job_id": "4709", "array_task_id": 2, "nodelist": "gpu[01-02]"}
    assert data["producer"]["slurm"] == expected
    assert read_manifest(tmp_path / "ds", "megatron-dataset").producer.slurm == expected


def test_manifest_outside_slurm_has_no_slurm_key(tmp_path, monkeypatch):
    _clear_slurm(monkeypatch)
    make_dataset(tmp_path / "ds")
    data = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert set(data["producer"]) == {"package", "version", "git_commit"}
    assert read_manifest(tmp_path / "ds").producer.slurm is None


def test_slurm_job_record_plain_job_and_none():
    assert slurm_job_record({"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "n[1-2]"}) == {
        "job_id": "9", "array_job_id": None, "array_task_id": None, "nodelist": "n[1-2]"}
    assert slurm_job_record({"SLURM_NTASKS": "2"}) is None


def test_reader_ignores_producer_keys_it_does_not_know(tmp_path):
    make_dataset(tmp_path / "ds")
    path = tmp_path / "ds" / "manifest.json"
    data = json.loads(path.read_text())
    data["producer"]["added_later"] = {"x": 1}
    path.write_text(json.dumps(data))
    assert read_manifest(tmp_path / "ds", "megatron-dataset").producer.package == "bignlp-test"
