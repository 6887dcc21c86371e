from __future__ import annotations

import json
import sys

import faiss
import numpy as np
import pytest

from adaptive_retrieval import FaissOptions, Hit, Retriever, SearchTimings
from tests.helpers import QUERIES, LayerCounter, random_texts


@pytest.fixture(scope="module")
def retriever(tiny_encoder, corpus):
    return Retriever.build(
        corpus, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=10, hybrid=False
    )


def exact_ids(r: Retriever, query: str, k: int) -> list:
    fine_q = r.encoder.encode(query, [r.fine])[r.fine][None]
    _, ids = r.backend.fine_store.search_exact(fine_q, k)
    return [r.doc_ids[i] for i in ids[0] if i >= 0]


def test_hits_are_ranked_and_scored_by_the_fine_view(retriever, corpus):
    hits = retriever.search(QUERIES[0], k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(isinstance(h, Hit) for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    fine_q = retriever.encoder.encode(QUERIES[0], [(12, 32)])[(12, 32)]
    doc = retriever.encoder.encode(corpus[hits[0].doc_id], [(12, 32)])[(12, 32)]
    assert hits[0].score == pytest.approx(float(doc @ fine_q), abs=2e-3)  # float16 store


def test_candidates_covering_the_corpus_equal_exact_fine_search(retriever):
    for q in QUERIES:
        assert [h.doc_id for h in retriever.search(q, k=10, candidates=len(retriever))] == exact_ids(
            retriever, q, 10
        )


def test_coarse_equal_to_fine_equals_exact_fine_search(tiny_encoder, corpus):
    r = Retriever.build(
        corpus,
        coarse=(12, 32),
        fine=(12, 32),
        model=tiny_encoder,
        candidates=10,
        backend=FaissOptions(fine_dtype="float32"),
        hybrid=False,
    )
    for q in QUERIES:
        assert [h.doc_id for h in r.search(q, k=10)] == exact_ids(r, q, 10)


def test_funnel_agrees_with_numpy_brute_force(tiny_encoder, corpus):
    r = Retriever.build(
        corpus,
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        candidates=7,
        backend=FaissOptions(fine_dtype="float32"),
        hybrid=False,
    )
    vec = r.encoder.encode(corpus, [(3, 8), (12, 32)])  # the index's views (its coarse head fitted at build)
    for q in QUERIES:
        qv = r.encoder.encode(q, [(3, 8), (12, 32)])
        shortlist = np.argsort(-(vec[(3, 8)] @ qv[(3, 8)]), kind="stable")[:7]
        fine_scores = vec[(12, 32)][shortlist] @ qv[(12, 32)]
        expected = shortlist[np.argsort(-fine_scores, kind="stable")][:5]
        hits = r.search(q, k=5)
        assert [h.doc_id for h in hits] == expected.tolist()
        np.testing.assert_allclose([h.score for h in hits], np.sort(fine_scores)[::-1][:5], atol=1e-6)


def test_k_beyond_corpus_returns_whole_corpus_ranked(retriever):
    hits = retriever.search(QUERIES[1], k=1000)
    assert sorted(h.doc_id for h in hits) == list(range(len(retriever)))
    assert [h.doc_id for h in hits] == exact_ids(retriever, QUERIES[1], len(retriever))


def test_k_above_candidates_widens_the_shortlist(retriever):
    assert retriever.candidates == 10
    assert len(retriever.search(QUERIES[2], k=25)) == 25


def test_a_search_runs_each_layer_exactly_once(retriever):
    with LayerCounter(retriever.encoder) as counter:
        retriever.search(QUERIES[0], k=5)
    assert counter.calls == [1] * 12
    with LayerCounter(retriever.encoder) as counter:
        retriever.search_batch(QUERIES, k=5)  # one batch of three queries
    assert counter.calls == [1] * 12


def test_search_stops_at_the_fine_layer(tiny_encoder, corpus):
    r = Retriever.build(corpus[:20], coarse=(2, 8), fine=(6, 32), model=tiny_encoder)
    with LayerCounter(tiny_encoder) as counter:
        r.search(QUERIES[0], k=3)
    assert counter.calls == [1] * 6 + [0] * 6


def test_search_batch_equals_single_searches_and_times_stages(retriever):
    timings = SearchTimings()
    batch = retriever.search_batch(QUERIES, k=4, batch_size=2, timings=timings)
    for hits, query in zip(batch, QUERIES):
        single = retriever.search(query, k=4)
        assert [h.doc_id for h in hits] == [h.doc_id for h in single]
        np.testing.assert_allclose([h.score for h in hits], [h.score for h in single], atol=1e-5)
    assert timings.queries == 3 and timings.total > 0 and timings.encode_coarse > 0


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda r: r.search("", k=3), ValueError, "query is empty"),
        (lambda r: r.search("   \n", k=3), ValueError, "query is empty"),
        (lambda r: r.search(None, k=3), TypeError, "query must be a str"),
        (lambda r: r.search("cell", k=0), ValueError, "k must be a positive int"),
        (lambda r: r.search("cell", k=2.5), ValueError, "k must be a positive int"),
        (lambda r: r.search("cell", k=3, candidates=0), ValueError, "candidates must be a positive int"),
        (lambda r: r.search_batch("cell"), TypeError, "use search"),
        (lambda r: r.search_batch([]), ValueError, "queries is empty"),
        (lambda r: r.search_batch(["cell", " "]), ValueError, r"queries\[1\] is empty"),
        (lambda r: r.search("cell", nprobe=4), ValueError, "has no search parameter 'nprobe'"),
        (lambda r: r.search("cell \udc00"), ValueError, "query is not valid Unicode text"),
        (lambda r: r.search_batch(["a", "\ud800"]), ValueError, r"queries\[1\] is not valid Unicode"),
    ],
)
def test_bad_search_input_is_refused_and_the_retriever_still_answers(retriever, call, error, match):
    before = [h.doc_id for h in retriever.search(QUERIES[0], k=5)]
    with pytest.raises(error, match=match):
        call(retriever)
    assert [h.doc_id for h in retriever.search(QUERIES[0], k=5)] == before


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"corpus": []}, ValueError, "corpus is empty"),
        ({"corpus": {}}, ValueError, "corpus is empty"),
        ({"corpus": "one document"}, TypeError, "not a single string"),
        ({"corpus": ["fine", 7]}, TypeError, r"corpus\[1\] must be a str"),
        ({"corpus": {"a": "x", "b": {"text": "y"}}}, ValueError, "corpus mixes forms"),
        ({"corpus": ["x", ("id", "y")]}, ValueError, "corpus mixes forms"),
        ({"corpus": {"a": 3}}, TypeError, "document 'a' must be a str"),
        ({"corpus": {"a": {"title": "t"}}}, ValueError, "without a 'text' field"),
        ({"corpus": [("a", "x"), ("a", "y")]}, ValueError, "id 'a' appears twice"),
        ({"corpus": [(1.5, "x")]}, TypeError, "must be a str or int"),
        ({"corpus": ["ok", "bad \ud800"]}, ValueError, "text of document 1 is not valid Unicode"),
        ({"corpus": {"a": {"title": 5, "text": "x"}}}, TypeError, "title of document 'a' must be a str"),
        ({"corpus": [("a", {"title": "t"})]}, ValueError, "document 'a' is a dict without a 'text' field"),
        ({"coarse": (13, 8)}, ValueError, r"coarse=\(13, 8\) is outside tiny-bert, which has layers 1..12"),
        ({"fine": (12, 64)}, ValueError, "dims 1..32"),
        ({"coarse": (8, 8), "fine": (4, 32)}, ValueError, "deeper than fine"),
        ({"candidates": 0}, ValueError, "candidates must be a positive int"),
        ({"index": "NotAnIndex"}, ValueError, "index='NotAnIndex' is not a FAISS factory string"),
        ({"fine_dtype": "int8"}, ValueError, "fine_dtype='int8'"),
        ({"index": "IVF64,Flat"}, ValueError, "could not be trained on 2 vectors"),
    ],
)
def test_bad_build_input_is_refused_where_it_enters(tiny_encoder, kwargs, error, match):
    args = {"corpus": ["a cell", "a gene"], "coarse": (3, 8), "fine": (12, 32), **kwargs}
    with pytest.raises(error, match=match):
        Retriever.build(args.pop("corpus"), args.pop("coarse"), args.pop("fine"), model=tiny_encoder, **args)


