"""The lexical index (BM25 beside the vectors) and hybrid search: terms, scores against bm25s' own, the
write protocol, persistence, fusion rules, and the retriever's hybrid path with deletes, filters and saves."""

from __future__ import annotations

import json

import bm25s
import numpy as np
import pytest
import Stemmer

from adaptive_retrieval import Retriever
from adaptive_retrieval.errors import CorpusError, IndexDamaged, InvalidArgument, InvalidArgumentType
from adaptive_retrieval.hybrid import Fusion, fuse, fused_search, lexical_strength
from adaptive_retrieval.lexical import LexicalIndex, languages, top_rows
from adaptive_retrieval.passages import Passage
from adaptive_retrieval.postings import unvarints, varints
from tests.helpers import random_texts

DOCS = [
    "The cats were running across the gardens of Paris.",
    "A cat runs in a garden.",
    "Quantum chromodynamics describes the strong interaction.",
    "Strong coffee in the morning.",
    "",
    "Gardening tips: prune roses in early spring.",
]


def lexical(texts=DOCS, **kw) -> LexicalIndex:
    index = LexicalIndex(**kw)
    index.stage(texts)
    index.commit()
    return index


def test_terms_are_stemmed_lowercased_without_stop_words():
    index = LexicalIndex()
    assert index.terms("The Cats were RUNNING in gardens") == ["cat", "were", "run", "garden"]
    assert index.terms("a an the") == []
    assert "english" in languages() and "german" in languages()
    assert LexicalIndex("german").terms("Die Katzen liefen") == ["katz", "lief"]


@pytest.mark.parametrize("bad", ["klingon", "", None, 3])
def test_unknown_language_is_refused(bad):
    with pytest.raises(InvalidArgument, match="stemmer"):
        LexicalIndex(bad)


def test_bad_bm25_parameters_are_refused():
    with pytest.raises(InvalidArgument, match="k1"):
        LexicalIndex(k1=-1)
    with pytest.raises(InvalidArgument, match="k1"):
        LexicalIndex(b=2)


def test_scores_equal_bm25s_own_pipeline():
    texts = random_texts(200, seed=3)
    index = lexical(texts)
    for query in [*random_texts(10, seed=4, max_words=6), "cell cell cancer"]:
        np.testing.assert_allclose(index.scores(query), reference_scores(texts, query), rtol=1e-5, atol=1e-6)


def test_top_rows_masks_and_orders():
    scores = np.array([0.0, 3.0, 1.0, 2.0, 5.0], np.float32)
    s, r = top_rows(scores, 2)
    assert r.tolist() == [4, 1] and s.tolist() == [5.0, 3.0]
    allowed = np.array([True, True, True, True, False])
    assert top_rows(scores, 10, allowed)[1].tolist() == [1, 3, 2]  # zero scores are no candidates


def test_query_of_unknown_words_scores_nothing():
    index = lexical()
    assert not index.scores("zzz qqq").any()
    assert index.top("zzz", 5)[1].size == 0
    assert index.top("gardens", 5)[1].tolist()[:1] in ([0], [1])


def test_rollback_drops_staged_rows_and_an_undone_commit_restores_the_last_state():
    index = lexical()
    before = index.scores("chromodynamics quark")
    index.stage(["quark gluon plasma"])
    index.rollback(committed=False)
    assert len(index) == len(DOCS) and "quark" not in index.vocabulary
    index.stage(["quark gluon plasma"])
    index.prepare()
    index.commit()
    assert len(index) == len(DOCS) + 1 and index.scores("quark")[-1] > 0
    index.rollback(committed=True)
    assert len(index) == len(DOCS) and "quark" not in index.vocabulary
    np.testing.assert_array_equal(index.scores("chromodynamics quark"), before)


def test_compacted_keeps_the_rows_it_is_given():
    index = lexical()
    keep = np.array([0, 2, 5])
    full = index.scores("garden strong")
    swap = index.compacted(keep)
    np.testing.assert_array_equal(index.scores("garden strong"), full)  # nothing visible before the swap
    swap()
    assert len(index) == 3
    assert index.top("quantum", 3)[1].tolist() == [1]


