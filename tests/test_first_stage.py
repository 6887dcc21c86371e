"""The first stage within a memory budget: the candidates a budget allows, the label-free choice among them,
refusals that name the budget that works, and a build that follows the choice (views, engine, manifest)."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_retrieval import FaissOptions, QdrantOptions, Retriever
from adaptive_retrieval.errors import InvalidArgument, InvalidArgumentType
from adaptive_retrieval.first_stage import FirstStage, by_size, check_budget, choose, representations
from tests.helpers import QUERIES, random_texts


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_budget_allows_a_code_of_each_kind_of_that_many_bytes():
    reps = representations(64, 768)
    assert [(r.dim, r.index) for r in reps] == [(16, "Flat"), (64, "SQ8"), (128, "SQ4"), (256, "OPQ64,PQ64")]
    assert all(r.bytes == 64 for r in reps)  # FAISS's own code size: the budget is what RAM holds
    assert [r.name for r in representations(8, 32)] == ["proj8-SQ8", "proj16-SQ4", "proj32-OPQ8,PQ8"]
    assert representations(2, 768)[-1].index == "OPQ2,PQ2" and representations(3, 768) == []
    assert [r.index for r in representations(128, 768)] == ["Flat", "SQ8", "SQ4"]  # OPQ: 2-dim sub-vectors
    assert check_budget(None) is None and check_budget(np.int64(16)) == 16
    with pytest.raises(InvalidArgumentType, match="coarse_bytes must be an int"):
        check_budget(16.0)
    with pytest.raises(InvalidArgument, match="at least 1 byte"):
        check_budget(0)


def synthetic(n: int, dim: int, rank: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Documents whose energy spreads evenly over ``rank`` directions (so few dims lose), queries near
    some of them, and the directions, largest first (the data's singular vectors)."""
    rng = np.random.default_rng(seed)
    docs = unit(rng.standard_normal((n, rank)) @ rng.standard_normal((rank, dim)))
    queries = unit(docs[rng.choice(n, 200, replace=False)] + 0.3 * unit(rng.standard_normal((200, dim))))
    directions = np.linalg.svd(docs, full_matrices=False)[2]
    return docs, queries, directions


def test_the_choice_is_the_shortest_shortlist_measured_and_every_candidate_is_recorded():
    docs, queries, directions = synthetic(1200, 64, 48, seed=1)
    record = choose(16, docs, directions, queries, queries="synthetic")
    names = [r["name"] for r in record.frontier]
    assert names == ["proj16-SQ8", "proj32-SQ4", "proj64-OPQ16,PQ16"]  # proj4-Flat: fewer than 8 dims
    shortlists = {r["name"]: r["shortlist"] for r in record.frontier}
    chosen = f"proj{record.dim}-{record.index}"
    assert record.shortlist == shortlists[chosen] and record.bytes <= 16
    assert all(s is None or s >= record.shortlist for s in shortlists.values())
    assert record.budget == 16 and record.target == 0.95 and record.queries == "synthetic"
    assert FirstStage.from_dict(record.as_dict()) == record


def test_a_budget_no_code_meets_is_refused_with_the_smallest_that_does():
    docs, queries, directions = synthetic(600, 64, 64, seed=2)
    with pytest.raises(
        InvalidArgument, match=r"coarse_bytes=2: .* the smallest budget that does is (8|16|32|64)"
    ):
        choose(2, docs, directions, queries, longest=50)
    with pytest.raises(InvalidArgument, match="no code holds a document in 3 bytes"):
        choose(3, docs, directions, queries)


def test_without_a_projection_the_view_keeps_its_dims_in_the_most_precise_code_that_fits():
    assert by_size(256, 64, 10).index == "Flat" and by_size(64, 64, 10).index == "SQ8"
    assert by_size(32, 64, 10).index == "SQ4" and by_size(32, 64, 10).shortlist is None
    with pytest.raises(InvalidArgument, match="need at least 32 bytes"):
        by_size(31, 64, 10)


