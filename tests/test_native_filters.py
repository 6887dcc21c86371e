"""Metadata filters run by Qdrant and Milvus themselves (issue #30): the same documents as the retriever's
own evaluation, for every operator, and the engine asked no deeper than an unfiltered search."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from adaptive_retrieval.backends.keyed import Asked, asked
from adaptive_retrieval.filters import evaluate, native, parse
from tests.helpers import random_texts
from tests.test_backends import engine_options

VIEWS = {"coarse": (3, 8), "fine": (12, 32), "hybrid": False}
SECTIONS = ("libs", "admin", 'say "hi"', "réseau")


def record(i: int) -> dict:
    """Every kind, and fields some documents lack: ``score`` on even documents only, ``stable`` on
    every third, ``tags`` a string or a list (a kind filters skip), ``mixed`` a string or a number."""
    out = {"section": SECTIONS[i % 4], "size": i * 10, "mixed": i if i % 2 else str(i)}
    out["tags"] = ["a", "b"] if i % 2 else "a"
    if i % 2 == 0:
        out["score"] = i / 4
    if i % 3 == 0:
        out["stable"] = i % 6 == 0
    return out


FILTERS = [
    {"section": "libs"},
    {"section": 'say "hi"'},
    {"section": {"$ne": "libs"}},
    {"section": {"$in": ["admin", "réseau"]}},
    {"section": {"$nin": ["admin", "réseau"]}},
    {"size": 100},
    {"size": {"$gte": 200}},
    {"size": {"$lt": 50.5}},
    {"size": {"$in": [0, 30, 70.0]}},
    {"size": {"$nin": [0, 30]}},
    {"score": {"$gt": 2.25}},
    {"score": {"$ne": 1.5}},  # odd documents have no score: matched by neither
    {"stable": True},
    {"stable": {"$ne": True}},  # documents without the field: not matched
    {"$or": [{"section": "libs"}, {"size": {"$gt": 300}}]},
    {"$and": [{"section": {"$in": ["libs", "réseau"]}}, {"score": {"$lte": 5}}], "size": {"$ne": 40}},
]
NOT_NATIVE = [
    {"tags": "a"},  # a list: an engine matches inside it, the retriever never does
    {"mixed": 3},  # a field of two kinds
    {"section": {"$gt": "b"}},  # an order of strings: native on Milvus only
]


@pytest.fixture(params=["qdrant", "milvus"])
def built(request, tiny_encoder, tmp_path):
    texts = random_texts(48, seed=4)
    corpus = {f"d{i}": {"text": t, **record(i)} for i, t in enumerate(texts)}
    r = Retriever.build(
        corpus, model=tiny_encoder, backend=request.param,
        backend_options=engine_options(request.param, tmp_path), **VIEWS,
    )  # fmt: skip
    yield r, texts
    r.close()


def engine_matches(r: Retriever, where) -> set[str]:
    """The documents the engine's own filter selects, read from the engine."""
    b = r.backend
    if b.name == "qdrant":
        points, _ = b.client.scroll(b.collection, scroll_filter=where, limit=1000, with_payload=["doc_id"])
        return {p.payload["doc_id"] for p in points}
    found = b.client.query(b.collection, filter=where, output_fields=["doc_id"])
    return {json.loads(e["doc_id"]) for e in found}


def test_every_operator_selects_in_the_engine_what_the_retriever_selects(built):
    r, _ = built
    for flt in FILTERS:
        node = parse(flt)
        mask = evaluate(node, r.metadata, len(r.ids))
        expected = {r.ids[row] for row in np.flatnonzero(mask)}
        assert native(node, r.metadata) is node, flt
        params = r.backend.native_filter(None, node)
        assert isinstance(params, Asked), flt
        assert engine_matches(r, asked(params)[1]) == expected, flt
        assert expected and len(expected) < len(r), flt  # a filter that selects


def test_a_filter_the_engine_cannot_say_as_the_retriever_does_is_applied_to_its_answers(built):
    r, texts = built
    for flt in NOT_NATIVE:
        node = parse(flt)
        params = r.backend.native_filter(None, native(node, r.metadata))
        order = flt == {"section": {"$gt": "b"}}
        assert isinstance(params, Asked) == (order and r.backend.name == "milvus"), flt
        hits = r.search(texts[0], k=5, filter=flt)
        assert hits and all(_matches(h.metadata, flt) for h in hits), flt


