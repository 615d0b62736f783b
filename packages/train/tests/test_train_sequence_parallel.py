"""Sequence parallelism's column-parallel linear keeps only its 1/t sequence shard (Korthikanti et al. 2022, 4.2.2).

Each test runs sequence_parallel_worker.py as 2 gloo ranks (TP=2) comparing ColwiseSequenceParallel with
DTensor's ColwiseParallel(input_layouts=Shard(1)) on the same random linear and inputs. The whole-model
check (TP=2+SP loss curve equal to one process) is test_train_parallel.py's; the per-layer memory is
`make bench`'s (tests/bench/bench_train.py --only memory).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bignlp_train.launch import launch_local

WORKER = Path(__file__).with_name("sequence_parallel_worker.py")


@pytest.mark.parametrize("check", [
    "equal",  # fp32 output and input/weight/bias grads within 1e-6 (DTensor input, local input, uneven S)
    "saved",  # autograd keeps x's B·S/t·H shard and the weight, where the reference keeps B·S·H
    "bf16",  # bf16 weights and inputs; fp32 weights under bf16 autocast (16-bit shard saved)
    "fallback",  # all_gather / all_reduce in place of the fused collectives give the same gradients
])
def test_sequence_parallel_linear_against_dtensor_colwise(check):
    assert launch_local([sys.executable, str(WORKER), check], 2) == 0
