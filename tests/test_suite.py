"""The out-of-domain sets (evals/make_datasets.py) and the one-table suite over them (evals/suite.py)."""

from __future__ import annotations

import json

import pytest

from evals.beir_eval import load_beir
from evals.make_datasets import (
    DEEP_WORDS,
    deep_queries,
    paraphrase_beir,
    paraphrase_set,
    parse_page,
    write_beir,
)
from evals.suite import main
from tests.helpers import make_model, make_tokenizer, write_dataset

RENDERED = """open(2)        System Calls Manual        open(2)

NAME
       open, openat, creat - open and possibly create a file

LIBRARY
       Standard C library (libc, -lc)

SYNOPSIS
       #include <fcntl.h>

DESCRIPTION
       The open() system call opens the file specified by pathname.
"""


def test_a_man_page_gives_its_description_and_the_rest():
    description, body = parse_page(RENDERED)
    assert description == "open and possibly create a file"
    assert body.startswith("Standard C library (libc, -lc) #include <fcntl.h> The open() system call")
    assert "creat" not in body  # the NAME section (the function names) stays out of the document
    assert parse_page("x(1)\n\nNAME\n       x\n") is None  # no " - " description


def test_long_pages_are_whole_and_their_queries_lie_deep_and_are_unique():
    page = RENDERED + "\nCOLOPHON\n       This page is part of release 6.7 of the man-pages project.\n"
    _, whole = parse_page(page, max_words=None)
    assert "release 6.7" not in whole and "release 6.7" in parse_page(page, max_words=1000)[1]
    filler = " ".join(f"w{i}" for i in range(DEEP_WORDS + 20))
    docs = {
        "a.2": f"{filler} Early words. The deep answer lies right here in page a. End of it.",
        "b.2": f"{filler} Early words. The deep answer lies right here in page a. End of it.",  # the same
        "c.3": f"{filler} Early words. Only this page says that the sky is green today. Fin.",
        "d.3": "short page. nothing deep here at all.",
    }
    queries, qrels = deep_queries(docs, seed=0)
    assert list(qrels.values()) == [{"c.3"}]  # a and b share their sentence; d is short
    (query,) = queries.values()
    assert query.startswith("Only this page says") and len(query.split()) <= 12
    assert docs["c.3"].split().index("Only") >= DEEP_WORDS


def test_paraphrase_pairs_make_queries_that_are_not_in_the_corpus():
    pairs = [
        ("a cat sits", "a cat is sitting", 4.6),
        ("a cat sits", "the cat sat down", 4.0),
        ("a dog runs", "a dog is running", 3.9),  # below the threshold: no query, both in the corpus
        ("a cat is sitting", "a kitten sits", 4.8),  # its first sentence is already relevant: skipped
        ("same", "same", 5.0),
    ]
    corpus, queries = paraphrase_set(pairs, 4.0)
    assert queries == {"a cat sits": {"a cat is sitting", "the cat sat down"}}
    assert "a cat sits" not in corpus and {"a dog runs", "a dog is running", "a kitten sits"} <= set(corpus)


def test_written_sets_load_with_beir_and_split_queries_in_halves(tmp_path):
    pairs = [(f"query {i}", f"answer {i}", 4.5) for i in range(20)] + [
        (f"x {i}", f"y {i}", 1.0) for i in range(30)
    ]
    docs, queries, qrels = paraphrase_beir(pairs, 4.0)
    counts = write_beir(
        tmp_path / "beir" / "para", docs, queries, qrels, max_queries=10, max_docs=25, seed=0, about="test"
    )
    assert counts == {"documents": 25, "queries_dev": 5, "queries_test": 5}
    corpus, test_q, test_qrels = load_beir(tmp_path, "para", "test")
    _, dev_q, dev_qrels = load_beir(tmp_path, "para", "dev")
    assert len(corpus) == 25 and not set(test_qrels) & set(dev_qrels)
    for qrels_, queries_ in ((test_qrels, test_q), (dev_qrels, dev_q)):
        for q, rel in qrels_.items():  # every relevant document is kept, and is the query's partner
            (doc,) = rel
            assert doc in corpus and corpus[doc]["text"] == queries_[q].replace("query", "answer")


def test_suite_writes_one_table_of_exact_shipped_and_adapted_rows(tmp_path):
    data = write_dataset(tmp_path / "data", n_docs=300)  # more than the adaptation's shortlist of 100
    model_dir = tmp_path / "model"
    make_model("bert", n_layers=4).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "out"
    args = ["--datasets", str(data / "beir" / "tiny"), "--model", str(model_dir), "--coarse", "2x8"]
    main([*args, "--candidates", "5", "20", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)])
    saved = json.loads((out / "results.json").read_text())
    rows = saved["rows"]
    assert saved["command"] and saved["labels"]["qrels"] and saved["source"]["commit"]  # the whole header
    assert [(r["row"], r["candidates"]) for r in rows] == [
        ("exact 4x32", None),
        ("funnel 2x8, shipped heads", 5),
        ("funnel 2x8, shipped heads", 20),
        ("funnel 2x8, adapted at build", 5),
        ("funnel 2x8, adapted at build", 20),
        ("funnel 2x8, adapted at build, projected query", 5),
        ("funnel 2x8, adapted at build, projected query", 20),
    ]
    assert rows[0]["ndcg_share"] == 1.0 and rows[0]["overlap@10"] == 1.0
    adapted = rows[3]
    assert adapted["adaptation"]["documents"] == 300 and adapted["adapt_seconds"] > 0
    assert adapted["adaptation"]["chosen"] == "ridge"
    assert adapted["ndcg_share"] == pytest.approx(adapted["ndcg@10"] / rows[0]["ndcg@10"])
    assert "adapted at build" in (out / "table.md").read_text()
    merged = main(
        ["--table", str(out / "results.json"), str(out / "results.json"), "--out", str(tmp_path / "all")]
    )
    assert len(merged) == 14 and (tmp_path / "all" / "table.md").read_text().count("adapted at build") == 8
    with pytest.raises(SystemExit, match="not a BEIR-format dataset folder"):
        main(["--datasets", str(tmp_path), "--model", str(model_dir)])
