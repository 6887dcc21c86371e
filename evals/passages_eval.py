"""Long documents indexed as passages against the same documents cut to the model's max length, beside
BM25 alone, through the library's own retriever, on BEIR-format sets (the long man-page set is made for
it: ``python -m evals.make_datasets --only manpages-long``).

    python -m evals.passages_eval --datasets runs/data/beir/manpages-long --out docs/results/passages

Each corpus is indexed twice, as ``Retriever.build`` indexes it (:func:`evals.hybrid_eval.index_for`:
the encodings cached, the coarse view fitted to the corpus, a lexical index of the same texts):
``truncated`` (``passages=False``: one row per document, cut) and ``passages`` (the default: a document
longer than the model's max length split by :func:`adaptive_retrieval.passages.split` into rows, grouped
back into documents at search). Rows on the dev and test queries, each searched one at a time with
``k=10`` through ``Retriever.search_batch``: ``bm25`` (whole documents, ``bm25s``' scores), then for each
index ``dense`` (``hybrid=False``), ``hybrid`` (the default fusion) and ``hybrid convex <w>`` (the convex
fusion at fixed fine-view weights, :data:`WEIGHTS`), and ``bm25`` over the passages (each document by its best). Each has nDCG@10, Recall@10 (the
long set's one relevant page per query: the share of queries answered in the top 10), MRR@10 and p50 ms.
Cost per index: rows, the tokens each encoding reads (passages against cut: the build's encoding time,
which grows with them), the encoding's seconds (timed on a sample in the same run, scaled to every row:
noisy on a loaded machine), vector bytes per document.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_retrieval import Encoder, SearchTimings
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.hybrid import Fusion
from adaptive_retrieval.passages import document_of
from adaptive_retrieval.reporting import (
    markdown_table,
    model_info,
    percentiles_ms,
    settings,
    write_json,
    write_markdown,
)
from evals.beir_eval import first_queries, load_split, score
from evals.hybrid_eval import arguments, bm25_run, index_for, passage_rows
from evals.suite import dataset_location

K = 10
WEIGHTS = (0.5, 0.6, 0.7, 0.8)
"""Fine-view weights of the fixed convex fusion tried beside the default fusion"""
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("split", "split", "s"),
    ("index", "index", "s"),
    ("row", "row", "s"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("R@10", "recall@10", ".3f"),
    ("MRR@10", "mrr@10", ".4f"),
    ("p50 ms", "p50_ms", ".1f"),
)


def bm25_grouped(retriever: Any, queries: dict[str, str]) -> tuple[dict, dict[str, float]]:
    """BM25 alone over the index's rows (passages), each document ranked by its best passage."""
    run, seconds = {}, []
    ids = retriever.doc_ids
    for q, text in queries.items():
        t0 = time.perf_counter()
        scores, found = retriever.lexical.top(text, 50 * K)
        best: dict[str, float] = {}
        for score_, row in zip(scores.tolist(), found.tolist()):
            best.setdefault(str(document_of(ids[row])), score_)
        seconds.append(time.perf_counter() - t0)
        run[q] = dict(list(best.items())[:K])
    return run, {"p50_ms": percentiles_ms(seconds)[0]}


def searched(retriever: Any, queries: dict[str, str], **kwargs: Any) -> tuple[dict, dict[str, float]]:
    """A run of ``k=10`` searches, one query at a time, and their p50 latency."""
    run, totals = {}, []
    for q, text in queries.items():
        timings = SearchTimings()
        hits = retriever.search_batch([text], k=K, timings=timings, **kwargs)[0]
        run[q] = {str(h.doc_id): h.score for h in hits}
        totals.append(timings.total)
    return run, {"p50_ms": percentiles_ms(totals)[0]}


