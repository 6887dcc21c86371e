"""The hybrid evaluation and the lexical cost benchmark, run end to end on tiny data and a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from adaptive_retrieval.encoding_cache import encode_beir_corpus
from adaptive_retrieval.hybrid import Fusion
from adaptive_retrieval.passages import Passage
from evals.hybrid_eval import NOISE, choose, passage_rows
from tests.helpers import make_model, make_tokenizer, random_texts

RUN = {"check": True, "capture_output": True, "text": True, "timeout": 600}


def tiny_set(root, name: str, n_docs: int = 120, splits=("dev", "test")):
    folder = root / "beir" / name
    (folder / "qrels").mkdir(parents=True)
    texts = random_texts(n_docs, seed=7, min_words=6)
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"_id": str(i), "title": "", "text": t}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i in range(20):
            fh.write(json.dumps({"_id": f"q{i}", "text": " ".join(texts[i * 5].split()[:4])}) + "\n")
    for s, part in zip(splits, (range(0, 10), range(10, 20))):
        (folder / "qrels" / f"{s}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i * 5}\t1\n" for i in part)
        )
    return folder


def tiny_model(root):
    model = root / "model"
    make_model("bert").save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    return model


def test_hybrid_eval_tiny(tmp_path):
    """Rows for BM25, dense and every fusion on dev and test; the fused rows equal what search returns;
    a fusion is chosen on dev."""
    folder = tiny_set(tmp_path / "data", "tiny")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "evals.hybrid_eval",
        "--datasets",
        str(folder),
        "--model",
        str(tiny_model(tmp_path)),
    ]
    subprocess.run(
        [*cmd, "--coarse", "3x16", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)], **RUN
    )
    saved = json.loads((out / "results.json").read_text())
    rows = {(r["split"], r["row"]): r for r in saved["rows"]}
    default = f"hybrid {Fusion().label()}"
    assert {"bm25", "dense exact", "dense", "hybrid convex 0.7", "hybrid rrf 0.5", default} <= {
        r for _, r in rows
    }
    # the rows searched with each query encoded once answer as searches one query at a time do
    assert (
        rows[("test", default)]["same_as_search"] == 1.0 and rows[("test", "dense")]["same_as_search"] == 1.0
    )
    assert rows[("test", "bm25")]["ndcg@10"] > 0.5  # the queries are words of their document
    assert saved["chosen"]["row"].startswith("hybrid") and saved["chosen"]["sets"] == ["tiny"]
    assert saved["costs"][0]["docs"] == 120 and saved["costs"][0]["lexical_ram_bytes_per_doc"] > 0
    assert "command" in saved and "machine" in saved


def test_choose_takes_the_best_mean_among_fusions_within_noise_of_the_better_part():
    def rows(scores: dict[str, list[float]]) -> list[dict]:  # per row name, nDCG@10 on sets a and b
        return [
            {"dataset": s, "split": "dev", "row": name, "ndcg@10": v[i]}
            for name, v in scores.items()
            for i, s in enumerate("ab")
        ]

    parts = {"bm25": [0.50, 0.80], "dense": [0.70, 0.60]}  # the better part: 0.70 on a, 0.80 on b
    steady = {"hybrid steady": [0.701, 0.801]}  # the best worst margin (+0.001), a small mean
    bold = {"hybrid bold": [0.70 - NOISE / 2, 0.90]}  # within noise on a, far ahead on b
    reckless = {"hybrid reckless": [0.70 - 2 * NOISE, 0.95]}  # the best mean, but loses past noise on a
    got = choose(rows({**parts, **steady, **bold, **reckless}))
    assert got["row"] == "hybrid bold" and got["sets"] == ["a", "b"]
    assert got["worst_margin"] == pytest.approx(-NOISE / 2, abs=1e-12)
    assert got["mean_margin"] == pytest.approx((-NOISE / 2 + 0.10) / 2)
    # none within noise: the best worst margin
    assert (
        choose(rows({**parts, **reckless, "hybrid worse": [0.70 - 3 * NOISE, 0.99]}))["row"]
        == "hybrid reckless"
    )
    assert choose(rows(parts)) is None and choose(rows({**parts, **bold}), split="test") is None


def test_bench_hybrid_tiny(tmp_path):
    folder = tiny_set(tmp_path / "data", "scifact", splits=("test", "dev"))
    assert folder.is_dir()
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_hybrid", "--data-dir", str(tmp_path / "data"), "--model",
         str(tiny_model(tmp_path)), "--coarse", "3x16", "--sizes", "300", "--add", "30", "--queries", "5",
         "--workdir", str(tmp_path), "--out", str(out)],
        **RUN,
    )  # fmt: skip
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["docs"] == 300 and row["add_documents"] == 30 and row["lexical_p50_ms"] > 0
    assert row["hybrid_p50_ms"] > 0 and row["dense_p50_ms"] > 0 and row["saved_lexical_bytes_per_doc"] > 0


def test_passages_eval_tiny(tmp_path):
    """Both indexes (cut and split) with dense and hybrid rows beside BM25, on dev and test; the split
    index has more rows than documents and every row's cost is counted."""
    folder = tiny_set(tmp_path / "data", "tiny")
    model = tmp_path / "model"
    make_model("bert").save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 16}))
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "evals.passages_eval", "--datasets", str(folder), "--model", str(model),
         "--coarse", "3x16", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)],
        **RUN,
    )  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    rows = {(r["split"], r["index"], r["row"]): r for r in saved["rows"]}
    for split in ("dev", "test"):
        assert {(split, "whole", "bm25")} | {
            (split, i, r) for i in ("truncated", "passages") for r in ("dense", "hybrid")
        } <= set(rows)
    assert rows[("test", "whole", "bm25")]["ndcg@10"] > 0.5  # the queries are words of their document
    (cost,) = saved["costs"]
    assert cost["truncated"]["rows"] == cost["passages"]["documents"] == 120
    assert cost["passages"]["rows"] > 120 and cost["passages"]["split"] == cost["truncated"]["cut"] > 0
    assert cost["tokens_ratio"] > 1 and cost["encode_ratio"] > 0 and "command" in saved and "machine" in saved


def test_passage_rows_are_the_same_whether_or_not_the_whole_corpus_is_cached(tmp_path, tiny_encoder):
    """hybrid_eval encodes only the documents that fit when the whole corpus' encoding is not cached: the
    rows (ids, texts, every layer's vectors) are those it builds from the whole corpus' cached encoding."""
    texts = random_texts(12, seed=3, min_words=6)
    texts[2] = " ".join(random_texts(40, seed=4, min_words=8))  # past the tiny model's 64 tokens: split
    texts[7] = " ".join(random_texts(30, seed=5, min_words=8))
    corpus = {str(i): {"title": "", "text": t} for i, t in enumerate(texts)}
    cold = passage_rows(tiny_encoder, corpus, tmp_path / "cold")
    assert list((tmp_path / "cold").glob("*.npy"))  # the encodings were cached
    encode_beir_corpus(tiny_encoder, corpus, tmp_path / "warm")  # as beir_eval leaves the whole corpus
    warm = passage_rows(tiny_encoder, corpus, tmp_path / "warm")
    assert cold[0] == warm[0] and cold[1] == warm[1] and cold[3]["split"] == 2
    assert sum(isinstance(r, Passage) for r in cold[1]) > 2 and "2" not in cold[1] and "0" in cold[1]
    np.testing.assert_allclose(cold[2][1], warm[2][1], atol=1e-5)
    assert cold[2][0] == warm[2][0]
