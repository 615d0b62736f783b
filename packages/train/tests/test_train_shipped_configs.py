"""Every shipped config: loads, has the parameter count its name says, and a valid layout for its nodes."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from train_helpers import tiny_overrides

from bignlp_models import GPTConfig, build_model, num_parameters
from bignlp_models.gpt import count_parameters
from bignlp_train.cli import main
from bignlp_train.config import check_parallel_layout, load_train_config, shipped_configs

GPT2_VOCAB = 50257
SIZED = [name for name in shipped_configs() if re.fullmatch(r"gpt3/\d+[mb]", name)]
# seed README 5.2.1 (and the launcher's YAML where the README is silent): nodes, TP, PP, MBS, GBS, layers, hidden,
# heads, init_std, lr, min_lr, warmup, constant, max_steps, recomputation, SP
SEED = {
    "gpt3/126m": (8, 1, 1, 4, 256, 12, 768, 12, 0.023, 6e-4, 6e-5, 636, 100000, 600000, "full", False),
    "gpt3/5b": (20, 2, 1, 2, 1440, 24, 4096, 32, 0.01, 1.5e-4, 1.5e-5, 115, 12500, 75000, "full", False),
    "gpt3/20b": (64, 2, 4, 4, 2048, 44, 6144, 48, 0.008165, 1.3e-4, 1.3e-5, 115, 12500, 75000, "selective", True),
    "gpt3/40b": (128, 4, 4, 2, 2048, 48, 8192, 64, 0.007, 1.0e-4, 1.0e-5, 115, 12500, 75000, "selective", True),
    "gpt3/175b": (128, 8, 8, 2, 2048, 96, 12288, 96, 0.006, 0.8e-4, 0.8e-5, 115, 12500, 75000, "selective", True),
}


def test_all_sizes_ship():
    assert sorted(SIZED) == sorted(SEED)


@pytest.mark.parametrize("name", SIZED)
def test_parameter_count_matches_the_name(name):
    cfg = load_train_config(name)
    n = count_parameters(cfg.model.architecture(GPT2_VOCAB))
    size = re.fullmatch(r"gpt3/(\d+)([mb])", name)
    nominal = int(size.group(1)) * (1e6 if size.group(2) == "m" else 1e9)
    assert n == pytest.approx(nominal, rel=0.03), f"{name}: {n:,} parameters"


@pytest.mark.parametrize("name", shipped_configs())
def test_layout_is_valid_for_its_nodes(name):
    cfg = load_train_config(name)
    world = cfg.trainer.num_nodes * cfg.trainer.devices
    dp = check_parallel_layout(cfg.model, world)
    m = cfg.model
    assert dp * m.tensor_model_parallel_size * m.pipeline_model_parallel_size == world
    assert m.global_batch_size % (m.micro_batch_size * dp) == 0


@pytest.mark.parametrize("name", SIZED)
def test_seed_values(name):
    cfg = load_train_config(name)
    m, t, o = cfg.model, cfg.trainer, cfg.model.optim
    got = (t.num_nodes, m.tensor_model_parallel_size, m.pipeline_model_parallel_size, m.micro_batch_size,
           m.global_batch_size, m.num_layers, m.hidden_size, m.num_attention_heads, m.init_method_std, o.lr,
           o.sched.min_lr, o.sched.warmup_steps, o.sched.constant_steps, t.max_steps,
           m.activations_checkpoint_granularity, m.sequence_parallel)
    assert got == SEED[name]
    assert (t.devices, t.precision_name, m.seq_length, m.ffn_hidden_size) == (8, "bf16", 2048, 4 * m.hidden_size)
    assert (m.data.splits_string, o.sched.name, o.weight_decay, t.val_check_interval, o.name) == (
        "99990,8,2", "CosineAnnealing", 0.1, 2000, "distributed_fused_adam")


def test_count_parameters_equals_the_model():
    cfg = GPTConfig(vocab_size=384, max_position_embeddings=40, num_layers=3, hidden_size=48, num_attention_heads=4,
                    ffn_hidden_size=160, kv_channels=16)  # heads × kv_channels ≠ hidden on purpose
    assert count_parameters(cfg) == num_parameters(build_model(cfg))


def test_pipeline_layout_needs_its_processes(dataset, tmp_path):
    assert load_train_config("gpt3/175b").model.pipeline_model_parallel_size == 8
    result = CliRunner().invoke(main, ["pretrain", "--config", "gpt3/tiny-cpu",
                                       *tiny_overrides(dataset, tmp_path, "model.pipeline_model_parallel_size=2")])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "world size 1 is not a multiple of model.tensor_model_parallel_size=1 × " \
        "model.pipeline_model_parallel_size=2" in result.stderr


def test_layout_errors_name_the_rule():
    cfg = load_train_config("gpt3/20b")
    with pytest.raises(Exception, match="world size 100 is not a multiple"):
        check_parallel_layout(cfg.model, 100)
    with pytest.raises(Exception, match=r"model.global_batch_size=2048 is not a multiple of model.micro_batch_size=4 "
                                        r"× data-parallel size 80"):
        check_parallel_layout(cfg.model, 640)  # the README's 80 nodes
    odd = load_train_config("gpt3/tiny-cpu", ["model.pipeline_model_parallel_size=3"])
    with pytest.raises(Exception, match="model.num_layers=4 is not divisible by model.pipeline_model_parallel_size=3"):
        check_parallel_layout(odd.model, 3)