def test_save_and_load_realign_rows_by_document_id(tmp_path):
    index = lexical()
    ids = ["a", "b", "c", 4, None, "f"]  # a dead row: None
    index.save(tmp_path / "lex.npz", ids)
    order = ["f", "c", "a", "new", 4]
    loaded = LexicalIndex.load(tmp_path / "lex.npz", order)
    assert len(loaded) == 5 and loaded.settings == index.settings
    full = index.scores("quantum garden prune")
    got = loaded.scores("quantum garden prune")
    assert got[0] == pytest.approx(full[5], rel=0.2) and got[1] > 0 and got[3] == 0  # "new": no terms
    assert loaded.top("chromodynamics", 3)[1].tolist() == [1]


def reference_scores(texts, query):
    """``bm25s``' own scores of ``texts`` for ``query`` (its tokenizer with the same stemmer and stop words)."""
    stemmer = Stemmer.Stemmer("english")
    reference = bm25s.BM25()
    reference.index(
        bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False
    )
    tokens = bm25s.tokenize([query], stopwords="en", stemmer=stemmer, show_progress=False, return_ids=False)[
        0
    ]
    return reference.get_scores([t for t in tokens if t in reference.vocab_dict] or [""])


def test_appending_rows_gives_the_postings_a_fresh_build_gives(tmp_path):
    texts = random_texts(300, seed=5)
    grown = lexical(texts[:100])
    for part in (texts[100:101], [], texts[101:250], ["zzyzx " * 3 + "cell"], texts[250:]):
        grown.stage(part)
        grown.commit()
    fresh = lexical([*texts[:250], "zzyzx " * 3 + "cell", *texts[250:]])
    for name in ("lengths", "pointer", "offset", "codes", "extra", "extra_pointer", "last"):
        np.testing.assert_array_equal(getattr(grown._state, name), getattr(fresh._state, name), err_msg=name)
    for query in [*random_texts(10, seed=6, max_words=6), "zzyzx cell"]:
        np.testing.assert_array_equal(grown.scores(query), fresh.scores(query))


def test_varints_round_trip():
    values = np.array([0, 1, 127, 128, 16_383, 16_384, 2**21, 2**35 + 7, 2**62], np.int64)
    codes, sizes = varints(values)
    assert sizes.tolist() == [1, 1, 1, 2, 2, 3, 4, 6, 9] and len(codes) == sizes.sum()
    np.testing.assert_array_equal(unvarints(codes), values)
    assert unvarints(varints(np.empty(0, np.int64))[0]).size == 0


