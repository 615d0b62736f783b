"""Pipeline parallelism on CPU/gloo with 2 processes: 1F1B and interleaved 1F1B equal one process.

Tiny fp32 model, dropout 0, fixed seed, 10 steps with 4 micro-batches each: loss and gradient-norm
curves (and validation losses) must agree with the single-process run within 1e-5 relative.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_train_parallel import assert_same_curve, curve, pretrain
from train_helpers import tiny_overrides

from bignlp_train.cli import main
from bignlp_train.pipeline import rank_stages, stage_layers

PP2 = ("model.pipeline_model_parallel_size=2",)
INTERLEAVED = ("model.num_layers=4", "model.pipeline_model_parallel_size=2",
               "model.virtual_pipeline_model_parallel_size=2")


def validation(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if r["event"] == "validation" and r.get("split", "val") == "val"}


def test_megatron_round_robin_layer_assignment():
    assert [list(r) for r in stage_layers(8, 2, 2)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert rank_stages(0, 2, 2) == [0, 2] and rank_stages(1, 2, 2) == [1, 3]  # rank 0: layers 0-1 and 4-5
    assert [list(r) for r in stage_layers(4, 2)] == [[0, 1], [2, 3]]


@pytest.mark.parametrize("layout", [PP2, INTERLEAVED], ids=["pp2-1f1b", "pp2-interleaved"])
def test_pipeline_curve_equals_single_process(dataset, tmp_path, layout):
    single = tmp_path / "single"
    pretrain(dataset, single, *(o for o in layout if o.startswith("model.num_layers")))
    out = pretrain(dataset, tmp_path / "pp", *layout, nproc=2)
    assert_same_curve(curve(tmp_path / "pp"), curve(single), range(1, 11))
    want = validation(single)
    assert set(validation(tmp_path / "pp")) == set(want) == {0, 5, 10}
    for step, loss in validation(tmp_path / "pp").items():
        assert loss == pytest.approx(want[step], rel=1e-5)
    assert sum(line.startswith("step 10/10 |") for line in out.stdout.splitlines()) == 1  # rank 0 alone prints
    assert "PP 2" in out.stdout


def test_bad_pipeline_layout_is_one_line(dataset, tmp_path):
    for extra, message in [
        (("model.num_layers=3", *PP2),
         "model.num_layers=3 is not divisible by model.pipeline_model_parallel_size=2"),
        ((*PP2, "model.virtual_pipeline_model_parallel_size=2"),
         "model.num_layers=2 is not divisible by model.pipeline_model_parallel_size=2 × "
         "model.virtual_pipeline_model_parallel_size=2"),
        ((*PP2, "model.global_batch_size=2"), "1 micro-batches per step"),
    ]:
        result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
                                           *tiny_overrides(dataset, tmp_path, *extra)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
    assert not (tmp_path / "config.yaml").exists()

