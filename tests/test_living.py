"""A living index: delete, upsert, compact, metadata filters (issue #30)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from adaptive_retrieval.backends.faiss import FaissOptions
from adaptive_retrieval.errors import CorpusError, CorpusTypeError, InvalidArgument
from adaptive_retrieval.results import SearchTimings
from tests.helpers import SQ8_HALF_STEP, random_texts

# the dense funnel under deletes, filters and compaction (hybrid search under them: test_hybrid.py)
VIEWS = {"coarse": (3, 8), "fine": (12, 32), "hybrid": False}
SECTIONS = ("libs", "admin", "games", "net")


def corpus_of(n: int, seed: int = 0) -> dict[str, dict]:
    texts = random_texts(n, seed=seed)
    return {
        f"d{i}": {"text": t, "section": SECTIONS[i % 4], "size": i, "stable": i % 10 == 0}
        for i, t in enumerate(texts)
    }


def exact_top(r: Retriever, query: str, k: int, keep) -> list[str]:
    """The exact fine view's top k among the documents ``keep(doc_id)`` accepts, by brute force over the
    stored fine vectors (the reference a filtered search must return)."""
    fine = r.backend.vectors("fine", 0, len(r.ids))
    q = r.encoder.encode(r.encoder.as_queries([query]), [r.fine])[r.fine][0]
    scores = fine @ q
    rows = [row for row, d in enumerate(r.ids.ids) if d is not None and keep(d)]
    best = sorted(rows, key=lambda row: (-scores[row], row))[:k]
    return [r.ids[row] for row in best]


@pytest.fixture
def docs() -> dict[str, dict]:
    return corpus_of(240)


@pytest.mark.parametrize("index", ["Flat", "HNSW16", "IVF8,Flat"])
@pytest.mark.parametrize("section", [None, "libs"])
def test_a_filtered_search_returns_the_exact_fine_top_k_among_the_matching(
    tiny_encoder, docs, index, section
):
    r = Retriever.build(docs, model=tiny_encoder, backend=FaissOptions(index=index), candidates=60, **VIEWS)
    r.exact_below = 0  # the filtered funnel, not the exact path
    flt = {"size": {"$gte": 100}} if section is None else {"section": section, "size": {"$lt": 200}}

    def keep(d: str) -> bool:
        size = docs[d]["size"]
        return size >= 100 if section is None else docs[d]["section"] == section and size < 200

    overlaps, unfiltered = [], []
    for query in random_texts(12, seed=5):
        hits = r.search(query, k=10, filter=flt)
        assert all(keep(h.doc_id) for h in hits) and len(hits) == 10
        overlaps.append(len({h.doc_id for h in hits} & set(exact_top(r, query, 10, keep))) / 10)
        plain = {h.doc_id for h in r.search(query, k=10)}
        unfiltered.append(len(plain & set(exact_top(r, query, 10, lambda d: True))) / 10)
    # the fidelity of an unfiltered search of the same index (Flat: exact among the matching)
    assert np.mean(overlaps) >= (0.99 if index == "Flat" else min(np.mean(unfiltered) - 0.05, 0.9)), (
        overlaps,
        unfiltered,
    )


def test_a_filter_matching_few_documents_ranks_them_exactly(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, backend=FaissOptions(index="HNSW16"), candidates=5, **VIEWS)
    timings = SearchTimings()
    query = random_texts(1, seed=9)[0]
    hits = r.search_batch([query], k=30, filter={"stable": True}, timings=timings)[0]
    assert [h.doc_id for h in hits] == exact_top(r, query, 30, lambda d: docs[d]["stable"])
    assert len(hits) == 24 and timings.paths == {"filtered exact": 1} and timings.matched == [24]
    r.search_batch([query], k=3, timings=timings)
    assert timings.paths == {"filtered exact": 1, "funnel": 1}


def test_filters_combine_and_are_refused_clearly(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    q = "alpha"
    both = r.search(q, k=300, filter={"$or": [{"section": "net"}, {"size": {"$in": [1, 2]}}]})
    assert {h.doc_id for h in both} == {
        d for d, v in docs.items() if v["section"] == "net" or v["size"] in (1, 2)
    }
    ne = r.search(q, k=300, filter={"section": {"$nin": ["libs", "admin"]}, "size": {"$ne": 3}})
    assert {h.doc_id for h in ne} == {
        d for d, v in docs.items() if v["section"] in ("games", "net") and v["size"] != 3
    }
    assert r.search(q, k=3, filter={"section": "nowhere"}) == []
    for bad, match in [
        ({"colour": "red"}, "filter field 'colour': no document has it"),
        ({"size": "big"}, "field 'size' holds number values; the filter compares it with a string"),
        ({"size": {"$between": 1}}, "unknown operator '\\$between'"),
        ({"$not": {"size": 1}}, "unknown operator '\\$not'"),
        ({"section": {"$in": "libs"}}, "must be a non-empty list"),
        ({}, "filter is empty"),
        ({"stable": {"$gt": True}}, "compares numbers or strings"),
    ]:
        with pytest.raises(InvalidArgument, match=match):
            r.search(q, filter=bad)
    with pytest.raises(TypeError, match="filter must be a dict"):
        r.search(q, filter="section=libs")
    with pytest.raises(TypeError, match="filters compare strings, numbers and booleans"):
        r.search(q, filter={"size": [1, 2]})


def test_delete_is_seen_by_the_next_search_and_refuses_unknown_ids_whole(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, store_text=True, **VIEWS)
    query = docs["d7"]["text"]
    assert r.search(query, k=1)[0].doc_id == "d7"
    with pytest.raises(CorpusError, match="'nope' is not in the index; nothing was deleted"):
        r.delete(["d7", "nope"])
    assert "d7" in r and len(r) == 240 and r.search(query, k=1)[0].doc_id == "d7"
    with pytest.raises(CorpusTypeError, match="a list of document ids"):
        r.delete("d7")
    with pytest.raises(InvalidArgument, match="missing must be"):
        r.delete(["d7"], missing="skip")
    assert r.delete(["d7", "nope", "d7"], missing="ignore") == 1
    assert "d7" not in r and len(r) == 239 and r.ids.dead == 1
    hits = r.search(query, k=239)
    assert len(hits) == 239 and "d7" not in {h.doc_id for h in hits}
    assert r.delete([]) == 0


def test_upsert_replaces_text_metadata_and_vectors_and_adds_new_ids(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, store_text=True, **VIEWS)
    new_text = docs["d3"]["text"]
    r.upsert({"d5": {"text": new_text, "section": "moved"}, "d999": {"text": "brand new words", "size": 5}})
    assert len(r) == 241 and r.ids.dead == 1
    top = r.search(new_text, k=2)
    assert {h.doc_id for h in top} == {"d3", "d5"}
    d5 = next(h for h in top if h.doc_id == "d5")
    assert d5.text == new_text and d5.metadata == {"section": "moved"}
    assert [h.doc_id for h in r.search(new_text, k=5, filter={"section": "moved"})] == ["d5"]
    with pytest.raises(CorpusError, match="'d1' appears twice"):
        r.upsert([("d1", "one"), ("d1", "two")])  # twice in one upsert
    assert r.search(docs["d1"]["text"], k=1)[0].doc_id == "d1"


def test_a_failed_upsert_leaves_every_document_as_it_was(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, store_text=True, **VIEWS)
    before = r.search(docs["d2"]["text"], k=5)

    def stream():
        yield "d2", "replacement text"
        yield "new", "a new document"
        raise KeyboardInterrupt  # interrupted while the upsert is staged

    with pytest.raises(KeyboardInterrupt):
        r.upsert(stream(), chunk_size=1)
    assert len(r) == 240 and r.ids.dead == 0 and "new" not in r
    assert r.search(docs["d2"]["text"], k=5) == before


def test_deletes_and_metadata_survive_save_load_and_compact_reclaims_rows(tiny_encoder, docs, tmp_path):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)  # no texts: metadata kept all the same
    r.compact_at = None
    r.delete([f"d{i}" for i in range(0, 240, 3)])
    r.upsert({"d1": {"text": "zebra words", "section": "zoo"}})
    query = random_texts(1, seed=3)[0]
    flt = {"section": {"$in": ["libs", "zoo"]}}
    expected = r.search(query, k=20, filter=flt)
    assert all(h.metadata["section"] in ("libs", "zoo") for h in expected)
    r.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(loaded) == len(r) == 160 and loaded.ids.dead == 81
    assert loaded.search(query, k=20, filter=flt) == expected
    assert loaded.compact() == 81 and len(loaded.ids) == 160 and loaded.ids.dead == 0
    assert loaded.search(query, k=20, filter=flt) == expected  # rows renumbered, answers the same
    assert loaded.backend.nbytes()[1] == 160 * 32 * 2  # float16 fine rows of the live documents only
    loaded.save(tmp_path / "idx")
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert again.search(query, k=20, filter=flt) == expected and again.ids.dead == 0


@pytest.mark.parametrize("index", ["HNSW16", "IVF8,Flat"])
def test_compact_keeps_the_answers_of_every_kind_of_index(tiny_encoder, docs, index):
    r = Retriever.build(docs, model=tiny_encoder, backend=FaissOptions(index=index), candidates=240, **VIEWS)
    r.compact_at = None
    r.delete([f"d{i}" for i in range(100)])
    queries = random_texts(5, seed=4)
    whole = {"nprobe": 8} if index.startswith("IVF") else {"efSearch": 240}  # the coarse stage misses nothing
    before = [[h.doc_id for h in hits] for hits in r.search_batch(queries, k=10, **whole)]
    assert r.compact() == 100
    after = [[h.doc_id for h in hits] for hits in r.search_batch(queries, k=10, **whole)]
    assert after == before  # the whole index re-ranked: the exact fine view's answer either way


def test_compact_runs_itself_once_dead_rows_pass_the_threshold(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    r.delete([f"d{i}" for i in range(50)])  # 50 of 240 rows: under 25%
    assert r.ids.dead == 50 and len(r.ids) == 240
    r.delete([f"d{i}" for i in range(50, 60)])  # 60 of 240: compacted
    assert r.ids.dead == 0 and len(r.ids) == len(r) == 180


def test_on_disk_fine_store_is_compacted_in_its_own_file(tiny_encoder, docs, tmp_path):
    path = tmp_path / "fine.npy"
    r = Retriever.build(docs, model=tiny_encoder, backend=FaissOptions(fine_path=str(path)), **VIEWS)
    r.delete(["d0", "d1"])
    assert r.compact() == 2
    assert np.load(path, mmap_mode="r").shape == (238, 32) and r.backend.fine_store.path == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fine.npy"]


def test_searches_beside_deletes_and_upserts_see_a_whole_state(tiny_encoder, docs):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    r.compact_at = 0.1
    pairs = [(f"d{i}", f"d{i + 120}") for i in range(0, 60, 2)]  # each write deletes one, re-adds the other
    queries = random_texts(4, seed=11)
    errors: list[BaseException] = []
    stop = threading.Event()

    def search() -> None:
        while not stop.is_set():
            try:
                for hits in r.search_batch(queries, k=240):
                    ids = [h.doc_id for h in hits]
                    # a state between two writes: each pair has at most one... and never a duplicate
                    assert len(ids) == len(set(ids))
            except BaseException as err:
                errors.append(err)
                return

    threads = [threading.Thread(target=search) for _ in range(2)]
    for t in threads:
        t.start()
    for gone, replaced in pairs:
        r.delete([gone])
        r.upsert({replaced: {"text": "replaced words", "section": "x"}})
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    assert len(r) == 240 - len(pairs)


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_keyed_engines_delete_upsert_and_filter(tiny_encoder, tmp_path, engine):
    from tests.test_backends import engine_count, engine_options

    texts = random_texts(40, seed=2)
    corpus = {f"d{i}": {"text": t, "n": i} for i, t in enumerate(texts)}
    r = Retriever.build(
        corpus, model=tiny_encoder, backend=engine, backend_options=engine_options(engine, tmp_path), **VIEWS
    )
    faiss = Retriever.build(corpus, model=tiny_encoder, **VIEWS)
    query = texts[3]
    flt = {"n": {"$lt": 12}}
    assert [h.doc_id for h in r.search(query, k=5, filter=flt)] == [
        h.doc_id for h in faiss.search(query, k=5, filter=flt)
    ]
    r.upsert(
        {"d1": {"text": texts[7], "n": 100}}
    )  # a new version, under a new key, beside the old until the commit
    faiss.upsert({"d1": {"text": texts[7], "n": 100}})
    assert len(r) == 40 and engine_count(r) == 40  # the old version's point purged after the commit
    assert {h.doc_id for h in r.search(texts[7], k=2)} == {"d1", "d7"}
    assert [h.metadata for h in r.search(texts[7], k=5, filter={"n": 100})] == [{"n": 100}]
    r.compact_at = None
    assert r.delete(["d3", "d5"]) == 2 and faiss.delete(["d3", "d5"]) == 2
    assert engine_count(r) == 38  # the points are gone, and the records of the delete
    assert [h.doc_id for h in r.search(query, k=38)] == [h.doc_id for h in faiss.search(query, k=38)]
    r.save(tmp_path / "idx")
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(again) == 38 and "d3" not in again and again.search(query, k=1)[0].doc_id != "d3"
    assert {h.doc_id for h in again.search(texts[7], k=2)} == {"d1", "d7"}  # the new version, reopened
    again.upsert({"d1": texts[9]})  # and replaced again after a reopen (its key is no longer its id's)
    assert {h.doc_id for h in again.search(texts[9], k=2)} == {"d1", "d9"} and len(again) == 38


def test_a_delete_recorded_but_not_purged_is_never_adopted(tiny_encoder, tmp_path, monkeypatch):
    from tests.test_backends import engine_count, engine_options

    texts = random_texts(20, seed=3)
    r = Retriever.build(
        dict(enumerate(texts)), model=tiny_encoder, backend="qdrant",
        backend_options=engine_options("qdrant", tmp_path), **VIEWS,
    )  # fmt: skip
    r.compact_at = None

    def fails(keys):
        raise OSError("connection lost")

    monkeypatch.setattr(r.backend, "_delete", fails)  # the process dies, in effect, before the purge
    assert r.delete([4]) == 1 and 4 not in r and engine_count(r) == 20  # deleted here; the point remains
    monkeypatch.undo()
    r.save(tmp_path / "idx")
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(again) == 19 and 4 not in again  # its delete record keeps it out
    again.close()
    dropped = Retriever.load(tmp_path / "idx", model=tiny_encoder, backend_options={"drop_uncommitted": True})
    assert len(dropped) == 19 and engine_count(dropped) == 19  # and a reopen that drops leftovers purges it


def test_refit_turns_the_coarse_view_to_the_documents_held_now(tiny_encoder):
    first, second = random_texts(150, seed=40), random_texts(150, seed=41, min_words=3, max_words=6)
    r = Retriever.build(first, model=tiny_encoder, candidates=20, **VIEWS)
    assert r.fitted_head
    r.compact_at = None
    r.upsert(list(enumerate(second)))  # every document replaced by one of another kind (short)
    old = r.projection.copy()
    drift = r.drift()
    assert 0 < drift.kept <= drift.best and drift.documents == 150
    query = second[7]
    done = r.refit()
    assert done.ratio == pytest.approx(1.0) and not done.due and r.ids.dead == 0
    assert not np.allclose(r.projection, old) and r.calibration is None
    stored = r.backend.vectors("coarse", 0, len(r))
    assert np.allclose(
        stored, r.project(r.backend.vectors("fine", 0, len(r))), atol=2 * SQ8_HALF_STEP
    )  # re-projected
    assert r.drift().ratio == pytest.approx(1.0, abs=1e-6)
    assert r.search(query, k=1)[0].doc_id == 7
    # the early head, turned onto the new directions (an approximation: it saw only the old ones), still
    # lands in the documents' space: most texts find themselves through it (here: 45 of 50)
    found = [r.search(q, k=1, coarse_query="early")[0].doc_id for q in second[:50]]
    assert sum(f == i for i, f in enumerate(found)) >= 40
    fresh = Retriever.build(list(enumerate(second)), model=tiny_encoder, candidates=20, adapt=False, **VIEWS)
    with pytest.raises(InvalidArgument, match="no projection to refit"):
        fresh.refit()


def test_a_compaction_that_fails_leaves_the_index_as_it_was(tiny_encoder, docs, monkeypatch):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    r.compact_at = None
    r.delete([f"d{i}" for i in range(100)])
    query = random_texts(1, seed=8)[0]
    before = r.search(query, k=10, filter={"section": "libs"})

    def broken(keep):
        raise OSError("disk full")

    monkeypatch.setattr(r.metadata, "compacted", broken)  # fails after the engine's part was built
    with pytest.raises(OSError, match="disk full"):
        r.compact()
    assert (
        r.ids.dead == 100
        and len(r.backend) == 240
        and r.search(query, k=10, filter={"section": "libs"}) == before
    )
    r.compact_at = 0.25
    r.delete(["d100"])  # compaction due: it fails again, is logged, and the delete stands
    assert "d100" not in r and r.ids.dead == 101
    deleted = r.search(query, k=10, filter={"section": "libs"})
    monkeypatch.undo()
    assert r.compact() == 101 and r.search(query, k=10, filter={"section": "libs"}) == deleted


def test_an_id_map_commit_interrupted_half_way_is_undone_whole():
    from adaptive_retrieval.ids import IdMap

    ids = IdMap(["a", "b", "c"])
    ids.stage_delete(["b"])

    class Interrupting(list):
        raised = False

        def __iter__(self):
            if not Interrupting.raised:  # once: after the deaths, before the new rows
                Interrupting.raised = True
                raise KeyboardInterrupt
            return super().__iter__()

    ids.stage(["d"])
    ids._staged = Interrupting(ids._staged)
    with pytest.raises(KeyboardInterrupt):
        ids.commit()
    ids.rollback(committed=False)  # what the transaction does for the participant that raised
    assert list(ids.ids) == ["a", "b", "c"] and ids.row("b") == 1 and ids.alive is None and ids.count == 3


def test_metadata_edge_cases(tiny_encoder):
    r = Retriever.build(
        {"a": {"text": "alpha beta", "size": 3, "big": 2**60}, "b": {"text": "gamma delta", "size": 7}},
        model=tiny_encoder, adapt=False, **VIEWS,
    )  # fmt: skip
    assert {h.doc_id for h in r.search("alpha", k=5, filter={"size": {"$in": [3, "x"]}})} == {
        "a"
    }  # mixed kinds
    with pytest.raises(InvalidArgument, match="integers beyond 2\\*\\*53"):
        r.search("alpha", filter={"big": 2**60})
    assert r.search("alpha", k=1)[0].metadata == {"size": 3, "big": 2**60}  # kept, returned, not filterable
    with pytest.raises(CorpusTypeError, match="upsert needs the documents' ids"):
        r.upsert(["a list of strings"])


def test_a_list_of_strings_added_after_compaction_gets_new_ids(tiny_encoder):
    r = Retriever.build(random_texts(10, seed=12), model=tiny_encoder, adapt=False, **VIEWS)
    r.delete(list(range(5)))  # 50% dead: compacted, 5 rows left
    assert len(r.ids) == 5
    r.add(["a new text"])
    assert 10 in r and len(r) == 6


def test_metadata_follows_its_documents_through_a_reopened_engine(tiny_encoder, tmp_path):
    pytest.importorskip("qdrant_client")
    texts = random_texts(30, seed=13)
    r = Retriever.build(
        {f"d{i}": {"text": t, "n": i} for i, t in enumerate(texts)}, model=tiny_encoder, backend="qdrant",
        backend_options={"path": str(tmp_path / "q"), "collection": "m"}, adapt=False, **VIEWS,
    )  # fmt: skip
    r.save(tmp_path / "idx")
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    hits = again.search(texts[4], k=30)
    assert (
        all(h.metadata == {"n": int(h.doc_id[1:])} for h in hits) and len(hits) == 30
    )  # rows renumbered in the engine's order


def test_old_metadata_files_go_with_their_generation(tiny_encoder, docs, tmp_path):
    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    r.save(tmp_path / "idx")
    r.delete(["d1"])
    r.save(tmp_path / "idx")
    assert len(list((tmp_path / "idx").glob("metadata-*"))) == 1


def test_calibrate_measures_how_far_a_filtered_shortlist_widens(tiny_encoder, docs, tmp_path):
    from adaptive_retrieval.querying import FILTER_EXPONENT, filtered_shortlist

    r = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    cal = r.calibrate(documents=docs, target=0.9)
    exponent = cal.measured["filter_exponent"]
    assert 0.0 <= exponent <= 1.0 and "filtered_needed@0.5" in cal.measured
    half = np.arange(240) % 2 == 0
    assert filtered_shortlist(50, half, cal) == int(np.ceil(50 / 0.5**exponent))
    assert filtered_shortlist(50, half) == int(
        np.ceil(50 / 0.5**FILTER_EXPONENT)
    )  # uncalibrated: the default
    assert filtered_shortlist(50, half, cal, node=None) == 50  # live rows only, no filter: kept
    r.save(tmp_path / "idx")
    assert (
        Retriever.load(tmp_path / "idx", model=tiny_encoder).calibration.measured["filter_exponent"]
        == exponent
    )


def test_calibrate_chooses_an_ivf_index_nprobe_with_its_shortlist(tiny_encoder, tmp_path):
    docs = corpus_of(600, seed=3)
    r = Retriever.build(docs, model=tiny_encoder, backend=FaissOptions(index="IVF16,Flat"), **VIEWS)
    assert r.backend.coarse_index.ivf().nprobe == 1  # FAISS's default: one list of 16
    queries = random_texts(40, seed=9)

    def overlap(**knobs) -> float:
        got = r.search_batch(queries, k=10, hybrid=False, **knobs)
        exact = r.search_batch(queries, k=10, candidates=600, nprobe=16)  # every list: the exact top 10
        return float(
            np.mean([len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10 for a, b in zip(got, exact)])
        )

    narrow = overlap()
    cal = r.calibrate(documents=docs, target=0.95)
    nprobe = cal.knobs["nprobe"]
    assert nprobe > 1 and f"needed@nprobe={nprobe}" in cal.measured and cal.measured["fit_overlap"] >= 0.95
    assert overlap() >= 0.9 > narrow  # the calibrated width and shortlist, searched by default
    assert overlap(nprobe=1) < overlap()  # a call's own nprobe goes first
    params = r.backend.search_parameters(calibrated=cal.knobs)
    assert params == {"base_nprobe": nprobe}  # under a filter, widened from the calibrated width
    assert r.backend.filtered_cost(0.5, 10, params) > r.backend.filtered_cost(0.5, 10)
    r.save(tmp_path / "idx")
    assert Retriever.load(tmp_path / "idx", model=tiny_encoder).calibration.knobs == {"nprobe": nprobe}
    flat = Retriever.build(docs, model=tiny_encoder, **VIEWS)
    assert flat.calibrate(documents=docs, target=0.95).knobs == {}  # one width: nothing to choose
