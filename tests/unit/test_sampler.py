"""The neighbour sampler behind mini-batch GNN training: every sampled edge is a real edge of the snapshot in the
right direction, each node keeps at most `fanout` distinct in-neighbours per edge type (all of them when it has
fewer), the seeds come first, and the positions drawn are uniform."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from feature_svc.world import WorldParams, generate_world
from trainer.data import ledger_from_world
from trainer.sampler import (
    EDGE_TYPES,
    NODE_TYPES,
    Csr,
    SnapshotGraph,
    choose_without_replacement,
    sample,
)
from trainer.snapshot import edge_table, snapshot

TINY = WorldParams(n_cards=400, n_transactions=6_000, days=21, seed=3, ring_share=0.02, card_testing_share=0.01)


@pytest.fixture(scope="module")
def graph() -> tuple[SnapshotGraph, dict[tuple[str, str, str], set[tuple[int, int]]]]:
    ledger = ledger_from_world(generate_world(TINY, progress=False))
    snap = snapshot(ledger, edge_table(ledger), ledger.start_us + 14 * 86_400_000_000)
    real: dict[tuple[str, str, str], set[tuple[int, int]]] = {}
    for et in EDGE_TYPES:
        src_t, _, dst_t = et
        link = dst_t if src_t == "card" else src_t
        card, other = snap.edges[link]
        pairs = zip(card.tolist(), other.tolist(), strict=True)
        real[et] = {(c, o) if src_t == "card" else (o, c) for c, o in pairs}
    return SnapshotGraph.of(snap), real


def _seeds(g: SnapshotGraph, rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    # the extra last node of each type is the edge-less 'unseen' node: include it
    return {t: np.unique(np.append(rng.choice(g.n_nodes(t) - 1, size=n), g.n_nodes(t) - 1)) for t in NODE_TYPES}


@pytest.mark.parametrize("fanout", [(3, 2, 2), (10, 10, 10), (1,)])
def test_sampled_edges_exist_respect_the_fanout_and_seeds_come_first(graph, fanout) -> None:  # type: ignore[no-untyped-def]
    g, real = graph
    rng = np.random.default_rng(0)
    seeds = _seeds(g, rng, 40)
    sub = sample(g, seeds, fanout, rng)
    for t in NODE_TYPES:
        assert sub.n_seeds[t] == len(seeds[t])
        assert np.array_equal(sub.nodes[t][: len(seeds[t])], seeds[t])
        assert len(np.unique(sub.nodes[t])) == len(sub.nodes[t])
        assert np.array_equal(sub.x[t], g.x[t][sub.nodes[t]])
        assert not g.x[t][-1].any()  # the unseen node: zero features
    total = 0
    for et in EDGE_TYPES:
        src_t, _, dst_t = et
        e = sub.edges[et]
        src, dst = sub.nodes[src_t][e[0]], sub.nodes[dst_t][e[1]]
        pairs = list(zip(src.tolist(), dst.tolist(), strict=True))
        assert set(pairs) <= real[et], et  # every sampled edge is an edge of the snapshot, this direction
        assert len(set(pairs)) == len(pairs), et  # distinct
        counts = np.bincount(e[1], minlength=len(sub.nodes[dst_t]))
        assert counts.max(initial=0) <= max(fanout), et
        # a seed keeps min(degree, fanout[0]) in-neighbours: all of them when it has no more than the fan-out
        deg = g.csr[et].degree(seeds[dst_t])
        assert np.array_equal(counts[: len(seeds[dst_t])], np.minimum(deg, fanout[0])), et
        assert counts[len(seeds[dst_t]) - 1] == 0  # the unseen node has no neighbours
        total += len(pairs)
    assert total > 0


def test_the_hops_reach_what_a_full_neighbourhood_would(graph) -> None:  # type: ignore[no-untyped-def]
    """With fan-out -1 (every neighbour) one hop from a card reaches exactly its devices, IPs and merchants."""
    g, real = graph
    card = int(np.argmax(g.csr[("device", "to_card", "card")].degree(np.arange(g.n_nodes("card")))))
    sub = sample(g, {"card": np.array([card])}, (-1,), np.random.default_rng(1))
    for et in EDGE_TYPES:
        src_t, _, dst_t = et
        if dst_t != "card":
            assert sub.edges[et].shape[1] == 0
            continue
        got = set(sub.nodes[src_t][sub.edges[et][0]].tolist())
        assert got == {s for s, d in real[et] if d == card}


def test_choice_without_replacement_is_distinct_and_uniform() -> None:
    rng = np.random.default_rng(7)
    deg = np.full(20_000, 6)
    pick = choose_without_replacement(deg, 3, rng)
    assert pick.min() >= 0 and pick.max() < 6
    assert all(len(set(row)) == 3 for row in pick[:2000].tolist())
    # each of the 6 positions is in a 3-subset with probability 1/2
    freq = np.bincount(pick.ravel(), minlength=6) / len(deg)
    assert np.allclose(freq, 0.5, atol=0.02)
    # every one of the C(6,3) = 20 subsets turns up about equally often
    keys = np.sort(pick, axis=1) @ np.array([36, 6, 1])
    _, counts = np.unique(keys, return_counts=True)
    assert len(counts) == 20 and counts.min() > 0.8 * len(deg) / 20


def test_csr_lists_the_in_neighbours() -> None:
    csr = Csr.build(np.array([5, 6, 7, 5]), np.array([1, 0, 1, 2]), 4)
    assert csr.degree(np.arange(4)).tolist() == [1, 2, 1, 0]
    assert sorted(csr.src[csr.ptr[1] : csr.ptr[2]].tolist()) == [5, 7]
