"""BM25 alone, dense alone and hybrid (each fusion rule and weight) through the library's own retriever,
on BEIR-format sets: choose the fusion on dev queries, report it on test.

    python -m evals.hybrid_eval --datasets ../shared/data/beir/scifact runs/data/beir/stsb-para \\
        runs/data/beir/sick-para runs/data/beir/sts12-16-para runs/data/beir/manpages --out docs/results/hybrid

Per dataset the corpus is encoded once (cached, as ``beir_eval.py`` does) and indexed as
``Retriever.build`` indexes it (the coarse view fitted to the corpus on its first chunk, every coarse
vector the fine one projected; a lexical index of the same texts), through ``Retriever.from_vectors``.
Rows, on the dev and test queries: ``bm25`` (the lexical index alone, ``bm25s``' scores), ``dense exact``
(the fine view over every document), ``dense`` (the funnel, ``hybrid=False``), ``hybrid <rule> <weight>``
(the funnel fused with BM25, :mod:`adaptive_retrieval.hybrid`), and the default fusion over an exact
dense stage (the hybrid funnel's fidelity reference). Each row has nDCG@10, MRR@10 and Recall@100; the
main rows their p50 latency per query (one query at a time), the hybrid funnel its overlap@10 with the
exact hybrid. Cost: the lexical index's build seconds beside the corpus' encoding (timed on a sample of
documents in the same run), and its bytes per document beside the vectors'.

The fusion is chosen on dev: the rule and weight whose worst margin over the sets' dev queries,
``nDCG@10(hybrid) - max(nDCG@10(bm25), nDCG@10(dense))``, is highest (ties: the mean margin).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder, FaissOptions, Retriever, SearchTimings
from adaptive_retrieval.adapt import adapt_encoder, project_fine
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.hybrid import Fusion, fused_search
from adaptive_retrieval.indexing import projection_of
from adaptive_retrieval.lexical import LexicalIndex
from adaptive_retrieval.reporting import (
    markdown_table,
    model_info,
    percentiles_ms,
    settings,
    write_json,
    write_markdown,
)
from adaptive_retrieval.retriever import CHUNK_SIZE
from evals.beir_eval import check_dev_split, load_split, score, top_overlap
from evals.suite import dataset_location

GRID = tuple(Fusion("convex", w) for w in (0.5, 0.6, 0.7, 0.8, 0.9)) + tuple(
    Fusion("rrf", w) for w in (0.5, 0.6, 0.7)
)
DEPTH = 100  # every row ranks this many documents (Recall@100)
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("split", "split", "s"),
    ("row", "row", "s"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("MRR@10", "mrr@10", ".4f"),
    ("R@100", "recall@100", ".3f"),
    ("∩exact@10", "overlap@10", ".3f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("lexical p50 ms", "lexical_p50_ms", ".2f"),
    ("= search", "same_as_search", ".3f"),
)


def run_of(doc_ids: list[str], qids: list[str], D: np.ndarray, I: np.ndarray) -> dict:
    """A BEIR run (qid -> {doc id: score}) of ``(D, I)`` rows."""
    return {q: {doc_ids[r]: float(d) for d, r in zip(ds, rs) if r >= 0} for q, ds, rs in zip(qids, D, I)}


def timed_run(retriever: Retriever, queries: dict[str, str], **kwargs: Any) -> tuple[dict, dict[str, float]]:
    """A run searched one query at a time, and its p50 latencies (total, and the lexical stage)."""
    run, totals, lexical = {}, [], []
    for q, text in queries.items():
        timings = SearchTimings()
        hits = retriever.search_batch([text], k=DEPTH, timings=timings, **kwargs)[0]
        run[q] = {str(h.doc_id): h.score for h in hits}
        totals.append(timings.total)
        lexical.append(timings.lexical)
    return run, {"p50_ms": percentiles_ms(totals)[0], "lexical_p50_ms": percentiles_ms(lexical)[0]}


def bm25_run(
    lexical: LexicalIndex, doc_ids: list[str], queries: dict[str, str]
) -> tuple[dict, dict[str, float]]:
    run, seconds = {}, []
    for q, text in queries.items():
        t0 = time.perf_counter()
        scores, rows = lexical.top(text, DEPTH)
        seconds.append(time.perf_counter() - t0)
        run[q] = {doc_ids[r]: float(s) for r, s in zip(rows, scores)}
    return run, {"p50_ms": percentiles_ms(seconds)[0]}


def index_for(
    encoder: Encoder, corpus: dict, cache_dir: Path | None, coarse: str = "4x64", row_ids: list | None = None,
    encoded: Any = None,
) -> tuple[Retriever, list[str], dict[str, Any]]:  # fmt: skip
    """The corpus indexed as ``Retriever.build`` indexes it, and what its building cost. ``row_ids``: the
    index's ids of the corpus' entries, in order (e.g. :class:`adaptive_retrieval.passages.Passage` rows
    whose texts ``corpus`` holds under string keys); default the corpus' own ids. ``encoded``: the
    corpus' ``(ids, all layers)`` as :func:`adaptive_retrieval.encoding_cache.encode_beir_corpus` returns
    them, when put together elsewhere."""
    doc_ids, all_layers = encode_beir_corpus(encoder, corpus, cache_dir) if encoded is None else encoded
    doc_ids = doc_ids if row_ids is None else list(row_ids)
    fine = encoder.full_view
    coarse = encoder.check_view(coarse, name="coarse")
    fine_docs = view_matrix(encoder, all_layers, fine)
    texts = [text for _, text in iter_documents(corpus)]
    first = slice(0, CHUNK_SIZE)
    adapted, record = adapt_encoder(
        encoder, coarse, fine, [all_layers[i][first] for i in range(coarse.layer)], fine_docs[first],
        texts=texts[:CHUNK_SIZE], candidates=100,
    )  # fmt: skip
    t0 = time.perf_counter()
    lexical = LexicalIndex()
    lexical.stage(texts)
    lexical.commit()
    lexical_seconds = time.perf_counter() - t0
    sample = texts[:: max(1, len(texts) // 64)][:64]  # the encoding's cost, timed in this run
    encoder.encode(encoder.as_documents(sample[:2]), [fine], show_progress=False)  # warm: time the work only
    t0 = time.perf_counter()
    encoder.encode(encoder.as_documents(sample), [fine], show_progress=False)
    encode_seconds = (time.perf_counter() - t0) / len(sample) * len(texts)
    projection = projection_of(record)  # as build: the fine vectors projected, or the model's own head
    coarse_docs = (
        view_matrix(adapted, all_layers, coarse)
        if projection is None
        else project_fine(fine_docs, projection)
    )
    retriever = Retriever.from_vectors(
        adapted, coarse, fine, doc_ids, coarse_docs, fine_docs,
        adaptation=record, backend=FaissOptions(), texts=texts,
    )  # fmt: skip
    coarse_bytes, fine_bytes = retriever.backend.nbytes()
    with tempfile.TemporaryDirectory() as folder:
        retriever.save(folder)
        files = {p.name.split("-")[0]: p.stat().st_size for p in Path(folder).iterdir() if p.is_file()}
    n = len(doc_ids)
    cost = {
        "docs": n,
        "lexical_build_s": lexical_seconds,
        "encode_s_estimated": encode_seconds,
        "lexical_share_of_build": lexical_seconds / (encode_seconds + lexical_seconds),
        "lexical_ram_bytes_per_doc": lexical.stats["bytes"] / n,
        "vector_bytes_per_doc": (coarse_bytes + fine_bytes) / n,
        "saved_bytes_per_doc": {k: v / n for k, v in sorted(files.items())},
        "lexical_terms": lexical.stats["terms"],
        "postings_per_doc": lexical.stats["postings"] / n,
    }
    return retriever, doc_ids, cost


def evaluate(
    folder: Path,
    encoder: Encoder,
    cache_dir: Path | None,
    splits: Sequence[str],
    grid: Sequence[Fusion],
    max_queries: int | None = None,
    coarse: str = "4x64",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data_dir, name = dataset_location(folder)
    rows: list[dict[str, Any]] = []
    retriever = doc_ids = cost = None
    for split in splits:
        corpus, queries, qrels = load_split(data_dir, name, split)
        if name == "scifact" and split == "dev":
            check_dev_split([encoder.name], list(queries))
        if max_queries:
            queries = dict(islice(queries.items(), max_queries))
            qrels = {q: qrels[q] for q in queries if q in qrels}
        if retriever is None:
            retriever, doc_ids, cost = index_for(encoder, corpus, cache_dir, coarse)
        base = {"dataset": name, "split": split, "queries": len(queries)}

        def add(
            row: str, run: dict, extra: dict | None = None, base=base, qrels=qrels, **fields: Any
        ) -> None:
            rows.append({**base, "row": row, **fields, **score(qrels, run), **(extra or {})})
            print(f"{base['dataset']} {base['split']:4s} {row:22s} nDCG@10 {rows[-1]['ndcg@10']:.4f}",
                  file=sys.stderr, flush=True)  # fmt: skip

        run, extra = bm25_run(retriever.lexical, doc_ids, queries)
        add("bm25", run, extra)
        qids, texts = list(queries), list(queries.values())
        # every query encoded once: the fusions below re-rank the same funnel answers
        fine_q = np.asarray(
            encoder.encode(encoder.as_queries(texts), [retriever.fine], show_progress=False)[retriever.fine],
            np.float32,
        )
        De, Ie = retriever.search_arrays(texts, k=DEPTH, candidates=len(doc_ids), hybrid=False)
        exact = run_of(doc_ids, qids, De, Ie)
        add("dense exact", exact)
        Df, If = retriever.search_arrays(texts, k=DEPTH, hybrid=False)
        _, extra = timed_run(retriever, queries, hybrid=False)
        add(
            "dense",
            run_of(doc_ids, qids, Df, If),
            extra,
            **{"overlap@10": top_overlap(run_of(doc_ids, qids, Df, If), exact)},
        )
        default = retriever.fusion
        for fusion in grid:
            read = np.zeros(len(qids), np.int64)
            D, I, _ = fused_search(
                retriever.backend, retriever.lexical, fusion, texts, fine_q, Df, If, DEPTH, None, read
            )
            Dx, Ix, _ = fused_search(
                retriever.backend, retriever.lexical, fusion, texts, fine_q, De, Ie, DEPTH, None, read
            )
            run, extra = run_of(doc_ids, qids, D, I), None
            if fusion == default:  # through search itself, one query at a time: the same answers, timed
                searched, extra = timed_run(retriever, queries)
                extra["same_as_search"] = top_overlap(searched, run, k=DEPTH)
            add(f"hybrid {fusion.rule} {fusion.weight:g}", run, extra, fusion=fusion.as_dict(),
                **{"overlap@10": top_overlap(run, run_of(doc_ids, qids, Dx, Ix))})  # fmt: skip
        retriever.fusion = default
    return rows, {"dataset": name, **(cost or {})}


def choose(rows: list[dict[str, Any]], split: str = "dev") -> dict[str, Any] | None:
    """The fusion with the best worst-case margin over the sets' ``split`` rows (see the docstring)."""
    margins: dict[str, list[float]] = {}
    by_set: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["split"] == split:
            by_set.setdefault(row["dataset"], {})[row["row"]] = row["ndcg@10"]
    for scores in by_set.values():
        best_part = max(scores["bm25"], scores["dense"])
        for name, value in scores.items():
            if name.startswith("hybrid"):
                margins.setdefault(name, []).append(value - best_part)
    if not margins:
        return None
    name = max(margins, key=lambda n: (min(margins[n]), float(np.mean(margins[n]))))
    return {"row": name, "worst_margin": min(margins[name]), "mean_margin": float(np.mean(margins[name])),
            "sets": sorted(by_set)}  # fmt: skip


