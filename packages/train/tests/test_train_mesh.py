"""A 2-D device mesh: 4 processes as DP=2 × TP=2 with sequence parallelism equal one process.

The real CLI (``--nproc-per-node 4``) trains the tiny fp32 model without dropout for 10 steps;
its loss and gradient-norm curve in metrics.jsonl must equal the single-process run's within
1e-5 relative. FSDP2 shards over "dp" while DTensor TP+SP splits heads, MLP and the sequence
over "tp", so this is the layout where the two meshes' collectives interleave.
"""

from __future__ import annotations

from test_train_parallel import assert_same_curve, curve, pretrain

# the curve only: no validation, no checkpoint (keeps 4 processes on 2 cores well under a minute)
FAST = ("trainer.limit_val_batches=0", "exp_manager.create_checkpoint_callback=false")


def test_dp2_tp2_sp_four_processes_equal_one(dataset, tmp_path, monkeypatch):
    # 4 ranks on a 2-core CI machine: oversubscribed on purpose, so no per-rank core pinning, and one
    # intra-op thread each (two each would make every gloo collective wait on descheduled ranks: 10x slower)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    pretrain(dataset, tmp_path / "single", *FAST)
    out = pretrain(dataset, tmp_path / "mesh", *FAST, "model.tensor_model_parallel_size=2",
                   "model.sequence_parallel=true", "numa_mapping.enable=false", nproc=4)
    assert "× 4 processes (DP 2, TP 2, SP)" in out.stdout
    assert sum(line.startswith("step 10/10 |") for line in out.stdout.splitlines()) == 1  # rank 0 alone prints
    assert_same_curve(curve(tmp_path / "mesh"), curve(tmp_path / "single"), range(1, 11))
