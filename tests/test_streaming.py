"""Streaming builds with the fine store on disk, roll-back of failed adds, and the blocked exact search."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_retrieval import FaissOptions, Retriever
from adaptive_retrieval.index import CoarseIndex, CoarseSpill, FineStore, mapping_of
from tests.helpers import QUERIES, random_texts, stream


def test_on_disk_fine_store_is_a_growing_npy_and_rolls_back(tmp_path):
    store = FineStore.on_disk(tmp_path / "fine.npy", 8)
    a = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    store.extend(a)
    store.extend(2 * a)
    on_disk = np.load(tmp_path / "fine.npy", mmap_mode="r")
    assert on_disk.shape == (10, 8) and on_disk.dtype == np.float16
    np.testing.assert_array_equal(on_disk[5:], (2 * a).astype(np.float16))
    store.truncate(5)
    assert np.load(tmp_path / "fine.npy").shape == (5, 8) and len(store) == 5
    assert (tmp_path / "fine.npy").stat().st_size == 128 + 5 * 8 * 2
    with pytest.raises(ValueError, match="already exists"):
        FineStore.on_disk(tmp_path / "fine.npy", 8)


def test_blocked_exact_search_equals_numpy():
    rng = np.random.default_rng(1)
    store = FineStore(rng.standard_normal((1000, 16)).astype(np.float32))
    q = rng.standard_normal((4, 16)).astype(np.float32)
    _, ids = store.search_exact(q, 7, block=33)
    expected = np.argsort(-(store.vectors @ q.T).T, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(ids, expected)
    d, ids = FineStore.empty(16).search_exact(q, 3)
    assert (ids == -1).all() and np.isneginf(d).all()
    # duplicates across block edges: equal scores go to the lower id, in every block layout
    dup = FineStore(np.repeat(rng.standard_normal((40, 16)).astype(np.float32), 3, axis=0))
    for block in (1, 7, 33, 1000):
        d, ids = dup.search_exact(q, 6, block=block)
        expected = np.lexsort((np.arange(120)[None].repeat(4, 0), -(dup.vectors @ q.T).T), axis=1)[:, :6]
        np.testing.assert_array_equal(ids, expected)
        assert (np.diff(d, axis=1) <= 0).all()
    _, few = FineStore(rng.standard_normal((3, 16)).astype(np.float32)).search_exact(q, 5, block=2)
    assert (few[:, 3:] == -1).all() and sorted(few[0, :3]) == [0, 1, 2]


def test_coarse_spill_samples_without_replacement_from_disk(tmp_path):
    spill = CoarseSpill(4, tmp_path / "spill")
    rows = np.arange(400, dtype=np.float32).reshape(100, 4)
    spill.append(rows[:60])
    spill.append(rows[60:])
    sample = spill.sample(30, seed=3)
    assert sample.shape == (30, 4) and len({tuple(r) for r in sample}) == 30
    assert {tuple(r) for r in sample} <= {tuple(r) for r in rows}
    np.testing.assert_array_equal(np.concatenate(list(spill.blocks(size=7))), rows)
    spill.close()
    assert not (tmp_path / "spill").exists()


def test_streamed_build_on_disk_equals_in_memory_build(tiny_encoder, corpus, tmp_path):
    mem = Retriever.build(stream(corpus), coarse=(3, 8), fine=(12, 32), model=tiny_encoder, chunk_size=7)
    disk = Retriever.build(
        stream(corpus),
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        chunk_size=7,
        backend=FaissOptions(fine_path=tmp_path / "fine.npy"),
    )
    assert mapping_of(disk.backend.fine_store.vectors) is not None
    assert np.load(tmp_path / "fine.npy").shape == (len(corpus), 32)
    assert not list(tmp_path.glob("*.pending"))  # the scratch file of coarse vectors is gone
    for q in QUERIES:
        assert disk.search(q, k=5) == mem.search(q, k=5)
    disk.save(tmp_path / "index")
    loaded = Retriever.load(tmp_path / "index", model=tiny_encoder)
    assert loaded.search(QUERIES[0], k=5) == mem.search(QUERIES[0], k=5)


def test_interrupted_stream_into_disk_store_leaves_the_index_as_it_was(tiny_encoder, corpus, tmp_path):
    r = Retriever.build(
        corpus[:10],
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        backend=FaissOptions(fine_path=tmp_path / "fine.npy"),
    )
    before = (tmp_path / "fine.npy").read_bytes()
    hits = r.search(QUERIES[1], k=5)
    with pytest.raises(KeyboardInterrupt):
        r.add(stream(corpus[10:], fail_after=12), chunk_size=5)  # two chunks were written to disk
    assert (tmp_path / "fine.npy").read_bytes() == before
    assert len(r) == 10 and len(r.backend.coarse_index) == 10 and r.search(QUERIES[1], k=5) == hits
    assert not list(tmp_path.glob("*.pending"))
    r.add(stream(corpus[10:]), chunk_size=5)
    assert len(r) == len(corpus) == len(r.backend.fine_store) == len(r.backend.coarse_index)


def test_failed_build_removes_its_fine_file(tiny_encoder, corpus, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        Retriever.build(
            stream(corpus, fail_after=9),
            coarse=(3, 8),
            model=tiny_encoder,
            chunk_size=4,
            backend=FaissOptions(fine_path=tmp_path / "fine.npy"),
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_coarse_add_is_rolled_back(tiny_encoder, corpus, monkeypatch):
    # IVF takes rows in place (Flat builds a new shard: tests/test_retriever.py), so they are removed again
    r = Retriever.build(
        corpus[:10], coarse=(3, 8), model=tiny_encoder, backend=FaissOptions(index="IVF2,Flat")
    )
    real_add = CoarseIndex.add

    def add_then_fail(self, vectors):
        real_add(self, vectors)  # the vectors are in FAISS when the failure comes
        raise MemoryError("simulated")

    monkeypatch.setattr(CoarseIndex, "add", add_then_fail)
    with pytest.raises(MemoryError):
        r.add(corpus[10:20])
    assert len(r.backend.coarse_index) == len(r.backend.fine_store) == len(r) == 10
    monkeypatch.setattr(CoarseIndex, "add", real_add)
    r.add(corpus[10:20])
    assert len(r.backend.coarse_index) == 20


def test_ivf_is_trained_on_a_random_sample(tiny_encoder, corpus):
    r = Retriever.build(
        corpus,
        coarse=(3, 8),
        model=tiny_encoder,
        backend=FaissOptions(index="IVF4,Flat", train_size=20),
    )
    assert r.backend.coarse_index.is_trained and len(r.backend.coarse_index) == len(corpus)
    wide = r.search(QUERIES[0], k=5, nprobe=4)  # every list probed: the funnel equals the Flat one
    flat = Retriever.build(corpus, coarse=(3, 8), model=tiny_encoder)
    assert [h.doc_id for h in wide] == [h.doc_id for h in flat.search(QUERIES[0], k=5)]


def test_bad_fine_path_is_refused_before_encoding(tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Retriever.build(
            ["a b"],
            coarse=(3, 8),
            model=tiny_encoder,
            backend=FaissOptions(fine_path=tmp_path / "no" / "f.npy"),
        )


def test_a_streamed_add_shows_one_bar_for_the_whole_corpus(tiny_encoder, monkeypatch):
    import adaptive_retrieval.indexing as indexing_module

    bars = []

    class Recorder:
        def __init__(self, **options):
            self.options, self.n, self.disable = options, 0, options.get("disable", False)
            self.total = options.get("total")
            bars.append(self)

        def update(self, n):
            self.n += n

        def refresh(self):
            pass

        def close(self):
            self.closed = True

    monkeypatch.setattr(indexing_module, "tqdm", Recorder)
    texts = random_texts(90, seed=30)
    r = Retriever.build(
        texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, chunk_size=20, show_progress=True
    )
    assert len(r) == 90 and len(bars) == 1  # one bar over five chunks, adaptation included
    assert bars[0].n == 90 and bars[0].options["total"] == 90 and bars[0].closed
    Retriever.build(
        iter([(i, t) for i, t in enumerate(texts)]), coarse=(3, 8), model=tiny_encoder, adapt=False
    )
    assert bars[1].options["total"] is None and bars[1].n == 90  # a stream: count without a total
