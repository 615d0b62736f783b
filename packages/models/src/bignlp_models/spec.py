"""One spec per model family: what the engine and every stage look up instead of naming a family's modules.

The torchtitan ``TrainSpec`` idea. Training builds, splits and parallelises a model through its
spec; convert, evaluate, export and the HP tool read counts and formulas from it. A checkpoint's
manifest names its family (``summary.family``), so any stage finds the spec from the artifact.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from bignlp_contracts import ArtifactError

from . import gpt, t5
from .decoding import DecoderOnly, Decoding, EncoderDecoder

# The tensor-parallel styles a family's plan may name (tensor_parallel.tp_styles maps each to torch's):
TP_STYLES = {
    "colwise": "column-parallel linear: output features split; under SP its input is gathered along the sequence",
    "rowwise": "row-parallel linear: input features split, output summed (reduce-scattered along the sequence "
               "under SP)",
    "norm": "per-token module (LayerNorm): runs on the sequence shard under SP, replicated otherwise",
    "vocab_embedding": "token embedding split along the vocabulary (each rank looks up its rows, outputs summed)",
    "embedding": "embedding block whose output is cut into sequence shards under SP",
    "final_norm": "last per-token module: its output, whole again, enters the vocabulary-parallel output layer",
    "vocab_weight": "a weight split along the vocabulary (a pipeline part's copy of the tied output weight)",
    "vocab_head": "an output layer's own weight and bias, split along the vocabulary like the logits",
    "head_embedding": "a table with one column per attention head (relative position bias): split along the heads",
}


@dataclass(frozen=True)
class FamilySpec:
    """Everything family-specific the engine and the stages need."""

    name: str
    config_class: type
    model_class: type[nn.Module]
    # the layer-stack attributes of a model (a pipeline splits and recomputes along these)
    layer_stacks: tuple[str, ...]
    # (part) → {module path: style in TP_STYLES} for the modules the part holds
    tensor_parallel_plan: Callable[[nn.Module], dict[str, str]]
    # (cfg, PP, virtual chunks, encoder/decoder split rank or None) → per global stage {stack: layer indices}
    pipeline_stages: Callable
    # (meta model, pipeline_stages' list, number of stages, this rank's stage ids) → parts
    split_for_pipeline: Callable
    # a part's copy of a tied weight → the name the whole model stores it under
    tied_parameters: Mapping[str, str]
    # the submodules of a layer that selective recomputation recomputes (attention's s² part), where present
    selective_recompute_modules: tuple[str, ...]
    count_parameters: Callable[[object], int]
    # (cfg, sequence lengths: encoder[, decoder]) → model FLOPs per trained token
    flops_per_token: Callable[..., float]
    # (cfg, seq_length=, micro_batch_size=, tensor_parallel_size=, sequence_parallel=, recompute=[, stack=,
    # seq_length_dec=]) → bytes one layer keeps for backward (16-bit activations), per TP rank
    activation_bytes_per_layer: Callable[..., float] | None
    # how generate runs the model (decoding.py): (model, decoder_start_token_id=...) → a Decoding
    decoding: type[Decoding] = DecoderOnly

    def build_meta(self, cfg) -> nn.Module:
        """The model on the meta device: shapes and structure, no memory, no RNG draws."""
        import torch

        with torch.device("meta"), _skip_init():
            return self.model_class(cfg)


_INIT_FUNCTIONS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_",
                   "xavier_uniform_", "xavier_normal_", "zeros_", "ones_", "constant_")


@contextlib.contextmanager
def _skip_init():
    """``torch.nn.init`` does nothing inside: on meta tensors it has nothing to fill, yet its first call
    there imports torch's compiler stack (about a second) for the reference implementations."""
    from torch.nn import init

    saved = {name: getattr(init, name) for name in _INIT_FUNCTIONS}
    for name in _INIT_FUNCTIONS:
        setattr(init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(init, name, fn)


GPT_SPEC = FamilySpec(
    name="gpt",
    config_class=gpt.GPTConfig,
    model_class=gpt.GPT,
    layer_stacks=("layers",),
    tensor_parallel_plan=gpt.tensor_parallel_plan,
    pipeline_stages=gpt.pipeline_stages,
    split_for_pipeline=gpt.split_for_pipeline,
    tied_parameters=gpt.TIED_PARAMETERS,
    selective_recompute_modules=("self_attention.core_attention",),
    count_parameters=gpt.count_parameters,
    flops_per_token=gpt.flops_per_token,
    activation_bytes_per_layer=gpt.activation_bytes_per_layer,
    decoding=DecoderOnly,
)

# T5 and mT5: one family (mT5 is a T5 with a SentencePiece vocabulary and the v1.1 options).
T5_SPEC = FamilySpec(
    name="t5",
    config_class=t5.T5Config,
    model_class=t5.T5,
    layer_stacks=t5.STACKS,
    tensor_parallel_plan=t5.tensor_parallel_plan,
    pipeline_stages=t5.pipeline_stages,
    split_for_pipeline=t5.split_for_pipeline,
    tied_parameters=t5.TIED_PARAMETERS,
    selective_recompute_modules=("self_attention.core_attention", "cross_attention.core_attention"),
    count_parameters=t5.count_parameters,
    flops_per_token=t5.flops_per_token,
    activation_bytes_per_layer=t5.activation_bytes_per_layer,
    decoding=EncoderDecoder,
)

FAMILIES: dict[str, FamilySpec] = {spec.name: spec for spec in (GPT_SPEC, T5_SPEC)}


def get_family(name: str) -> FamilySpec:
    """The spec of family ``name``; an ArtifactError naming the known families otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ArtifactError(f"unknown model family {name!r}; this bignlp-models knows: {', '.join(sorted(FAMILIES))}",
                            hint="upgrade bignlp-models, or check summary.family in the checkpoint's manifest") \
            from None


def family_of(model: nn.Module) -> FamilySpec:
    """The spec whose model class built ``model`` (a part or a parallelised model included)."""
    for spec in FAMILIES.values():
        if isinstance(model, spec.model_class):
            return spec
    raise TypeError(f"{type(model).__name__} belongs to no registered model family")


def num_parameters(model: nn.Module) -> int:
    """Distinct parameters (a tied weight counts once)."""
    return sum(p.numel() for p in model.parameters())
