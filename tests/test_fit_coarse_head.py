from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_retrieval.adapt import distil_head
from adaptive_retrieval.adapt import fit_ridge_head as fit_head
from training.fit_coarse_head import relevance_matrix


def test_head_recovers_a_linear_relation_and_orders_dims_by_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=-1).numpy()
    mix = torch.randn(16, 16, generator=g).numpy()
    fine = x @ mix
    head, stats = fit_head(x, fine, ridge=1e-6)
    assert stats["relative_residual"] < 1e-6
    mapped = x @ head.numpy()
    # full-width inner products are preserved ...
    np.testing.assert_allclose(mapped @ mapped.T, fine @ fine.T, atol=1e-3)
    # ... and the leading dims carry the most energy
    energy = (mapped**2).sum(0)
    assert np.all(np.diff(energy) <= 1e-6)


def test_ridge_shrinks_the_head():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g).numpy()
    f = torch.randn(50, 8, generator=g).numpy()
    small, _ = fit_head(x, f, ridge=1e-4)
    big, _ = fit_head(x, f, ridge=10.0)
    assert big.norm() < small.norm()


def _overlap(a: torch.Tensor, b: torch.Tensor, k: int) -> float:
    return float(
        np.mean(
            [len(set(x) & set(y)) / k for x, y in zip(a.topk(k).indices.tolist(), b.topk(k).indices.tolist())]
        )
    )


def test_distillation_makes_the_cut_head_rank_as_the_fine_view():
    g = torch.Generator().manual_seed(2)
    norm = torch.nn.functional.normalize
    fine_docs = norm(torch.randn(600, 24, generator=g), dim=-1)
    fine_q = norm(fine_docs[:200] + 0.3 * torch.randn(200, 24, generator=g), dim=-1)
    mix = torch.randn(24, 24, generator=g)

    # the coarse state is a noisy, mixed copy of the fine view; its noise is largest where the fine
    # view's variance is largest, so plain regression spends its few output dims badly
    def coarse(f):
        return norm(f @ mix + 0.5 * torch.randn(f.shape, generator=g) * torch.linspace(2, 0.1, 24), dim=-1)

    docs, queries = (coarse(fine_docs), fine_docs), (coarse(fine_q), fine_q)
    ridge, _ = fit_head(
        torch.cat([docs[0], queries[0]]).numpy(), torch.cat([docs[1], queries[1]]).numpy(), basis_rows=600
    )
    head, stats = distil_head(
        ridge, queries, docs, dims=[4, 24], steps=150, temperature=0.1, lr=1e-2, batch_size=64
    )
    assert head.shape == ridge.shape and stats["distil_loss_last"] < stats["distil_loss_first"]
    truth = fine_q @ fine_docs.T

    def cut(w, x):
        return norm((x @ w)[:, :4], dim=-1)

    before = _overlap(cut(ridge, queries[0]) @ cut(ridge, docs[0]).T, truth, 10)
    after = _overlap(cut(head, queries[0]) @ cut(head, docs[0]).T, truth, 10)
    assert after > before + 0.02


def test_relevance_matrix_keeps_judged_queries_with_a_document_in_the_corpus():
    rows, relevance = relevance_matrix([{"a": 1, "b": 3}, {"zz": 1}, {"a": 0}, {"c": 2}], ["a", "b", "c"])
    assert rows.tolist() == [0, 3]
    assert relevance.tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0]]


def test_the_relevance_term_ranks_the_judged_documents_higher():
    g = torch.Generator().manual_seed(3)
    norm = torch.nn.functional.normalize
    docs_f = norm(torch.randn(300, 16, generator=g), dim=-1)
    docs = (norm(docs_f + 0.8 * torch.randn(300, 16, generator=g), dim=-1), docs_f)
    anchors_f = norm(torch.randn(100, 16, generator=g), dim=-1)
    anchors = (norm(anchors_f + 0.8 * torch.randn(100, 16, generator=g), dim=-1), anchors_f)
    # labelled queries whose relevant document is one the fine view does not rank first
    queries = norm(torch.randn(60, 16, generator=g), dim=-1)
    judged = torch.randint(300, (60,), generator=g)
    relevance = torch.zeros(60, 300)
    relevance[torch.arange(60), judged] = 1.0
    start = torch.eye(16)
    kwargs = dict(dims=[4, 16], steps=150, temperature=0.1, lr=1e-2, batch_size=64)
    plain, _ = distil_head(start, anchors, docs, **kwargs)
    taught, _ = distil_head(start, anchors, docs, labelled=(queries, relevance), **kwargs)

    def judged_rank(w):
        scores = norm((queries @ w)[:, :4], dim=-1) @ norm((docs[0] @ w)[:, :4], dim=-1).T
        return float((scores > scores[torch.arange(60), judged][:, None]).sum(1).float().mean())

    assert judged_rank(taught) < 0.5 * judged_rank(plain)
    with pytest.raises(ValueError, match="one column per document"):
        distil_head(start, anchors, docs, labelled=(queries, relevance[:, :10]), **kwargs)


def test_command_line_writes_heads_an_encoder_loads(tmp_path):
    import json

    from adaptive_retrieval import Encoder
    from adaptive_retrieval.models import HEADS_FILE, load_heads
    from tests.helpers import N_QUERIES, make_model, make_tokenizer, write_dataset
    from training.fit_coarse_head import main

    data = write_dataset(tmp_path / "data")
    folder = data / "beir" / "tiny"
    with open(folder / "qrels" / "train.tsv", "w") as fh:  # the test queries double as train queries here
        fh.write("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{3 * i}\t1\n" for i in range(N_QUERIES)))
    make_model("bert", n_layers=4).save_pretrained(tmp_path / "m")
    make_tokenizer().save_pretrained(tmp_path / "m")
    args = [
        "--base",
        str(tmp_path / "m"),
        "--layers",
        "1",
        "2",
        "--dataset",
        "tiny",
        "--data-dir",
        str(data),
        "--cache-dir",
        str(tmp_path / "c"),
        "--distil-steps",
        "3",
        "--distil-dims",
        "8",
        "--out",
        str(tmp_path / "m"),
    ]
    # the relevance term (first: the base must stay head-less): the 5 kept train queries' qrels
    taught_args = [*args, "--supervised-weight", "1"]
    taught_args[taught_args.index("--out") + 1] = str(tmp_path / "taught")
    provenance = json.loads((main(taught_args) / "provenance.json").read_text())
    assert "with their qrels (5 queries with a relevant document)" in provenance["data"]
    assert provenance["distil"]["supervised_weight"] == 1.0 and "train qrels" in provenance["target"]
    with pytest.raises(SystemExit):  # qrels without their queries' text
        main([*taught_args, "--text", "corpus", "titles"])
    taught = load_heads(tmp_path / "taught" / HEADS_FILE)

    out = main(args)
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["layers"] == [1, 2] and "no test queries, no test qrels" in provenance["data"]
    # 6 train queries, one held out as dev (round(0.1 * 6)); the empty titles are skipped
    assert "minus the dev split (--dev-fraction 0.1, --seed 42), 5, text only" in provenance["data"]
    assert "titles" not in provenance["data"]
    assert provenance["distil"]["dims"] == [8, 32] and "distil_loss_last" in provenance["fit"]["1"]
    assert (out / HEADS_FILE).is_file()
    enc = Encoder.from_pretrained(tmp_path / "m")  # the heads beside the weights are picked up
    assert set(enc.heads) == {1, 2} and enc.heads[1].dtype == torch.float32
    assert not torch.equal(taught[2].float(), enc.heads[2])  # the relevance term moved the head
