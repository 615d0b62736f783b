"""Layer-wise placement of one model over several local devices, for a model larger than one.

The model stays the family's own module (so its forward, KV cache and ``logits_to_keep``
work unchanged); its units are spread over the devices in order: the layers of its layer
stack split evenly (earlier devices take one more when they do not divide), what a pipeline's
first stage holds (the embedding) with the first device, what its last stage holds (the final
norm, and an own copy of a tied output weight) with the last. Which top-level modules belong
to the first or the last stage is the family's ``split_for_pipeline``'s answer, so nothing
here names a family's modules.

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
    """Unit module path → device index for a meta-device ``model``, and the modules to add to it.

    The modules to add are those a pipeline's last part has and the whole model lacks: its own
    copy of a tied output weight (see ``FamilySpec.tied_parameters``), placed with the last device.
    """
    if len(spec.layer_stacks) != 1:
        raise ConfigError(f"placement over several devices supports families with one layer stack; "
                          f"{spec.name} has {len(spec.layer_stacks)}")
    stack_name = spec.layer_stacks[0]
    keys = sorted(getattr(model, stack_name).keys(), key=int)
    if num_devices > len(keys):
        raise ConfigError(f"{num_devices} devices for a model of {len(keys)} layers: give at most {len(keys)}")
    runs = split_evenly(len(keys), num_devices)
    stages = [{stack_name: [int(keys[i]) for i in run]} for run in runs]
    parts = spec.split_for_pipeline(model, stages, num_devices, [0, num_devices - 1])
    first, last = parts[0], parts[-1]
    plan: dict[str, int] = {}
    added: dict[str, nn.Module] = {}
    for name, child in model.named_children():
        if name == stack_name or child is None or not any(True for _ in child.parameters()):
            continue
        in_first, in_last = getattr(first, name, None) is not None, getattr(last, name, None) is not None
        plan[name] = num_devices - 1 if in_last and not in_first else 0
    for name, child in last.named_children():
        if name != stack_name and getattr(model, name, None) is None and child is not None:
            added[name] = child
            plan[name] = num_devices - 1
    for device_index, run in enumerate(runs):
        for i in run:
            plan[f"{stack_name}.{keys[i]}"] = device_index
    return plan, added


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
    for name, module in added.items():
        setattr(model, name, module)
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