def test_postings_take_a_byte_or_so_and_long_gaps_and_high_counts_still_score_right(tmp_path):
    small = lexical(random_texts(300, seed=9))
    assert small._state.codes.dtype == np.uint8 and len(small._state.codes) < 1.3 * small.stats["postings"]
    # 70,000 rows: "rare" in rows 0 and 69,999 (a gap of three bytes); "late" first in row 69,999, where
    # "cat" counts 300 (an extra count past one byte)
    texts = ["rare cat", *["cat dog"] * 69_998, "rare late " + "cat " * 300]
    fresh = lexical(texts)
    grown = lexical(texts[:40_000])
    grown.stage(texts[40_000:])
    grown.commit()
    assert grown._state.extra.dtype == np.uint16 and grown._state.extra.tolist() == [300]
    for query in ("rare", "late cat", "dog rare", "cat"):
        want = reference_scores(texts, query)
        np.testing.assert_allclose(grown.scores(query), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(grown.scores(query), fresh.scores(query))
    assert sorted(grown.top("rare", 5)[1].tolist()) == [0, 69_999]
    grown.save(tmp_path / "lex.npz", list(range(70_000)))
    again = LexicalIndex.load(tmp_path / "lex.npz", list(range(70_000)))
    np.testing.assert_array_equal(again.scores("rare late"), fresh.scores("rare late"))


def test_a_loaded_index_reads_its_postings_memory_mapped(tmp_path):
    index = lexical(random_texts(200, seed=7))
    assert index.stats["mapped"] == 0 and index.stats["bytes"] > 0
    index.save(tmp_path / "lex.npz", list(range(200)))
    loaded = LexicalIndex.load(tmp_path / "lex.npz", list(range(200)))
    assert not loaded._state.codes.flags.writeable  # a read-only view of the file's mapping
    assert loaded.stats["mapped"] >= loaded._state.codes.nbytes + loaded._state.pointer.nbytes
    assert loaded.stats["bytes"] == index.stats["bytes"]
    read = LexicalIndex.load(tmp_path / "lex.npz", list(range(200)), mmap=False)
    assert read.stats["mapped"] == 0
    for query in random_texts(5, seed=8, max_words=5):
        np.testing.assert_array_equal(loaded.scores(query), index.scores(query))
        np.testing.assert_array_equal(read.scores(query), index.scores(query))
    loaded.stage(["cell cycle"])  # a write over mapped postings builds new arrays in memory
    loaded.commit()
    assert loaded.stats["mapped"] == 0 and loaded.top("cycle", 1)[1].tolist() == [200]


def test_an_index_saved_in_the_earlier_layout_is_converted(tmp_path):
    texts = [*DOCS, "garden garden cat"]
    index = lexical(texts)
    words = sorted(index.vocabulary, key=index.vocabulary.__getitem__)
    parts = [np.array([index.vocabulary[t] for t in index.terms(x)], np.uint16) for x in texts]
    indptr = np.concatenate([[0], np.cumsum([len(p) for p in parts])])
    config = {"language": "english", "k1": 1.5, "b": 0.75, "ids": list(range(len(texts)))}
    np.savez(
        tmp_path / "old.npz", indptr=indptr, terms=np.concatenate(parts),
        vocabulary=np.frombuffer("\n".join(words).encode(), np.uint8),
        config=np.frombuffer(json.dumps(config).encode(), np.uint8),
    )  # fmt: skip
    old = LexicalIndex.load(tmp_path / "old.npz", list(range(len(texts))))
    for query in ("garden cat", "strong quantum", "prune"):
        np.testing.assert_array_equal(old.scores(query), index.scores(query))
    config["ids"] = ["x"]
    np.savez(tmp_path / "bad.npz", indptr=indptr, terms=np.concatenate(parts), vocabulary=np.zeros(1, np.uint8),
             config=np.frombuffer(json.dumps(config).encode(), np.uint8))  # fmt: skip
    with pytest.raises(IndexDamaged, match="lexical"):
        LexicalIndex.load(tmp_path / "bad.npz", ["x"])


def test_a_damaged_file_is_refused(tmp_path):
    (tmp_path / "lex.npz").write_bytes(b"not an npz")
    with pytest.raises(IndexDamaged, match="lexical"):
        LexicalIndex.load(tmp_path / "lex.npz", ["a"])


def test_fusion_checks_its_settings():
    with pytest.raises(InvalidArgument, match="rule"):
        Fusion(rule="max")
    with pytest.raises(InvalidArgument, match="weight"):
        Fusion(weight=1.5)
    with pytest.raises(InvalidArgument, match="depth"):
        Fusion(depth=0)
    assert Fusion.from_dict(Fusion(rule="rrf", weight=0.5).as_dict()) == Fusion(rule="rrf", weight=0.5)
    with pytest.raises(InvalidArgument, match="match_weight"):
        Fusion(match_weight=-0.1)
    for ramp in ((0.5, 0.4), (0.4,), (0.1, 1.5), ("a", "b"), (True, 0.5)):
        with pytest.raises(InvalidArgument, match="ramp"):
            Fusion(ramp=ramp)
    saved = json.loads(
        json.dumps(Fusion(match_weight=0.3, ramp=(0.3, 0.5)).as_dict())
    )  # as a manifest holds it
    assert Fusion.from_dict(saved) == Fusion(match_weight=0.3, ramp=(0.3, 0.5))
    older = Fusion.from_dict(
        {"rule": "convex", "weight": 0.8, "depth": 100}
    )  # saved before match and confidence
    assert older == Fusion("convex", 0.8, confidence=None)
    before_confidence = {
        "rule": "match",
        "weight": 0.8,
        "depth": 100,
        "match_weight": 0.3,
        "ramp": [0.4, 0.5],
    }
    assert Fusion.from_dict(before_confidence).confidence is None  # it keeps ranking as it did
    for confidence in ((0.9, 0.8), (0.5,), (-2, 0.5), (0.5, True), "high"):
        with pytest.raises(InvalidArgument, match="confidence"):
            Fusion(confidence=confidence)


def test_match_weight_falls_along_its_ramp():
    f = Fusion("match", 0.8, match_weight=0.2, ramp=(0.4, 0.5), confidence=None)
    assert [round(f.weight_at(m), 6) for m in (0.0, 0.4, 0.45, 0.5, 1.0)] == [0.8, 0.8, 0.5, 0.2, 0.2]
    assert Fusion("convex", 0.7).weight_at(1.0) == 0.7  # only "match" moves
    fine = np.array([0.9, 0.5, 0.7], np.float32)
    bm25 = np.array([0.0, 10.0, 5.0], np.float32)
    ranks = np.array([0, 2, 1]), np.array([-1, 0, 1])
    np.testing.assert_allclose(
        fuse(f, fine, bm25, *ranks, strength=0.0), fuse(Fusion("convex", 0.8), fine, bm25, *ranks)
    )
    np.testing.assert_allclose(
        fuse(f, fine, bm25, *ranks, strength=0.9), fuse(Fusion("convex", 0.2), fine, bm25, *ranks)
    )


def test_bound_is_what_a_row_of_every_query_term_approaches():
    lex = LexicalIndex()
    lex.stage(["the cat sat on the mat", "dogs bark at night", "cat " * 300 + "mat " * 300, "a quiet zebra"])
    lex.commit()
    bound = lex.bound("cat mat")
    assert lex.scores("cat mat").max() < bound < lex.scores("cat mat").max() * 1.05  # row 2 holds both, often
    assert lex.scores("cat zebra").max() / lex.bound("cat zebra") < 0.6  # no row holds both
    assert lex.bound("the of") == 0.0 and LexicalIndex().bound("cat") == 0.0  # stop words only; no rows
    # a term no row holds counts as the rarest: the best row then matches less of the query
    assert lex.bound("cat mat zq4411") > bound and lex.bound("cat mat zq4411") == pytest.approx(
        bound + np.log1p(4.5 / 0.5)
    )


class _Engine:
    """Fine scores of given rows by dot product (what fused_search asks of an engine)."""

    def __init__(self, fine: np.ndarray) -> None:
        self.fine = fine

    def fine_scores(self, q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return np.einsum("qd,qkd->qk", q, self.fine[rows])


def _case(texts: list[str], fine_query: list[float]):
    """A lexical index of ``texts``, one fine vector per row (the identity) and a query whose fine scores are
    ``fine_query``: ``(index, first)``, ``first(fusion, query, documents=None)`` the fused search's top row."""
    lex = LexicalIndex()
    lex.stage(texts)
    lex.commit()
    fine = np.eye(len(texts), dtype=np.float32)
    q = np.array([fine_query], np.float32)
    engine, order = _Engine(fine), np.argsort(-(fine @ q[0]))
    D, I = np.sort(fine @ q[0])[::-1][None, :].astype(np.float32), order[None, :]

    def first(fusion: Fusion, query: str, documents=None) -> int:
        read = np.zeros(1, np.int64)
        _, got, _ = fused_search(
            engine, lex, fusion, [query], q, D, I, len(texts), None, read, documents=documents
        )
        return int(got[0, 0])

    return lex, first


def test_match_leans_on_bm25_only_for_a_query_one_row_matches_fully():
    texts = [
        "error zq1177 in module loader " * 40,
        "a story about gardens",
        "loader notes",
        "module gardens error",
    ]
    lex, first = _case(texts, [0.2, 0.6, 0.1, 0.3])  # the fine view prefers row 1, without a near-paraphrase
    full = "error zq1177 in module loader"  # every term in row 0, many times: match near 1
    assert lex.scores(full).max() / lex.bound(full) > 0.45
    assert first(Fusion("convex", 0.8), full) == 1 and first(Fusion(), full) == 0
    weak = "gardens story quietly unknown words"  # no row holds most of it: the fine view's choice stands
    assert lex.scores(weak).max() / lex.bound(weak) < 0.4 and first(Fusion(), weak) == 1


def test_lead_leans_on_bm25_only_when_one_document_stands_ahead_of_the_rest():
    texts = [
        "a man is playing a guitar on stage",
        "a man is playing a guitar in the park",
        "a man plays the guitar loudly",
        "kernel module zq1177 failed to load firmware",
        "a woman is slicing an onion",
    ]
    lex, first = _case(texts, [0.2, 0.1, 0.6, 0.3, 0.0])  # the fine view prefers row 2
    lead = Fusion("lead", 0.8, match_weight=0.3, ramp=(0.15, 0.3))

    def strength(fusion: Fusion, query: str, documents=None) -> float:
        best, rows = top_rows(lex.scores(query), 100)
        return lexical_strength(fusion, best, rows, lex.bound(query), documents)

    alike = "man playing guitar"  # rows 0-2 hold its words alike: BM25 has no clear winner
    assert strength(Fusion(), alike) > 0.4  # "match" sees a row holding the query: it leans on BM25
    assert strength(lead, alike) == 0.0 and first(lead, alike) == 2  # "lead": the fine view's choice stands
    phrase = "module zq1177 failed firmware"  # one row holds it and no other: BM25 leads
    assert strength(lead, phrase) > 0.3 and first(lead, phrase) == 3
    # rows 0-2 as passages of one document: no other document holds the words, so that document leads
    documents = [Passage("d", n, 0, 0) for n in range(3)] + ["x", "y"]
    assert strength(lead, alike, documents) == pytest.approx(strength(Fusion(), alike))
    assert Fusion.from_dict(lead.as_dict()) == lead and lead.label() == "lead 0.8-0.3 @0.15-0.3 cos@0.7-0.85"
    assert strength(Fusion("convex", 0.5), phrase) == 0.0 and lead.weight_at(0.5) == pytest.approx(0.3)


def test_confidence_keeps_a_near_paraphrase_with_the_fine_view():
    f = Fusion("match", 0.8, match_weight=0.3, ramp=(0.3, 0.5), confidence=(0.7, 0.85))
    got = [round(f.weight_at(1.0, best), 6) for best in (None, 0.5, 0.7, 0.775, 0.85, 0.99)]
    assert got == [0.3, 0.3, 0.3, 0.55, 0.8, 0.8]  # BM25's full match is withdrawn as the fine view is sure
    assert f.weight_at(0.0, 0.99) == 0.8 and f.weight_at(0.0, 0.1) == 0.8  # a weak match never leans
    assert Fusion("convex", 0.6).weight_at(1.0, 0.99) == 0.6  # only the steered rules move
    # the other way round (the fine view's share rising with the match): confidence still pulls to weight
    assert Fusion("match", 0.2, match_weight=0.9, confidence=(0.7, 0.85)).weight_at(
        1.0, 0.99
    ) == pytest.approx(0.2)
    texts = ["error zq1177 in module loader " * 40, "a story about gardens", "loader notes"]
    full = "error zq1177 in module loader"
    _, sure = _case(texts, [0.2, 0.95, 0.1])  # the fine view finds row 1 near-identical
    assert sure(Fusion(), full) == 1 and sure(Fusion(confidence=None), full) == 0
    _, unsure = _case(texts, [0.2, 0.6, 0.1])  # the same choice, made unsure: BM25's full match leads
    assert unsure(Fusion(), full) == 0
    assert Fusion().label() == "match 0.8-0.3 @0.3-0.5 cos@0.7-0.85"
    assert Fusion.from_dict(json.loads(json.dumps(Fusion().as_dict()))) == Fusion()


def test_fuse_convex_and_rrf_by_hand():
    fine = np.array([0.9, 0.5, 0.7], np.float32)
    bm25 = np.array([0.0, 10.0, 5.0], np.float32)
    convex = fuse(Fusion("convex", 0.5), fine, bm25, np.array([0, 2, 1]), np.array([-1, 0, 1]))
    np.testing.assert_allclose(convex, [0.5, 0.5, 0.5 * 0.5 + 0.5 * 0.5])
    rrf = fuse(Fusion("rrf", 0.5), fine, bm25, np.array([0, -1, 1]), np.array([-1, 0, 1]))
    np.testing.assert_allclose(rrf, [0.5 / 61, 0.5 / 61, 0.5 / 62 + 0.5 / 62])


# ------------------------------------------------------------------------------------- the retriever


LEXICAL_FIRST = Fusion("convex", 0.2)


@pytest.fixture()
def corpus_with_needle():
    texts = random_texts(80, seed=11)
    texts[37] = texts[37] + " xylophone"
    return texts


def test_hybrid_finds_a_rare_word_and_hybrid_false_is_the_dense_funnel(tiny_encoder, corpus_with_needle):
    r = Retriever.build(corpus_with_needle, coarse=(4, 8), model=tiny_encoder)
    assert r.lexical is not None and len(r.lexical) == 80 and r.fusion == Fusion()
    r.fusion = LEXICAL_FIRST  # a random model's fine scores say little
    assert r.search("xylophone", k=1)[0].doc_id == 37
    dense = Retriever.build(corpus_with_needle, coarse=(4, 8), model=tiny_encoder, hybrid=False)
    assert dense.lexical is None
    want = [(h.doc_id, h.score) for h in dense.search("xylophone", k=5)]
    assert [(h.doc_id, h.score) for h in r.search("xylophone", k=5, hybrid=False)] == want
    with pytest.raises(InvalidArgument, match="lexical index"):
        dense.search("xylophone", hybrid=True)
    with pytest.raises(InvalidArgumentType, match="hybrid"):
        r.search("xylophone", hybrid="yes")


def test_hybrid_respects_deletes_and_filters(tiny_encoder, corpus_with_needle):
    meta = [{"group": i % 2} for i in range(80)]
    r = Retriever.build(corpus_with_needle, coarse=(4, 8), model=tiny_encoder, metadata=meta)
    r.fusion = LEXICAL_FIRST
    assert all(h.doc_id != 37 for h in r.search("xylophone", k=10, filter={"group": 0}))
    assert r.search("xylophone", k=10, filter={"group": 1})[0].doc_id == 37
    r.delete([37])
    assert all(h.doc_id != 37 for h in r.search("xylophone", k=80))
    r.upsert({37: "a xylophone concert"})
    assert r.search("xylophone", k=1)[0].doc_id == 37


def test_a_failed_add_leaves_the_lexical_index_as_it_was(tiny_encoder, corpus_with_needle):
    r = Retriever.build(corpus_with_needle, coarse=(4, 8), model=tiny_encoder)
    before = r.lexical.scores("xylophone")
    with pytest.raises(CorpusError):
        r.add_vectors([1000, 1000], np.zeros((2, 8)), np.zeros((2, 32)), texts=["xylophone", "x"])
    assert len(r.lexical) == 80
    np.testing.assert_array_equal(r.lexical.scores("xylophone"), before)


def test_vectors_without_texts_are_refused_by_an_index_with_a_lexical_index(tiny_encoder, corpus_with_needle):
    r = Retriever.build(corpus_with_needle[:10], coarse=(4, 8), model=tiny_encoder, adapt=False)
    vectors = tiny_encoder.encode(["new"], [r.coarse, r.fine])
    with pytest.raises(CorpusError, match="lexical index"):
        r.add_vectors([500], vectors[r.coarse], vectors[r.fine])


def test_save_load_and_compact_keep_the_hybrid_answers(tmp_path, tiny_encoder, corpus_with_needle):
    r = Retriever.build(corpus_with_needle, coarse=(4, 8), model=tiny_encoder)
    r.fusion = Fusion("rrf", 0.6, 50)
    r.delete([3, 4])
    queries = ["xylophone", corpus_with_needle[10][:30], corpus_with_needle[50][:20]]
    want = [[(h.doc_id, round(h.score, 5)) for h in hits] for hits in r.search_batch(queries, k=5)]
    r.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["lexical"]["language"] == "english" and manifest["fusion"]["rule"] == "rrf"
    loaded = Retriever.load(tmp_path / "ix", model=tiny_encoder)
    assert loaded.fusion == r.fusion and len(loaded.lexical) == 80
    got = [[(h.doc_id, round(h.score, 5)) for h in hits] for hits in loaded.search_batch(queries, k=5)]
    assert got == want
    loaded.compact()
    assert len(loaded.lexical) == 78
    got = [[(h.doc_id, round(h.score, 5)) for h in hits] for hits in loaded.search_batch(queries, k=5)]
    assert [[d for d, _ in hits] for hits in got] == [[d for d, _ in hits] for hits in want]


def test_a_bad_language_is_refused_before_the_model_loads():
    with pytest.raises(InvalidArgument, match="language='klingon'"):
        Retriever.build(["a"], model="no-such-model-anywhere", language="klingon")


def test_documents_longer_than_the_model_are_counted_said_and_saved(tmp_path, caplog):
    from tests.helpers import make_encoder

    short = make_encoder("bert", max_length=12)
    texts = random_texts(40, seed=5, min_words=2, max_words=25)
    cut = short.over_length(texts)
    assert 0 < cut < 40 and cut == sum(len(short.tokenizer(t)["input_ids"]) > 12 for t in texts)
    with caplog.at_level("INFO", logger="adaptive_retrieval.indexing"):
        split = Retriever.build(texts, coarse=(4, 8), model=short)  # by default: split into passages
    assert split.truncated == 0 and split.ids.count > len(split) == 40
    assert (
        f"{cut} of 40 documents were longer than the model's max length (12 tokens): split into"
        in caplog.text
    )
    caplog.clear()
    with caplog.at_level("WARNING", logger="adaptive_retrieval.indexing"):
        r = Retriever.build(texts, coarse=(4, 8), model=short, passages=False)
    assert (
        r.truncated == cut
        and f"{cut} of 40 documents were longer than the model's max length (12" in caplog.text
    )
    r.add(["a b"])
    assert r.truncated == cut  # a short one adds nothing
    r.save(tmp_path / "ix")
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["truncated"] == cut
    assert Retriever.load(tmp_path / "ix", model=short).truncated == cut


@pytest.mark.parametrize("postings", ["engine", "local"])
@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_keyed_engines_fuse_and_reopen_with_their_terms_aligned(
    tiny_encoder, tmp_path, engine, postings, corpus_with_needle
):
    from tests.test_backends import engine_options

    corpus = {f"d{i}": t for i, t in enumerate(corpus_with_needle)}
    r = Retriever.build(
        corpus,
        coarse=(4, 8),
        model=tiny_encoder,
        backend=engine,
        backend_options={**engine_options(engine, tmp_path), "lexical": postings},
    )
    assert r.lexical.settings.get("postings", "local") == postings
    r.fusion, r.compact_at = LEXICAL_FIRST, None
    assert r.search("xylophone", k=1)[0].doc_id == "d37"
    r.delete(["d37"])
    r.upsert({"d2": "a xylophone solo"})  # a new row (a new key), the old one dead
    # the local index keeps a dead row until compaction; the engine's counts drop it at once
    assert r.search("xylophone", k=1)[0].doc_id == "d2" and len(r.lexical) == (
        81 if postings == "local" else 79
    )
    want = [h.doc_id for h in r.search("xylophone", k=10)]
    r.save(tmp_path / "idx")
    r.close()
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)  # the engine numbers its rows anew
    assert again.fusion == LEXICAL_FIRST and len(again.lexical) == len(again.ids)
    assert [h.doc_id for h in again.search("xylophone", k=10)] == want
    again.close()


@pytest.mark.parametrize(
    "change",
    [
        {"drop": "fusion"},
        {"drop": "lexical"},
        {"set": ("fusion", 5)},
        {"set": ("fusion", {"rule": "max", "weight": 0.5, "depth": 10})},
        {"set": ("lexical", {})},
        {"set": ("truncated", -1)},
        {"drop_file": "lexical"},
    ],
)
def test_a_manifest_with_its_lexical_records_damaged_is_refused(
    tmp_path, tiny_encoder, corpus_with_needle, change
):
    r = Retriever.build(corpus_with_needle[:20], coarse=(4, 8), model=tiny_encoder)
    r.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    if "drop" in change:
        del manifest[change["drop"]]
    elif "set" in change:
        manifest[change["set"][0]] = change["set"][1]
    else:
        for key in ("files", "sizes", "sha256", "sample_sha256"):
            del manifest[key][change["drop_file"]]
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexDamaged, match="damaged"):
        Retriever.load(tmp_path / "ix", model=tiny_encoder)


