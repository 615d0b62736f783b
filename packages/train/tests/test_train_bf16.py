"""trainer.precision=bf16 with FSDP2: bf16 compute, fp32 master weights and optimizer state.

Every layout computes bf16 the same way: FSDP's MixedPrecisionPolicy gathers the parameters in bf16
(one process over a one-rank mesh), so the residual stream, LayerNorms and logits are bf16 and no
autocast runs. The DP=2 and single-process curves still differ a little: each rank multiplies half
the batch (GEMMs of another shape) and gradients are reduced in another order, and bf16 rounding
amplifies those last-bit differences. Measured here (tiny model, 10 steps, dropout 0): at most 5.5e-5
relative in the loss (it was 8.9e-4 when one process ran autocast over fp32 weights); the tolerance
is 2^-11 ≈ 4.9e-4, a quarter of bf16's unit roundoff. For scale, the bf16 and fp32 single-process
curves differ by up to 6.6e-4. The fp32 curves keep their 1e-5 equality (test_train_parallel.py).
PP=2 and TP=2+SP in bf16 are held to the same tolerance.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from test_train_parallel import curve, pretrain
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from bignlp_contracts import latest_checkpoint
from bignlp_train.launch import launch_local

BF16_RTOL = 2 ** -11  # a quarter of bf16's unit roundoff (2^-9)


def test_fsdp_bf16_keeps_fp32_master_weights():
    worker = Path(__file__).with_name("bf16_worker.py")
    assert launch_local([sys.executable, str(worker)], 2) == 0


def test_dp2_bf16_curve_tracks_single_process(dataset, tmp_path):
    pretrain(dataset, tmp_path / "single", "trainer.precision=bf16")
    out = pretrain(dataset, tmp_path / "dp2", "trainer.precision=bf16", nproc=2)
    assert "precision bf16" in out.stdout and "× 2 processes (DP 2" in out.stdout
    single, dp2 = curve(tmp_path / "single"), curve(tmp_path / "dp2")
    assert sorted(dp2) == list(range(1, 11))
    for step in dp2:
        assert dp2[step][0] == pytest.approx(single[step][0], rel=BF16_RTOL), (step, dp2[step], single[step])
    assert dp2[10][0] < dp2[1][0] - 0.5  # and it learns
    # What the DP=2 run saved: fp32 weights and fp32 AdamW moments
    saved = dcp.FileSystemReader(str(latest_checkpoint(tmp_path / "dp2") / "dcp")).read_metadata()
    tensors = {k: m.properties.dtype for k, m in saved.state_dict_metadata.items()
               if isinstance(m, TensorStorageMetadata) and k.startswith(("model.", "optim.state."))}
    assert any(k.endswith(".exp_avg_sq") for k in tensors) and any(k.startswith("model.") for k in tensors)
    assert {str(d) for d in tensors.values()} == {"torch.float32"}, tensors


@pytest.mark.parametrize("layout, banner", [
    (("model.pipeline_model_parallel_size=2",), "(DP 1, TP 1, PP 2 (1F1B))"),
    (("model.tensor_model_parallel_size=2", "model.sequence_parallel=true"), "(DP 1, TP 2, SP)"),
], ids=["pp2", "tp2-sp"])
def test_bf16_pipeline_and_tensor_parallel_track_single_process(dataset, tmp_path, layout, banner):
    # FSDP's bf16 over a one-rank "dp" dim under each pipeline chunk or around the DTensor TP layers
    pretrain(dataset, tmp_path / "single", "trainer.precision=bf16", "trainer.limit_val_batches=0")
    out = pretrain(dataset, tmp_path / "par", "trainer.precision=bf16", "trainer.limit_val_batches=0", *layout, nproc=2)
    assert banner in out.stdout
    single, par = curve(tmp_path / "single"), curve(tmp_path / "par")
    assert sorted(par) == list(range(1, 11))
    for step in par:
        assert par[step][0] == pytest.approx(single[step][0], rel=BF16_RTOL), (step, par[step], single[step])
