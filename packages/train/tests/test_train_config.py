"""Config: defaults, shipped YAMLs, overrides, unknown keys and validation messages."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from bignlp_contracts import ConfigError
from bignlp_train.cli import main
from bignlp_train.config import TrainConfig, check_parallel_layout, load_train_config, parse_max_time, shipped_configs


def test_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.trainer.precision_name == "32"
    assert cfg.model.seq_length == cfg.model.encoder_seq_length
    assert cfg.model.optim.betas == (0.9, 0.95)
    assert cfg.sched_max_steps == cfg.trainer.max_steps
    assert str(cfg.exp_manager.run_dir()) == "results/megatron_gpt"


def test_shipped_configs_load():
    names = shipped_configs()
    assert "gpt3/tiny-cpu" in names
    for name in names:
        cfg = load_train_config(name)
        assert cfg.model.data.data_prefix is None  # the user names the data


def test_tiny_cpu_values():
    cfg = load_train_config("gpt3/tiny-cpu")
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.num_attention_heads) == (4, 128, 4)
    assert cfg.model.num_micro_batches >= 1 and cfg.trainer.precision_name == "32"


def test_overrides_and_yaml_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("trainer:\n  max_steps: 7\nmodel:\n  optim:\n    lr: 6e-4\n")
    cfg = load_train_config(str(path), ["model.optim.sched.min_lr=6e-5", "trainer.precision=bf16",
                                        "model.data.data_prefix=[0.3,/d/a_text_document,0.7,/d/b_text_document]"])
    assert cfg.trainer.max_steps == 7 and cfg.model.optim.lr == 6e-4
    assert cfg.model.optim.sched.min_lr == 6e-5 and cfg.trainer.precision_name == "bf16"
    assert cfg.model.data.blend() == [(0.3, "/d/a_text_document"), (0.7, "/d/b_text_document")]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.num_attention_heads=5", "model.num_attention_heads=5 does not divide model.hidden_size"),
        ("model.global_batch_size=10", "model.global_batch_size=10 is not a multiple of model.micro_batch_size"),
        ("model.data.seq_length=256", "model.data.seq_length=256 differs from model.encoder_seq_length"),
        ("model.max_position_embeddings=64", "model.data.seq_length=128 exceeds model.max_position_embeddings=64"),
        ("model.tensor_model_parallel_size=3", "model.num_attention_heads=4 is not divisible by "
                                               "model.tensor_model_parallel_size=3"),
        ("trainer.precision=16", "trainer.precision=16 is not supported"),
        ("trainer.accumulate_grad_batches=2", "trainer.accumulate_grad_batches must be 1"),
        ("trainer.max_time=1h", "trainer.max_time"),
        ("model.optim.name=sgd", "model.optim.name='sgd' is not supported"),
        ("model.optim.sched.name=Noam", "model.optim.sched.name"),
        ("model.data.data_prefix=[1.0]", "model.data.data_prefix must be a path or a list"),
        ("model.data.data_prefix=[-1,/d/a]", "weight -1 of /d/a must be positive"),
        ("model.optim.sched.constant_steps=1000", "leaves no decay"),
    ],
)
def test_validation_names_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        load_train_config("gpt3/tiny-cpu", [override])
    assert message in err.value.one_line()


def test_missing_data_prefix_message():
    cfg = load_train_config("gpt3/tiny-cpu")
    with pytest.raises(ConfigError, match=r"model.data.data_prefix is not set"):
        cfg.model.data.blend()


def test_parse_max_time():
    assert parse_max_time("00:23:30:00") == 23.5 * 3600
    assert parse_max_time("1:00:00:05") == 86405
    with pytest.raises(ValueError):
        parse_max_time("23:30")


def test_unknown_key_through_cli_suggests():
    result = CliRunner().invoke(main, ["show-config", "--config", "gpt3/tiny-cpu", "model.optim.lrr=1"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line
    assert "unknown config key model.optim.lrr" in line and "did you mean model.optim.lr?" in line


def test_unknown_config_name_through_cli():
    result = CliRunner().invoke(main, ["show-config", "--config", "gpt3/tiny-cp"])
    assert result.exit_code == 2
    assert "no config named 'gpt3/tiny-cp'" in result.stderr and "gpt3/tiny-cpu" in result.stderr


def test_show_config_prints_resolved_yaml():
    import yaml

    result = CliRunner().invoke(main, ["show-config", "--config", "gpt3/tiny-cpu", "trainer.max_steps=5"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["trainer"]["max_steps"] == 5
    assert load_train_config(data) == load_train_config("gpt3/tiny-cpu", ["trainer.max_steps=5"])


def test_parallel_layout_is_checked_against_the_world_size():
    cfg = load_train_config("gpt3/tiny-cpu", ["model.tensor_model_parallel_size=2"])  # GBS 8, MBS 4
    assert cfg.model.data_parallel_size(2) == 1 and cfg.model.data_parallel_size(4) == 2
    with pytest.raises(ConfigError, match="world size 3 is not a multiple of model.tensor_model_parallel_size=2"):
        cfg.model.data_parallel_size(3)
    with pytest.raises(ConfigError) as err:
        cfg.model.data_parallel_size(8)  # DP 4: 4 × 4 does not divide 8
    assert "model.global_batch_size=8 is not a multiple of model.micro_batch_size=4 × data-parallel size 4" in (
        err.value.one_line())


def test_sequence_parallel_needs_a_sequence_that_divides_by_tp():
    odd = ["model.encoder_seq_length=127", "model.data.seq_length=127", "model.tensor_model_parallel_size=2"]
    assert check_parallel_layout(load_train_config("gpt3/tiny-cpu", odd).model, 2) == 1  # without SP it is fine
    with pytest.raises(ConfigError) as err:
        check_parallel_layout(load_train_config("gpt3/tiny-cpu", [*odd, "model.sequence_parallel=true"]).model, 2)
    assert "model.seq_length=127 is not divisible by model.tensor_model_parallel_size=2" in err.value.one_line()