def arguments(description: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments of the evaluations over BEIR-format sets (this one and ``evals.passages_eval``)."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders (…/beir/<name>)"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument(
        "--coarse", default="4x64", help="the coarse view, LAYERxDIM (as Retriever.build's default)"
    )
    ap.add_argument("--splits", nargs="+", default=["dev", "test"])
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--max-queries", type=int, help="only the first N queries of each split (a quick look)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = ap.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    encoder = Encoder.from_pretrained(args.model)
    rows, costs = [], []
    for folder in args.datasets:
        got, cost = evaluate(
            folder, encoder, args.cache_dir, args.splits, GRID, args.max_queries, args.coarse
        )
        rows += got
        costs.append(cost)
        print(json.dumps(cost), file=sys.stderr, flush=True)
    chosen = choose(rows)
    print(markdown_table(rows, COLUMNS))
    print(f"chosen on dev: {chosen}")
    if args.out:
        header = settings(
            labels=(
                f"{args.model}: see its provenance (mpnet-base-2dmse's adapter was trained on SciFact train "
                "qrels, its dev split held out); BM25 saw none; the fusion was chosen on the dev queries' qrels"
            ),
        )  # fmt: skip
        write_json(args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows,
                                               "costs": costs, "chosen": chosen})  # fmt: skip
        table = (
            markdown_table(rows, COLUMNS)
            + f"\n\nChosen on dev: {chosen}\n\nCosts: {json.dumps(costs, indent=1)}"
        )
        write_markdown(args.out / "results.md", "BM25, dense and hybrid", header, table)


if __name__ == "__main__":
    main()
