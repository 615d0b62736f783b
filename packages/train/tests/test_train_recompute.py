"""Activation recomputation: same losses as without it, fewer saved activations, config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from train_helpers import tiny_overrides

from bignlp_contracts import ConfigError
from bignlp_models import GPT_SPEC, GPTConfig
from bignlp_train.config import load_train_config
from bignlp_train.parallelize import build_model_parts
from bignlp_train.recompute import Recompute, canonical_name
from bignlp_train.trainer import pretrain

MODES = {
    "none": (),
    "selective": ("model.activations_checkpoint_granularity=selective",),
    "full-uniform-1": ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
                       "model.activations_checkpoint_num_layers=1"),
    "full-uniform-2": ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
                       "model.activations_checkpoint_num_layers=2"),
    "full-block-1": ("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=block",
                     "model.activations_checkpoint_num_layers=1"),
}
# dropout on: the recomputed forward must draw the same masks (RNG state preserved)
CURVE = ("trainer.max_steps=10", "trainer.val_check_interval=10", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=0", "model.num_layers=4", "model.hidden_dropout=0.1",
         "model.attention_dropout=0.1", "exp_manager.create_checkpoint_callback=false")


def _curve(dataset, run_dir: Path, extra) -> list[tuple[float, float]]:
    cfg = load_train_config("gpt3/tiny-cpu", tiny_overrides(dataset, run_dir, *CURVE, *extra))
    pretrain(cfg, log=lambda _line: None)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["loss"], r["grad_norm"]) for r in rows if r["event"] == "train"]


@pytest.fixture(scope="module")
def reference(dataset, tmp_path_factory):
    return _curve(dataset, tmp_path_factory.mktemp("none"), MODES["none"])


@pytest.mark.parametrize("mode", [m for m in MODES if m != "none"])
def test_recompute_keeps_the_loss_curve(dataset, tmp_path, reference, mode):
    got = _curve(dataset, tmp_path, MODES[mode])
    assert len(got) == len(reference) == 10
    for step, (g, w) in enumerate(zip(got, reference), start=1):
        assert g == pytest.approx(w, rel=1e-5), (mode, step, g, w)


CFG = GPTConfig(vocab_size=128, max_position_embeddings=64, num_layers=2, hidden_size=64, num_attention_heads=4,
                ffn_hidden_size=256, kv_channels=16, hidden_dropout=0.0, attention_dropout=0.1)


def saved_bytes(recompute: Recompute, layer: int | None = 0) -> int:
    """Bytes of the distinct activation storages autograd saves in one block's forward (weights left out);
    ``layer=None``: the forward of the whole layer stack."""
    torch.manual_seed(0)
    model = build_model_parts(GPT_SPEC, CFG, torch.device("cpu"), recompute=recompute)[0]
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    x = torch.randn(2, 64, CFG.hidden_size, requires_grad=True)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        (model.layers if layer is None else model.layers[str(layer)])(x)
    return sum(storages.values())


def test_recompute_saves_fewer_activations():
    # attention dropout on: SDPA takes the math path, which keeps the (B, heads, S, S) scores
    none = saved_bytes(Recompute())
    selective = saved_bytes(Recompute("selective"))
    full = saved_bytes(Recompute("full", "uniform", 1))
    assert full < selective < none
    block_input = 2 * 64 * CFG.hidden_size * 4
    assert full == block_input  # full recompute keeps only the block's input (Korthikanti: 2sbh in 16 bit)
    # selective drops at least the softmax output and the dropped-out probabilities: 2 × (B, heads, S, S)
    assert none - selective >= 2 * (2 * CFG.num_attention_heads * 64 * 64 * 4)
    assert saved_bytes(Recompute("full", "uniform", 2), layer=None) == block_input  # one input for both blocks
    assert saved_bytes(Recompute("full", "block", 1), layer=0) == block_input
    assert saved_bytes(Recompute("full", "block", 1), layer=1) == none  # only the first block of the stage
    assert saved_bytes(Recompute("full", "block", 0)) == none  # the seed's 126m: 0 layers = none


def test_recompute_gradients_equal():
    grads = []
    for recompute in (Recompute(), Recompute("selective"), Recompute("full", "uniform", 2),
                      Recompute("full", "block", 1)):
        torch.manual_seed(0)
        model = build_model_parts(GPT_SPEC, CFG, torch.device("cpu"), recompute=recompute)[0]
        model(torch.arange(64).view(1, 64) % 128).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
        names = [canonical_name(n) for n, _ in model.named_parameters()]
        assert names == [n for n, _ in GPT_SPEC.build_meta(CFG).named_parameters()]  # checkpoint names unchanged
        assert list(model.state_dict()) == names
    for g in grads[1:]:
        torch.testing.assert_close(g, grads[0], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("model.activations_checkpoint_granularity=partial",),
         "model.activations_checkpoint_granularity='partial' is not supported"),
        (("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=blocks",
          "model.activations_checkpoint_num_layers=1"),
         "model.activations_checkpoint_method='blocks' is not supported"),
        (("model.activations_checkpoint_granularity=full",), "needs model.activations_checkpoint_method"),
        (("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
          "model.activations_checkpoint_num_layers=5"),
         "model.activations_checkpoint_num_layers=5 exceeds model.num_layers (4)"),
        (("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=uniform",
          "model.activations_checkpoint_num_layers=0"), "must be at least 1"),
        (("model.activations_checkpoint_granularity=full", "model.activations_checkpoint_method=block",
          "model.pipeline_model_parallel_size=2", "model.activations_checkpoint_num_layers=3"),
         "exceeds the layers per pipeline stage (2)"),
    ],
)
def test_recompute_config_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_train_config("gpt3/tiny-cpu", list(overrides))
    line = err.value.one_line()
    assert message in line and "\n" not in line
