"""Sequence parallelism's column-parallel linear: it lives in ``bignlp_models.sequence_parallel`` (one
implementation, shared with inference's tensor parallelism); re-exported here under train's old names."""

from bignlp_models.sequence_parallel import (  # noqa: F401 (re-exported)
    ColwiseSequenceParallel,
    _fallback,
    sequence_parallel_linear,
)

__all__ = ["ColwiseSequenceParallel", "sequence_parallel_linear"]
