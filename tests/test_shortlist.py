from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from adaptive_retrieval import FaissOptions, Retriever, SearchTimings
from adaptive_retrieval.shortlist import (
    MIN_QUERIES,
    calibrate_shortlist,
    overlap_at,
    patient_rerank,
    patient_sizes,
    settled,
)
from tests.helpers import random_texts


def test_a_top_k_is_settled_when_nothing_entered_it_for_patience_places():
    #            positions: 0    1    2    3    4    5
    scores = np.array([[0.9, 0.8, 0.1, 0.2, 0.1, 0.3]], dtype=np.float32)
    assert settled(scores[:, :4], k=2, patience=2)  # top 2 at positions 0, 1: 2 places since
    assert not settled(scores[:, :4], k=2, patience=3)
    late = np.array([[0.9, 0.1, 0.1, 0.8, 0.1]], dtype=np.float32)
    assert not settled(late[:, :4], k=2, patience=1)  # position 3 just entered
    assert settled(late, k=2, patience=1)
    short = np.array([[0.9, -np.inf, -np.inf]], dtype=np.float32)
    assert not settled(short, k=2, patience=1)  # fewer than k real candidates


def test_patient_rerank_reads_what_the_simulation_says_and_returns_the_best_read():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(30, 200)).astype(np.float32)
    scores[:, :5] += 3  # most queries find their top 5 early ...
    scores[:3, 25] = 10  # ... a few have a later one, and read on past it
    ids = np.argsort(rng.random((30, 200)), axis=1)  # candidate ids in coarse order
    by_id = np.empty_like(scores)
    np.put_along_axis(by_id, ids, scores, axis=1)
    sizes = patient_sizes(scores, 5, 30)
    D, I, read = patient_rerank(lambda rows, got: np.take_along_axis(by_id[rows], got, axis=1), ids, 5, 30)
    np.testing.assert_array_equal(read, sizes)
    assert read.min() == 40 and (read[:3] >= 60).all()
    for q in range(30):
        best = np.argsort(-scores[q, : read[q]], kind="stable")[:5]
        np.testing.assert_array_equal(I[q], ids[q, best])
        np.testing.assert_allclose(D[q], scores[q, best])


