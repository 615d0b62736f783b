"""Node-to-node tests: which pairs to run, and which nodes to blame.

Schedule: a round-robin tournament (the circle method). With ``n`` nodes every pair
meets exactly once, in ``n - 1`` rounds (``n`` when ``n`` is odd, one node resting
each round); the pairs of a round are disjoint, so they run at the same time and do
not share a node's links. ``n`` nodes cost ``n - 1`` rounds, not ``n(n-1)/2``.

Blame: a pair fails when its all_reduce bus bandwidth is below the threshold. Who is
to blame for a failing pair comes from how long each node waited inside the collective
(the shortest wait among its ranks): a node that arrives late (a throttled GPU, a busy
host) finds its peer already waiting, so when one node waited less than
``STRAGGLER_RATIO`` times the other, only the late one is blamed; otherwise (a slow link
slows both ends alike) both are. A node fails when **more than half** of its pairs are
failing pairs it is blamed for; its figure is the median of its pairs. A slow link on one
node is singled out by the majority rule once there are 3 or more nodes (it drags down
every pair it is in, a healthy node only its pair with the slow one); a straggling node
is singled out even among 2. Two nodes joined by a slow link cannot be told apart: both
are listed, and the reason says so (add a known-good node to separate them).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass


def round_robin(nodes: list[str]) -> list[list[tuple[str, str]]]:
    """Rounds of disjoint pairs in which every pair of ``nodes`` meets once."""
    players: list[str | None] = list(nodes)
    if len(players) < 2:
        return []
    order = {name: i for i, name in enumerate(nodes)}
    if len(players) % 2:
        players.append(None)  # the node paired with None rests this round
    n = len(players)
    rounds = []
    for _ in range(n - 1):
        pairs = []
        for i in range(n // 2):
            a, b = players[i], players[n - 1 - i]
            if a is not None and b is not None:
                pairs.append((a, b) if order[a] < order[b] else (b, a))
        rounds.append(pairs)
        players = [players[0], players[-1], *players[1:-1]]  # keep the first fixed, rotate the rest
    return rounds


STRAGGLER_RATIO = 0.5


@dataclass(frozen=True)
class PairResult:
    """One node pair's figure and how long each node waited inside the collective (µs)."""

    nodes: tuple[str, str]
    busbw_gbps: float
    wait_us: dict[str, float]


def blamed(pair: PairResult, threshold_gbps: float) -> set[str]:
    """The nodes a pair's failure is put on: none if it passed, the late node, or both."""
    if pair.busbw_gbps >= threshold_gbps:
        return set()
    a, b = pair.nodes
    wa, wb = pair.wait_us.get(a), pair.wait_us.get(b)
    if wa is not None and wb is not None:
        if wa < STRAGGLER_RATIO * wb:
            return {a}
        if wb < STRAGGLER_RATIO * wa:
            return {b}
    return {a, b}


@dataclass(frozen=True)
class NodeVerdict:
    """One node's pair results: its median bus bandwidth and how many failing pairs it is blamed for."""

    node: str
    median_busbw_gbps: float | None
    pairs_failed: int
    pairs_total: int
    failed: bool
    reason: str


def judge_nodes(pairs: list[PairResult], nodes: list[str], threshold_gbps: float) -> list[NodeVerdict]:
    """Apply the blame and more-than-half rules to every node (see the module docstring)."""
    blame = {p.nodes: blamed(p, threshold_gbps) for p in pairs}
    by_node: dict[str, list[PairResult]] = {}
    for p in pairs:  # one pass, not one scan of every pair per node
        for n in p.nodes:
            by_node.setdefault(n, []).append(p)
    verdicts = []
    for node in nodes:
        mine = by_node.get(node, [])
        if not mine:
            verdicts.append(NodeVerdict(node, None, 0, 0, False, "no pair test (a single node)"))
            continue
        below = sum(node in blame[p.nodes] for p in mine)
        median = statistics.median(p.busbw_gbps for p in mine)
        failed = below * 2 > len(mine)
        peers = [next(x for x in p.nodes if x != node) for p in mine if node in blame[p.nodes]]
        if failed and len(mine) == 1 and blame[mine[0].nodes] == set(mine[0].nodes):
            reason = (f"its only pair (with {peers[0]}) reached {median:.3f} GB/s < {threshold_gbps:g} GB/s and "
                      "both nodes waited alike (a link, not a straggler): with 2 nodes the slow one cannot be "
                      "singled out; test both against a known-good node")
        elif failed and len(mine) == 1:
            reason = (f"its pair with {peers[0]} reached {median:.3f} GB/s < {threshold_gbps:g} GB/s, and "
                      f"{peers[0]} waited for this node (a straggler)")
        elif failed:
            reason = (f"{below} of {len(mine)} pairs below {threshold_gbps:g} GB/s with this node to blame "
                      f"(median {median:.3f} GB/s)")
        else:
            failing = sum(p.busbw_gbps < threshold_gbps for p in mine)
            reason = f"{failing} of {len(mine)} pairs below {threshold_gbps:g} GB/s, {below} of them put on this node"
        verdicts.append(NodeVerdict(node, median, below, len(mine), failed, reason))
    return verdicts
