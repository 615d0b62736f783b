"""Layer-wise placement of one model over several local devices, for a model larger than one.

The model stays the family's own module (so its forward, KV cache and ``logits_to_keep``
work unchanged); its units are spread over the devices in order: the layers of its layer
stacks, in the order the model runs them (a T5's encoder layers, then its decoder layers),
split evenly (earlier devices take one more when they do not divide); every other module with
the pipeline stage that holds it: the embedding with the first device, the final norm and an
own copy of a tied output weight with the last, a T5's encoder final norm with the encoder's
last layer, its decoder embedding (and a copy of the shared token embedding, when that lives
elsewhere) with the decoder's first. Which stage holds what is the family's
``split_for_pipeline``'s answer, so nothing here names a family's modules.

A forward pre-hook on each unit moves the tensors it is called with to the unit's device;
only activations cross devices, one hop per device boundary. The model's output goes back to
the device of its input tokens, so callers written for one device (sampling next to the
tokens, say) keep working. Devices run one after another (no pipelining): this is for
fitting, not speed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from bignlp_contracts import ConfigError

from .spec import FamilySpec


def resolve_devices(devices: str | Sequence[str | torch.device]) -> tuple[torch.device, ...]:
    """``"auto"`` → every visible CUDA device (CPU without one); a sequence → those devices, in order."""
    if isinstance(devices, str):
        if devices != "auto":
            raise ConfigError(f"devices={devices!r}: give a list of devices (e.g. ['cuda:0', 'cuda:1']) or 'auto'")
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        return tuple(torch.device(f"cuda:{i}") for i in range(count)) or (torch.device("cpu"),)
    resolved = tuple(torch.device(d) for d in devices)
    if not resolved:
        raise ConfigError("devices=[]: give at least one device")
    if any(d.type == "meta" for d in resolved):
        raise ConfigError("devices: the meta device holds no weights; give real devices")
    return resolved


def split_evenly(num_items: int, num_parts: int) -> list[range]:
    """``num_items`` consecutive indices in ``num_parts`` runs whose lengths differ by at most one."""
    base, extra = divmod(num_items, num_parts)
    runs, start = [], 0
    for i in range(num_parts):
        size = base + (1 if i < extra else 0)
        runs.append(range(start, start + size))
        start += size
    return runs


def plan_placement(model: nn.Module, spec: FamilySpec, num_devices: int) -> tuple[dict[str, int], dict[str, nn.Module]]:
    """Unit module path → device index for a meta-device ``model``, and the modules to add to it (path → module).

    The layers of the family's stacks, in the order the model runs them (an encoder's, then a
    decoder's), are split evenly over the devices. Each device's run, cut where a stack ends, is a
    pipeline stage of ``split_for_pipeline``; every other top-level module goes to the device of the
    first stage holding it (the first device when none does). The modules to add are those a stage
    holds where the whole model has none: its own copy of a tied weight (see
    ``FamilySpec.tied_parameters``), with that stage's device, unless the weight it copies is there.
    """
    layers = [(stack, key) for stack in spec.layer_stacks for key in sorted(getattr(model, stack).keys(), key=int)]
    if num_devices > len(layers):
        raise ConfigError(f"{num_devices} devices for a model of {len(layers)} layers: give at most {len(layers)}")
    runs = split_evenly(len(layers), num_devices)
    stages, stage_devices = [], []
    for device_index, run in enumerate(runs):
        for stack in spec.layer_stacks:
            keys = [int(key) for name, key in (layers[i] for i in run) if name == stack]
            if keys:
                stages.append({name: keys if name == stack else [] for name in spec.layer_stacks})
                stage_devices.append(device_index)
    parts = spec.split_for_pipeline(model, stages, len(stages), list(range(len(stages))))
    plan: dict[str, int] = {}
    for name, child in model.named_children():
        if name in spec.layer_stacks or child is None or not any(True for _ in child.parameters()):
            continue
        plan[name] = next((stage_devices[s] for s, part in enumerate(parts) if getattr(part, name, None) is not None),
                          0)
    for device_index, run in enumerate(runs):
        for i in run:
            plan[".".join(layers[i])] = device_index
    added: dict[str, nn.Module] = {}
    for part, device_index in zip(parts, stage_devices):
        for path, module in part.named_modules():
            if not path or path in added or any(path.startswith(a + ".") for a in added) or _has(model, path):
                continue
            copied = {spec.tied_parameters.get(f"{path}.{p}") for p, _ in module.named_parameters()} - {None}
            if copied and all(plan.get(w.split(".")[0]) == device_index for w in copied):
                continue  # the weight it copies lives on this device already
            added[path] = module
            # a unit of its own, or it lives with the top-level module holding it (placed here if it had no weights)
            plan.setdefault(path.split(".")[0], device_index)
    return plan, added


def _has(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value if value.device == device else value.to(device)
    if isinstance(value, tuple):
        return tuple(_to_device(v, device) for v in value)
    if isinstance(value, list):
        return [_to_device(v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    return value  # e.g. a KV cache object: its buffers follow the keys a layer writes into it


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor | None:
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor):
            return value
    return None


def _back_to_input_device(_module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    first = _first_tensor(args, kwargs)
    return output if first is None else _to_device(output, first.device)


def place_model(model: nn.Module, spec: FamilySpec, devices: Sequence[torch.device], *,
                dtype: torch.dtype) -> dict[str, torch.device]:
    """Materialise a meta-device ``model`` over ``devices`` in ``dtype`` (weights uninitialised; load them next).

    Adds the last part's own copy of a tied weight to ``model`` when there is more than one device
    (the caller fills it from the weight it copies), moves each unit's inputs to its device with a
    forward pre-hook, returns the model's output on its input's device, and returns the plan:
    unit module path → device.
    """
    devices = [torch.device(d) for d in devices]
    if len(devices) == 1:
        model.to(dtype=dtype).to_empty(device=devices[0])
        return {"": devices[0]}
    index_plan, added = plan_placement(model, spec, len(devices))
    for path, module in added.items():
        parent, _, name = path.rpartition(".")
        setattr(model.get_submodule(parent), name, module)
    plan = {path: devices[i] for path, i in index_plan.items()}
    for path, device in plan.items():
        unit = model.get_submodule(path)
        unit.to(dtype=dtype).to_empty(device=device)
        unit.register_forward_pre_hook(
            lambda _module, args, kwargs, device=device: (_to_device(args, device), _to_device(kwargs, device)),
            with_kwargs=True,
        )
    model.register_forward_hook(_back_to_input_device, with_kwargs=True)
    stray = [name for name, p in model.named_parameters() if p.is_meta]
    if stray:  # a parameter outside every unit: the family has modules this planner does not know
        raise ConfigError(f"cannot place {spec.name} over several devices: {', '.join(stray[:3])} belong to no unit")
    return plan
