"""``dcp_direct.read_direct`` reads what ``dcp.load`` reads, bit for bit, from checkpoints saved by several ranks.

Two gloo processes save DTensors the way training does: sharded on dim 0 (FSDP), on dim 1
(tensor-parallel row split) and replicated, in fp32 and bf16, beside a non-tensor entry. The direct
reader must fill destinations of the full shape and of fewer rows (padded vocabulary dropped)
exactly as ``dcp.load`` does, and leave to ``dcp.load`` what it cannot read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp

from bignlp_models.dcp_direct import read_direct

SAVE = textwrap.dedent("""
    import os, sys, torch, torch.distributed as dist, torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import distribute_tensor, Shard, Replicate
    dist.init_process_group("gloo")
    mesh = init_device_mesh("cpu", (2,))
    g = torch.Generator().manual_seed(0)
    full = {"rows": torch.randn(10, 6, generator=g), "cols": torch.randn(4, 8, generator=g),
            "bf16": torch.randn(7, 3, generator=g).bfloat16(), "rep": torch.randn(5, generator=g),
            "scalar": torch.tensor(3.5)}
    state = {"model.rows": distribute_tensor(full["rows"], mesh, [Shard(0)]),
             "model.cols": distribute_tensor(full["cols"], mesh, [Shard(1)]),
             "model.bf16": distribute_tensor(full["bf16"], mesh, [Shard(0)]),
             "model.rep": distribute_tensor(full["rep"], mesh, [Replicate()]),
             "model.scalar": full["scalar"], "step": 7}
    dcp.save(state, checkpoint_id=sys.argv[1])
    if dist.get_rank() == 0:
        torch.save(full, os.path.join(sys.argv[1], "..", "full.pt"))
    dist.destroy_process_group()
""")


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dcp")
    script = root / "save.py"
    script.write_text(SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
           str(script), str(root / "dcp")]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def _metadata(dcp_dir: Path):
    return dcp.FileSystemReader(str(dcp_dir)).read_metadata()


def _dcp_load(dcp_dir: Path, shapes: dict) -> dict:
    out = {k: torch.empty(s, dtype=d) for k, (s, d) in shapes.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(out, checkpoint_id=dcp_dir, no_dist=True)
    return out


SHAPES = {"model.rows": ((10, 6), torch.float32), "model.cols": ((4, 8), torch.float32),
          "model.bf16": ((7, 3), torch.bfloat16), "model.rep": ((5,), torch.float32),
          "model.scalar": ((), torch.float32)}


def test_reads_every_layout_as_dcp_load_does(saved):
    md = _metadata(saved / "dcp")
    assert len(md.state_dict_metadata["model.rows"].chunks) == 2  # really sharded by two ranks
    want = _dcp_load(saved / "dcp", SHAPES)
    full = torch.load(saved / "full.pt", weights_only=True)
    got = {k: torch.full(s, float("nan"), dtype=d) for k, (s, d) in SHAPES.items()}
    left = read_direct(saved / "dcp", md.state_dict_metadata, md.storage_data, got)
    assert left == []
    for key, tensor in got.items():
        assert torch.equal(tensor, want[key]), key
        assert torch.equal(tensor, full[key.removeprefix("model.")]), key


def test_fewer_rows_than_saved_reads_the_first_rows(saved):
    md = _metadata(saved / "dcp")
    full = torch.load(saved / "full.pt", weights_only=True)
    for rows in (3, 5, 7):  # inside the first shard, on its edge, into the second
        got = {"model.rows": torch.zeros(rows, 6), "model.cols": torch.zeros(rows // 2, 8)}
        assert read_direct(saved / "dcp", md.state_dict_metadata, md.storage_data, got) == []
        assert torch.equal(got["model.rows"], full["rows"][:rows])
        assert torch.equal(got["model.cols"], full["cols"][:rows // 2])


def test_leaves_what_it_cannot_read_to_dcp(saved):
    md = _metadata(saved / "dcp")
    other_dtype = {"model.rows": torch.zeros(10, 6, dtype=torch.float64)}  # a cast: dcp.load's job
    strided = {"model.cols": torch.zeros(8, 4).t()}  # a non-contiguous destination
    unknown = {"model.absent": torch.zeros(2)}
    larger = {"model.rows": torch.zeros(11, 6)}
    narrower = {"model.rows": torch.zeros(10, 5)}
    for case in (other_dtype, strided, unknown, larger, narrower):
        assert read_direct(saved / "dcp", md.state_dict_metadata, md.storage_data, case) == list(case)


def test_truncated_file_is_left_to_dcp(saved, tmp_path):
    copy = tmp_path / "dcp"
    copy.mkdir()
    md = _metadata(saved / "dcp")
    ends = {}  # each file cut one byte before the end of the last model.rows chunk it holds
    for index, info in md.storage_data.items():
        if index.fqn == "model.rows":
            ends[info.relative_path] = max(ends.get(info.relative_path, 0), info.offset + info.length - 1)
    for f in (saved / "dcp").iterdir():
        data = f.read_bytes()
        (copy / f.name).write_bytes(data[: ends[f.name]] if f.name in ends else data)
    got = {"model.rows": torch.zeros(10, 6)}
    assert read_direct(copy, md.state_dict_metadata, md.storage_data, got) == ["model.rows"]
