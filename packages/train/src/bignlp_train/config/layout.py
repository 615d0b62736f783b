"""The parallel layout check: a pure function of the model keys and the world size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bignlp_contracts import ConfigError

if TYPE_CHECKING:
    from .gpt import GPTModelConfig
    from .t5 import T5ModelConfig


def check_parallel_layout(model: GPTModelConfig | T5ModelConfig, world_size: int) -> int:
    """Check the parallel layout against ``world_size`` processes; return the data-parallel size.

    A pure function of the config and the world size (seed section 5.7): world size = TP × PP × DP,
    heads % TP, seq_length % TP with sequence parallelism, layers % (PP × virtual), GBS % (MBS × DP),
    and with PP enough micro-batches to fill the pipeline (at least PP; a multiple of PP when
    interleaved). Training calls it before any process group exists, so a bad layout costs one
    line, not a hang; the config tests call it for every shipped config.
    """
    tp, pp = model.tensor_model_parallel_size, model.pipeline_model_parallel_size
    if world_size % (tp * pp):
        raise ConfigError(
            f"world size {world_size} is not a multiple of model.tensor_model_parallel_size={tp} × "
            f"model.pipeline_model_parallel_size={pp} (world size = TP × PP × DP)",
            hint=f"start a multiple of {tp * pp} processes, or change the parallel sizes",
        )
    if model.num_attention_heads % tp:
        raise ConfigError(
            f"model.num_attention_heads={model.num_attention_heads} is not divisible by "
            f"model.tensor_model_parallel_size={tp}", hint="each tensor-parallel rank computes whole attention heads")
    for key, length in zip(("model.seq_length", "model.data.seq_length_dec"), model.sequence_lengths):
        if model.sequence_parallel and tp > 1 and length % tp:
            raise ConfigError(
                f"{key}={length} is not divisible by model.tensor_model_parallel_size={tp}, "
                "as model.sequence_parallel=true needs", hint="each tensor-parallel rank holds an equal slice of the "
                "sequence: pick a sequence length that divides, or set model.sequence_parallel=false")
    virtual = model.virtual_pipeline_size
    if hasattr(model, "check_pipeline_layers"):  # an encoder-decoder: each side over its own stages
        model.check_pipeline_layers()
    elif model.num_layers % pp:
        raise ConfigError(
            f"model.num_layers={model.num_layers} is not divisible by model.pipeline_model_parallel_size={pp}",
            hint="each pipeline stage holds the same number of layers")
    if not hasattr(model, "check_pipeline_layers") and model.num_layers % (pp * virtual):
        raise ConfigError(
            f"model.num_layers={model.num_layers} is not divisible by model.pipeline_model_parallel_size={pp} × "
            f"model.virtual_pipeline_model_parallel_size={virtual}",
            hint="each model chunk holds the same number of layers")
    dp = world_size // (tp * pp)
    if model.global_batch_size % (model.micro_batch_size * dp):
        raise ConfigError(
            f"model.global_batch_size={model.global_batch_size} is not a multiple of "
            f"model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp} "
            f"(GBS must be a multiple of MBS × num_gpus / (TP × PP) = {model.micro_batch_size * dp})",
            hint="keep GBS and pick a process count or micro-batch size that divides it",
        )
    micro = model.global_batch_size // (model.micro_batch_size * dp)  # per pipeline, per step
    if pp > 1 and micro < pp:
        raise ConfigError(
            f"{micro} micro-batches per step (model.global_batch_size={model.global_batch_size} / "
            f"(model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp})) cannot fill "
            f"{pp} pipeline stages (model.pipeline_model_parallel_size={pp})",
            hint=f"raise model.global_batch_size to at least {pp * model.micro_batch_size * dp}")
    if virtual > 1 and micro % pp:
        raise ConfigError(
            f"{micro} micro-batches per step (model.global_batch_size={model.global_batch_size} / "
            f"(model.micro_batch_size={model.micro_batch_size} × data-parallel size {dp})) is not a multiple of "
            f"model.pipeline_model_parallel_size={pp}, as the interleaved schedule "
            f"(model.virtual_pipeline_model_parallel_size={virtual}) needs",
            hint="pick a global batch size that gives a multiple of PP micro-batches")
    return dp
