from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptive_retrieval import FaissOptions, Retriever, SearchTimings
from adaptive_retrieval.adapt import (
    MIN_DOCS,
    SPAN_WORDS,
    adapt_head,
    check_rows,
    fidelity,
    fit_ridge_head,
    fit_ridge_heads,
    pseudo_query,
)
from tests.helpers import SQ8_HALF_STEP, random_texts


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def synthetic(n: int, hidden: int = 32, noise: float = 0.05, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Coarse states that a linear map turns into the fine views (plus noise), in clustered data."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, hidden))
    fine = unit(centres[rng.integers(8, size=n)] + 0.6 * rng.normal(size=(n, hidden)))
    mix = rng.normal(size=(hidden, hidden))
    student = unit(fine @ mix + noise * rng.normal(size=(n, hidden)))
    return student, fine


def test_ridge_recovers_a_linear_map():
    student, fine = synthetic(400, noise=0.0)
    head, stats = fit_ridge_head(student, fine, ridge=1e-6)
    assert stats["relative_residual"] < 0.02  # per-row normalisation is not linear
    # cut to its first 8 coordinates (the fine view's top singular space), the fitted view follows the
    # fine view's ranking more closely than the states' own first 8 coordinates do
    coarse = unit((torch.from_numpy(student) @ head).numpy()[:, :8])
    rows = np.arange(50)
    fitted = fidelity(coarse, fine, (coarse[rows], fine[rows]), exclude=rows, k=10, candidates=20)
    cut = unit(student[:, :8])
    assert fitted > fidelity(cut, fine, (cut[rows], fine[rows]), exclude=rows, k=10, candidates=20) + 0.05


def test_fidelity_leaves_the_query_out_of_its_own_ranking():
    fine = unit(np.random.default_rng(0).normal(size=(30, 8)))
    rows = np.arange(30)
    assert fidelity(fine, fine, (fine, fine), exclude=rows, k=5, candidates=5) == 1.0
    # a coarse view that ranks every document at random recalls about candidates/(n-1) of the top k
    coarse = unit(np.random.default_rng(1).normal(size=(30, 8)))
    assert fidelity(coarse, fine, (coarse, fine), exclude=rows, k=5, candidates=5) < 0.5
    # without exclusion a document is its own nearest neighbour in both views: shortlists of 1 hold
    # exactly the top 1, whatever else the coarse view gets wrong
    assert fidelity(coarse, fine, (coarse, fine), k=1, candidates=1) == 1.0


def test_pseudo_queries_are_first_sentences_cut_short():
    assert pseudo_query("  Vitamin D and bone. It was measured in 300 people.") == "Vitamin D and bone."
    assert pseudo_query(" ".join(f"w{i}" for i in range(40))) == " ".join(f"w{i}" for i in range(SPAN_WORDS))
    rows = check_rows(1000, seed=0)
    assert len(rows) == 200 and len(set(rows)) == 200 and np.array_equal(rows, check_rows(1000, seed=0))
    assert len(check_rows(10_000)) == 500


def test_adaptation_fits_when_it_beats_the_prior():
    student, fine = synthetic(600)
    head, record = adapt_head(student, fine, layer=3, dim=8, candidates=30)
    assert head is not None and record.chosen == "ridge"
    assert record.fidelity_after > record.fidelity_before + 0.05
    assert set(record.fidelity_by_ridge) == {"0.001", "0.01", "0.1"}
    assert record.fidelity_after == max(record.fidelity_by_ridge.values())
    json.dumps(record.as_dict())  # goes into the manifest as it is


def test_adaptation_keeps_a_prior_it_cannot_beat():
    _, fine = synthetic(300)
    # the states are the fine views and the prior keeps them whole: it ranks exactly as the fine view,
    # and a fit can at best tie; a tie keeps the prior
    head, record = adapt_head(fine, fine, layer=3, dim=32, candidates=10, prior=torch.eye(32))
    assert record.fidelity_before == 1.0
    assert head is None and record.chosen == "kept" and record.fidelity_after is None


def test_too_few_documents_fit_nothing():
    student, fine = synthetic(MIN_DOCS - 1)
    head, record = adapt_head(student, fine, layer=3, dim=8)
    assert head is None and record.chosen == "kept" and record.fidelity_before is None


def test_bad_fit_input_is_refused():
    with pytest.raises(ValueError, match="same rows"):
        fit_ridge_head(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match="ridge must be > 0"):
        fit_ridge_head(np.ones((3, 4)), np.ones((3, 4)), ridge=0)


# ---------------------------------------------------------------------------------- in the retriever


@pytest.fixture(scope="module")
def adapted(tiny_encoder):
    texts = random_texts(120, seed=5)
    return texts, Retriever.build(
        texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=10, hybrid=False
    )


def test_build_adapts_without_touching_the_given_encoder(tiny_encoder, adapted):
    texts, r = adapted
    assert r.adaptation is not None and r.adaptation.documents == len(texts)
    assert r.adaptation.chosen == "ridge", r.adaptation  # random tiny models gain a lot from a fit
    assert r.fitted_head and "coarse_head='fitted'" in repr(r)
    assert 3 in r.encoder.heads and 3 not in tiny_encoder.heads
    assert r.encoder.stacked(3) and r.adaptation.head_layers == [1, 2, 3]  # reads layers 1..3, side by side
    assert r.adaptation.pseudo_queries.startswith("first sentences")
    assert r.encoder.model is tiny_encoder.model  # the weights are shared, not copied
    assert r.encoder.fingerprint != tiny_encoder.fingerprint
    # the index holds every document's fine view projected on the directions the head predicts (so the
    # documents' side is exact), and the fine views unchanged
    stored = r.backend.coarse_index.reconstruct_n(0, len(texts))
    fine = r.encoder.encode(texts, [(12, 32)])[(12, 32)]
    np.testing.assert_allclose(
        stored, unit(fine @ r.projection), atol=SQ8_HALF_STEP
    )  # the default index: int8 codes
    np.testing.assert_allclose(r.project(fine), unit(fine @ r.projection), atol=1e-6)
    # the early layer's coarse view of a text predicts those coordinates (this tiny model: almost exactly)
    early = r.encoder.encode(texts, [(3, 8)])[(3, 8)]
    assert np.mean(np.sum(early * stored, axis=1)) > 0.95
    plain = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False)
    assert plain.adaptation is None and plain.encoder is tiny_encoder and not plain.fitted_head
    with pytest.raises(TypeError, match="adapt must be True or False"):
        Retriever.build(texts, coarse=(3, 8), model=tiny_encoder, adapt="yes")
    np.testing.assert_array_equal(plain.backend.fine_store.vectors, r.backend.fine_store.vectors)


