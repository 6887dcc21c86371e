"""Every engine behind the one backend interface returns the same hits: FAISS, Qdrant (local mode: a
Python emulation of the engine, not Qdrant itself) and Milvus Lite (the engine, embedded); saved and
reopened from a fresh process; rolled back on failure; shared by writers without collisions."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.backends import FaissOptions, point_key, point_uuid
from adaptive_retrieval.errors import CorpusError
from adaptive_retrieval.ids import IdMap
from tests.helpers import QUERIES, make_model, make_tokenizer, random_texts, stream

ENGINES = ("qdrant", "milvus")
VIEWS = dict(coarse=(3, 8), fine=(12, 32), candidates=10)


def engine_options(engine: str, tmp_path, name: str = "docs") -> dict:
    if engine == "qdrant":
        pytest.importorskip("qdrant_client")
        return {"path": str(tmp_path / f"qdrant-{name}"), "collection": name}
    pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    return {"uri": str(tmp_path / f"milvus-{name}.db"), "collection": name}


def engine_count(r: Retriever) -> int:
    """Documents in the engine itself, not in the retriever's row map."""
    b = r.backend
    if b.name == "qdrant":
        return b.client.count(b.collection, exact=True).count
    return int(b.client.query(b.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    make_model("bert").save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def mixed_corpus():
    """Ids of both kinds, one with quotes and brackets (a filter expression must not see it raw)."""
    texts = random_texts(60, seed=1)
    ids = [i if i % 3 else f'doc "{i}" [x]' for i in range(len(texts))]
    return dict(zip(ids, texts))


@pytest.fixture(scope="module")
def faiss_r(model_dir, mixed_corpus):
    return Retriever.build(
        mixed_corpus, model=str(model_dir), backend=FaissOptions(fine_dtype="float32"), chunk_size=50, **VIEWS
    )


def engine_retriever(engine: str, enc, tmp_path, name: str, texts) -> Retriever:
    """A retriever on ``engine`` over ``texts``, in a collection ``name`` under ``tmp_path``."""
    return Retriever.build(
        texts, model=enc, backend=engine, backend_options=engine_options(engine, tmp_path, name), **VIEWS
    )


def ranked(r: Retriever, **kwargs) -> list[list]:
    return [[h.doc_id for h in hits] for hits in r.search_batch(QUERIES, k=10, **kwargs)]


@pytest.mark.parametrize("engine", ENGINES)
def test_every_engine_returns_the_faiss_hits_and_reopens_from_a_fresh_process(
    engine, model_dir, mixed_corpus, faiss_r, tmp_path
):
    # BM25 from the local index, as FAISS has it: the engine's own postings weigh documents by the first
    # chunk's mean length (tests/test_engine_lexical.py), which moves the fused scores a little
    options = {**engine_options(engine, tmp_path), "lexical": "local"}
    r = Retriever.build(
        mixed_corpus,
        model=str(model_dir),
        chunk_size=50,
        backend=engine,
        backend_options=options,
        store_text=True,
        **VIEWS,
    )
    assert len(r) == len(r.backend) == engine_count(r) == len(mixed_corpus) and engine in repr(r)
    assert r.adaptation.chosen == "ridge" and r.encoder.fingerprint == faiss_r.encoder.fingerprint
    for q in QUERIES:  # the same head fitted on the same first chunk: the same funnel
        a, b = faiss_r.search(q, k=5), r.search(q, k=5)
        assert [h.doc_id for h in a] == [h.doc_id for h in b]
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-5)
    for kwargs in ({}, {"coarse_query": "early"}, {"candidates": 60}):
        assert ranked(r, **kwargs) == ranked(faiss_r, **kwargs)
    # the generic funnel (candidates fetched, re-ranked here: the patient path) agrees with the engine's own
    fine_q = r.encoder.encode(QUERIES, [r.fine])[r.fine]
    coarse_q = r.project(fine_q)
    generic = super(type(r.backend), r.backend).search(coarse_q, fine_q, 5, 10)
    if engine == "milvus":  # its default re-ranks the fetched shortlist here; also the server-side way
        r.backend.rerank_at = "server"
    own = r.backend.search(coarse_q, fine_q, 5, 10)
    np.testing.assert_array_equal(own[1], generic[1])
    np.testing.assert_allclose(own[0], generic[0], atol=1e-5)
    assert ranked(r) == ranked(faiss_r)
    # an interrupted add leaves the collection as it was
    with pytest.raises(KeyboardInterrupt):
        r.add(stream(random_texts(30, seed=2), fail_after=20), chunk_size=8)
    assert len(r) == len(r.backend) == engine_count(r) == len(mixed_corpus)
    r.save(tmp_path / "idx")
    r.close()
    script = textwrap.dedent(
        f"""
        import json, sys
        from adaptive_retrieval import Retriever
        r = Retriever.load({str(tmp_path / "idx")!r})
        hits = r.search_batch({QUERIES!r}, k=10)
        print(json.dumps([len(r), [[h.doc_id for h in hs] for hs in hits], [[h.text for h in hs] for hs in hits]]))
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    count, reopened, texts = json.loads(out.stdout.strip().splitlines()[-1])
    assert count == len(mixed_corpus) and reopened == ranked(faiss_r)
    # the engine numbers its rows anew on reopening; each text still belongs to its document
    by_id = {json.dumps(d): t for d, t in mixed_corpus.items()}
    assert texts == [[by_id[json.dumps(d)] for d in hits] for hits in reopened]


@pytest.mark.parametrize("engine", ENGINES)
def test_writers_in_turn_never_overwrite_each_other(engine, model_dir, tmp_path):
    options = engine_options(engine, tmp_path, "shared")
    enc = Encoder.from_pretrained(str(model_dir))
    first = Retriever.build(
        {f"a{i}": t for i, t in enumerate(random_texts(30, seed=3))},
        model=enc,
        backend=engine,
        backend_options=options,
        **VIEWS,
    )
    first.save(tmp_path / "idx")
    first.close()
    second = Retriever.load(tmp_path / "idx", model=enc)
    second.add({f"b{i}": t for i, t in enumerate(random_texts(20, seed=4))})
    with pytest.raises(ValueError, match="already in the index"):
        second.add({"a3": "an id the first writer added"})
    # a writer that opened the collection before another added "c0" refuses to overwrite it
    late = Retriever.load(tmp_path / "idx", model=enc, backend_options={"client": second.backend.client})
    second.add({"c0": "the first writer of c0"})
    with pytest.raises(ValueError, match="'c0' is already in the collection"):
        late.add({"c1": "fine on its own", "c0": "a second writer of c0"})
    assert "c0" not in late.doc_ids and "c1" not in late.doc_ids
    second.close()
    third = Retriever.load(tmp_path / "idx", model=enc)  # sees every writer's documents, none lost
    assert sorted(map(str, third.doc_ids)) == sorted(
        [f"a{i}" for i in range(30)] + [f"b{i}" for i in range(20)] + ["c0"]
    )
    assert engine_count(third) == 51
    assert "c0" in {h.doc_id for h in third.search("the first writer of c0", k=51)}
    third.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_failed_build_removes_its_collection(engine, tiny_encoder, tmp_path):
    options = engine_options(engine, tmp_path, "failed")
    with pytest.raises(KeyboardInterrupt):
        Retriever.build(
            stream(random_texts(40, seed=5), fail_after=25),
            model=tiny_encoder,
            chunk_size=10,
            backend=engine,
            backend_options=options,
            **VIEWS,
        )
    r = Retriever.build(
        random_texts(10, seed=6), model=tiny_encoder, backend=engine, backend_options=options, **VIEWS
    )
    assert (
        len(r) == engine_count(r) == 10
    )  # the name was free again, and nothing of the failed build is in it
    with pytest.raises(ValueError, match="already exists"):
        shared = {"collection": options["collection"], "client": r.backend.client}
        Retriever.build(["x y"], model=tiny_encoder, backend=engine, backend_options=shared, **VIEWS)
    r.close()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "elastic"}, "backend='elastic' is not known; choose one of faiss, qdrant, milvus"),
        ({"backend_options": {"path": "x"}}, "backend 'faiss' takes no option 'path'; known: index"),
        ({"backend": "qdrant", "fine_path": "f.npy"}, "fine_path= applies to the FAISS backend"),
        ({"backend": "qdrant", "index": "HNSW32"}, "index= applies to the FAISS backend; qdrant takes"),
        ({"backend": FaissOptions(), "index": "HNSW32"}, "backend= is already an options object"),
        ({"backend": 3}, "backend must be an engine's name"),
        ({"backend": "milvus"}, "backend='milvus' needs backend_options uri="),
    ],
)
def test_bad_backend_arguments_are_refused(tiny_encoder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Retriever.build(["a b"], coarse=(3, 8), model=tiny_encoder, **kwargs)


def test_an_in_memory_collection_cannot_be_saved(tiny_encoder, tmp_path):
    pytest.importorskip("qdrant_client")
    r = Retriever.build(random_texts(10, seed=7), model=tiny_encoder, backend="qdrant", **VIEWS)
    with pytest.raises(ValueError, match="in memory and ends with this process"):
        r.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists()


def test_keys_are_stable_and_the_id_map_refuses_collisions():
    assert point_key("a") == point_key("a") != point_key(1) != point_key("1")
    assert 0 <= point_key("a") < 2**63 and point_uuid(7).count("-") == 4
    keys = {"x": 11, "y": 12, "z": 12, "w": 13}  # "z" collides with "y"
    ids = IdMap(key=keys.__getitem__)
    assert ids.stage(["x", "y"]) == 0
    with pytest.raises(CorpusError, match="engine key of a document already"):
        ids.stage(["z"])
    with pytest.raises(CorpusError, match="already in the index"):
        ids.stage(["w", "x"])
    assert list(ids.staged) == ["x", "y"]  # a refused stage leaves nothing of its ids
    ids.commit()
    assert len(ids) == 2 and ids.row("y") == 1 and ids.key_of(1) == 12 and ids.row_of_key(99) is None
    assert ids.stage(["w"]) == 2 and ids.tail_keys(1) == [12, 13] and ids.tail(1) == ["y", "w"]
    ids.rollback()
    assert len(ids) == 2 and not ids.staged and "w" not in ids


def test_keyed_answers_become_rows_unknown_keys_left_out_and_ties_to_the_lower_row(tiny_encoder):
    pytest.importorskip("qdrant_client")
    r = Retriever.build(random_texts(3, seed=7), model=tiny_encoder, backend="qdrant", adapt=False, **VIEWS)
    k0, k1 = r.ids.key_of(0), r.ids.key_of(1)
    D, I = r.backend.rows_of([[k1, "unknown", k0]], [[0.5, 0.9, 0.5]], 4)
    assert I.tolist() == [[0, 1, -1, -1]] and D[0, :2].tolist() == [0.5, 0.5]


def test_rows_an_add_has_not_committed_are_neither_found_nor_saved(tiny_encoder, tmp_path):
    r = Retriever.build(random_texts(30, seed=8), model=tiny_encoder, adapt=False, **VIEWS)
    vec = r.encoder.encode(["cell gene protein"], [r.coarse, r.fine])
    r.backend.add(len(r), ["staged"], vec[r.coarse], vec[r.fine])  # written, not committed
    assert len(r.backend.fine_store) == 31 and len(r.backend) == 30
    _, exact = r.backend.exact_search(vec[r.fine], 31)
    _, funnel, _, _ = r.backend.search(vec[r.coarse], vec[r.fine], 31, 31)
    assert exact.max() < 30 and funnel.max() < 30 and (exact[0, 30:] == -1).all()
    r.save(tmp_path / "idx")
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 30
    r.backend.rollback(len(r))
    assert len(r.backend.fine_store) == len(r) == 30


@pytest.mark.parametrize("engine", ENGINES)
def test_an_emptied_collection_reopens_and_answers_with_no_hits(engine, tiny_encoder, tmp_path):
    options = engine_options(engine, tmp_path, "emptied")
    r = Retriever.build(
        random_texts(10, seed=9), model=tiny_encoder, backend=engine, backend_options=options, **VIEWS
    )
    r.save(tmp_path / "idx")
    b = r.backend
    if engine == "qdrant":
        from qdrant_client import models

        b.client.delete(b.collection, points_selector=models.FilterSelector(filter=models.Filter()))
    else:
        b.client.delete(b.collection, filter="key >= 0")  # every key is a non-negative 63-bit int
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert (
        len(again) == 0
        and again.search("cell gene", k=5) == []
        and again.search_batch(["a b"] * 2) == [[], []]
    )
    again.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_calibrated_depth_reaches_each_engines_hnsw_beam(engine, tiny_encoder, tmp_path):
    """A calibrated shortlist shorter than its depth must come from a search as deep as the calibration's:
    each engine's HNSW beam is raised to the depth (never lowered), and a beam the caller names wins."""
    options = engine_options(engine, tmp_path)
    if engine == "milvus":
        options["coarse_index"] = "HNSW"
    r = Retriever.build(
        random_texts(40, seed=5), model=tiny_encoder, backend=engine, backend_options=options, **VIEWS
    )
    try:
        b = r.backend
        beam, default = ("hnsw_ef", 100) if engine == "qdrant" else ("ef", None)
        params = b.search_parameters(depth=300)
        got = params.hnsw_ef if engine == "qdrant" else params["ef"]
        assert got == 300
        named = b.search_parameters(depth=300, **{beam: 7})
        assert (named.hnsw_ef if engine == "qdrant" else named["ef"]) == 7
        assert b.search_parameters() is None
        if default is not None:  # below the graph's own ef_construct: left to the engine
            assert b.search_parameters(depth=default - 1) is None
        coarse_q = r.encoder.encode(QUERIES[:2], [r.coarse])[r.coarse]
        _, deep = b.coarse_search(coarse_q, 30, params)  # the engine takes the deepened beam
        _, plain = b.coarse_search(coarse_q, 30)
        _, narrow = b.coarse_search(coarse_q, 30, b.search_parameters(**{beam: 7}))  # widened to 30
        assert (deep >= 0).all() and deep.shape == plain.shape == narrow.shape == (2, 30)
    finally:
        r.close()
    flat_options = engine_options(engine, tmp_path, name="flat")
    if engine == "qdrant":
        flat_options["hnsw"] = False
    flat = Retriever.build(
        random_texts(20, seed=6), model=tiny_encoder, backend=engine, backend_options=flat_options, **VIEWS
    )
    try:
        assert flat.backend.search_parameters(depth=300) is None  # no graph: nothing to deepen
    finally:
        flat.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_another_writers_documents_take_no_result_slots(engine, model_dir, tmp_path):
    """Documents another writer added after this retriever opened the collection are unknown to it: its
    searches skip them without losing a result to them (the engine is asked again, for more)."""
    enc = Encoder.from_pretrained(str(model_dir))
    engine_retriever(
        engine, enc, tmp_path, "slots", {f"a{i}": t for i, t in enumerate(random_texts(30, seed=8))}
    ).save(tmp_path / "idx")
    writer = Retriever.load(tmp_path / "idx", model=enc)
    reader = Retriever.load(tmp_path / "idx", model=enc, backend_options={"client": writer.backend.client})
    before = ranked(reader)
    fine_q = enc.encode(QUERIES, [reader.fine])[reader.fine]
    _, exact_before = reader.backend.exact_search(fine_q, 10)
    # each query, and variants of it, become the other writer's documents: the top of every ranking
    writer.add({f"q{i}-{j}": q + " x" * j for i, q in enumerate(QUERIES) for j in range(6)})
    assert engine_count(writer) == 30 + 6 * len(QUERIES)
    assert ranked(reader) == before and all(len(hits) == 10 for hits in before)
    _, exact_after = reader.backend.exact_search(fine_q, 10)
    np.testing.assert_array_equal(exact_after, exact_before)
    assert writer.search(QUERIES[0], k=1)[0].doc_id == "q0-0"  # the same text: they would compete
    reader.close()
    writer.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_an_add_that_never_committed_is_not_adopted_on_reopening(engine, model_dir, tmp_path, caplog):
    """A writer killed between writing an add's documents and its commit: the engine holds them, but a
    reopened retriever does not take them (their add token was never recorded as committed); a reopen
    with drop_uncommitted deletes them, and the same ids can then be added."""
    enc = Encoder.from_pretrained(str(model_dir))
    texts = {f"a{i}": t for i, t in enumerate(random_texts(20, seed=9))}
    r = engine_retriever(engine, enc, tmp_path, "crashed", texts)
    r.save(tmp_path / "idx")
    r.add({"b0": "a committed add"})
    rng = np.random.default_rng(0)

    def unit(n: int, d: int) -> np.ndarray:
        v = rng.normal(size=(n, d)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    r.backend.add(len(r), ["x0", "x1", "x2"], unit(3, 8), unit(3, 32))  # written, never committed
    assert engine_count(r) == 24
    r.close()  # as a killed writer leaves it: nothing rolled back

    with caplog.at_level("WARNING", logger="adaptive_retrieval.backends"):
        again = Retriever.load(tmp_path / "idx", model=enc)
    assert sorted(map(str, again.doc_ids)) == sorted([f"a{i}" for i in range(20)] + ["b0"])
    assert engine_count(again) == 24 and "3 documents of adds that did not commit" in caplog.text
    with pytest.raises(ValueError, match="never committed"):
        again.add({"x1": "the same id again"})
    again.close()

    cleaned = Retriever.load(tmp_path / "idx", model=enc, backend_options={"drop_uncommitted": True})
    assert engine_count(cleaned) == 21 and len(cleaned) == 21
    cleaned.add({"x1": "the same id, now free"})
    cleaned.close()
    final = Retriever.load(tmp_path / "idx", model=enc)
    assert "x1" in final.doc_ids and len(final) == engine_count(final) == 22
    final.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_collection_without_commit_records_adopts_every_document(engine, model_dir, tmp_path):
    """A collection made before adds were recorded (no companion collection): every document is adopted,
    as then."""
    enc = Encoder.from_pretrained(str(model_dir))
    r = engine_retriever(engine, enc, tmp_path, "older", random_texts(12, seed=10))
    r.save(tmp_path / "idx")
    b = r.backend
    (b.client.delete_collection if engine == "qdrant" else b.client.drop_collection)(b.commits)
    r.close()
    again = Retriever.load(tmp_path / "idx", model=enc)
    assert len(again) == engine_count(again) == 12 and not again.backend._records_commits
    again.add(["one more"])  # no token to record: the add still works
    again.close()
    assert len(Retriever.load(tmp_path / "idx", model=enc)) == 13


@pytest.mark.parametrize("engine", ENGINES)
def test_an_add_failing_after_its_commit_record_leaves_no_record(engine, tiny_encoder, tmp_path, monkeypatch):
    """The commit record is written before the write lock; an add that fails after it (here: making its
    rows visible) removes the record before the documents, so no reader adopts any of them."""
    r = engine_retriever(engine, tiny_encoder, tmp_path, "late", random_texts(8, seed=11))
    records = r.backend._committed_tokens()
    assert len(records) == 1  # the build's add

    def refuse() -> None:
        raise RuntimeError("made to fail after the record")

    monkeypatch.setattr(r.ids, "commit", refuse)  # the last step of a commit: the rows made visible
    with pytest.raises(RuntimeError, match="after the record"):
        r.add(random_texts(5, seed=12))
    monkeypatch.undo()
    assert r.backend._committed_tokens() == records and engine_count(r) == len(r) == 8
    r.add(random_texts(2, seed=13))  # and the next add records its own
    assert len(r.backend._committed_tokens()) == 2 and engine_count(r) == 10
    r.close()


@pytest.mark.parametrize("engine", ENGINES)
def test_dropping_uncommitted_adds_spares_one_that_committed_meanwhile(
    engine, model_dir, tmp_path, monkeypatch
):
    enc = Encoder.from_pretrained(str(model_dir))
    r = engine_retriever(engine, enc, tmp_path, "race", random_texts(6, seed=14))
    r.save(tmp_path / "idx")
    added = enc.encode(["late one", "late two"], [r.coarse, r.fine])
    r.backend.add(len(r), ["late1", "late2"], added[r.coarse], added[r.fine])
    token = r.backend._add_token
    cls = type(r.backend)
    real = cls._committed_tokens
    reads = []

    def racing(self):  # the first read misses the add; it commits before the second
        reads.append(1)
        if len(reads) == 1:
            return real(self) - {token}
        r.backend._record_tokens([token])
        return real(self)

    monkeypatch.setattr(cls, "_committed_tokens", racing)
    shared = {"client": r.backend.client, "drop_uncommitted": True}  # Qdrant's local folder: one client
    reopened = Retriever.load(tmp_path / "idx", model=enc, backend_options=shared)
    assert len(reads) == 2 and len(reopened) == 6 and engine_count(reopened) == 8  # spared
    monkeypatch.undo()
    reopened.close()
    r.close()
    assert len(Retriever.load(tmp_path / "idx", model=enc)) == 8  # adopted now: it committed


def test_milvus_flushes_once_enough_documents_wait_unflushed(tmp_path, monkeypatch, tiny_encoder):
    """Milvus scans a growing segment, and searches a flushed one by its index: a bulk add is flushed, small
    ones once enough of them are written."""
    pymilvus = pytest.importorskip("pymilvus")
    pytest.importorskip("milvus_lite")
    from adaptive_retrieval.backends.milvus import MilvusBackend

    monkeypatch.setattr(MilvusBackend, "FLUSH_AT", 5)
    flushed = []
    original = pymilvus.MilvusClient.flush

    def flush(self, collection, **kw):
        flushed.append(collection)
        return original(self, collection, **kw)

    monkeypatch.setattr(pymilvus.MilvusClient, "flush", flush)
    texts = random_texts(12, seed=2)
    r = Retriever.build(
        texts, coarse=(4, 8), model=tiny_encoder, backend="milvus",
        backend_options=engine_options("milvus", tmp_path),
    )  # fmt: skip
    assert flushed == [r.backend.collection]
    for i in range(4):  # small adds wait in the growing segment until 5 are unflushed
        r.add({f"small{i}": "a small add stays in the growing segment"})
    assert flushed == [r.backend.collection] and r.search(texts[3], k=1, hybrid=False)[0].doc_id == 3
    r.add({"small4": "the fifth"})
    assert flushed == [r.backend.collection] * 2
    r.close()
