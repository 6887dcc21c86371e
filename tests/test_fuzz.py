"""Bad input, generated (hypothesis): every failure is a ``ValueError`` or ``TypeError`` raised where
the input enters, and the index is exactly as it was afterwards. ``FUZZ_EXAMPLES=1000`` runs longer."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from tests.helpers import random_texts

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VIEWS = dict(coarse=(3, 8), fine=(12, 32), candidates=10)
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
CLEAR = (ValueError, TypeError)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 10**20),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.binary(max_size=8),
    st.just(np.int64(3)),
    st.just(np.float32(1.5)),
)
ids = st.one_of(scalars, st.tuples(scalars), st.lists(scalars, max_size=2))
texts = st.one_of(
    st.text(max_size=40),
    scalars,
    st.dictionaries(st.sampled_from(["title", "text", "x"]), scalars, max_size=3),
)
corpora = st.one_of(
    scalars,
    st.lists(texts, max_size=6),
    st.dictionaries(ids.filter(lambda x: x.__hash__ is not None), texts, max_size=6),
    st.lists(st.tuples(ids, texts), max_size=6),
    st.lists(st.lists(scalars, max_size=3), max_size=4),
)


@pytest.fixture(scope="module")
def base(tiny_encoder):
    return Retriever.build(
        {f"d{i}": t for i, t in enumerate(random_texts(40, seed=20))}, model=tiny_encoder, **VIEWS
    )


OLDER_MANIFESTS_LACK = {"rows", "lexical", "fusion", "truncated", "passages", "documents"}


def state(r: Retriever) -> tuple:
    """Everything a search reads: the ids, the coarse rows, the fine rows."""
    b = r.backend
    return (
        list(r.doc_ids),
        b.coarse_index.reconstruct_n(0, len(b.coarse_index)).tobytes(),
        np.asarray(b.fine_store.vectors).tobytes(),
    )


def copy(r: Retriever) -> Retriever:
    """A fresh retriever over the same vectors (a fuzzed add must not touch the shared one)."""
    b = r.backend
    vectors = b.vectors("coarse", 0, len(r)), b.vectors("fine", 0, len(r))  # normalised, as added
    return Retriever.from_vectors(r.encoder, r.coarse, r.fine, list(r.doc_ids), *vectors, candidates=10)


@FUZZ
@given(corpus=corpora)
def test_any_corpus_is_added_whole_or_refused_clearly(base, corpus):
    r = copy(base)
    before = state(r)
    try:
        r.add(corpus)
    except CLEAR:
        assert state(r) == before
        return
    assert len(r) > len(before[0]) and r.doc_ids[: len(before[0])] == before[0]


vector_rows = st.one_of(
    st.just("unit"),
    st.just("nan"),
    st.just("zero"),
    st.just("long"),
    st.just("ints"),
    st.just("shape"),
    st.just("1d"),
)


def make_vectors(kind: str, n: int, dim: int, rng: np.random.Generator):
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    if kind == "nan" and n:
        x[0, 0] = np.nan
    elif kind == "zero" and n:
        x[-1] = 0
    elif kind == "long":
        x *= 2
    elif kind == "ints":
        return np.ones((n, dim), dtype=np.int64)
    elif kind == "shape":
        return x[:, : dim - 1]
    elif kind == "1d":
        return x.ravel()
    return x


@FUZZ
@given(doc_ids=st.lists(ids, max_size=4), coarse=vector_rows, fine=vector_rows, seed=st.integers(0, 99))
def test_vectors_and_ids_are_checked_on_ingestion(base, doc_ids, coarse, fine, seed):
    r = copy(base)
    before = state(r)
    rng = np.random.default_rng(seed)
    try:
        r.add_vectors(
            doc_ids,
            make_vectors(coarse, len(doc_ids), r.coarse.dim, rng),
            make_vectors(fine, len(doc_ids), r.fine.dim, rng),
        )
    except CLEAR:
        assert state(r) == before
        return
    assert coarse == fine == "unit" and len(r) == len(before[0]) + len(doc_ids)
    assert all(isinstance(d, (str, int)) and not isinstance(d, bool) for d in r.doc_ids)
    json.dumps(r.doc_ids)  # what save writes


@FUZZ
@given(
    query=st.one_of(st.text(max_size=30), scalars, st.lists(st.text(max_size=5), max_size=3)),
    k=st.one_of(st.integers(-3, 60), scalars),
    candidates=st.one_of(st.none(), st.integers(-3, 60), scalars),
    knobs=st.dictionaries(
        st.sampled_from(["nprobe", "efSearch", "k_factor", "ht", "x"]), scalars, max_size=2
    ),
)
def test_any_query_is_answered_or_refused_clearly(base, query, k, candidates, knobs):
    before = state(base)
    try:
        hits = base.search(query, k=k, candidates=candidates, **knobs)
    except CLEAR:
        pass
    else:
        assert isinstance(query, str) and query.strip() and len(hits) == min(k, len(base))
    assert state(base) == before


@pytest.fixture(scope="module")
def saved(base, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "idx"
    base.save(path)
    return path


@settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 40)),
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_a_damaged_index_is_refused_clearly(base, saved, tmp_path_factory, data):
    path = tmp_path_factory.mktemp("damaged") / "idx"
    shutil.copytree(saved, path)
    files = sorted(p for p in path.iterdir() if p.is_file())
    target = data.draw(st.sampled_from(files))
    how = data.draw(st.sampled_from(["flip", "truncate", "append", "manifest-value", "manifest-key"]))
    if how.startswith("manifest"):
        target = path / "manifest.json"
        manifest = json.loads(target.read_text())
        key = data.draw(st.sampled_from(sorted(manifest)))
        if how == "manifest-key":
            del manifest[key]
        else:
            manifest[key] = data.draw(
                st.one_of(scalars, st.lists(st.integers(-2, 70), max_size=3), st.just({}))
            )
        target.write_text(json.dumps(manifest, default=str))
    else:
        raw = bytearray(target.read_bytes())
        if how == "flip" and raw:
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
        elif how == "truncate":
            raw = raw[: data.draw(st.integers(0, max(len(raw) - 1, 0)))]
        else:
            raw += b"\0"
        target.write_bytes(bytes(raw))
    try:
        loaded = Retriever.load(path, model=base.encoder)
    except CLEAR:
        return
    # accepted: only a change to the manifest that leaves it a valid one (a setting such as candidates,
    # the time it was saved, or a key older versions did not write), never damaged data: each data file is hashed
    older_form = how == "manifest-key" and key in OLDER_MANIFESTS_LACK
    assert (
        target.name == "manifest.json"
        and (how != "manifest-key" or older_form)
        and state(loaded) == state(base)
    )
    loaded.search("alpha beta", k=5)