def test_adapted_index_survives_save_and_load(tmp_path, tiny_encoder, adapted):
    _, r = adapted
    r.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["adaptation"]["chosen"] == "ridge" and "heads" in manifest["files"]
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)  # the head comes from the index
    assert loaded.adaptation == r.adaptation and loaded.encoder.fingerprint == r.encoder.fingerprint
    assert "projection" in manifest["files"] and "projection" not in manifest["adaptation"]
    np.testing.assert_array_equal(loaded.projection, r.projection)
    for q in ("cell gene", "vitamin bone risk"):
        for coarse_query in ("projected", "early"):
            got = loaded.search(q, k=5, coarse_query=coarse_query)
            assert [h.doc_id for h in got] == [h.doc_id for h in r.search(q, k=5, coarse_query=coarse_query)]
    assert 3 not in tiny_encoder.heads


def overlap_with_exact(r: Retriever, queries: list[str], coarse_query: str, candidates: int) -> float:
    _, fine = r.encoder.encode(queries, [r.coarse, r.fine], apply_heads=True).values()
    _, exact = r.backend.fine_store.search_exact(fine, 5)
    _, got = r.search_arrays(queries, 5, candidates=candidates, coarse_query=coarse_query)
    return float(np.mean([len(set(e) & set(g)) / 5 for e, g in zip(exact, got)]))


def test_projected_queries_search_the_coarse_index_with_their_fine_vector(tiny_encoder, adapted):
    texts, r = adapted
    p = r.projection
    assert p is not None and p.shape == (32, 8) and p.dtype == np.float32
    np.testing.assert_allclose(p.T @ p, np.eye(8), atol=1e-4)  # orthonormal fine directions
    queries = [pseudo_query(t) for t in random_texts(30, seed=11)]
    # what "projected" means: the coarse index is searched with the fine vector's projection
    fine = r.encoder.encode(queries, [r.fine])[r.fine]
    projected = unit(fine @ p)
    _, want = r.backend.coarse_index.search(projected, 10)
    timings = SearchTimings()
    _, got = r.search_arrays(queries, 10, candidates=10, timings=timings)  # the default when fitted
    assert all(set(g) == set(w) for g, w in zip(got, want))
    assert timings.coarse_queries == {"projected": 30} and timings.layers == 30 * 12
    assert timings.reranked == 30 * 10 and timings.queries == 30
    with pytest.raises(ValueError, match="choose one of projected, early"):
        r.search("cell gene", coarse_query="late")
    plain = Retriever.build(
        texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False, hybrid=False
    )
    assert plain.projection is None
    with pytest.raises(ValueError, match="no projection"):
        plain.project(fine)
    with pytest.raises(ValueError, match="needs the projection"):
        plain.search("cell gene", coarse_query="projected")
    timings = SearchTimings()
    plain.search_batch(["cell gene"], timings=timings)  # without a projection: the early layer's
    assert timings.coarse_queries == {"early": 1}


