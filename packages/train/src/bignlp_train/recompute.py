"""Activation recomputation through wrapper modules, Megatron's three ways (Korthikanti et al. 2022).

- ``selective``: every layer's attention core (softmax(QKᵀ)V, whose activations grow with s²)
  is recomputed; the linears' inputs are kept.
- ``full`` + ``uniform``: the layers are cut into groups of ``num_layers`` consecutive layers;
  each group keeps only its input and recomputes everything else.
- ``full`` + ``block``: the first ``num_layers`` layers of each pipeline part are recomputed
  whole, the rest keep everything (0: none).

A wrapper holds the module it recomputes under ``_checkpoint_wrapped_module``, the attribute
name of torch's own ``checkpoint_wrapper``: ``torch.distributed.checkpoint``'s state-dict helpers
drop it from parameter names, and so do ``canonical_name`` and the wrappers' own state-dict
hooks, so checkpoints do not depend on the recomputation setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.utils.checkpoint
from torch import nn

from bignlp_models import FamilySpec
from bignlp_models.layers import LayerStack

WRAPPED = "_checkpoint_wrapped_module"
_PREFIX = WRAPPED + "."


@dataclass(frozen=True)
class Recompute:
    """Which activations to recompute in backward (the seed's ``model.activations_checkpoint_*``)."""

    granularity: str | None = None  # None, "full" or "selective"
    method: str | None = None  # full: "uniform" or "block"
    num_layers: int | None = None  # uniform: layers per checkpointed group; block: layers per part


NO_RECOMPUTE = Recompute()


def canonical_name(name: str) -> str:
    """A parameter's name with the recomputation wrappers left out: its name in a checkpoint."""
    return name.replace(_PREFIX, "")


def _checkpoint(run, *args, **kwargs):
    # Non-reentrant, with the RNG state preserved: dropout draws the same masks when recomputed,
    # so the gradients equal those without recomputation. Looked up at call time, so a benchmark
    # may count what it keeps.
    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False, preserve_rng_state=True, **kwargs)


def _drop_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for key in list(state_dict):
        if key.startswith(prefix + _PREFIX):
            state_dict[prefix + key[len(prefix) + len(_PREFIX):]] = state_dict.pop(key)


def _add_prefix(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    for key in list(state_dict):
        if key.startswith(prefix) and not key.startswith(prefix + _PREFIX):
            state_dict[prefix + _PREFIX + key[len(prefix):]] = state_dict.pop(key)


class _Wrapper(nn.Module):
    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        setattr(self, WRAPPED, module)
        self._register_state_dict_hook(_drop_prefix)
        self._register_load_state_dict_pre_hook(_add_prefix, with_module=True)

    @property
    def wrapped(self) -> nn.Module:
        return self._modules[WRAPPED]

    def __getattr__(self, name: str) -> Any:
        # Anything the wrapper lacks is the wrapped module's: torch's state-dict helpers walk
        # ``layers.0`` on the names without the prefix, as through torch's own checkpoint_wrapper.
        try:
            return super().__getattr__(name)
        except AttributeError:
            wrapped = self.__dict__.get("_modules", {}).get(WRAPPED)
            if wrapped is None:
                raise
            return getattr(wrapped, name)


class Recomputed(_Wrapper):
    """``module`` keeping only its inputs for backward and running again there."""

    def forward(self, *args, **kwargs):
        return _checkpoint(self.wrapped, *args, **kwargs)


class RecomputedGroups(_Wrapper):
    """A layer stack run as consecutive groups, each keeping only the group's input for backward.

    Layers inside stay separate modules (one FSDP unit each); a group's forward calls them in turn.
    """

    def __init__(self, stack: LayerStack, group_size: int) -> None:
        super().__init__(stack)
        keys = list(stack)
        self.groups = [keys[i:i + group_size] for i in range(0, len(keys), group_size)]

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        for group in self.groups:
            x = _checkpoint(self._run, group, x, *args, **kwargs)
        return x

    def _run(self, group: list[str], x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        for key in group:
            x = self.wrapped[key](x, *args, **kwargs)
        return x


def layer_stack(part: nn.Module, name: str) -> LayerStack:
    """The stack of layers ``part.<name>``, looking through a ``RecomputedGroups`` wrapper."""
    stack = part.get_submodule(name)
    return stack.wrapped if isinstance(stack, RecomputedGroups) else stack


def apply_recompute(part: nn.Module, spec: FamilySpec, recompute: Recompute) -> None:
    """Wrap what ``recompute`` recomputes in ``part`` (a model or a pipeline part), in place."""
    if recompute.granularity is None:
        return
    for name in spec.layer_stacks:
        stack = part.get_submodule(name)
        if recompute.granularity == "selective":
            for layer in stack.values():
                for path in spec.selective_recompute_modules:
                    parent_path, _, attr = path.rpartition(".")
                    parent = layer.get_submodule(parent_path) if _has_submodule(layer, parent_path) else None
                    if parent is not None and hasattr(parent, attr):  # an encoder layer has no cross-attention
                        setattr(parent, attr, Recomputed(getattr(parent, attr)))
        elif recompute.method == "uniform" and (recompute.num_layers or 1) > 1:
            parent_path, _, attr = name.rpartition(".")
            setattr(part.get_submodule(parent_path), attr, RecomputedGroups(stack, recompute.num_layers))
        else:  # uniform groups of one layer, or the first num_layers layers of the part ("block")
            keys = list(stack) if recompute.method == "uniform" else list(stack)[:recompute.num_layers or 0]
            for key in keys:
                stack[key] = Recomputed(stack[key])


def _has_submodule(module: nn.Module, path: str) -> bool:
    try:
        module.get_submodule(path)
    except AttributeError:
        return False
    return True
