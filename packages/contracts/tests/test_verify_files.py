"""check_files and share_files; the resume helpers built on them: candidates, problems, moving aside."""

from __future__ import annotations

import pytest
from test_checkpoint_layout import PRODUCER, make_checkpoint

from bignlp_contracts import (
    MODEL_CHECKPOINT,
    ArtifactError,
    check_files,
    checkpoint_problem,
    move_aside_checkpoint,
    read_manifest,
    remove_abandoned_checkpoint_writes,
    resume_candidates,
    set_latest_checkpoint,
    share_files,
    write_manifest,
)


def artifact(tmp_path, sizes=(5_000_000, 3_000_000, 1_000, 0)):
    names = []
    for i, size in enumerate(sizes):
        (tmp_path / f"f{i}.bin").write_bytes(bytes([i + 1]) * size)
        names.append(f"f{i}.bin")
    return write_manifest(tmp_path, MODEL_CHECKPOINT, producer=PRODUCER, files=names)


def test_intact_files_pass_and_progress_counts_every_byte(tmp_path):
    manifest = artifact(tmp_path)
    seen = []
    assert check_files(tmp_path, manifest.files, num_threads=3, on_progress=lambda d, t: seen.append((d, t))) == []
    assert seen[-1] == (8_001_000, 8_001_000) and [d for d, _ in seen] == sorted(d for d, _ in seen)


def test_each_kind_of_damage_is_named(tmp_path):
    manifest = artifact(tmp_path)
    data = bytearray((tmp_path / "f0.bin").read_bytes())
    data[4_000_000] ^= 0xFF  # same size, other content
    (tmp_path / "f0.bin").write_bytes(data)
    (tmp_path / "f1.bin").write_bytes(b"x" * 10)
    (tmp_path / "f2.bin").unlink()
    problems = check_files(tmp_path, manifest.files)
    assert [str(p) for p in problems] == [
        "f0.bin does not match its sha256 in the manifest (corrupt)",
        "f1.bin is 10 bytes, the manifest says 3000000 (truncated or modified after it was written)",
        "f2.bin is missing",
    ]
    assert [p.path for p in check_files(tmp_path, manifest.files, sha256=False)] == ["f1.bin", "f2.bin"]
    with pytest.raises(ArtifactError, match="file f1.bin is 10 bytes"):  # read_manifest: sizes before content
        read_manifest(tmp_path, verify="sha256")


def test_shares_cover_every_file_once_balanced_by_bytes():
    sizes = {f"dcp/__{r}_0.distcp": 100 + r for r in range(8)} | {"dcp/.metadata": 7, "config.yaml": 3}
    shares = [share_files(sizes, 4, i) for i in range(4)]
    assert sorted(n for share in shares for n in share) == sorted(sizes)
    loads = [sum(sizes[n] for n in share) for share in shares]
    assert max(loads) - min(loads) <= 107
    assert shares == [share_files(dict(reversed(sizes.items())), 4, i) for i in range(4)]  # order-independent
    assert share_files({"a": 1}, 3, 2) == []


def test_resume_candidates_follow_latest_then_older(tmp_path):
    for step in (2, 4, 6, 8):
        make_checkpoint(tmp_path, step)
    root = tmp_path / "checkpoints"
    assert [p.name for p in resume_candidates(tmp_path)] == ["step-00000008", "step-00000006", "step-00000004",
                                                             "step-00000002"]
    set_latest_checkpoint(tmp_path, root / "step-00000006")  # step 8 was renamed in, the pointer not moved yet
    assert [p.name for p in resume_candidates(tmp_path)] == ["step-00000006", "step-00000004", "step-00000002"]
    assert resume_candidates(tmp_path / "nothing") == []


def test_checkpoint_problem_in_a_few_words(tmp_path):
    good = make_checkpoint(tmp_path, 2)
    assert checkpoint_problem(good) is None and checkpoint_problem(good, sha256=True) is None
    no_meta = make_checkpoint(tmp_path, 4)
    (no_meta / "dcp" / ".metadata").unlink()
    assert checkpoint_problem(no_meta) == "dcp/.metadata is missing"
    flipped = make_checkpoint(tmp_path, 6)
    (flipped / "config.yaml").write_text("model: []\n")  # same length
    assert checkpoint_problem(flipped) is None
    assert checkpoint_problem(flipped, sha256=True) == "config.yaml does not match its sha256 in the manifest (corrupt)"
    # shared out: only the process whose share holds the file sees it
    found = [checkpoint_problem(flipped, sha256=True, share=(i, 2)) for i in range(2)]
    assert found.count(None) == 1 and "config.yaml does not match its sha256 in the manifest (corrupt)" in found
    torn = tmp_path / "checkpoints" / "step-00000008"
    (torn / "dcp").mkdir(parents=True)
    assert checkpoint_problem(torn) == "incomplete: no manifest.json (a save that did not finish)"


def test_move_aside_keeps_every_copy_out_of_the_way(tmp_path):
    first = move_aside_checkpoint(make_checkpoint(tmp_path, 8))
    second = move_aside_checkpoint(make_checkpoint(tmp_path, 8))
    root = tmp_path / "checkpoints"
    assert [first, second] == [root / "damaged" / "step-00000008", root / "damaged" / "step-00000008.2"]
    assert (second / "manifest.json").is_file()
    assert resume_candidates(tmp_path) == [] and remove_abandoned_checkpoint_writes(tmp_path) == []
    assert first.is_dir()