def test_texts_that_are_not_strings_are_refused_where_they_enter(tiny_encoder, corpus_with_needle):
    r = Retriever.build(corpus_with_needle[:20], coarse=(4, 8), model=tiny_encoder, adapt=False)
    vectors = tiny_encoder.encode(["x"], [r.coarse, r.fine])
    with pytest.raises(CorpusError, match="document 100 must be a str, got int"):
        r.add_vectors([100], vectors[r.coarse], vectors[r.fine], texts=[5])
    assert len(r) == len(r.lexical) == 20


def rewritten(path, out, **changes):
    """The saved lexical file at ``path`` with some arrays replaced, written to ``out``."""
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays.update(changes)
    np.savez(out, **arrays)
    return out


@pytest.mark.parametrize(
    "damage", ["row past the end", "ends inside a value", "a count flag without a count"]
)
def test_damaged_postings_are_refused_at_load_or_at_search_never_a_raw_error(tmp_path, damage):
    index = lexical(["cat dog", "cat cat fish", "bird cat"])
    index.save(tmp_path / "lex.npz", ["a", "b", "c"])
    with np.load(tmp_path / "lex.npz") as saved:
        codes = saved["codes"].copy()
    if damage == "row past the end":
        codes[0] = 0x7E  # the first term's first row: 63, in a 3-row index
    elif damage == "ends inside a value":
        codes[-1] |= 0x80
    else:
        codes[0] |= 1  # counted more than once, with no count aside
    bad = rewritten(tmp_path / "lex.npz", tmp_path / "bad.npz", codes=codes)
    for ids in (["a", "b", "c"], ["a", "b", "c", "d"]):  # as saved, and realigned at load
        with pytest.raises(IndexDamaged, match="lexical"):
            loaded = LexicalIndex.load(bad, ids)
            for query in ("cat", "dog", "fish", "bird"):
                loaded.scores(query)


