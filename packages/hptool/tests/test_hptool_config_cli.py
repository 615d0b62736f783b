"""Config loading, size and time, base configs, refusals, and every command's help (fast: no launches)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from bignlp_hptool.basecfg import model_shape
from bignlp_hptool.cli import main
from bignlp_hptool.config import load_hp_config, shipped_search_configs
from bignlp_hptool.sizing import estimate_training_days, recommend_model_size
from click.testing import CliRunner

from bignlp_contracts import ConfigError

PREDEFINED = {"gpt3": ["126m", "5b", "20b", "40b", "175b"], "t5": ["220m", "3b", "11b", "23b", "41b"],
              "mt5": ["170m", "390m", "3b", "11b", "23b"]}


def test_every_predefined_size_is_shipped_and_loads():
    names = shipped_search_configs()
    for model, sizes in PREDEFINED.items():
        for size in [*sizes, "unknown_size"]:
            assert f"{model}/{size}" in names
            cfg = load_hp_config(f"{model}/{size}")
            assert cfg.model_type == model and cfg.search_config_value == f"{model}/{size}"
    assert {"gpt3/tiny-cpu", "t5/tiny-cpu"} <= set(names)


@pytest.mark.parametrize("model", list(PREDEFINED))
def test_predefined_sizes_give_base_shapes_near_their_names(model):
    for size in PREDEFINED[model]:
        cfg = load_hp_config(f"{model}/{size}")
        shape = model_shape(model, cfg.train_settings.model_size_in_b, cfg.train_settings.vocab_size)
        assert shape.num_parameters / 1e9 == pytest.approx(cfg.train_settings.model_size_in_b, rel=0.12), size


def test_overrides_and_unknown_keys():
    cfg = load_hp_config("gpt3/5b", ["train_settings.num_nodes=4", "train_settings.tensor_parallel_sizes=[1,2]",
                                     "cluster.partition=batch"])
    assert cfg.train_settings.num_nodes == 4 and cfg.train_settings.tensor_parallel_sizes == (1, 2)
    assert cfg.cluster.partition == "batch" and cfg.train_settings.micro_batch_sizes == "auto"
    assert str(cfg.logs_dir) == "results/hp_tool/gpt3_5b_80gb"
    with pytest.raises(ConfigError, match=r"train_settings.num_node.*did you mean train_settings.num_nodes"):
        load_hp_config("gpt3/5b", ["train_settings.num_node=4"])
    for bad in ("train_settings.gpu_memory_gb=0", "train_settings.num_nodes=0", "train_settings.gpus_per_node=0"):
        with pytest.raises(ConfigError, match="must be"):
            load_hp_config("gpt3/5b", [bad])


def test_size_recommendation_and_time_to_train():
    # FACTS: size = days·86400·GPUs·TFLOPs·1e12 / (8·tokens); 20 DGX nodes x 5 days at 140 TFLOP/s, 300B tokens
    assert recommend_model_size("gpt3", num_gpus=160, max_training_days=5) == 4.03
    assert recommend_model_size("mt5", num_gpus=160, max_training_days=5) == round(0.87 * 4.032, 2)
    assert estimate_training_days("gpt3", model_size_in_b=4.032, num_gpus=160) == pytest.approx(5.0, rel=1e-3)
    assert estimate_training_days("mt5", model_size_in_b=1, num_gpus=160) == pytest.approx(
        1.15 * estimate_training_days("t5", model_size_in_b=1, num_gpus=160))


def test_cli_help_recommend_and_refusals(tmp_path):
    runner = CliRunner()
    for cmd in ([], ["run"], ["recommend"], ["validate"]):
        out = runner.invoke(main, [*cmd, "--help"])
        assert out.exit_code == 0 and "Example:" in out.output, cmd
    out = runner.invoke(main, ["recommend", "--config", "gpt3/unknown_size"])
    assert out.exit_code == 0 and "recommended model size: 4.03B" in out.output and "5.00 days" in out.output
    out = runner.invoke(main, ["recommend", "--config", "gpt3/5b", "train_settings.gpu_memory_gb=0"])
    assert out.exit_code == 2 and "gpu_memory_gb must be positive" in out.output
    out = runner.invoke(main, ["run", "--config", "gpt3/5b", "--dry-run", "train_settings.model_size_in_b=900",
                               f"train_settings.logs={tmp_path / 'a'}"])
    assert out.exit_code == 2 and "tables cover up to 205B" in out.output
    out = runner.invoke(main, ["run", "--config", "gpt3/5b", "--dry-run", "train_settings.tensor_parallel_sizes=[3]",
                               "train_settings.pipeline_parallel_sizes=[5]", f"train_settings.logs={tmp_path / 'b'}"])
    assert out.exit_code == 2 and "TP 3 PP 5: num_attention_heads 32 % TP 3" in out.output
    assert not (tmp_path / "b").exists()  # refused before writing anything
    out = runner.invoke(main, ["run", "--config", "gpt3/5b", "--dry-run", "train_settings.gpu_memory_gb=1",
                               f"train_settings.logs={tmp_path / 'c'}"])
    assert out.exit_code == 2 and "over the memory budget" in out.output
    out = runner.invoke(main, ["run", "--config", "t5/3b", "--dry-run", "run_inference_hp_search=true",
                               f"train_settings.logs={tmp_path / 'e'}"])
    assert out.exit_code == 2 and "needs inference_settings.checkpoint" in out.output  # before anything is written
    assert not (tmp_path / "e").exists()
    out = runner.invoke(main, ["run", "--config", "t5/3b", "--dry-run", f"train_settings.logs={tmp_path / 'd'}"])
    assert out.exit_code == 0, out.output
    assert (tmp_path / "d" / "final_results" / "final_summary.csv").is_file()
    out = runner.invoke(main, ["run", "--config", "gpt3/5b", "--dry-run", f"train_settings.logs={tmp_path / 'd'}"])
    assert out.exit_code == 2 and "holds another search" in out.output
    res = subprocess.run([sys.executable, "-m", "bignlp_hptool", "--help"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "recommend" in res.stdout
