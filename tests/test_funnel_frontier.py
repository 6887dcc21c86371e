"""The shortlist-rule measurements of evals/funnel_frontier.py: the oracle's bound, the learned depth, the
feedback order and the graph walk."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_retrieval.shortlist import overlap_at
from evals.funnel_frontier import (
    FEEDBACK_FIRST,
    depth_needed,
    feedback_orders,
    fine_graph,
    graph_walk,
    learned_depths,
    oracle_bound,
)


def members_at(positions: list[list[int]], depth: int = 200) -> np.ndarray:
    """Rows of booleans: query q's exact top 10 sit at the 1-based coarse ``positions[q]``."""
    out = np.zeros((len(positions), depth), dtype=bool)
    for q, row in enumerate(positions):
        out[q, np.asarray(row) - 1] = True
    return out


def test_the_oracle_bound_buys_the_cheapest_members_first():
    easy = list(range(1, 11))  # its top 10 in the first 10
    hard = [*range(1, 10), 100]  # 9 in the first 10, the last at 100
    members = members_at([easy, hard])
    assert oracle_bound(members, 1.0) == pytest.approx(55.0)  # (10 + 100) / 2
    assert oracle_bound(members, 0.95) == pytest.approx(10.0)  # 19 of 20 members within 10 each
    assert oracle_bound(members, 0.975) == pytest.approx(32.5)  # half the hard member's 90 more candidates
    # a convex hull: two members at 30 and one at 40 cost 3 members for 30 more, not 2 for 20 then 1 for 10
    bumpy = members_at([[*range(1, 8), 30, 30 + 1, 40]])
    assert oracle_bound(bumpy, 1.0) == pytest.approx(40.0)
    assert oracle_bound(bumpy, 0.8) == pytest.approx(10 + 30 / 3)


def test_the_depth_needed_is_where_nine_of_ten_are_in():
    members = members_at([list(range(1, 11)), [*range(1, 9), 50, 120], [1, 2, 3]])
    assert depth_needed(members).tolist() == [9, 50, 3]  # the third holds only 3 within the depth


def test_a_learned_depth_follows_what_the_scores_say():
    """Queries whose coarse scores fall slowly need deeper shortlists; a depth learned on dev queries gives
    them more candidates and meets the target on test queries drawn alike."""
    rng = np.random.default_rng(0)

    def draw(n: int):
        slope = rng.uniform(0.0005, 0.01, n)  # how fast coarse scores fall with rank
        coarse = 0.9 - slope[:, None] * np.arange(400)[None]
        fine = coarse + rng.normal(0, 0.001, coarse.shape)
        deepest = np.clip((0.05 / slope).astype(int), 10, 399)  # slow fall: the top 10 spread deeper
        members = np.zeros(coarse.shape, dtype=bool)
        for q in range(n):
            members[q, np.linspace(0, deepest[q], 10).astype(int)] = True
        return coarse.astype(np.float32), fine.astype(np.float32), members, deepest

    dev, test = draw(200), draw(200)
    sizes, info = learned_depths(dev[:3], test[:2], 0.95)
    assert sizes.min() >= 20 and sizes.max() <= 400 and info["margin"] > -1.0
    assert overlap_at(test[2], sizes, 10).mean() >= 0.93
    assert np.corrcoef(sizes, test[3])[0, 1] > 0.8  # deeper where the answers lie deeper
    assert sizes.mean() < 0.8 * test[3].max()  # cheaper than one size for all at the same depth
    # read after the top 10 only, any depth: no floor of 20, sizes not rounded to tens, the target still met
    fine_sizes, fine_info = learned_depths(dev[:3], test[:2], 0.95, probe=10, step=1)
    assert fine_sizes.min() >= 10 and (fine_sizes % 10 != 0).any() and fine_info["probe"] == 10
    assert overlap_at(test[2], fine_sizes, 10).mean() >= 0.93


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def test_the_fine_graph_holds_each_documents_nearest_others_in_order():
    vectors = unit(np.random.default_rng(1).normal(size=(300, 16)))
    graph = fine_graph(vectors, 5, block=64)  # blocks that do not divide the rows
    scores = vectors @ vectors.T
    np.fill_diagonal(scores, -np.inf)
    assert graph.tolist() == np.argsort(-scores, axis=1)[:, :5].tolist()


def test_a_graph_walk_reaches_what_the_coarse_order_left_deep():
    """Documents on a circle: the coarse order reads the query's side only after the far side, the walk
    steps from its first candidates along the circle to the query's neighbours."""
    angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    vectors = unit(np.column_stack([np.cos(angles), np.sin(angles)]))
    query = vectors[0]
    best = np.argsort(-(vectors @ query))[:10]
    cand = np.argsort(vectors @ query)  # worst first: the best 10 come last
    cand = np.concatenate([np.argsort(-(vectors @ vectors[20]))[:5], cand])  # five near the 20th first
    order = graph_walk(vectors, fine_graph(vectors, 4), query, cand, first=5, degree=4, beam=10)
    assert order[:5] == cand[:5].tolist() and len(set(order)) == len(order)
    assert (
        set(best.tolist()) <= set(order) and len(order) < 100
    )  # found, reading far less than the coarse order
    again = graph_walk(vectors, fine_graph(vectors, 4), query, cand, first=5, degree=4, beam=10)
    assert again == order  # no state kept between walks


def test_a_feedback_order_reads_the_fine_top_10_sooner_than_the_coarse_order():
    """The coarse query is off the fine scores' direction in the coarse space: a fit on the first 20 fine
    scores read corrects it, and the fine top 10 come earlier in the read order."""
    rng = np.random.default_rng(2)
    n, dim = 3, 8
    docs = unit(rng.normal(size=(500, dim)))
    truth = unit(rng.normal(size=(n, dim)))
    coarse_q = unit(truth + 0.8 * rng.normal(size=(n, dim)))  # a noisy estimate of each query
    cand = np.argsort(-(coarse_q @ docs.T), axis=1)
    coarse = np.take_along_axis(coarse_q @ docs.T, cand, axis=1)
    fine = np.take_along_axis(truth @ docs.T, cand, axis=1)
    orders = feedback_orders(docs, cand, coarse_q, coarse, fine)
    assert orders.shape == (n, 400)
    for q in range(n):
        assert orders[q, :FEEDBACK_FIRST].tolist() == list(range(FEEDBACK_FIRST))
        assert len(set(orders[q].tolist())) == 400
        top = set(np.argsort(-fine[q])[:10].tolist())  # columns of the fine top 10 among the candidates
        coarse_last = max(i for i in range(500) if i in top)
        feedback_last = (
            max(i for i, c in enumerate(orders[q]) if c in top) if top <= set(orders[q].tolist()) else 500
        )
        assert feedback_last < coarse_last
