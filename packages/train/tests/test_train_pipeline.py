"""Pipeline parallelism on CPU/gloo with 2 processes: 1F1B and interleaved 1F1B equal one process.

Tiny fp32 model, dropout 0, fixed seed, 10 steps with 4 micro-batches each: loss and gradient-norm
curves (and validation losses) must agree with the single-process run within 1e-5 relative. Also
FSDP gradient accumulation (no_sync): one reduce-scatter per step, not one per micro-batch.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch.distributed.checkpoint as dcp
from click.testing import CliRunner
from test_train_parallel import assert_same_curve, curve, pretrain
from train_helpers import tiny_overrides

from bignlp_contracts import set_latest_checkpoint
from bignlp_train.cli import main
from bignlp_train.launch import launch_local
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


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    """The 2-layer single-process run (every checkpoint kept): the curve and the checkpoints to resume."""
    run_dir = tmp_path_factory.mktemp("single")
    pretrain(dataset, run_dir, "exp_manager.checkpoint_callback_params.save_top_k=-1")
    return run_dir


def assert_same_run(got: Path, want: Path, steps) -> None:
    assert_same_curve(curve(got), curve(want), steps)
    reference = validation(want)
    for step, loss in validation(got).items():
        assert loss == pytest.approx(reference[step], rel=1e-5)


def test_pipeline_1f1b_curve_equals_single_process(dataset, tmp_path, single):
    out = pretrain(dataset, tmp_path, *PP2, nproc=2)
    assert_same_run(tmp_path, single, range(1, 11))
    assert set(validation(tmp_path)) == {0, 5, 10}
    assert sum(line.startswith("step 10/10 |") for line in out.stdout.splitlines()) == 1  # rank 0 alone prints
    assert "PP 2 (1F1B)" in out.stdout


def test_pipeline_with_recomputation_and_document_masks_equals_single_process(dataset, tmp_path):
    # the attention mask reaches every stage (a schedule keyword argument); uniform groups stay in a stage
    masks = ("model.data.reset_attention_mask=true",)
    pretrain(dataset, tmp_path / "single", *masks)
    pretrain(dataset, tmp_path / "pp", *PP2, *masks, "model.activations_checkpoint_granularity=full",
             "model.activations_checkpoint_method=uniform", "model.activations_checkpoint_num_layers=2", nproc=2)
    assert_same_run(tmp_path / "pp", tmp_path / "single", range(1, 11))


def test_interleaved_pipeline_curve_equals_single_process(dataset, tmp_path):
    pretrain(dataset, tmp_path / "single", "model.num_layers=4")
    out = pretrain(dataset, tmp_path / "pp", *INTERLEAVED, nproc=2)
    assert_same_run(tmp_path / "pp", tmp_path / "single", range(1, 11))
    assert "PP 2 × 2 chunks (interleaved 1F1B)" in out.stdout


def test_bad_pipeline_layout_is_one_line(dataset, tmp_path):
    for extra, message in [
        (("model.num_layers=3", *PP2),
         "model.num_layers=3 is not divisible by model.pipeline_model_parallel_size=2"),
        ((*PP2, "model.virtual_pipeline_model_parallel_size=2"),
         "model.num_layers=2 is not divisible by model.pipeline_model_parallel_size=2 × "
         "model.virtual_pipeline_model_parallel_size=2"),
        ((*PP2, "model.global_batch_size=2"), "1 micro-batches per step"),
        ((*INTERLEAVED, "model.global_batch_size=6"), "3 micro-batches per step"),
        (("model.virtual_pipeline_model_parallel_size=2",),
         "model.virtual_pipeline_model_parallel_size=2 needs model.pipeline_model_parallel_size > 1"),
    ]:
        result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu", "--nproc-per-node", "2",
                                           *tiny_overrides(dataset, tmp_path, *extra)])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr
    assert not (tmp_path / "config.yaml").exists()


def test_save_at_pp2_resume_in_one_process_and_back(dataset, tmp_path, single):
    saved = tmp_path / "pp2"
    pretrain(dataset, saved, *PP2, "trainer.max_steps=5", nproc=2)
    reader = dcp.FileSystemReader(str(saved / "checkpoints" / "step-00000005" / "dcp"))
    keys = reader.read_metadata().state_dict_metadata
    assert "model.embedding.word_embeddings.weight" in keys and "model.layers.1.mlp.linear_fc1.weight" in keys
    assert not any("output_layer" in key for key in keys)  # the last stage's tied copy is saved as the embedding
    out = pretrain(dataset, saved)
    assert "resumed from" in out.stdout and "(step 5, 40 samples consumed)" in out.stdout
    assert_same_run(saved, single, range(6, 11))
    # the other way: the single process's step-5 checkpoint continued by a 2-stage pipeline
    one = tmp_path / "one"
    shutil.copytree(single, one)
    shutil.rmtree(one / "checkpoints" / "step-00000010")
    set_latest_checkpoint(one, one / "checkpoints" / "step-00000005")
    out = pretrain(dataset, one, *PP2, nproc=2)
    assert "(step 5, 40 samples consumed)" in out.stdout
    assert_same_run(one, single, range(6, 11))


def test_fsdp_gradient_accumulation_reduce_scatters_once_per_step():
    # no_sync: with 2 micro-batches per rank, each FSDP unit's gradients are reduce-scattered after the
    # last one only (the DP=2 curve test in test_train_parallel.py shows the step's math is unchanged)
    worker = Path(__file__).with_name("parallel_worker.py")
    assert launch_local([sys.executable, str(worker), "no_sync"], 2) == 0
