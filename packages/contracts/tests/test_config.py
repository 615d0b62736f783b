from dataclasses import dataclass, field
from typing import Literal

import pytest

from bignlp_contracts import ConfigError, apply_overrides, dump_config, load_config, parse_override
from bignlp_contracts.config import resolve_config_path


@dataclass(frozen=True, kw_only=True)
class Optim:
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.95)


@dataclass(frozen=True, kw_only=True)
class Model:
    num_layers: int
    precision: Literal["32", "bf16"] = "32"
    data_prefix: list[float | str] | None = None
    optim: Optim = field(default_factory=Optim)


@dataclass(frozen=True, kw_only=True)
class Root:
    model: Model
    name: str = "run"

    def __post_init__(self):
        if self.model.num_layers < 1:
            raise ValueError("model.num_layers must be at least 1")


def test_defaults_and_nesting():
    cfg = load_config(Root, {"model": {"num_layers": 2}})
    assert cfg.model.optim.lr == 1e-3 and cfg.name == "run"


def test_unknown_key_names_dotted_path_and_suggestion():
    with pytest.raises(ConfigError) as exc:
        load_config(Root, {"model": {"num_layers": 2, "optim": {"lrr": 1.0}}})
    assert "model.optim.lrr" in exc.value.one_line()
    assert "did you mean model.optim.lr?" in exc.value.one_line()
    assert exc.value.exit_code == 2


def test_unknown_key_without_close_match_lists_valid_keys():
    with pytest.raises(ConfigError, match="valid keys under model"):
        load_config(Root, {"model": {"num_layers": 2, "zzzz": 1}})


def test_overrides_are_yaml_scalars():
    cfg = load_config(
        Root,
        {"model": {"num_layers": 2}},
        ["model.optim.lr=6e-4", "model.num_layers=4", "+name=x", "model.data_prefix=[1.0,/d/a]",
         "model.precision=bf16"],
    )
    assert cfg.model.optim.lr == pytest.approx(6e-4)
    assert cfg.model.num_layers == 4 and cfg.name == "x"
    assert cfg.model.data_prefix == (1.0, "/d/a")
    assert cfg.model.precision == "bf16"


def test_yaml_11_float_strings_accepted(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("model:\n  num_layers: 2\n  optim:\n    lr: 6e-4\n")
    assert load_config(Root, p).model.optim.lr == pytest.approx(6e-4)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["model.num_layers=two"], "model.num_layers: expected an integer"),
        (["model.precision=fp8"], "not one of"),
        (["model.num_layers=0"], "at least 1"),
        (["model.num_layers"], "not of the form key.sub=value"),
        (["model.num_layers.x=1"], "model.num_layers is a value, not a section"),
    ],
)
def test_bad_values(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(Root, {"model": {"num_layers": 2}}, overrides)


def test_missing_required_key():
    with pytest.raises(ConfigError, match="missing required config key model.num_layers"):
        load_config(Root, {"model": {}})


def test_parse_override_empty_and_null():
    assert parse_override("a.b=") == (["a", "b"], "")
    assert parse_override("a=null") == (["a"], None)


def test_apply_overrides_does_not_mutate():
    data = {"a": {"b": 1}}
    out = apply_overrides(data, ["a.b=2"])
    assert data["a"]["b"] == 1 and out["a"]["b"] == 2


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(Root, bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Root, tmp_path / "nope.yaml")


def test_shipped_names(tmp_path):
    (tmp_path / "gpt3").mkdir()
    (tmp_path / "gpt3" / "tiny.yaml").write_text("model: {num_layers: 1}\n")
    assert resolve_config_path("gpt3/tiny", tmp_path).name == "tiny.yaml"
    with pytest.raises(ConfigError, match="did you mean gpt3/tiny"):
        resolve_config_path("gpt3/tinny", tmp_path)


def test_dump_roundtrip():
    cfg = load_config(Root, {"model": {"num_layers": 3}})
    again = load_config(Root, __import__("yaml").safe_load(dump_config(cfg)))
    assert again == cfg


def test_interpolations_absolute_relative_env(monkeypatch):
    from bignlp_contracts.config import resolve_interpolations

    monkeypatch.setenv("BIGNLP_TEST_DIR", "/scratch")
    data = {
        "run": {"name": "gpt3_126m", "results_dir": "${oc.env:BIGNLP_TEST_DIR}/${.name}"},
        "model": {"encoder_seq_length": 2048, "data": {"seq_length": "${model.encoder_seq_length}",
                                                       "up": "${..encoder_seq_length}"}},
        "other": "${oc.env:BIGNLP_UNSET_VAR,fallback}",
    }
    out = resolve_interpolations(data)
    assert out["run"]["results_dir"] == "/scratch/gpt3_126m"
    assert out["model"]["data"]["seq_length"] == 2048 and out["model"]["data"]["up"] == 2048
    assert out["other"] == "fallback"


def test_interpolation_errors():
    from bignlp_contracts.config import resolve_interpolations

    with pytest.raises(ConfigError, match=r"run.results_dir: interpolation \$\{base_results_dir\} names no key"):
        resolve_interpolations({"run": {"results_dir": "${base_results_dir}/x"}})
    with pytest.raises(ConfigError, match="cycle"):
        resolve_interpolations({"a": "${b}", "b": "${a}"})