def test_a_build_within_a_budget_follows_its_choice_through_adds_saves_and_loads(tiny_encoder, tmp_path):
    texts = random_texts(400, seed=41)
    r = Retriever.build(
        texts[:360],
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        candidates=20,
        hybrid=False,
        coarse_bytes=8,
    )
    chosen = r.first_stage
    assert chosen is not None and chosen.budget == 8 and chosen.shortlist is not None
    assert {row["name"] for row in chosen.frontier} == {"proj8-SQ8", "proj16-SQ4", "proj32-OPQ8,PQ8"}
    assert r.coarse.dim == chosen.dim and r.backend.describe() == chosen.index
    assert r.projection.shape == (32, chosen.dim) and r.adaptation.dim == chosen.dim
    coarse_bytes, _ = r.backend.nbytes()
    assert coarse_bytes < 360 * 8 + 64 * 1024  # the codes (and the OPQ rotation and codebooks, if chosen)
    r.add(texts[360:])  # later documents projected to the chosen dims
    assert len(r) == 400
    before = [[h.doc_id for h in hits] for hits in r.search_batch(QUERIES, k=5)]
    r.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert loaded.first_stage == chosen and loaded.coarse == r.coarse
    assert [[h.doc_id for h in hits] for hits in loaded.search_batch(QUERIES, k=5)] == before


def test_a_budget_is_refused_where_it_cannot_apply(tiny_encoder, tmp_path):
    texts = random_texts(60, seed=4)
    kwargs = dict(coarse=(3, 8), fine=(12, 32), model=tiny_encoder, hybrid=False)
    with pytest.raises(InvalidArgument, match="FaissOptions\\(index='HNSW32'\\) chooses it too"):
        Retriever.build(texts, **kwargs, coarse_bytes=8, backend=FaissOptions(index="HNSW32"))
    with pytest.raises(InvalidArgument, match="qdrant holds its own vectors"):
        Retriever.build(texts, **kwargs, coarse_bytes=8, backend=QdrantOptions(location=":memory:"))
    with pytest.raises(InvalidArgumentType, match="coarse_bytes must be an int"):
        Retriever.build(texts, **kwargs, coarse_bytes="8")
    plain = Retriever.build(texts, **kwargs, coarse_bytes=32, adapt=False)  # no projection: by size
    assert (
        plain.backend.describe() == "Flat" and plain.coarse.dim == 8 and plain.first_stage.shortlist is None
    )
    with pytest.raises(InvalidArgument, match="need at least 4 bytes"):
        Retriever.build(texts, **kwargs, coarse_bytes=3, adapt=False)
    small = Retriever.build(texts[:20], **kwargs, coarse_bytes=8)  # too few documents to fit a projection
    assert small.backend.describe() == "SQ8" and small.first_stage.queries.startswith("none")


def test_a_tie_goes_to_the_code_nearer_the_target_at_shorter_shortlists():
    from adaptive_retrieval.first_stage import _rank, needed, rising

    late = {10: 0.50, 20: 0.90, 30: 0.97}  # more of the top 10 at 30, less before
    early = {10: 0.70, 20: 0.94, 30: 0.955}
    rows = []
    for name, curve in (("proj64-SQ4", late), ("proj256-OPQ32,PQ32", early)):
        shortlist = needed(curve, 0.95)
        rows.append({
            "name": name, "index": name.split("-", 1)[1], "bytes": 32, "shortlist": shortlist,
            "overlap_at_shortlist": curve[shortlist], "overlap_up_to": rising(curve, shortlist),
        })  # fmt: skip
    assert rows[0]["shortlist"] == rows[1]["shortlist"] == 30
    assert min(rows, key=_rank)["name"] == "proj256-OPQ32,PQ32"  # the simpler code loses the tie here
    assert rising({10: 0.5}, None) is None
