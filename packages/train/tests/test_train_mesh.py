"""2-D device meshes on 4 processes: DP=2 × TP=2 + SP, PP=2 × DP=2 and PP=2 × TP=2 + SP equal one process.

The real CLI (``--nproc-per-node 4``) trains the tiny fp32 model without dropout for 10 steps;
its loss and gradient-norm curve in metrics.jsonl must equal the single-process run's within
1e-5 relative. FSDP2 shards over "dp" while DTensor TP+SP splits heads, MLP and the sequence
over "tp", and the pipeline schedule sends activations between the "pp" stages: these are the
layouts where two meshes' collectives interleave.
"""

from __future__ import annotations

import pytest
from test_train_parallel import assert_same_curve, curve, pretrain

# the curve only: no validation, no checkpoint (keeps 4 processes on 2 cores well under a minute)
FAST = ("trainer.limit_val_batches=0", "exp_manager.create_checkpoint_callback=false")


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single")
    pretrain(dataset, run_dir, *FAST)
    return curve(run_dir)


@pytest.mark.slow  # several minutes on 2 cores: make test-all
@pytest.mark.parametrize("layout, banner", [
    (("model.tensor_model_parallel_size=2", "model.sequence_parallel=true"), "× 4 processes (DP 2, TP 2, SP)"),
    (("model.pipeline_model_parallel_size=2",), "× 4 processes (DP 2, TP 1, PP 2 (1F1B))"),
    (("model.pipeline_model_parallel_size=2", "model.tensor_model_parallel_size=2", "model.sequence_parallel=true"),
     "× 4 processes (DP 1, TP 2, SP, PP 2 (1F1B))"),
], ids=["dp2-tp2-sp", "pp2-dp2", "pp2-tp2-sp"])
def test_four_processes_equal_one(dataset, tmp_path, monkeypatch, single, layout, banner):
    # 4 ranks on a 2-core CI machine: oversubscribed on purpose, so no per-rank core pinning, and one
    # intra-op thread each (two each would make every gloo collective wait on descheduled ranks: 10x slower)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = pretrain(dataset, tmp_path / "mesh", *FAST, *layout, "numa_mapping.enable=false", nproc=4)
    assert banner in out.stdout
    assert sum(line.startswith("step 10/10 |") for line in out.stdout.splitlines()) == 1  # rank 0 alone prints
    assert_same_curve(curve(tmp_path / "mesh"), single, range(1, 11))


@pytest.mark.slow  # several minutes on 2 cores: make test-all
def test_interleaved_pp2_dp2_four_processes_equal_one(dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    four = ("model.num_layers=4",)  # 2 stages × 2 chunks of one layer each
    pretrain(dataset, tmp_path / "single", *FAST, *four)
    out = pretrain(dataset, tmp_path / "mesh", *FAST, *four, "model.pipeline_model_parallel_size=2",
                   "model.virtual_pipeline_model_parallel_size=2", "numa_mapping.enable=false", nproc=4)
    assert "× 4 processes (DP 2, TP 1, PP 2 × 2 chunks (interleaved 1F1B))" in out.stdout
    assert_same_curve(curve(tmp_path / "mesh"), curve(tmp_path / "single"), range(1, 11))
