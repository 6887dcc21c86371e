"""Long documents as passages: split, indexed as rows, grouped back into documents at search, through
delete, upsert, filters, persistence and the keyed engines."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from adaptive_retrieval.errors import InvalidArgument
from adaptive_retrieval.passages import Passage, budget, document_of, group, row_id_of, split
from tests.helpers import make_encoder, random_texts

MAX_LENGTH = 24


@pytest.fixture(scope="module")
def encoder():
    return make_encoder("bert", max_length=MAX_LENGTH)


@pytest.fixture(scope="module")
def corpus():
    texts = random_texts(40, seed=3, min_words=5, max_words=60)
    return {f"d{i}": {"text": t, "section": "odd" if i % 2 else "even"} for i, t in enumerate(texts)}


def build(corpus, encoder, **kw):
    kw.setdefault("store_text", True)
    return Retriever.build(corpus, coarse=(1, 16), model=encoder, **kw)


def token_count(encoder, text):
    return len(encoder.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_split_covers_the_text_in_overlapping_windows_that_fit(encoder):
    size = budget(encoder)
    assert size == MAX_LENGTH - 2  # [CLS] and [SEP]
    texts = random_texts(30, seed=5, min_words=1, max_words=90)
    for text, spans in zip(texts, split(encoder.tokenizer, texts, size, overlap=4)):
        if token_count(encoder, text) <= size:
            assert spans == [(0, len(text))]
            continue
        assert len(spans) > 1 and spans[0][0] == 0 and spans[-1][1] == len(text)
        for (s0, e0), (s1, e1) in itertools.pairwise(spans):
            assert s0 < s1 < e0 < e1  # consecutive passages overlap and move on
        for s, e in spans:
            assert token_count(encoder, text[s:e]) <= size  # a window leaves a spare token or two


def test_split_cuts_at_a_sentence_break_in_the_window_last_third(encoder):
    sentence = "the cell is a gene. "  # 6 tokens: a break in the last third of every window
    text = sentence * 20
    spans = split(encoder.tokenizer, [text], 20, overlap=2)[0]
    assert len(spans) > 1
    assert all(text[e - 1] in ". " for _, e in spans[:-1]), spans  # each cut right after a full stop


def test_a_passage_is_named_by_its_document_and_number_and_saved_as_a_list():
    p = Passage("bash.1", 3, 10, 90)
    assert p == Passage("bash.1", 3, 0, 0) and hash(p) == hash(Passage("bash.1", 3, 0, 0))
    assert p != Passage("bash.1", 4, 10, 90) and p != ("bash.1", 3, 10, 90) and p != "bash.1"
    back = row_id_of(json.loads(json.dumps(p)))
    assert isinstance(back, Passage) and tuple(back) == ("bash.1", 3, 10, 90)
    assert row_id_of("x") == "x" and row_id_of(7) == 7 and document_of(p) == "bash.1"


def test_group_keeps_each_documents_best_row():
    ids = ["a", Passage("b", 0, 0, 5), Passage("b", 1, 3, 9), "c"]
    D = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], np.float32)
    I = np.array([[2, 1, 0, 3, -1]])
    gD, gI, short = group(D, I, ids, 3)
    assert gI.tolist() == [[2, 0, 3]] and gD[0].tolist() == pytest.approx([0.9, 0.7, 0.6]) and not short
    _, gI, short = group(D, I, ids, 4)
    assert gI.tolist() == [[2, 0, 3, -1]] and short


def test_build_splits_long_documents_and_search_returns_documents(encoder, corpus):
    retriever = build(corpus, encoder, hybrid=False)
    long_docs = [d for d, doc in corpus.items() if token_count(encoder, doc["text"]) > budget(encoder)]
    assert long_docs and len(retriever) == len(corpus) and retriever.ids.count > len(corpus)
    assert retriever.passages and retriever.truncated == 0
    assert all(d in retriever for d in corpus) and "nope" not in retriever
    queries = random_texts(6, seed=9, min_words=3, max_words=8)
    for query in queries:
        hits = retriever.search(query, k=10, candidates=retriever.ids.count)
        assert len({h.doc_id for h in hits}) == len(hits) == 10
        # the exact answer: each document's best passage, by the fine view
        fine_q = encoder.encode([query], [retriever.fine])[retriever.fine][0]
        best = {}
        for row_id in retriever.doc_ids:
            text = corpus[document_of(row_id)]["text"]
            piece = text if not isinstance(row_id, Passage) else text[row_id.start : row_id.end]
            score = float(encoder.encode([piece], [retriever.fine])[retriever.fine][0] @ fine_q)
            best[document_of(row_id)] = max(best.get(document_of(row_id), -9.0), score)
        expected = sorted(best.values(), reverse=True)[:10]  # fine vectors are stored in float16: by score
        assert [h.score for h in hits] == pytest.approx(expected, abs=2e-3)
        for h in hits:
            assert h.score == pytest.approx(best[h.doc_id], abs=2e-3)
            text = corpus[h.doc_id]["text"]
            if h.doc_id in long_docs:
                assert h.passage is not None and h.text == text[h.passage.start : h.passage.end]
            else:
                assert h.passage is None and h.text == text
            assert h.metadata == {"section": corpus[h.doc_id]["section"]}


def test_by_passage_returns_rows_and_k_beyond_the_documents_widens(encoder, corpus):
    retriever = build(corpus, encoder)
    passages = retriever.search("vitamin bone fracture risk", k=retriever.ids.count, by="passage")
    assert len(passages) == retriever.ids.count  # every row, some documents several times
    assert len({(h.doc_id, None if h.passage is None else h.passage.n) for h in passages}) == len(passages)
    docs = retriever.search("vitamin bone fracture risk", k=100)
    assert sorted(h.doc_id for h in docs) == sorted(corpus)  # every document once
    with pytest.raises(InvalidArgument, match="by='sentence'"):
        retriever.search("vitamin", by="sentence")


def test_filters_see_the_documents_metadata_on_every_passage(encoder, corpus):
    retriever = build(corpus, encoder)
    hits = retriever.search("gene expression in cancer cells", k=8, filter={"section": "odd"})
    assert len(hits) == 8 and all(corpus[h.doc_id]["section"] == "odd" for h in hits)
    assert len({h.doc_id for h in hits}) == 8


def test_delete_and_upsert_replace_every_passage(encoder, corpus):
    retriever = build(corpus, encoder)
    long_docs = [d for d in corpus if retriever.ids.row(d) is None]
    rows = retriever.ids.count
    first = long_docs[0]
    n_first = sum(document_of(d) == first for d in retriever.doc_ids)
    assert retriever.delete([first]) == 1
    assert (
        first not in retriever and retriever.ids.count == rows - n_first and len(retriever) == len(corpus) - 1
    )
    assert first not in {h.doc_id for h in retriever.search("cell", k=len(retriever))}
    # long -> short, short -> long, long -> long of another length
    short = next(d for d in corpus if retriever.ids.row(d) is not None)
    new = {
        long_docs[1]: "a short one now",
        short: " ".join(["vitamin bone fracture"] * 30),
        long_docs[2]: corpus[long_docs[2]]["text"] + " " + corpus[long_docs[3]]["text"],
    }
    retriever.upsert(new)
    assert len(retriever) == len(corpus) - 1
    live = [d for d in retriever.doc_ids if d is not None]
    assert (
        len(live) == retriever.ids.count and len(retriever.documents) == retriever.ids.count
    )  # no stale text
    assert retriever.ids.row(long_docs[1]) is not None  # whole now
    assert retriever.ids.row(short) is None and short in retriever  # split now
    ns = [d.n for d in live if document_of(d) == long_docs[2]]
    assert ns == list(range(len(ns))) and len(ns) > 1
    hits = retriever.search("vitamin bone fracture", k=3, hybrid=False)
    assert hits[0].doc_id == short and hits[0].passage is not None
    assert hits[0].text == new[short][hits[0].passage.start : hits[0].passage.end]
    retriever.compact()
    assert retriever.ids.dead == 0 and len(retriever) == len(corpus) - 1
    assert retriever.search("vitamin bone fracture", k=3, hybrid=False)[0].doc_id == short


def test_save_and_load_keep_passages(encoder, corpus, tmp_path):
    retriever = build(corpus, encoder)
    retriever.delete([next(d for d in corpus if retriever.ids.row(d) is None)])
    retriever.save(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["passages"] is True and manifest["documents"] == len(retriever) < manifest["count"]
    loaded = Retriever.load(tmp_path / "index", model=encoder)
    assert loaded.passages and len(loaded) == len(retriever) and loaded.ids.count == retriever.ids.count
    assert [d for d in loaded.doc_ids if d is not None] == [d for d in retriever.doc_ids if d is not None]
    assert all(tuple(a) == tuple(b) for a, b in zip(loaded.ids.live_ids(), retriever.ids.live_ids()))
    query = "immune response to virus infection"
    assert loaded.search(query, k=5, hybrid=False) == retriever.search(query, k=5, hybrid=False)
    loaded.add({"new": " ".join(["brain heart"] * 40)})  # a later add splits too
    assert loaded.ids.row("new") is None and "new" in loaded


def test_passages_off_cuts_and_counts(encoder, corpus):
    retriever = build(corpus, encoder, passages=False)
    long_docs = [d for d, doc in corpus.items() if token_count(encoder, doc["text"]) > MAX_LENGTH - 2]
    assert retriever.ids.count == len(retriever) == len(corpus) and not retriever.passages
    assert retriever.truncated == len(long_docs) > 0
    assert all(h.passage is None for h in retriever.search("cell", k=10))


@pytest.mark.parametrize("engine", ["qdrant", "milvus"])
def test_keyed_engines_reopen_passages(encoder, corpus, tmp_path, engine):
    from tests.test_backends import engine_options

    retriever = build(corpus, encoder, backend=engine, backend_options=engine_options(engine, tmp_path))
    first = next(d for d in corpus if retriever.ids.row(d) is None)
    retriever.delete([first])
    query = "gene expression in cancer cells"
    before = retriever.search(
        query, k=5, hybrid=False
    )  # BM25's statistics count deleted rows until a compaction
    retriever.save(tmp_path / "index")
    retriever.close()
    loaded = Retriever.load(tmp_path / "index", model=encoder)
    assert len(loaded) == len(corpus) - 1 and first not in loaded
    assert isinstance(next(d for d in loaded.doc_ids if isinstance(d, Passage)), Passage)
    assert [(h.doc_id, h.passage) for h in loaded.search(query, k=5, hybrid=False)] == [
        (h.doc_id, h.passage) for h in before
    ]
    loaded.upsert({first: " ".join(["vitamin bone"] * 30)})
    assert first in loaded and loaded.ids.row(first) is None
    assert loaded.search("vitamin bone", k=1, hybrid=False)[0].doc_id == first
    loaded.close()


def test_framework_retrievers_hand_over_the_matched_passage(encoder, corpus):
    pytest.importorskip("langchain_core")
    retriever = build(corpus, encoder)
    docs = retriever.as_langchain(k=40).invoke("gene expression in cancer cells")
    assert len({d.metadata["doc_id"] for d in docs}) == 40
    split_doc = next(d for d in docs if "passage" in d.metadata)
    span = split_doc.metadata["passage"]
    assert split_doc.page_content == corpus[split_doc.metadata["doc_id"]]["text"][span["start"] : span["end"]]
    assert all(
        "passage" not in d.metadata for d in docs if retriever.ids.row(d.metadata["doc_id"]) is not None
    )


def test_a_document_of_many_passages_does_not_crowd_out_the_others(encoder, corpus):
    big = " ".join(["vitamin bone fracture risk"] * 150)  # dozens of near-identical passages
    retriever = build({**corpus, "big": {"text": big}}, encoder, hybrid=False)
    rows_of_big = sum(document_of(d) == "big" for d in retriever.doc_ids)
    assert rows_of_big > 3 * 3  # more than a first pass of 3k rows holds
    hits = retriever.search("vitamin bone fracture risk", k=3, candidates=retriever.ids.count)
    assert hits[0].doc_id == "big" and len({h.doc_id for h in hits}) == 3  # widened until 3 documents
    first_pass = retriever.search(
        "vitamin bone fracture risk", k=9, by="passage", candidates=retriever.ids.count
    )
    assert len({h.doc_id for h in first_pass}) < 3  # the first 3k rows held too few documents: it widened
