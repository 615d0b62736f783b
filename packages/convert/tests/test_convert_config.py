"""The conversion config (the NeMo launcher's keys), output guarding and layer-at-a-time reading."""

from __future__ import annotations

import pytest
import torch
from convert_helpers import make_checkpoint

from bignlp_contracts import HF_MODEL, ConfigError, Producer, resolve_checkpoint, write_manifest
from bignlp_convert.config import load_conversion_config, shipped_configs
from bignlp_convert.output import check_output_dir, output_directory
from bignlp_convert.stream import Progress, iter_groups, layer_groups, nbytes
from bignlp_models import open_checkpoint


def test_shipped_configs_load_with_the_launchers_interpolations():
    assert shipped_configs() == ["gpt3/convert_gpt3", "mt5/convert_mt5", "t5/convert_t5"]
    cfg = load_conversion_config("gpt3/convert_gpt3", ["run.model_train_name=gpt3_126m",
                                                       "model.tensor_model_parallel_size=1"])
    assert cfg.run.results_dir == "results/gpt3_126m/convert_nemo"
    assert cfg.model.checkpoint_folder == "results/gpt3_126m/results/checkpoints"
    assert cfg.model.tensor_model_parallel_size == 1
    assert cfg.run.nemo_file_name == "megatron_gpt.nemo"


def test_a_launcher_file_with_a_conversion_section_loads(tmp_path):
    f = tmp_path / "conv.yaml"
    f.write_text("base_results_dir: /r\nconversion:\n  run:\n    model_train_name: t5_220m\n"
                 "    train_dir: ${base_results_dir}/${conversion.run.model_train_name}\n"
                 "    results_dir: ${conversion.run.train_dir}/convert_nemo\n    nemo_file_name: megatron_t5.nemo\n"
                 "  model:\n    model_type: t5\n    pipeline_model_parallel_size: 2\n    model_parallel_size: 2\n")
    cfg = load_conversion_config(f, ["conversion.model.checkpoint_name=step-*"])
    assert cfg.run.results_dir == "/r/t5_220m/convert_nemo"
    assert cfg.model.model_type == "t5" and cfg.model.checkpoint_name == "step-*"


@pytest.mark.parametrize("override, words", [
    ("model.model_type=bert", "model.model_type='bert'"),
    ("model.tensor_model_parallel_size=0", "model.tensor_model_parallel_size=0"),
    ("model.model_parallel_size=3", "model.model_parallel_size=3"),
    ("run.nemo_file_name=x.tar", "run.nemo_file_name='x.tar'"),
])
def test_bad_keys_are_one_config_error_naming_them(override, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace("[", r"\[")):
        load_conversion_config("gpt3/convert_gpt3", [override])


def test_resolve_checkpoint_picks_by_name_or_glob(tmp_path):
    ckpts = tmp_path / "run" / "checkpoints"
    for name in ("step-00000010", "step-00000020"):
        (ckpts / name).mkdir(parents=True)
    assert resolve_checkpoint(tmp_path / "run", "step-*").name == "step-00000020"
    assert resolve_checkpoint(ckpts, "step-00000010").name == "step-00000010"
    with pytest.raises(ConfigError, match="matches no checkpoint"):
        resolve_checkpoint(tmp_path / "run", "step-9*")


def test_output_guard_refuses_artifacts_files_and_nonempty_dirs(tmp_path):
    assert check_output_dir(tmp_path / "new") == (tmp_path / "new").absolute()
    (tmp_path / "empty").mkdir()
    assert check_output_dir(tmp_path / "empty").name == "empty"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        check_output_dir(tmp_path / "file")
    art = tmp_path / "art"
    art.mkdir()
    (art / "a.txt").write_text("a")
    with pytest.raises(ConfigError, match="is not empty"):
        check_output_dir(art)
    write_manifest(art, HF_MODEL, producer=Producer("t", "0"), files=["a.txt"])
    with pytest.raises(ConfigError, match="already holds a hf-model artifact"):
        check_output_dir(art)


def test_output_directory_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError), output_directory(out) as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("crash mid-write")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_layer_groups_stream_every_weight_once(tmp_path):
    path, model, _ = make_checkpoint(tmp_path / "ckpt", "t5")
    reader = open_checkpoint(path)
    groups = layer_groups(reader.shapes, reader.family)
    names = [n for g in groups for n in g]
    assert sorted(names) == sorted(reader.shapes) and len(names) == len(set(names))
    layer_group = [g for g in groups if g[0].startswith("encoder_layers.0.")]
    assert layer_group and all(n.startswith("encoder_layers.0.") for n in layer_group[0])
    seen = {}
    lines = []
    progress = Progress("read", nbytes(reader.shapes), log=lines.append, every_s=0.0)
    for group in iter_groups(reader, progress=progress):
        assert len(group) <= max(len(g) for g in groups)
        seen.update(group)
    state = model.state_dict()
    for name, t in seen.items():
        want = state[name]
        if t.shape != want.shape:  # the embedding and head come back without the vocabulary padding
            assert t.shape[0] == reader.vocab_size < want.shape[0]
            want = want[: t.shape[0]]
        assert torch.equal(t, want), name
    assert progress.done == nbytes(reader.shapes)
    assert lines and "ETA" in lines[0]
    assert "GB in" in progress.finish()
