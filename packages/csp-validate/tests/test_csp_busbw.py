"""The bandwidth figures are nccl-tests' (doc/PERFORMANCE.md), and the sizes/pairings are right."""

from __future__ import annotations

import itertools

import pytest

from bignlp_contracts import ConfigError
from bignlp_csp_validate.busbw import (
    algbw_gbps,
    bus_factor,
    busbw_gbps,
    human_size,
    message_sizes,
    operation_bytes,
    parse_size,
)
from bignlp_csp_validate.pairwise import PairResult, blamed, judge_nodes, round_robin


@pytest.mark.parametrize("n", [2, 3, 4, 8, 16])
def test_bus_factors_are_nccl_tests(n):
    assert bus_factor("all_reduce", n) == pytest.approx(2 * (n - 1) / n)
    assert bus_factor("all_gather", n) == pytest.approx((n - 1) / n)
    assert bus_factor("reduce_scatter", n) == pytest.approx((n - 1) / n)
    assert bus_factor("broadcast", n) == 1.0


def test_bandwidth_from_size_and_time():
    # 1 GB (1e9 bytes) in 0.1 s = 10 GB/s algbw; on 8 ranks all_reduce busbw = 10 * 14/8 = 17.5 GB/s.
    assert algbw_gbps(10**9, 0.1) == pytest.approx(10.0)
    assert busbw_gbps("all_reduce", 10**9, 0.1, 8) == pytest.approx(17.5)
    assert busbw_gbps("all_gather", 10**9, 0.1, 8) == pytest.approx(8.75)
    assert busbw_gbps("broadcast", 10**9, 0.1, 8) == pytest.approx(10.0)
    with pytest.raises(ConfigError, match="unknown collective 'alltoall'"):
        bus_factor("alltoall", 2)


def test_sizes_double_from_1k_to_1g_by_default():
    sizes = message_sizes(parse_size("1K"), parse_size("1G"))
    assert sizes[0] == 1024 and sizes[-1] == 1 << 30 and len(sizes) == 21
    assert all(b == 2 * a for a, b in itertools.pairwise(sizes))
    assert message_sizes(1000, 5000) == [1000, 2000, 4000, 5000]
    assert operation_bytes(1 << 20, 3) % 12 == 0 and operation_bytes(1 << 20, 3) <= 1 << 20
    assert operation_bytes(1, 4) == 16  # at least one float32 per rank
    assert [human_size(s) for s in (1024, 3 << 20, 1 << 30, 1000)] == ["1K", "3M", "1G", "1000"]


@pytest.mark.parametrize("bad", ["abc", "0", "-4K", "1T"])
def test_bad_sizes_are_config_errors(bad):
    with pytest.raises(ConfigError, match="size"):
        parse_size(bad)


@pytest.mark.parametrize("n", range(2, 10))
def test_round_robin_meets_every_pair_once_in_disjoint_rounds(n):
    nodes = [f"n{i}" for i in range(n)]
    rounds = round_robin(nodes)
    assert len(rounds) == (n - 1 if n % 2 == 0 else n)
    seen = [pair for r in rounds for pair in r]
    assert sorted(seen) == sorted(itertools.combinations(nodes, 2))
    for r in rounds:
        members = [x for pair in r for x in pair]
        assert len(members) == len(set(members)), f"a node is in two pairs of one round: {r}"


def _pairs(nodes, busbw, wait=lambda pair, node: 100.0):
    combos = itertools.combinations(nodes, 2)
    return [PairResult(pair, busbw(pair), {n: wait(pair, n) for n in pair}) for pair in combos]


def test_more_than_half_rule_singles_out_a_slow_link():
    nodes = ["a", "b", "c", "d"]
    pairs = _pairs(nodes, lambda pair: 10.0 if "c" in pair else 200.0)  # equal waits: a link, both ends blamed
    verdicts = {v.node: v for v in judge_nodes(pairs, nodes, 180.0)}
    assert [n for n, v in verdicts.items() if v.failed] == ["c"]
    assert verdicts["c"].pairs_failed == 3 and verdicts["c"].median_busbw_gbps == 10.0
    assert verdicts["a"].pairs_failed == 1 and not verdicts["a"].failed
    assert verdicts["a"].reason == "1 of 3 pairs below 180 GB/s, 1 of them put on this node"


def test_a_straggler_is_singled_out_even_among_two():
    # b arrives late: a waits 200 ms inside each call, b only 2 ms.
    (pair,) = _pairs(["a", "b"], lambda p: 5.0, lambda p, n: 200_000.0 if n == "a" else 2_000.0)
    assert blamed(pair, 35.0) == {"b"} and blamed(pair, 1.0) == set()
    verdicts = {v.node: v for v in judge_nodes([pair], ["a", "b"], 35.0)}
    assert verdicts["b"].failed and not verdicts["a"].failed
    assert "a waited for this node (a straggler)" in verdicts["b"].reason


def test_two_nodes_joined_by_a_slow_link_cannot_be_told_apart_and_the_reason_says_so():
    pairs = _pairs(["a", "b"], lambda p: 5.0)
    verdicts = judge_nodes(pairs, ["a", "b"], 35.0)
    assert all(v.failed for v in verdicts)
    assert "cannot be singled out" in verdicts[0].reason and "(with b)" in verdicts[0].reason
    assert not any(v.failed for v in judge_nodes(_pairs(["a", "b"], lambda p: 50.0), ["a", "b"], 35.0))
    assert judge_nodes([], ["a"], 1.0)[0].median_busbw_gbps is None
