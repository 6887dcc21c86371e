"""BM25 postings held by the engine (Qdrant's and Milvus' own sparse vector search): the same scores as the
local index, filters, deletes, upserts, failed writes, reopening and the option's checks."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from adaptive_retrieval.backends.keyed import lexical_in_engine
from adaptive_retrieval.engine_lexical import EngineLexicalIndex, sparse_of
from adaptive_retrieval.errors import CorpusError, IndexDamaged, InvalidArgument
from adaptive_retrieval.hybrid import Fusion
from adaptive_retrieval.lexical import LexicalIndex
from tests.helpers import random_texts
from tests.test_backends import engine_options

ENGINES = ["qdrant", "milvus"]
LEXICAL_FIRST = Fusion("convex", 0.2)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    out = random_texts(120, seed=5)
    out[37] += " xylophone xylophone"
    out[90] += " xylophone"
    out[5] = ""  # no terms (Milvus stores a placeholder term no query holds)
    return out


def build(engine, tmp_path, encoder, texts, postings="engine", **kw) -> Retriever:
    options = {**engine_options(engine, tmp_path, f"docs-{postings}"), "lexical": postings}
    return Retriever.build(texts, coarse=(4, 8), model=encoder, backend=engine, backend_options=options, **kw)


@pytest.mark.parametrize("engine", ENGINES)
def test_the_engine_scores_as_the_local_index(tmp_path, tiny_encoder, texts, engine):
    held = build(engine, tmp_path, tiny_encoder, texts)
    local = build(engine, tmp_path, tiny_encoder, texts, postings="local")
    assert isinstance(held.lexical, EngineLexicalIndex) and isinstance(local.lexical, LexicalIndex)
    assert held.lexical.stats["postings"] == local.lexical.stats["postings"]
    queries = ["xylophone", texts[10][:40], texts[64][:25] + " xylophone", "zzzz unknown", texts[99]]
    for q in queries:
        got, want = held.lexical.top(q, 20), local.lexical.top(q, 20)
        np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
        floor = want[0][-1] * 1.0001 if len(want[0]) else 0  # rows above the last score: the same set
        assert set(got[1][got[0] > floor].tolist()) == set(want[1][want[0] > floor].tolist())
        assert held.lexical.bound(q) == pytest.approx(local.lexical.bound(q), rel=1e-9)
    assert held.lexical.top("zzzz unknown", 5)[1].tolist() == []
    for fusion in (Fusion(), LEXICAL_FIRST):
        held.fusion = local.fusion = fusion
        for q in queries:
            a = [(h.doc_id, round(h.score, 4)) for h in held.search(q, k=8)]
            b = [(h.doc_id, round(h.score, 4)) for h in local.search(q, k=8)]
            assert a == b, q
    held.close(), local.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_filters_deletes_and_upserts_in_the_engine(tmp_path, tiny_encoder, texts, engine):
    meta = [{"group": i % 2} for i in range(len(texts))]
    r = build(engine, tmp_path, tiny_encoder, texts, metadata=meta)
    r.fusion, r.compact_at = LEXICAL_FIRST, None
    assert {h.doc_id for h in r.search("xylophone", k=2)} == {37, 90}
    assert r.search("xylophone", k=1, filter={"group": 0})[0].doc_id == 90
    assert r.search("xylophone", k=1, filter={"group": 1})[0].doc_id == 37
    rows, bound = len(r.lexical), r.lexical.bound("xylophone")
    r.delete([37])  # its terms leave the counts at the commit: the term is rarer, so it weighs more
    assert len(r.lexical) == rows - 1 and r.lexical.bound("xylophone") > bound
    assert 37 not in [h.doc_id for h in r.search("xylophone", k=len(texts))]
    r.delete([90])
    assert r.lexical.weights("xylophone")[0].tolist() == [] and r.lexical.bound("xylophone") > 0
    r.upsert({90: "a xylophone concert", 7: "the xylophone returns"})
    assert {h.doc_id for h in r.search("xylophone", k=2)} == {90, 7}
    assert len(r.lexical) == rows - 1
    r.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_later_documents_are_weighed_with_the_first_batch_mean_length(tmp_path, tiny_encoder, texts, engine):
    r = build(engine, tmp_path, tiny_encoder, texts[:30])
    lex = r.lexical
    mean = lex._state.mean
    assert mean == pytest.approx(np.mean([len(lex.terms(t)) for t in texts[:30]]))
    r.add({"long": "organ " * 3 + "pipe " * 40})
    assert lex._state.mean == mean  # fixed by the first batch
    terms, weights = sparse_of(r.backend, [r.ids.row("long")])[0]
    norm = lex.k1 * (1 - lex.b + lex.b * 43 / mean)
    by_term = dict(zip(terms.tolist(), weights.tolist()))
    organ, pipe = lex.vocabulary["organ"], lex.vocabulary["pipe"]
    assert by_term == {organ: pytest.approx(3 / (3 + norm)), pipe: pytest.approx(40 / (40 + norm))}
    assert sparse_of(r.backend, [r.ids.row(5)])[0][0].tolist() == []  # a text without terms
    r.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_add_leaves_the_counts_and_a_reopen_reads_them(tmp_path, tiny_encoder, texts, engine):
    r = build(engine, tmp_path, tiny_encoder, texts[:40])
    before = (r.lexical._state.df.copy(), len(r.lexical), dict(r.lexical.vocabulary))
    vectors = tiny_encoder.encode(["x", "y"], [r.coarse, r.fine])
    with pytest.raises(CorpusError):
        r.add_vectors([1000, 1000], vectors[r.coarse], vectors[r.fine], texts=["quokka", "quokka"])
    np.testing.assert_array_equal(r.lexical._state.df, before[0])
    assert (len(r.lexical), r.lexical.vocabulary) == before[1:]
    want = [[h.doc_id for h in r.search(q, k=5)] for q in (texts[3][:30], "xylophone")]
    r.save(tmp_path / "ix")
    r.close()
    from tests.test_cli import run

    assert "BM25 (english, postings in the engine)" in run("info", str(tmp_path / "ix")).stdout
    again = Retriever.load(tmp_path / "ix", model=tiny_encoder)
    assert isinstance(again.lexical, EngineLexicalIndex) and len(again.lexical) == 40
    np.testing.assert_array_equal(again.lexical._state.df, before[0])
    assert [[h.doc_id for h in again.search(q, k=5)] for q in (texts[3][:30], "xylophone")] == want
    again.close()


def test_the_option_is_checked_and_a_dense_index_gets_no_sparse_field(tmp_path, tiny_encoder, texts):
    with pytest.raises(InvalidArgument, match="lexical="):
        build("qdrant", tmp_path, tiny_encoder, texts[:5], postings="server")
    dense = build("qdrant", tmp_path, tiny_encoder, texts[:5], hybrid=False)  # asked for "engine"
    assert dense.lexical is None and not dense.backend.lexical_field
    config = dense.backend.client.get_collection(dense.backend.collection).config.params
    assert not config.sparse_vectors
    dense.close()


def test_the_default_holds_the_postings_in_a_server_and_here_beside_an_embedded_engine(
    tmp_path, tiny_encoder, texts
):
    from qdrant_client import QdrantClient

    assert lexical_in_engine(None, server=True) and not lexical_in_engine(None, server=False)
    assert lexical_in_engine("engine", server=False) and not lexical_in_engine("local", server=True)
    for engine in ENGINES:  # local mode, Milvus Lite: the local index
        r = Retriever.build(
            texts[:5], coarse=(4, 8), model=tiny_encoder, backend=engine,
            backend_options=engine_options(engine, tmp_path, f"default-{engine}"),
        )  # fmt: skip
        assert isinstance(r.lexical, LexicalIndex) and not r.backend.lexical_field
        r.close()
    client = QdrantClient(":memory:")  # a client given: taken for a server's
    r = Retriever.build(
        texts[:5], coarse=(4, 8), model=tiny_encoder, backend="qdrant", backend_options={"client": client}
    )
    assert isinstance(r.lexical, EngineLexicalIndex)
    r.close()


def test_a_file_of_another_layout_is_refused(tmp_path, tiny_encoder, texts):
    r = build("qdrant", tmp_path, tiny_encoder, texts[:5])
    local = LexicalIndex()
    local.stage(texts[:5])
    local.commit()
    local.save(tmp_path / "local.npz", list(range(5)))
    with pytest.raises(IndexDamaged, match="layout"):
        EngineLexicalIndex.load(tmp_path / "local.npz", list(range(5)), r.backend)
    r.close()