def test_calibration_meets_its_target_on_the_fit_half_and_reports_the_other():
    rng = np.random.default_rng(1)
    n, cap, k = 200, 300, 10
    scores = rng.normal(size=(n, cap)).astype(np.float32)
    # each query's exact top 10 sits at positions drawn with a heavy tail: a few queries need far more
    members = np.zeros((n, cap), dtype=bool)
    for q in range(n):
        pos = np.minimum(rng.geometric(1 / rng.choice([5, 40]), size=k).cumsum(), cap - 1)
        members[q, pos] = True
        scores[q, pos] = 5 - np.arange(k) * 0.1
    choice, measured = calibrate_shortlist(scores, members, k, 0.9)
    fit = np.sort(np.random.default_rng(0).permutation(n)[: n // 2])
    assert overlap_at(members[fit], np.full(len(fit), choice["candidates"]), k).mean() >= 0.9
    smaller = choice["candidates"] - choice["step"]
    assert overlap_at(members[fit], np.full(len(fit), smaller), k).mean() < 0.9  # the smallest that meets it
    assert choice["fit_queries"] == choice["check_queries"] == 100
    assert 0 < measured["patient_mean_shortlist"] <= cap and 0 <= measured["fixed_overlap"] <= 1
    with pytest.raises(ValueError, match=f"at least {MIN_QUERIES} queries"):
        calibrate_shortlist(scores[:10], members[:10], k, 0.9)
    with pytest.raises(ValueError, match="target must be in"):
        calibrate_shortlist(scores, members, k, 1.5)


@pytest.fixture(scope="module")
def built(tiny_encoder):
    texts = random_texts(400, seed=21)
    return texts, Retriever.build(
        texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=100, hybrid=False
    )


@pytest.mark.parametrize("coarse_query", ["projected", "early"])
def test_searches_use_the_calibration_and_measure_what_it_measured(built, coarse_query):
    _, r = built
    queries = random_texts(60, seed=22)
    r.calibration = None
    cal = r.calibrate(queries, target=0.9, k=5, coarse_query=coarse_query, cap=200)
    assert r.calibration is cal and cal.coarse_query == coarse_query and cal.queries == "60 given queries"
    assert cal.rule in ("fixed", "patient") and cal.fit_queries == cal.check_queries == 30
    check = np.sort(np.random.default_rng(0).permutation(60)[30:])
    checked = [queries[i] for i in check]
    _, exact = r.backend.fine_store.search_exact(r.encoder.encode(checked, [r.fine])[r.fine], 5)
    timings = SearchTimings()
    _, got = r.search_arrays(checked, 5, coarse_query=coarse_query, timings=timings)
    overlap = np.mean([len(set(e) & set(g)) / 5 for e, g in zip(exact, got)])
    # the search path re-measures, on the check half, exactly what the calibration reported for its rule
    assert overlap == pytest.approx(cal.measured[f"{cal.rule}_overlap"])
    assert np.mean(timings.shortlists) == pytest.approx(cal.measured[f"{cal.rule}_mean_shortlist"])
    fixed = SearchTimings()
    r.search_arrays(checked, 5, candidates=30, coarse_query=coarse_query, timings=fixed)
    assert fixed.shortlists == [30] * 30  # an explicit shortlist overrides the calibration
    other = "early" if coarse_query == "projected" else "projected"
    plain = SearchTimings()
    r.search_arrays(checked[:3], 5, coarse_query=other, timings=plain)
    assert plain.shortlists == [100] * 3  # calibrated for the other coarse query: the fixed default


def test_pseudo_queries_calibrate_and_the_calibration_is_saved(built, tmp_path, tiny_encoder):
    texts, r = built
    cal = r.calibrate(documents=texts, target=0.8, max_queries=100)
    assert cal.queries == "pseudo-queries: first sentences of 100 documents" and cal.k == 10
    r.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["calibration"]["patience"] == cal.patience
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert loaded.calibration == cal
    assert [h.doc_id for h in loaded.search("cell gene risk")] == [
        h.doc_id for h in r.search("cell gene risk")
    ]
    with pytest.raises(ValueError, match="needs sample queries"):
        r.calibrate()
    with pytest.raises(ValueError, match="at least 20 queries"):
        r.calibrate(random_texts(10, seed=3))


def test_a_calibrated_hnsw_shortlist_searches_as_deep_as_it_was_calibrated(tiny_encoder):

    r = Retriever.build(
        random_texts(200, seed=60),
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        backend=FaissOptions(index="HNSW16"),
    )
    backend = r.backend
    ef = backend.coarse_index.hnsw_ef()
    assert backend.search_parameters() is None and backend.search_parameters(depth=ef) is None
    deep = backend.search_parameters(depth=ef + 100)  # the knobs, checked; FAISS's parameters per search
    assert deep == {"depth": ef + 100}
    asked = []
    real = backend.coarse_index.search
    backend.coarse_index.search = lambda q, k, **kw: asked.append(kw) or real(q, k, **kw)
    backend.coarse_search(np.ones((1, 8), np.float32) / np.sqrt(8), 5, deep)
    assert asked[-1] == {"allowed": None, "efSearch": ef + 100}  # explored as deep as calibrated
    assert backend.search_parameters(depth=ef + 100, efSearch=7) == {"efSearch": 7}  # the caller's knob wins
    backend.coarse_index.search = real
    assert backend.coarse_index.hnsw_ef() == ef  # nothing set on the index
    flat = Retriever.build(random_texts(30, seed=61), coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    assert flat.backend.coarse_index.hnsw_ef() is None and flat.backend.search_parameters(depth=500) is None


def test_an_index_that_outgrows_its_calibration_drops_it(tiny_encoder, caplog):
    """A calibration holds for an index up to twice the size it was made at; past that (or at any growth,
    if its fixed shortlist was the whole index: no shorter one existed) it is dropped with a warning."""
    texts = random_texts(400, seed=62)
    small = Retriever.build(
        texts[:30], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=50, hybrid=False
    )
    cal = small.calibrate(documents=texts[:30], target=0.8)
    assert cal.documents == 30
    with pytest.raises(ValueError, match="queries=.* or documents=.*, not both"):
        small.calibrate(texts[:30], documents=texts[:30])
    small.add(texts[30:60])
    assert small.calibration == cal  # 60 <= 2 x 30
    with caplog.at_level("WARNING", logger="adaptive_retrieval.calibration"):
        small.add(texts[60:70])
    assert small.calibration is None and "grown from 30 to 70 documents" in caplog.text
    timings = SearchTimings()
    small.search_arrays(texts[:2], 5, timings=timings)
    assert timings.shortlists == [50, 50]  # the index's own candidates again
    whole = dataclasses.replace(cal, rule="fixed", candidates=29)
    assert not whole.stale_after(30) and whole.stale_after(31)  # it read every document: no slack
    assert not dataclasses.replace(cal, documents=0).stale_after(10**6)  # saved before sizes were kept