def test_a_dead_row_counts_the_same_after_load_whether_or_not_rows_are_realigned(tmp_path):
    index = lexical(["cat dog", "cat cat cat fish", "cat bird"])
    before = index.scores("cat bird")
    index.save(tmp_path / "lex.npz", ["a", None, "c"])  # the second document deleted
    same = LexicalIndex.load(tmp_path / "lex.npz", ["a", None, "c"])
    grown = LexicalIndex.load(tmp_path / "lex.npz", ["a", None, "c", "d"])  # another writer added "d"
    np.testing.assert_array_equal(same.scores("cat bird"), before)
    assert same.bound("cat") == index.bound("cat")
    # realigned, the dead row keeps its terms: as an index of the same four rows would score them
    want = lexical(["cat dog", "cat cat cat fish", "cat bird", ""])
    np.testing.assert_allclose(grown.scores("cat bird"), want.scores("cat bird"), rtol=1e-6)
    assert grown.bound("cat") == pytest.approx(want.bound("cat"))


def test_saving_over_the_file_an_index_reads_mapped_keeps_it(tmp_path):
    index = lexical(random_texts(50, seed=11))
    index.save(tmp_path / "lex.npz", list(range(50)))
    loaded = LexicalIndex.load(tmp_path / "lex.npz", list(range(50)))
    loaded.save(tmp_path / "lex.npz", list(range(50)))
    again = LexicalIndex.load(tmp_path / "lex.npz", list(range(50)))
    for query in random_texts(5, seed=12, max_words=5):
        np.testing.assert_array_equal(again.scores(query), index.scores(query))