def test_corpus_forms_give_the_same_index(tiny_encoder):
    texts = random_texts(8, seed=9)
    forms = {
        "list": texts,
        "dict": {f"d{i}": t for i, t in enumerate(texts)},
        "beir": {f"d{i}": {"title": "", "text": t} for i, t in enumerate(texts)},
        "pairs": ((f"d{i}", t) for i, t in enumerate(texts)),
        "beir pairs": ((f"d{i}", {"title": "", "text": t}) for i, t in enumerate(texts)),
    }
    results = {}
    for name, corpus in forms.items():
        r = Retriever.build(corpus, coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
        results[name] = [str(h.doc_id).lstrip("d") for h in r.search(QUERIES[0], k=8)]
    assert len({tuple(v) for v in results.values()}) == 1


def test_id_and_fields_pairs_keep_their_fields_as_metadata(tiny_encoder):
    stream = (("x", {"title": "vitamin", "text": "bone", "year": 2001}), ("y", {"text": "gene"}))
    r = Retriever.build(stream, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, store_text=True)
    hits = {h.doc_id: h for h in r.search("vitamin bone", k=2)}
    assert hits["x"].text == "vitamin bone" and hits["x"].metadata == {"title": "vitamin", "year": 2001}
    assert hits["y"].metadata is None
    vectors = r.encoder.encode(["z"], [r.coarse, r.fine])
    with pytest.raises(ValueError, match="the text of document 'z' is not valid Unicode"):
        r.add_vectors(["z"], vectors[r.coarse], vectors[r.fine], texts=["bad \ud800"])
    assert len(r) == 2


def test_beir_title_is_prepended(tiny_encoder):
    r = Retriever.build(
        {"x": {"title": "vitamin", "text": "bone"}}, coarse=(3, 8), fine=(12, 32), model=tiny_encoder
    )
    direct = tiny_encoder.encode("vitamin bone", [(12, 32)])[(12, 32)]
    np.testing.assert_allclose(r.backend.fine_store.vectors[0].astype(np.float32), direct, atol=2e-3)


def test_add_grows_and_duplicate_ids_leave_the_index_unchanged(tiny_encoder):
    texts = random_texts(12, seed=3)
    r = Retriever.build(
        {f"a{i}": t for i, t in enumerate(texts[:8])}, coarse=(3, 8), fine=(12, 32), model=tiny_encoder
    )
    r.add({f"a{i}": t for i, t in enumerate(texts[8:], start=8)})
    assert len(r) == 12 and len(r.backend.coarse_index) == 12 and len(r.backend.fine_store) == 12
    full = Retriever.build(
        {f"a{i}": t for i, t in enumerate(texts)}, coarse=(3, 8), fine=(12, 32), model=tiny_encoder
    )
    assert [h.doc_id for h in r.search(QUERIES[0], k=12)] == [h.doc_id for h in full.search(QUERIES[0], k=12)]
    before = [h.doc_id for h in r.search(QUERIES[0], k=12)]
    with pytest.raises(ValueError, match="'a3' is already in the index"):
        r.add({"new": "cell gene", "a3": "again"})
    with pytest.raises(TypeError, match="must be a str"):
        r.add({"new": "cell gene", "bad": None})
    assert len(r) == 12 and len(r.backend.coarse_index) == 12 and len(r.backend.fine_store) == 12
    assert [h.doc_id for h in r.search(QUERIES[0], k=12)] == before


def test_add_list_of_strings_continues_positions(tiny_encoder):
    r = Retriever.build(["cell gene", "bone risk"], coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    r.add(["virus infection"])
    assert r.doc_ids == [0, 1, 2]
    r.add({4: "lung tumour"})
    r.add(["heart", "liver"])  # past every int id the index holds: never a collision
    assert r.doc_ids == [0, 1, 2, 4, 5, 6]


@pytest.mark.parametrize("factory", ["HNSW16", "IVF4,Flat", "IVF2,PQ2x4"])
def test_approximate_coarse_indexes(tiny_encoder, corpus, factory):
    r = Retriever.build(
        corpus, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, index=factory, candidates=20
    )
    assert r.backend.coarse_index.is_trained and len(r.backend.coarse_index) == len(corpus)
    hits = r.search(QUERIES[0], k=len(corpus))  # never fewer than min(k, corpus size) hits
    assert sorted(h.doc_id for h in hits) == list(range(len(corpus)))
    if factory.startswith("IVF"):
        assert len(r.search(QUERIES[0], k=5, nprobe=2)) == 5


def test_search_parameters_are_per_call_and_leave_the_index_as_it_was(tiny_encoder, corpus):
    texts = random_texts(400, seed=11)
    r = Retriever.build(
        texts,
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        backend=FaissOptions(index="IVF8,Flat"),
        candidates=10,
        hybrid=False,
    )
    ivf = faiss.extract_index_ivf(r.backend.coarse_index.index)
    default = [[h.doc_id for h in hits] for hits in r.search_batch(QUERIES, k=5)]
    wide = [[h.doc_id for h in hits] for hits in r.search_batch(QUERIES, k=5, nprobe=8)]
    assert ivf.nprobe == 1  # nothing left set by the search
    assert [[h.doc_id for h in hits] for hits in r.search_batch(QUERIES, k=5)] == default
    # every list probed: the coarse stage is exact, so the funnel equals a Flat funnel over the same vectors
    flat = Retriever.from_vectors(
        r.encoder,
        (3, 8),
        (12, 32),
        r.doc_ids,
        r.backend.coarse_index.reconstruct_n(0, len(r)),
        np.asarray(r.backend.fine_store.vectors, dtype=np.float32),
        candidates=10,
        adaptation=r.adaptation,  # the same head: the same (projected) coarse queries
        backend=FaissOptions(index="Flat"),
    )
    assert wide == [[h.doc_id for h in hits] for hits in flat.search_batch(QUERIES, k=5)]
    hnsw = Retriever.build(
        texts[:50],
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        backend=FaissOptions(index="HNSW8"),
        hybrid=False,
    )
    hnsw.search(QUERIES[0], efSearch=7)
    assert faiss.downcast_index(hnsw.backend.coarse_index.index).hnsw.efSearch == 16
    for knobs, message in (
        ({"efSearch": "high"}, "efSearch must be an int >= 1, got 'high'"),
        ({"efSearch": 0}, "efSearch must be an int >= 1"),
        ({"nprobe": 2}, "has no search parameter 'nprobe'"),
        ({"ht": 2}, "unknown search parameter 'ht'"),
    ):
        with pytest.raises(ValueError, match=message):
            hnsw.search(QUERIES[0], **knobs)


def test_searches_from_many_threads_give_the_serial_results(tiny_encoder):
    from concurrent.futures import ThreadPoolExecutor

    texts = random_texts(300, seed=12)
    r = Retriever.build(
        texts,
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        backend=FaissOptions(index="IVF4,Flat"),
        candidates=20,
    )
    queries = random_texts(64, seed=13)
    knobs = [{"nprobe": 1 + i % 4} for i in range(len(queries))]  # each thread its own parameters
    serial = [[h.doc_id for h in r.search(q, k=5, **kn)] for q, kn in zip(queries, knobs)]
    with ThreadPoolExecutor(8) as pool:
        threaded = list(
            pool.map(lambda a: [h.doc_id for h in r.search(a[0], k=5, **a[1])], zip(queries, knobs))
        )
    assert threaded == serial


def test_from_vectors_equals_build(tiny_encoder, corpus):
    # float32 coarse rows: the encodings of two batchings differ in the last bits, which an int8 code
    # can round apart; the same vectors give the same answers
    flat = FaissOptions(index="Flat")
    retriever = Retriever.build(
        corpus, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=10, hybrid=False, backend=flat
    )
    vecs = retriever.encoder.encode(corpus, [(3, 8), (12, 32)])
    r = Retriever.from_vectors(
        retriever.encoder,
        (3, 8),
        (12, 32),
        list(range(len(corpus))),
        vecs[(3, 8)],
        vecs[(12, 32)],
        candidates=10,
        backend=flat,
    )
    for q in QUERIES:
        assert [h.doc_id for h in r.search(q, k=10)] == [h.doc_id for h in retriever.search(q, k=10)]
    with pytest.raises(ValueError, match=r"need coarse vectors of shape \(2, 8\)"):
        Retriever.from_vectors(tiny_encoder, (3, 8), (12, 32), ["a", "b"], vecs[(3, 8)], vecs[(12, 32)][:2])
    with pytest.raises(ValueError, match="'a' is already in the index"):
        Retriever.from_vectors(
            tiny_encoder, (3, 8), (12, 32), ["a", "a"], vecs[(3, 8)][:2], vecs[(12, 32)][:2]
        )
    with pytest.raises(ValueError, match="doc_ids is empty"):
        Retriever.from_vectors(tiny_encoder, (3, 8), (12, 32), [], vecs[(3, 8)][:0], vecs[(12, 32)][:0])


def test_vector_ingestion_checks_ids_and_vectors_where_they_enter(tiny_encoder, retriever):
    enc = retriever.encoder
    vecs = enc.encode(["a cell", "a bone"], [(3, 8), (12, 32)])
    coarse, fine = vecs[(3, 8)], vecs[(12, 32)]
    r = Retriever.from_vectors(enc, (3, 8), (12, 32), [np.int64(7), 8], coarse, fine)
    assert r.doc_ids == [7, 8] and type(r.doc_ids[0]) is int  # a NumPy id is an int, as json needs
    before = len(r)
    for ids, c, f, error, message in (
        ([None, 9], coarse, fine, TypeError, r"doc_ids\[0\] must be a str or int"),
        ([(1, 2), 9], coarse, fine, TypeError, "must be a str or int, got tuple"),
        ([9, 10], np.full_like(coarse, np.nan), fine, ValueError, "coarse vector of document 9 has norm nan"),
        ([9, 10], coarse, fine * 3, ValueError, "fine vector of document 9 has norm 3"),
        ([9, 10], coarse.astype(np.int32), fine, ValueError, "norm 0"),
    ):
        with pytest.raises(error, match=message):
            r.add_vectors(ids, c, f)
        assert len(r) == before and r.doc_ids == [7, 8]
    with pytest.raises(
        ValueError, match=r"coarse=\(12, 32\) is wider than fine=\(12, 16\) on the same layer"
    ):
        Retriever.build(["x"], coarse=(12, 32), fine=(12, 16), model=tiny_encoder)


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_a_scratch_file_left_by_a_killed_add_is_swept_and_one_in_use_refused(tiny_encoder, tmp_path, caplog):
    import fcntl

    pending = tmp_path / "fine.npy.pending"
    pending.write_bytes(b"left by a killed build")  # nobody holds its lock: its writer died
    with caplog.at_level("WARNING", logger="adaptive_retrieval.index"):
        r = Retriever.build(
            ["a", "b"],
            coarse=(3, 8),
            fine=(12, 32),
            model=tiny_encoder,
            backend=FaissOptions(fine_path=tmp_path / "fine.npy"),
        )
    assert "emptied a scratch file of 22 bytes" in caplog.text and not pending.exists()
    assert r.search("a", k=1)[0].doc_id == 0  # the leftover bytes did not become coarse vectors
    with open(pending, "wb") as held:  # another add is running: it holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match=r"fine.npy.pending is in use: another add or build"):
            r.add(["c"])
    assert len(r) == 2 and r.doc_ids == [0, 1]  # refused whole, nothing half-added
    r.add(["c"])  # the lock released (the file left as an add that was killed would leave it)
    assert len(r) == 3 and not pending.exists()


def test_searches_beside_an_add_see_the_index_before_or_after_it(tiny_encoder):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    texts = random_texts(400, seed=14)
    r = Retriever.build(
        texts[:200],
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        candidates=20,
        adapt=False,
        hybrid=False,
    )
    vecs = tiny_encoder.encode(texts, [(3, 8), (12, 32)])

    def prefix(n: int) -> Retriever:  # the index after the first n documents, serially
        return Retriever.from_vectors(
            tiny_encoder,
            (3, 8),
            (12, 32),
            list(range(n)),
            vecs[(3, 8)][:n],
            vecs[(12, 32)][:n],
            candidates=20,
        )

    queries = random_texts(40, seed=15) * 5
    prefixes = [prefix(n) for n in range(200, 401, 20)]  # built once: 11 states
    allowed = {q: [[h.doc_id for h in p.search(q, k=5)] for p in prefixes] for q in set(queries)}
    assert any(a[0] != a[-1] for a in allowed.values())  # the adds change some answers
    adder = threading.Thread(target=lambda: [r.add(texts[i : i + 20]) for i in range(200, 400, 20)])
    with ThreadPoolExecutor(8) as pool:
        adder.start()
        got = list(pool.map(lambda q: (q, [h.doc_id for h in r.search(q, k=5)]), queries))
        adder.join()
    assert len(r) == 400
    # each answer is the serial answer after some number of whole adds: never a half-committed one
    assert all(answer in allowed[q] for q, answer in got)
    assert [[h.doc_id for h in r.search(q, k=5)] for q in queries] == [allowed[q][-1] for q in queries]


@pytest.mark.parametrize("factory", ["Flat", "HNSW8"])
def test_a_failed_commit_leaves_the_coarse_index_whole(tiny_encoder, monkeypatch, factory):
    from adaptive_retrieval.index import CoarseIndex

    texts = random_texts(60, seed=16)
    r = Retriever.build(
        texts[:40], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, index=factory, adapt=False
    )
    before = [[h.doc_id for h in r.search(q, k=5)] for q in QUERIES]
    if factory == "Flat":  # a Flat index's new rows go into a new shard
        import adaptive_retrieval.index as index_module

        flat_of = index_module._flat_of

        def fill_then_fail(*args):  # the shard is filled, then memory runs out
            flat_of(*args)
            raise OSError("no space left on device")

        monkeypatch.setattr(index_module, "_flat_of", fill_then_fail)
    else:
        add = CoarseIndex.add

        def add_then_fail(self, vectors):  # the rows go in, then the disk fills up
            add(self, vectors)
            raise OSError("no space left on device")

        monkeypatch.setattr(CoarseIndex, "add", add_then_fail)
    with pytest.raises(OSError, match="no space left"):
        r.add(texts[40:])
    monkeypatch.undo()
    assert len(r.backend.coarse_index) == len(r) == 40 and len(r.backend.fine_store) == 40
    assert [[h.doc_id for h in r.search(q, k=5)] for q in QUERIES] == before
    r.add(texts[40:])  # and the next add works
    assert len(r.backend.coarse_index) == 60


def test_a_flat_index_grows_in_shards_and_never_copies_large_ones():
    """New rows go into a shard allocated at its final size; trailing shards less than twice the size
    of what follows are merged in; searches, row reads and files see one index."""
    from adaptive_retrieval.index import CoarseIndex

    rng = np.random.default_rng(5)
    rows = rng.standard_normal((1270, 16)).astype(np.float32)
    index = CoarseIndex(16, "Flat")
    index = index.grown(iter([rows[:600], rows[600:1000]]), 1000)
    assert [s.ntotal for s in index.shards] == [1000]
    first = index.index
    sizes = []
    for lo, hi in [(1000, 1100), (1100, 1110), (1110, 1170), (1170, 1270)]:
        before = index
        index = index.grown(iter([rows[lo:hi]]), hi - lo)
        assert len(before) == lo  # the index it grew from is left as it was
        sizes.append([s.ntotal for s in index.shards])
    # 1000 | 100 | 10 | 60 merges 10 and 100 (< 2 x 70, < 2 x 170) | 100 < 2 x 170: merged, 1000 kept
    assert sizes == [[1000, 100], [1000, 100, 10], [1000, 170], [1000, 270]]
    assert index.index is first  # the large shard's rows were never copied
    np.testing.assert_array_equal(index.reconstruct_n(0, 1270), rows)
    np.testing.assert_array_equal(index.reconstruct_n(990, 20), rows[990:1010])
    exact = CoarseIndex(16, "Flat")
    exact.add(rows)
    queries = rng.standard_normal((7, 16)).astype(np.float32)
    D, I = index.search(queries, 25)
    D_want, I_want = exact.search(queries, 25)
    np.testing.assert_allclose(D, D_want, rtol=1e-6)
    assert (I_want == I).all()
    _, I_all = index.search(queries, 2000)  # more than it holds: every row once, then -1
    assert sorted(I_all[0][:1270]) == list(range(1270)) and (I_all[:, 1270:] == -1).all()
    with pytest.raises(ValueError, match="announced"):
        index.grown(iter([rows[:5]]), 6)
    with pytest.raises(TypeError, match="not Flat"):
        CoarseIndex(16, "HNSW8").grown(iter([rows[:5]]), 5)
    index.remove_from(1105)  # a roll-back across shards
    np.testing.assert_array_equal(index.reconstruct_n(0, len(index)), rows[:1105])
    index.add(rows[1105:1110])  # in place: at the end, in the last shard
    np.testing.assert_array_equal(index.reconstruct_n(0, len(index)), rows[:1110])
    same = np.repeat(rows[:1], 12, axis=0)  # ties across shards go to the lower id, as the re-rank does
    tied = CoarseIndex(16, "Flat").grown(iter([same[:8]]), 8).grown(iter([same[8:]]), 4)
    assert [s.ntotal for s in tied.shards] == [8, 4]
    assert tied.search(same[:1], 5)[1].tolist() == [[0, 1, 2, 3, 4]]


def test_the_default_coarse_index_codes_every_coordinate_over_minus_one_to_one():
    """SQ8 (the engine's default) is ready without training, at [-1, 1]: a later row outside what the
    first rows spanned is coded, not clamped (FAISS's own training on those rows would clamp it); a
    4-bit quantizer is left to FAISS; compaction keeps the kept rows' codes as they were."""
    from adaptive_retrieval.codes import DEFAULT_FACTORY
    from adaptive_retrieval.index import CoarseIndex

    assert FaissOptions().index == DEFAULT_FACTORY == "SQ8"
    rng = np.random.default_rng(3)
    narrow = rng.standard_normal((500, 16)).astype(np.float32) * 0.05
    narrow[:, 0] += 1.0
    narrow /= np.linalg.norm(narrow, axis=1, keepdims=True)  # first coordinate near 1, the others small
    later = np.zeros((1, 16), np.float32)
    later[0, 1] = 1.0  # a document unlike the first ones: its second coordinate is 1
    for factory in ("SQ8", "HNSW8_SQ8"):
        index = CoarseIndex(16, factory)
        assert index.is_trained  # nothing to train
        index.add(narrow)
        index.add(later)
        back = index.reconstruct_n(0, len(index))
        np.testing.assert_allclose(back, np.concatenate([narrow, later]), atol=1 / 255 + 1e-6)
    trained = faiss.index_factory(16, "SQ8", faiss.METRIC_INNER_PRODUCT)
    trained.train(narrow)
    trained.add(later)
    assert trained.reconstruct(0)[1] < 0.5  # what the range spared us: FAISS's range clamps it
    assert not CoarseIndex(16, "SQ4").is_trained
    sq8 = CoarseIndex(16, "SQ8")
    sq8.add(narrow)
    keep = np.arange(0, 500, 3)
    kept = sq8.compacted(keep)
    codes = faiss.vector_to_array(faiss.downcast_index(sq8.index).codes).reshape(500, 16)
    kept_codes = faiss.vector_to_array(faiss.downcast_index(kept.index).codes).reshape(len(keep), 16)
    np.testing.assert_array_equal(kept_codes, codes[keep])
    assert sq8.nbytes() < 500 * 16 + 1024 < CoarseIndex(16).nbytes() + 500 * 16 * 4  # a byte a coordinate


def test_product_quantizers_train_without_the_polysemous_step_and_answer_the_same():
    """FAISS's factory gives a plain PQ a polysemous training step (seconds per codebook, unused by an
    inner-product search): the coarse index skips it, so its code books are those of the ``np`` string's."""
    from adaptive_retrieval.index import CoarseIndex

    rng = np.random.default_rng(5)
    docs = rng.standard_normal((600, 16)).astype(np.float32)
    queries = rng.standard_normal((20, 16)).astype(np.float32)
    for factory in ("PQ4", "OPQ4,PQ4", "IVF4,PQ4"):
        ours, plain = CoarseIndex(16, factory), CoarseIndex(16, factory + "np")
        for index in (ours, plain):
            index.train(docs)
            index.add(docs)
        pq = _pq_of(ours)
        assert not pq.do_polysemous_training
        centroids = [faiss.vector_to_array(of.pq.centroids) for of in (pq, _pq_of(plain))]
        np.testing.assert_array_equal(centroids[0], centroids[1])  # polysemous training reorders them
        for got, want in zip(ours.search(queries, 10), plain.search(queries, 10), strict=True):
            np.testing.assert_array_equal(got, want)


def _pq_of(index) -> faiss.Index:
    inner = faiss.downcast_index(index.index)
    return faiss.downcast_index(inner.index) if isinstance(inner, faiss.IndexPreTransform) else inner


def test_a_default_build_holds_int8_coarse_rows_and_answers_as_float32_does(tiny_encoder):
    texts = random_texts(300, seed=31)
    kwargs = dict(coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=20, hybrid=False)
    r = Retriever.build(texts, **kwargs)
    flat = Retriever.build(texts, **kwargs, backend=FaissOptions(index="Flat"))
    assert r.backend.describe() == "SQ8" and "index='SQ8'" in repr(r)
    coarse_bytes, _ = r.backend.nbytes()
    assert coarse_bytes < 300 * 8 * 2  # a byte per coordinate (and a header), not four
    same = [
        len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10
        for a, b in zip(r.search_batch(QUERIES, k=10), flat.search_batch(QUERIES, k=10))
    ]
    assert np.mean(same) >= 0.9, same


def test_a_loaded_store_grows_where_the_kernel_copies_nothing(tmp_path, monkeypatch):
    """``copy_file_range`` may copy nothing on some file systems: the copy to the grow file falls back to reads."""
    import os

    from adaptive_retrieval.index import FineStore

    rows = np.random.default_rng(1).standard_normal((50, 8)).astype(np.float16)
    FineStore(rows).save(tmp_path / "fine.npy")
    loaded = FineStore.load(tmp_path / "fine.npy")
    monkeypatch.setattr(os, "copy_file_range", lambda *args: 0, raising=False)
    loaded.extend(np.ones((2, 8), np.float32))
    np.testing.assert_array_equal(np.asarray(loaded.vectors[:50]), rows)
    assert len(loaded) == 52
    loaded.close()


def test_a_loaded_flat_index_grows_by_a_shard_saved_as_its_own_file(tiny_encoder, tmp_path, monkeypatch):
    """An add to a loaded Flat index leaves the loaded rows where they are: the new ones form a shard,
    built before the write lock is taken, saved as one more file, and read back as one index."""
    from adaptive_retrieval.index import CoarseIndex

    texts = random_texts(110, seed=23)
    r = Retriever.build(
        texts[:100],
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        adapt=False,
        backend=FaissOptions(index="Flat"),
    )
    r.save(tmp_path / "a")
    loaded = Retriever.load(tmp_path / "a", model=tiny_encoder)
    first = loaded.backend.coarse_index.index
    locked: list[bool] = []
    grown = CoarseIndex.grown

    def spy(self, blocks, count):
        locked.append(loaded._lock._writing)
        return grown(self, blocks, count)

    monkeypatch.setattr(CoarseIndex, "grown", spy)
    loaded.add({f"new{i}": t for i, t in enumerate(texts[100:])})
    assert locked == [False]
    assert loaded.backend.coarse_index.index is first
    assert [s.ntotal for s in loaded.backend.coarse_index.shards] == [100, 10]
    whole = Retriever.build(
        {**{i: t for i, t in enumerate(texts[:100])}, **{f"new{i}": t for i, t in enumerate(texts[100:])}},
        coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False,
    )  # fmt: skip
    queries = [*QUERIES, texts[105], texts[3]]
    want = [[(h.doc_id, round(h.score, 5)) for h in whole.search(q, k=10, candidates=20)] for q in queries]
    got = [[(h.doc_id, round(h.score, 5)) for h in loaded.search(q, k=10, candidates=20)] for q in queries]
    assert got == want
    loaded.save(tmp_path / "b")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert {"coarse", "coarse-1"} <= set(manifest["files"])
    assert manifest["format_version"] == 2  # a library reading version 1 only refuses it by its version
    assert json.loads((tmp_path / "a" / "manifest.json").read_text())["format_version"] == 1
    again = Retriever.load(tmp_path / "b", model=tiny_encoder)
    assert [s.ntotal for s in again.backend.coarse_index.shards] == [100, 10]
    assert [
        [(h.doc_id, round(h.score, 5)) for h in again.search(q, k=10, candidates=20)] for q in queries
    ] == want
    del manifest["files"]["coarse-1"]  # a shard's file missing from the manifest: refused, not misread
    for key in ("sha256", "sample_sha256", "sizes"):
        del manifest[key]["coarse-1"]
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="inconsistent"):
        Retriever.load(tmp_path / "b", model=tiny_encoder)


@pytest.mark.parametrize("factory", ["HNSW8", "IVF4,Flat"])
def test_an_hnsw_add_builds_its_graph_while_searches_go_on(tiny_encoder, monkeypatch, factory):
    """HNSW cannot remove rows, so an add inserts into a copy: that copy is built before the write lock
    is taken (searches go on meanwhile) and swapped in under it. Flat and IVF rows go in under the lock,
    in place, quickly. Either way the add's result is the same as a build of all the documents."""
    from adaptive_retrieval.index import CoarseIndex

    texts = random_texts(90, seed=31)
    r = Retriever.build(texts[:60], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, index=factory)
    before = r.backend.coarse_index
    locked_during_adds: list[bool] = []
    original = CoarseIndex.add

    def add(self, vectors):
        locked_during_adds.append(r._lock._writing)
        return original(self, vectors)

    monkeypatch.setattr(CoarseIndex, "add", add)
    r.add({f"new{i}": t for i, t in enumerate(texts[60:])})
    hnsw = factory.startswith("HNSW")
    assert locked_during_adds and all(locked is not hnsw for locked in locked_during_adds)
    assert (r.backend.coarse_index is not before) == hnsw and len(r.backend.coarse_index) == 90
    assert len(before) == (60 if hnsw else 90)  # the searched copy never saw a partial add
    assert r.backend._prepared is None
    hits = r.search(texts[75], k=1, candidates=90)
    assert hits[0].doc_id == "new15"


@pytest.mark.parametrize(
    "factory, hnsw",
    [
        ("Flat", False),
        ("HNSW16", True),
        ("PCA8,HNSW16", True),
        ("IDMap,HNSW16", True),
        ("IVF4_HNSW8,Flat", False),
    ],
)
def test_hnsw_is_seen_through_wrappers(factory, hnsw):
    """An HNSW graph inside a transform or an id map cannot remove rows either: its adds go to a copy."""
    from adaptive_retrieval.index import CoarseIndex

    index = faiss.index_factory(16, factory, faiss.METRIC_INNER_PRODUCT)
    assert CoarseIndex(16, factory, index=index).is_hnsw() is hnsw


def test_the_int8_query_encoder_is_made_once_however_many_threads_ask(tiny_encoder, monkeypatch):
    import threading
    import time

    from adaptive_retrieval import Encoder

    r = Retriever.build(random_texts(20, seed=41), coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    made = []

    def quantized(self, sample_texts=None):
        made.append(self)
        time.sleep(0.2)  # long enough for every thread to ask meanwhile
        return self

    monkeypatch.setattr(Encoder, "quantized", quantized)
    r.set_query_precision("int8")
    got = []
    threads = [threading.Thread(target=lambda: got.append(r.query_encoder)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(made) == 1 and len(got) == 4 and all(g is got[0] for g in got)


def test_a_second_add_while_one_runs_is_refused(tiny_encoder):
    import threading

    texts = random_texts(30, seed=70)
    r = Retriever.build(texts[:20], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False)
    entered, release = threading.Event(), threading.Event()

    def slow():
        yield ("t1-a", texts[20])
        entered.set()
        release.wait(30)
        yield ("t1-b", texts[21])

    first = threading.Thread(target=r.add, args=(slow(),))
    first.start()
    assert entered.wait(30)
    with pytest.raises(RuntimeError, match="another write .* is running on this retriever"):
        r.add({"t2": texts[22]})
    release.set()
    first.join(30)
    assert r.doc_ids[20:] == ["t1-a", "t1-b"]
    fine = r.encoder.encode([texts[20]], [r.fine])[r.fine][0]
    assert r.search(texts[20], k=1)[0].doc_id == "t1-a" and np.isclose(
        r.search(texts[20], k=1)[0].score, fine @ fine, atol=1e-2
    )
    r.add({"t2": texts[22]})  # afterwards, fine
    assert len(r) == 23
