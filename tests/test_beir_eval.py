"""The BEIR evaluation end to end on a tiny model and a synthetic BEIR-format dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from adaptive_retrieval import Retriever, View
from adaptive_retrieval.encoding_cache import encode_all_layers, view_matrix
from evals.beir_eval import (
    evaluate_model,
    grid_views,
    load_beir,
    load_split,
    main,
    run_config,
    series,
    top_overlap,
)
from tests.helpers import N_DOCS, make_encoder, make_model, make_tokenizer, random_texts, write_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return load_beir(write_dataset(tmp_path_factory.mktemp("data")), "tiny", "test")


def test_a_known_ranking_gives_the_known_ndcg(tiny_encoder, dataset, tmp_path):
    corpus, queries, qrels = dataset
    rows = evaluate_model(tiny_encoder, corpus, queries, qrels, candidates=[5, N_DOCS], cache_dir=tmp_path)
    full = next(r for r in rows if r["kind"] == "exact" and r["fine"] == [12, 32])
    # the query's own document is identical to it: cosine 1, rank 1, for the exact full view...
    assert full["ndcg@10"] == 1.0 and full["mrr@10"] == 1.0 and full["recall@100"] == 1.0
    # ... and for every funnel whose shortlist holds the whole corpus
    for r in rows:
        if r["kind"] == "funnel" and r["candidates"] == N_DOCS:
            assert r["ndcg@10"] == 1.0, r
    kinds = {(r["kind"], r["candidates"]) for r in rows}
    assert ("funnel", 5) in kinds and ("exact", None) in kinds
    assert all(0 <= r["ndcg@10"] <= 1 and r["p50_ms"] > 0 and r["flops_per_query"] > 0 for r in rows)
    funnel = next(r for r in rows if r["kind"] == "funnel")
    assert funnel["fine_bytes_per_doc"] == 32 * 2  # float16
    assert funnel["layers_per_query"] == 12


def test_funnel_run_agrees_with_numpy_brute_force(tiny_encoder, dataset, tmp_path):
    corpus, queries, qrels = dataset
    doc_ids = list(corpus)
    texts = [d["text"] for d in corpus.values()]
    all_layers = encode_all_layers(tiny_encoder, doc_ids, texts, tmp_path)
    coarse, fine, c = View(4, 5), View(12, 32), 7
    _, run = run_config(
        tiny_encoder, all_layers, doc_ids, corpus, queries, qrels, coarse, fine, c, index="Flat"
    )  # float32 coarse rows, as NumPy scores them
    docs_c, docs_f = (
        view_matrix(tiny_encoder, all_layers, coarse),
        view_matrix(tiny_encoder, all_layers, fine).astype(np.float16),
    )
    for qid, text in queries.items():
        q = tiny_encoder.encode(text, [coarse, fine])
        shortlist = np.argsort(-(docs_c @ q[coarse]), kind="stable")[:c]
        scores = docs_f[shortlist].astype(np.float32) @ q[fine]
        order = np.argsort(-scores, kind="stable")
        expected = {doc_ids[shortlist[i]]: float(scores[i]) for i in order}
        assert list(run[qid]) == list(expected)
        np.testing.assert_allclose(list(run[qid].values()), list(expected.values()), atol=1e-6)


def test_top_overlap_counts_the_reference_top_k():
    reference = {"q1": {"a": 3.0, "b": 2.0, "c": 1.0}, "q2": {"x": 1.0, "y": 0.5}}
    run = {"q1": {"c": 9.0, "a": 8.0, "z": 7.0}, "q2": {"y": 2.0}}
    assert top_overlap(run, reference, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)  # q1: {a,b} vs {c,a}
    assert top_overlap(run, reference, k=3) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert top_overlap(reference, reference) == 1.0
    assert top_overlap({}, reference) == 0.0
    with pytest.raises(ValueError, match="k must be >= 1"):
        top_overlap(run, reference, k=0)


def test_overlap_column_measures_the_funnel_against_exact_fine(tiny_encoder, dataset, tmp_path):
    corpus, queries, qrels = dataset
    fine = View(12, 32)
    rows = evaluate_model(
        tiny_encoder, corpus, queries, qrels, candidates=[5, 20], cache_dir=tmp_path, index="Flat"
    )
    assert next(r for r in rows if r["kind"] == "exact" and r["fine"] == [12, 32])["overlap@10"] == 1.0
    doc_ids = list(corpus)
    all_layers = encode_all_layers(tiny_encoder, doc_ids, [d["text"] for d in corpus.values()], tmp_path)
    docs_f = view_matrix(tiny_encoder, all_layers, fine)
    for r in rows:
        if r["kind"] != "funnel" or r["adapt"] != "shipped":  # the model's own views
            continue
        coarse = View(*r["coarse"])
        docs_c = view_matrix(tiny_encoder, all_layers, coarse)
        shares = []
        for text in queries.values():  # the share of the exact fine top 10 inside the coarse shortlist
            q = tiny_encoder.encode(text, [coarse, fine])
            truth = set(np.argsort(-(docs_f @ q[fine]), kind="stable")[:10])
            shortlist = set(np.argsort(-(docs_c @ q[coarse]), kind="stable")[: r["candidates"]])
            shares.append(len(truth & shortlist) / 10)
        assert r["overlap@10"] == pytest.approx(np.mean(shares)), r
    assert any(r["overlap@10"] < 1 for r in rows if r["kind"] == "funnel")


def test_build_rows_use_the_head_retriever_build_fits(tiny_encoder, tmp_path):
    corpus, queries, qrels = load_beir(write_dataset(tmp_path / "data", n_docs=300), "tiny", "test")
    rows = evaluate_model(
        tiny_encoder,
        corpus,
        queries,
        qrels,
        grid="none",
        funnel_coarse=[View(3, 8)],
        candidates=[10],
        cache_dir=tmp_path / "cache",
        adapt="build",
    )
    assert [(r["kind"], r.get("adapt"), r["coarse_query"]) for r in rows] == [
        ("exact", None, None),
        ("funnel", "build", "early"),
        ("funnel", "build", "projected"),
    ]
    assert [series(r) for r in rows] == [
        "exact",
        "funnel, head fitted at build",
        "funnel, head fitted at build, projected query",
    ]
    built = Retriever.build(corpus, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, candidates=100)
    assert rows[1]["adaptation"] == rows[2]["adaptation"]
    record, expected = rows[1]["adaptation"], built.adaptation.as_dict()
    assert record["chosen"] == expected["chosen"] == "ridge" and record["ridge"] == expected["ridge"]
    assert record["fidelity_before"] == pytest.approx(expected["fidelity_before"], abs=1e-6)
    assert record["fidelity_by_ridge"] == pytest.approx(expected["fidelity_by_ridge"], abs=1e-6)
    with pytest.raises(ValueError, match="adapt='yes'"):
        evaluate_model(tiny_encoder, corpus, queries, qrels, cache_dir=tmp_path / "cache", adapt="yes")


def test_interrupted_encoding_resumes_at_its_last_whole_part(tiny_encoder, tmp_path, monkeypatch):
    ids, texts = [f"d{i}" for i in range(10)], random_texts(10, seed=3)
    views = [View(layer, 32) for layer in range(1, 13)]
    one_pass = tiny_encoder.encode(texts, views, batch_size=2)
    expected = np.stack([one_pass[v] for v in views])
    by_length = [texts[i] for i in np.argsort([-len(x) for x in tiny_encoder.tokenize(texts)], kind="stable")]
    real_encode, calls, fail_at = tiny_encoder.encode, [], []

    def encode(batch, *args, **kwargs):
        if fail_at and len(calls) == fail_at[0]:
            raise KeyboardInterrupt  # the job is killed while encoding this part
        calls.append(list(batch))
        return real_encode(batch, *args, **kwargs)

    def run(texts, part_size, fail_after=None):
        calls.clear()
        fail_at[:] = [] if fail_after is None else [fail_after]
        return encode_all_layers(tiny_encoder, ids, texts, tmp_path, part_size=part_size, batch_size=2)

    monkeypatch.setattr(tiny_encoder, "encode", encode)
    with pytest.raises(KeyboardInterrupt):
        run(texts, 4, fail_after=2)
    assert not list(tmp_path.glob("*.npy"))  # no cache yet, two parts kept
    assert len(list(tmp_path.glob("*.parts/0*.npy"))) == 2
    resumed = run(texts, 4)
    assert calls == [by_length[8:]]  # only the part that was lost (parts go by token count)
    np.testing.assert_array_equal(resumed, expected)  # the very batches of one uninterrupted pass
    assert len(list(tmp_path.glob("*.npy"))) == 1 and not list(tmp_path.glob("*.parts"))  # parts cleaned up
    # parts left with another part size are not trusted: all encoded again
    other = [*texts[:9], "virus"]
    with pytest.raises(KeyboardInterrupt):
        run(other, 4, fail_after=2)
    run(other, 3)
    assert [len(c) for c in calls] == [3, 3, 3, 1] and sorted(t for c in calls for t in c) == sorted(other)
    with pytest.raises(ValueError, match="part_size"):
        encode_all_layers(tiny_encoder, ids, texts, tmp_path, part_size=0)


def test_cache_is_reused_and_never_stale(tiny_encoder, tmp_path):
    ids, texts = ["a", "b"], ["cell gene", "bone risk"]
    first = encode_all_layers(tiny_encoder, ids, texts, tmp_path)
    assert first.shape == (12, 2, 32) and len(list(tmp_path.glob("*.npy"))) == 1
    np.testing.assert_array_equal(encode_all_layers(tiny_encoder, ids, texts, tmp_path), first)
    changed = encode_all_layers(tiny_encoder, ids, ["cell gene", "virus"], tmp_path)  # new corpus: new entry
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.allclose(changed[:, 1], first[:, 1])
    renamed = make_encoder(seed=0)
    renamed.name = "same weights, another name"
    renamed.set_head(2, torch.eye(32))
    np.testing.assert_array_equal(
        encode_all_layers(renamed, ids, texts, tmp_path), first
    )  # heads apply later
    assert len(list(tmp_path.glob("*.npy"))) == 2
    other = encode_all_layers(make_encoder(seed=5), ids, texts, tmp_path)  # other weights: new entry
    assert len(list(tmp_path.glob("*.npy"))) == 3 and not np.allclose(other, first)
    # views derived from the cache equal views encoded directly
    np.testing.assert_allclose(
        view_matrix(tiny_encoder, first, View(3, 8)), tiny_encoder.encode(texts, [(3, 8)])[(3, 8)], atol=1e-6
    )


def test_cached_states_leave_the_heads_to_the_views(tiny_encoder, tmp_path):
    """An encoder with a coarse head writes (and reads) the same cache as its plain weights, and the
    views derived from it equal the views it encodes directly: the head applies once, after the cache."""
    ids, texts = ["a", "b", "c"], ["cell gene", "bone risk", "virus load"]
    with_head = make_encoder(seed=0)
    with_head.set_head(2, torch.randn(32, 32, generator=torch.Generator().manual_seed(3)))
    plain = encode_all_layers(tiny_encoder, ids, texts, None)
    np.testing.assert_allclose(encode_all_layers(with_head, ids, texts, None), plain, atol=1e-6)
    cached = encode_all_layers(with_head, ids, texts, tmp_path)  # the head's encoder makes the cache
    np.testing.assert_allclose(cached, plain, atol=1e-6)
    for view in (View(2, 8), View(2, 32), View(3, 8)):
        np.testing.assert_allclose(
            view_matrix(with_head, cached, view), with_head.encode(texts, [view])[view], atol=1e-5
        )
    assert not np.allclose(
        view_matrix(with_head, cached, View(2, 8)), view_matrix(tiny_encoder, cached, View(2, 8))
    )


def test_grids():
    class Fake:
        n_layers, hidden_size = 12, 768

    assert grid_views(Fake, "quick") == [View(2, 32), View(4, 64), View(6, 128), View(8, 256), View(12, 768)]
    full = grid_views(Fake, "full")
    assert len(full) == 12 * 6 and View(1, 32) in full and View(12, 768) in full


def test_missing_dataset_says_where_to_put_it(tmp_path):
    with pytest.raises(SystemExit, match=r"(?s)dataset 'mine' .* is not in .*beir/mine.*--data-dir"):
        load_beir(tmp_path, "mine", "test")  # not a public BEIR set: nothing to download


def test_dev_split_needs_train_queries(tmp_path):
    data = write_dataset(tmp_path / "data")  # test qrels only
    with pytest.raises(SystemExit, match="carved from tiny's train queries"):
        load_split(data, "tiny", "dev")
    with pytest.raises(SystemExit, match="--dev-fraction must be in"):
        load_split(data, "tiny", "dev", dev_fraction=1.0)


def test_command_line_end_to_end(tmp_path):
    data = write_dataset(tmp_path / "data")
    model_dir = tmp_path / "model"
    make_model("bert", n_layers=4).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    out = tmp_path / "out"
    main(
        [
            "--dataset",
            "tiny",
            "--data-dir",
            str(data),
            "--model",
            str(model_dir),
            "--candidates",
            "5",
            "10",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(out),
        ]
    )
    results = json.loads((out / "results.json").read_text())
    assert results["n_docs"] == N_DOCS and results["machine"]["cores"] >= 1 and results["labels"]["qrels"]
    required = {
        "model",
        "kind",
        "coarse",
        "fine",
        "candidates",
        "ndcg@10",
        "recall@10",
        "recall@100",
        "mrr@10",
        "layers_per_query",
        "flops_per_query",
        "coarse_bytes_per_doc",
        "fine_bytes_per_doc",
        "p50_ms",
        "p95_ms",
        "encode_coarse_p50_ms",
        "coarse_search_p50_ms",
        "resume_fine_p50_ms",
        "rerank_p50_ms",
    }
    assert all(required <= set(r) for r in results["rows"])
    assert (out / "pareto.png").stat().st_size > 10_000
    (out / "pareto.png").unlink()
    rows = main(["--replot", str(out / "results.json"), "--out", str(out)])
    assert len(rows) == len(results["rows"]) and (out / "pareto.png").stat().st_size > 10_000
