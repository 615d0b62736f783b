"""Node-to-node tests: which pairs to run, and which nodes to blame.

Schedule: a round-robin tournament (the circle method). With ``n`` nodes every pair
meets exactly once, in ``n - 1`` rounds (``n`` when ``n`` is odd, one node resting
each round); the pairs of a round are disjoint, so they run at the same time and do
not share a node's links. ``n`` nodes cost ``n - 1`` rounds, not ``n(n-1)/2``.

Blame: a pair fails when its all_reduce bus bandwidth is below the threshold. A slow
node drags down every pair it is in, while a healthy node is slow only in its pair
with the slow node, so a node fails when **more than half** of its pairs fail; its
figure is the median of its pairs. With 3 or more nodes this singles out one slow
node. With 2 nodes there is one pair and the two cannot be told apart: both are
listed, and the report says so (add a known-good node to separate them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def round_robin(nodes: list[str]) -> list[list[tuple[str, str]]]:
    """Rounds of disjoint pairs in which every pair of ``nodes`` meets once."""
    players: list[str | None] = list(nodes)
    if len(players) < 2:
        return []
    if len(players) % 2:
        players.append(None)  # the node paired with None rests this round
    n = len(players)
    rounds = []
    for _ in range(n - 1):
        pairs = []
        for i in range(n // 2):
            a, b = players[i], players[n - 1 - i]
            if a is not None and b is not None:
                pairs.append((a, b) if nodes.index(a) < nodes.index(b) else (b, a))
        rounds.append(pairs)
        players = [players[0], players[-1], *players[1:-1]]  # keep the first fixed, rotate the rest
    return rounds


@dataclass(frozen=True)
class NodeVerdict:
    """One node's pair results: its median bus bandwidth and how many of its pairs failed."""

    node: str
    median_busbw_gbps: float
    pairs_failed: int
    pairs_total: int
    failed: bool
    reason: str


def judge_nodes(pair_busbw: dict[tuple[str, str], float], nodes: list[str], threshold_gbps: float) -> list[NodeVerdict]:
    """Apply the more-than-half rule to every node (see the module docstring)."""
    verdicts = []
    for node in nodes:
        figures = [bw for pair, bw in pair_busbw.items() if node in pair]
        if not figures:
            verdicts.append(NodeVerdict(node, float("nan"), 0, 0, False, "no pair test (a single node)"))
            continue
        below = sum(bw < threshold_gbps for bw in figures)
        median = statistics.median(figures)
        failed = below * 2 > len(figures)
        if failed and len(figures) == 1:
            other = next(b if a == node else a for a, b in pair_busbw if node in (a, b))
            reason = (f"its only pair (with {other}) reached {median:.3f} GB/s < {threshold_gbps:g} GB/s; "
                      "with 2 nodes the slower one cannot be singled out: test both against a known-good node")
        elif failed:
            reason = (f"{below} of {len(figures)} pairs below {threshold_gbps:g} GB/s "
                      f"(median {median:.3f} GB/s)")
        else:
            reason = f"{below} of {len(figures)} pairs below {threshold_gbps:g} GB/s"
        verdicts.append(NodeVerdict(node, median, below, len(figures), failed, reason))
    return verdicts
