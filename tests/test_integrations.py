"""Texts beside ids (``store_text=True``), and the LangChain and LlamaIndex retrievers, each with the real
package on a tiny model."""

from __future__ import annotations

import pytest

from adaptive_retrieval import Retriever
from tests.helpers import QUERIES, random_texts

VIEWS = dict(coarse=(3, 8), fine=(12, 32), candidates=20)


@pytest.fixture(scope="module")
def corpus():
    texts = random_texts(50, seed=40)
    return {f"d{i}": {"title": f"title {i}", "text": t, "url": f"https://x/{i}"} for i, t in enumerate(texts)}


@pytest.fixture(scope="module")
def stored(tiny_encoder, corpus):
    return Retriever.build(corpus, model=tiny_encoder, store_text=True, **VIEWS)


def test_hits_carry_text_and_metadata_through_save_load_and_add(stored, corpus, tiny_encoder, tmp_path):
    plain = Retriever.build(corpus, model=tiny_encoder, **VIEWS)
    hits, bare = stored.search(QUERIES[0], k=5), plain.search(QUERIES[0], k=5)
    assert [(h.doc_id, h.score) for h in hits] == [
        (h.doc_id, h.score) for h in bare
    ]  # texts change no result
    # without texts, a hit still carries the document's metadata (kept for filters either way)
    assert all(
        h.text is None and h.metadata == {k: corpus[h.doc_id][k] for k in ("title", "url")} for h in bare
    )
    for h in hits:
        doc = corpus[h.doc_id]
        assert h.text == f"{doc['title']} {doc['text']}" and h.metadata == {
            "title": doc["title"],
            "url": doc["url"],
        }
    stored.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert loaded.search(QUERIES[0], k=5) == hits
    with pytest.raises(ValueError, match="already in the index"):  # all-or-nothing: no text is kept either
        loaded.add({"new": "alpha", "d3": "again"})
    loaded.add({"new": {"text": "brand new words", "lang": "en"}})
    found = {h.doc_id: h for h in loaded.search("brand new words", k=len(loaded))}
    assert found["new"].text == "brand new words" and found["new"].metadata == {"lang": "en"}
    assert len(loaded.documents) == len(loaded) == 51
    loaded.save(tmp_path / "idx")  # over itself: the grown store is written, the scratch copy goes
    loaded.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(again.documents) == 51 and not list(tmp_path.glob("idx/grow-*"))
    vectors = again.encoder.encode(["x y"], [again.coarse, again.fine])
    with pytest.raises(ValueError, match="this index stores texts"):
        again.add_vectors(["v"], again.project(vectors[again.fine]), vectors[again.fine])
    with pytest.raises(TypeError, match="metadata of document 'v' must be JSON"):
        again.add_vectors(
            ["v"], again.project(vectors[again.fine]), vectors[again.fine], ["x y"], [{"a": object()}]
        )
    assert len(again) == len(again.documents) == 51


def test_langchain_retriever(stored):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    lc = stored.as_langchain(k=3)
    assert isinstance(lc, BaseRetriever)
    docs = lc.invoke(QUERIES[1])
    hits = stored.search(QUERIES[1], k=3)
    assert all(isinstance(d, Document) for d in docs)
    assert [d.page_content for d in docs] == [h.text for h in hits]
    assert [d.metadata["doc_id"] for d in docs] == [h.doc_id for h in hits]
    assert docs[0].metadata["rank"] == 1 and docs[0].metadata["url"].startswith("https://")
    assert len(stored.as_langchain(k=2, candidates=50).invoke(QUERIES[1])) == 2


def test_llama_index_retriever(stored):
    pytest.importorskip("llama_index.core")
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore

    li = stored.as_llama_index(k=3)
    assert isinstance(li, BaseRetriever)
    nodes = li.retrieve(QUERIES[2])
    hits = stored.search(QUERIES[2], k=3)
    assert all(isinstance(n, NodeWithScore) for n in nodes)
    assert [n.node.get_content() for n in nodes] == [h.text for h in hits]
    assert [n.node.node_id for n in nodes] == [str(h.doc_id) for h in hits]
    assert [n.score for n in nodes] == pytest.approx([h.score for h in hits])


def test_llama_index_metadata_filters_become_the_library_filter(stored):
    pytest.importorskip("llama_index.core")
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters

    from adaptive_retrieval.integrations.llama_index import filter_of

    either = MetadataFilters(
        filters=[
            MetadataFilter(key="title", value="title 3"),
            MetadataFilters(
                filters=[MetadataFilter(key="title", value=["title 4", "title 5"], operator="in")],
                condition="or",
            ),
        ],
        condition="or",
    )
    assert filter_of(either) == {
        "$or": [{"title": {"$eq": "title 3"}}, {"title": {"$in": ["title 4", "title 5"]}}]
    }
    nodes = stored.as_llama_index(k=10, filters=either).retrieve(QUERIES[2])
    assert sorted(n.node.node_id for n in nodes) == ["d3", "d4", "d5"]
    for bad, match in [
        (
            MetadataFilters(filters=[MetadataFilter(key="title", value="x", operator="contains")]),
            "'contains'",
        ),
        (MetadataFilters(filters=[MetadataFilter(key="title", value="x")], condition="not"), "'not'"),
    ]:
        with pytest.raises(ValueError, match=match):
            stored.as_llama_index(filters=bad)


def test_frameworks_need_texts(tiny_encoder, corpus):
    plain = Retriever.build(corpus, model=tiny_encoder, **VIEWS)
    for make in (plain.as_langchain, plain.as_llama_index):
        with pytest.raises(ValueError, match="store_text=True"):
            make()
    with pytest.raises(TypeError, match="store_text must be True or False"):
        Retriever.build(corpus, model=tiny_encoder, store_text="yes", **VIEWS)


def test_a_save_during_an_add_neither_waits_for_it_nor_saves_part_of_it(tiny_encoder, corpus, tmp_path):
    import threading

    r = Retriever.build(corpus, model=tiny_encoder, store_text=True, **VIEWS)
    staged, release = threading.Event(), threading.Event()

    def batches():
        vectors = r.encoder.encode(["alpha beta", "gamma delta"], [r.fine])[r.fine]
        yield ["x1"], r.project(vectors[:1]), vectors[:1], ["alpha beta"]
        staged.set()
        release.wait(30)
        yield ["x2"], r.project(vectors[1:]), vectors[1:], ["gamma delta"]

    adding = threading.Thread(target=r.add_vector_batches, args=(batches(),))
    adding.start()
    assert staged.wait(30)
    saving = threading.Thread(target=r.save, args=(tmp_path / "idx",))
    saving.start()
    saving.join(30)
    assert not saving.is_alive()  # the held rows never block a save
    release.set()
    adding.join(30)
    assert len(r) == 52
    saved = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(saved) == len(saved.documents) == 50  # the add's rows were not in it, nor their texts
    assert {h.doc_id for h in r.search("alpha beta", k=52)} >= {"x1", "x2"}