def evaluate(
    folder: Path, encoder: Encoder, cache_dir: Path | None, splits: Sequence[str], max_queries: int | None,
    coarse: str = "4x64",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:  # fmt: skip
    data_dir, name = dataset_location(folder)
    rows: list[dict[str, Any]] = []
    indexes: dict[str, Any] = {}
    costs: dict[str, Any] = {"dataset": name}
    for split_name in splits:
        corpus, queries, qrels = load_split(data_dir, name, split_name)
        queries, qrels = first_queries(queries, qrels, max_queries)
        if not indexes:
            truncated, doc_ids, cost = index_for(encoder, corpus, cache_dir, coarse)
            costs["truncated"] = {
                **cost,
                "rows": len(doc_ids),
                "cut": encoder.over_length([t for _, t in iter_documents(corpus)]),
            }
            rows_corpus, row_ids, encoded, counts = passage_rows(encoder, corpus, cache_dir)
            passages, _, cost = index_for(
                encoder, rows_corpus, cache_dir, coarse, row_ids=row_ids, encoded=encoded
            )
            costs["passages"] = {**cost, **counts}
            indexes = {"truncated": truncated, "passages": passages}
        base = {"dataset": name, "split": split_name, "queries": len(queries)}

        def add(
            index: str, row: str, run: dict, extra: dict, base=base, qrels=qrels, split_name=split_name
        ) -> None:
            rows.append({**base, "index": index, "row": row, **score(qrels, run), **extra})
            print(f"{name} {split_name:4s} {index:9s} {row:7s} nDCG@10 {rows[-1]['ndcg@10']:.4f} "
                  f"R@10 {rows[-1]['recall@10']:.3f}", file=sys.stderr, flush=True)  # fmt: skip

        run, extra = bm25_run(indexes["truncated"].lexical, list(corpus), queries)
        add("whole", "bm25", run, extra)
        add("passages", "bm25", *bm25_grouped(indexes["passages"], queries))
        for index, retriever in indexes.items():
            for row, hybrid in (("dense", False), ("hybrid", True)):
                run, extra = searched(retriever, queries, hybrid=hybrid)
                add(index, row, run, {**extra, "fusion": retriever.fusion.label()} if hybrid else extra)
            default = retriever.fusion
            for weight in WEIGHTS:  # fixed weights beside the default fusion (same searches, another fusion)
                retriever.fusion = Fusion("convex", weight, default.depth)
                add(index, f"hybrid convex {weight:g}", *searched(retriever, queries))
            retriever.fusion = default
    for index in ("truncated", "passages"):
        c = costs[index]
        c["vector_bytes_per_document"] = c["vector_bytes_per_doc"] * c["docs"] / costs["truncated"]["docs"]
    costs["encode_ratio"] = costs["passages"]["encode_s_estimated"] / costs["truncated"]["encode_s_estimated"]
    costs["tokens_ratio"] = costs["passages"]["tokens_encoded"] / costs["passages"]["tokens_encoded_cut"]
    return rows, costs


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    encoder = Encoder.from_pretrained(args.model)
    rows, costs = [], []
    for folder in args.datasets:
        got, cost = evaluate(folder, encoder, args.cache_dir, args.splits, args.max_queries, args.coarse)
        rows += got
        costs.append(cost)
        print(json.dumps(cost), file=sys.stderr, flush=True)
    print(markdown_table(rows, COLUMNS))
    if args.out:
        header = settings(
            labels=(
                f"{args.model}: see its provenance (mpnet-base-2dmse's adapter was trained on SciFact train "
                "qrels); BM25 saw none; the default fusion was chosen on six sets' dev qrels, this long set's among "
                "them (docs/results/hybrid); "
                "the passages' size and overlap saw no labels"
            ),
        )  # fmt: skip
        write_json(
            args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows, "costs": costs}
        )
        table = markdown_table(rows, COLUMNS) + f"\n\nCosts: {json.dumps(costs, indent=1)}"
        write_markdown(args.out / "results.md", "Passages against truncation, beside BM25", header, table)


if __name__ == "__main__":
    main()
