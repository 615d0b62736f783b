"""YAML configs → frozen dataclasses, with Hydra-style ``key.sub=value`` overrides.

Rules users rely on:
- unknown keys are errors naming the dotted path and the closest valid key;
- override values are YAML scalars (``lr=1e-4`` is a float, ``x=null`` is None,
  ``data_prefix=[1.0,/d/a]`` a list); a leading ``+``/``++`` is accepted as Hydra writes it;
- floats written the way YAML 1.1 reads as strings (``6e-4``) are accepted;
- OmegaConf-style interpolations in string values are resolved, as the seed's YAMLs use
  them: ``${model.encoder_seq_length}`` (absolute), ``${.name}`` / ``${..x}`` (relative to
  the key's own section), ``${oc.env:VAR}`` / ``${oc.env:VAR,default}``;
- the resolved config is what gets saved next to an artifact (``save_config``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .atomic import atomic_write_text
from .errors import ConfigError

T = TypeVar("T")


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing file or bad syntax."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config file {path}{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"model.optim.lr=1e-4"`` → (["model", "optim", "lr"], 0.0001)."""
    key, sep, raw = text.partition("=")
    key = key.lstrip("+").strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"override {text!r} is not of the form key.sub=value",
            hint="write overrides as dotted keys, e.g. trainer.max_steps=100",
        )
    if raw.strip() == "":
        return key.split("."), ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw  # an unparseable scalar is meant as a string, as in Hydra
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``data`` with each ``key.sub=value`` applied in order."""
    data = _deepcopy(data)
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for i, part in enumerate(path[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(path[: i + 1])} is a value, not a section"
                )
            node = child
        node[path[-1]] = value
    return data


_INTERP = re.compile(r"\$\{([^${}]+)\}")


def resolve_interpolations(data: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of ``data`` with every ``${...}`` in string values resolved."""

    def lookup(expr: str, section: list[str], key: str, seen: tuple[str, ...]) -> Any:
        where = ".".join([*section, key])
        if expr.startswith("oc.env:"):
            var, has_default, default = expr[len("oc.env:"):].partition(",")
            value = os.environ.get(var.strip())
            if value is None:
                if not has_default:
                    raise ConfigError(f"{where}: environment variable {var.strip()} is not set (from ${{{expr}}})")
                value = default.strip()
            return value
        if expr.startswith("."):  # one dot: this key's section; each further dot: one section up
            ups = len(expr) - len(expr.lstrip(".")) - 1
            path = section[: len(section) - ups] + expr.lstrip(".").split(".") if ups <= len(section) else None
        else:
            path = expr.split(".")
        node: Any = data
        for part in path or ():
            if not isinstance(node, dict) or part not in node:
                node = _MISSING
                break
            node = node[part]
        if path is None or node is _MISSING:
            raise ConfigError(
                f"{where}: interpolation ${{{expr}}} names no key of this config",
                hint=f"set {where} directly, e.g. {where}=VALUE",
            )
        target = ".".join(path)
        if target in seen:
            raise ConfigError(f"{where}: interpolation cycle through {target}")
        return resolve_value(node, path[:-1], path[-1], (*seen, target))

    def resolve_value(value: Any, section: list[str], key: str, seen: tuple[str, ...]) -> Any:
        if isinstance(value, dict):
            return {k: resolve_value(v, [*section, key], k, seen) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve_value(v, section, key, seen) for v in value]
        if not isinstance(value, str) or "${" not in value:
            return value
        whole = _INTERP.fullmatch(value)
        if whole:  # a lone interpolation keeps the referenced value's type
            return lookup(whole.group(1).strip(), section, key, seen)
        return _INTERP.sub(lambda m: str(lookup(m.group(1).strip(), section, key, seen)), value)

    return {k: resolve_value(v, [], k, ()) for k, v in data.items()}


_MISSING = object()


def _deepcopy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deepcopy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deepcopy(v) for v in obj]
    return obj


def from_dict(cls: type[T], data: Mapping[str, Any] | None, *, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {_show(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            dotted = _join(path, str(key))
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.6)
            hint = f"did you mean {_join(path, close[0])}?" if close else (
                f"valid keys under {path or 'the top level'}: {', '.join(sorted(fields))}"
            )
            raise ConfigError(f"unknown config key {dotted}", hint=hint)
    kwargs = {}
    for name, f in fields.items():
        dotted = _join(path, name)
        if name in data:
            kwargs[name] = _coerce(hints[name], data[name], dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required config key {dotted}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as exc:  # __post_init__ validation
        raise ConfigError(f"{path or 'config'}: {exc}") from None


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if len(errors) == 1 else ConfigError(f"{path}: {_show(value)} matches none of {_type_name(tp)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{path}: {_show(value)} is not one of {', '.join(map(repr, args))}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path=path)
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {_show(value)}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return tuple(_coerce(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {_show(value)}")
        vt = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(vt, v, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true or false, got {_show(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {_show(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads 6e-4 as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path}: expected a number, got {_show(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{path}: expected a string, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})" if value is not None else "null"


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def to_dict(cfg: Any) -> Any:
    """Plain-data form of a config (tuples as lists) for YAML/JSON."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [to_dict(v) for v in cfg]
    if isinstance(cfg, Mapping):
        return {k: to_dict(v) for k, v in cfg.items()}
    return cfg


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML, in field order."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None, allow_unicode=True)


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write the resolved config atomically (``config.yaml`` next to an artifact)."""
    atomic_write_text(path, dump_config(cfg))


def resolve_config_path(name_or_path: str, builtin_dir: str | os.PathLike) -> Path:
    """A path to a YAML file, or a shipped config name like ``gpt3/tiny-cpu``."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise ConfigError(f"config file {candidate} does not exist")
        return candidate
    builtin_dir = Path(builtin_dir)
    shipped = builtin_dir / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    names = sorted(str(p.relative_to(builtin_dir).with_suffix("")) for p in builtin_dir.rglob("*.yaml"))
    close = difflib.get_close_matches(name_or_path, names, n=1)
    hint = f"did you mean {close[0]}?" if close else f"shipped: {', '.join(names)}; or give a path to a .yaml file"
    raise ConfigError(f"no config named {name_or_path!r}", hint=hint)


def load_config(
    cls: type[T],
    source: str | os.PathLike | Mapping[str, Any] | None = None,
    overrides: Sequence[str] = (),
    *,
    builtin_dir: str | os.PathLike | None = None,
    section: str | None = None,
) -> T:
    """Load ``cls`` from a YAML path, a shipped name, a mapping or nothing, then apply overrides.

    ``section``: the NeMo launcher's stage key (``conversion``, ``evaluation``). A file holding the
    launcher's whole config, or that section under its name, loads as the section's keys (top-level
    keys such as ``base_results_dir`` kept); overrides may say ``section.key=...``; and the launcher's
    ``${section.run.x}`` interpolations resolve against the section.
    """
    if source is None:
        data: dict[str, Any] = {}
    elif isinstance(source, Mapping):
        data = dict(source)
    else:
        path = resolve_config_path(str(source), builtin_dir) if builtin_dir else Path(source)
        data = load_yaml(path)
    if section is None:
        return from_dict(cls, resolve_interpolations(apply_overrides(data, overrides)))
    if isinstance(data.get(section), dict):
        data = {**{k: v for k, v in data.items() if k != section}, **data[section]}
    data = apply_overrides(data, [o.removeprefix(section + ".") for o in overrides])
    resolved = resolve_interpolations({**data, section: data})
    resolved.pop(section, None)
    return from_dict(cls, resolved)