def _matches(meta: dict, flt: dict) -> bool:
    ((field, cond),) = flt.items()
    value = meta.get(field)
    if isinstance(cond, dict):
        return isinstance(value, str) and value > cond["$gt"]
    return value == cond and not isinstance(value, list)


def test_a_native_filtered_search_asks_the_engine_no_deeper_than_an_unfiltered_one(built, tiny_encoder):
    r, texts = built
    r.exact_below = 0  # the filtered funnel, not the exact path
    flat = Retriever.build(
        {f"d{i}": {"text": t, **record(i)} for i, t in enumerate(texts)}, model=tiny_encoder, **VIEWS
    )
    flat.exact_below = 0
    depths, ask = [], r.backend._ask

    def spy(field, params=None, where=None):
        inner = ask(field, params, where)

        def counted(vectors, limit):
            depths.append((field, limit, where is not None))
            return inner(vectors, limit)

        return counted

    r.backend._ask = spy
    if r.backend.name == "milvus":  # Milvus runs a filter only where its answers would be asked too deep
        assert not r.backend.in_engine(8, 0.25) and r.backend.in_engine(100, 0.001)
        r.backend._MAX_LIMIT = 16  # (16,384): here, 8 / 0.25 deep is too deep
    for flt in ({"section": "libs"}, {"size": {"$lt": 100}}, {"stable": True}):
        depths.clear()
        got = [h.doc_id for h in r.search(texts[1], k=3, filter=flt, candidates=5)]
        assert got == [h.doc_id for h in flat.search(texts[1], k=3, filter=flt, candidates=48)], flt
        coarse = [d for d in depths if d[0] == "coarse"]
        assert coarse and all(native for _, _, native in coarse), (flt, depths)
        assert max(limit for _, limit, _ in coarse) < 48, (flt, depths)  # not asked for every document


def test_collections_keep_native_filters_when_reopened(built, tmp_path, tiny_encoder):
    r, texts = built
    r.upsert({"d2": {"text": texts[5], "section": "fresh", "size": 7}})
    r.save(tmp_path / "idx")
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    try:
        node = parse({"section": "fresh"})
        params = again.backend.native_filter(None, native(node, again.metadata))
        assert engine_matches(again, asked(params)[1]) == {"d2"}  # the upsert's new version carries it
        assert [h.doc_id for h in again.search(texts[5], k=3, filter={"section": "fresh"})] == ["d2"]
    finally:
        again.close()


def test_a_qdrant_collection_saved_without_payload_metadata_filters_its_answers(tiny_encoder, tmp_path):
    from adaptive_retrieval import QdrantOptions

    pytest.importorskip("qdrant_client")
    texts = random_texts(30, seed=6)
    corpus = {f"d{i}": {"text": t, **record(i)} for i, t in enumerate(texts)}
    options = QdrantOptions(path=str(tmp_path / "q"), collection="old", payload_metadata=False)
    r = Retriever.build(corpus, model=tiny_encoder, backend=options, **VIEWS)
    assert r.backend.native_filter(None, parse({"section": "libs"})) is None  # payloads hold no metadata
    r.save(tmp_path / "idx")
    r.close()
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    del manifest["backend"]["payload_metadata"]  # as an index saved before the option existed
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder, verify=False)
    try:
        assert not again.backend.native_filters
        hits = again.search(texts[0], k=4, filter={"section": "libs"})
        assert [h.metadata["section"] for h in hits] == ["libs"] * 4
    finally:
        again.close()


def test_milvus_expressions_keep_utf8_and_refuse_what_its_parser_cannot_read():
    pytest.importorskip("pymilvus")
    from adaptive_retrieval.backends.milvus import milvus_expression

    assert milvus_expression(parse({"s": "café"})) == '(meta["s"] == "café")'
    assert milvus_expression(parse({"n": {"$gte": 2.5}, "s": {"$ne": 'a"b'}})) == (
        '(meta["n"] >= 2.5 and (exists meta["s"] and meta["s"] != "a\\"b"))'
    )
    assert milvus_expression(parse({"$or": [{"s": "a\x01"}, {"n": 1}]})) is None  # a \u escape