def test_streamed_build_fits_on_the_first_chunk_and_add_uses_its_head(tiny_encoder):
    texts = random_texts(150, seed=6)
    r = Retriever.build(
        texts[:130], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, chunk_size=100, candidates=20
    )
    assert r.adaptation.documents == 100 and r.fitted_head
    r.add(texts[130:])
    stored = r.backend.coarse_index.reconstruct_n(0, len(texts))
    np.testing.assert_allclose(
        stored, r.project(r.encoder.encode(texts, [(12, 32)])[(12, 32)]), atol=SQ8_HALF_STEP
    )


def test_failed_build_leaves_nothing_behind_and_small_corpora_are_left_alone(tiny_encoder, tmp_path):
    texts = random_texts(60, seed=7)
    with pytest.raises(TypeError, match="must be a str"):
        Retriever.build(
            [*texts, None],
            coarse=(3, 8),
            fine=(12, 32),
            model=tiny_encoder,
            backend=FaissOptions(fine_path=tmp_path / "f.npy"),
        )
    assert not (tmp_path / "f.npy").exists() and 3 not in tiny_encoder.heads
    small = Retriever.build(texts[:20], coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    assert small.adaptation.chosen == "kept" and small.encoder is tiny_encoder


def test_a_coarse_view_on_the_fine_layer_is_not_adapted(tiny_encoder):
    texts = random_texts(80, seed=8)
    r = Retriever.build(texts, coarse=(12, 8), fine=(12, 32), model=tiny_encoder)
    assert r.adaptation.chosen == "kept" and r.encoder is tiny_encoder


def test_span_rows_put_the_held_out_first_and_stay_within_budget():
    from adaptive_retrieval.adapt import SPAN_BUDGET, span_rows

    long_docs = [f"Title number {i} here. " + " ".join(["word"] * 200) for i in range(300)]
    check = check_rows(len(long_docs))
    rows, spans = span_rows(long_docs, check, seed=0)
    assert list(rows[: len(check)]) == list(check) and len(set(rows)) == len(rows)
    assert spans[0] == f"Title number {check[0]} here."
    assert len(rows) == len(long_docs)  # short titles of long documents: every document's fits the budget
    span_words = sum(len(s.split()) for s in spans)
    assert span_words <= SPAN_BUDGET * sum(len(t.split()) for t in long_docs)
    # a one-sentence corpus: a span is its whole document, nothing new to fit on
    sentences = [f"sentence {i} says little" for i in range(300)]
    rows, _ = span_rows(sentences, check, seed=0)
    assert len(rows) == len(check)
    # documents only 5x their first sentence: the budget (10% of the words, held-out spans included)
    # stops the fitted spans early; counted in characters instead, it stops them elsewhere
    short = [f"a b c d e f {i}. " + " ".join(["g"] * 28) for i in range(300)]
    rows, spans = span_rows(short, check, seed=0)
    assert 0 < len(rows) - len(check) < 300 - len(check)
    assert sum(len(s.split()) for s in spans) <= SPAN_BUDGET * sum(len(t.split()) for t in short)
    by_chars, _ = span_rows(short, check, seed=0, count=lambda xs: [len(x) for x in xs])
    assert len(by_chars) != len(rows)


def test_a_corpus_of_one_sentence_documents_builds_adapted(tiny_encoder):
    """Every span is its whole document: nothing to count with the tokenizer, which refuses an empty batch."""
    texts = [f"short document number {i} about topic {i % 7}." for i in range(80)]
    r = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    assert r.adaptation is not None and len(r) == 80
    assert tiny_encoder.tokenize([]) == []


def test_ridge_solves_the_same_problem_with_fewer_rows_than_features():
    rng = np.random.default_rng(3)
    student, teacher = rng.normal(size=(40, 64)), unit(rng.normal(size=(40, 16)))
    ((head, _),) = fit_ridge_heads(student, teacher, (1e-2,))  # dual: 40 rows < 64 features
    x, f = torch.as_tensor(student), torch.as_tensor(teacher, dtype=torch.float64)
    target = f @ torch.linalg.svd(f, full_matrices=False)[2].T
    lam = 1e-2 * float(torch.diagonal(x.T @ x).mean())
    primal = torch.linalg.solve(x.T @ x + lam * torch.eye(64, dtype=x.dtype), x.T @ target)
    np.testing.assert_allclose(head.numpy(), primal.float().numpy(), atol=1e-4)
