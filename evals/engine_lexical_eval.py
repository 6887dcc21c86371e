"""BM25 postings held by the engine against the local lexical index, on real sets: the same hybrid
answers? at what cost?

    python -m evals.engine_lexical_eval --datasets ../shared/data/beir/scifact \\
        runs/data/beir/manpages-long --chunks 10000 500 --out docs/results/engine-lexical

Per dataset the corpus is encoded and indexed as ``python -m evals.hybrid_eval`` indexes it (passages,
the coarse view fitted on its first chunk, every coarse vector the fine one projected). The same vectors
and texts then go, chunk by chunk as ``Retriever.build`` adds them (``--chunks``: the chunk sizes tried;
the build's is 10,000), to FAISS with the local lexical index (the reference), and to Qdrant (local mode)
and Milvus Lite, each with its postings local (``lexical="local"``) and in the engine
(``lexical="engine"``: :mod:`adaptive_retrieval.engine_lexical`, whose weights use the first chunk's
mean length). Rows, on the test queries, one ``k=10`` hybrid search a query with the default fusion:
nDCG@10, R@10, overlap@10 with the reference's top 10 (``∩ref@10``), the share of queries whose top 10
is the reference's in the same order (``= ref``) and whose ten scores are the reference's to four
decimals (``= ref's scores``: an order that differs only among tied documents, such as duplicate pages,
counts as the same), the same two against the same engine with its postings local (``∩local@10``,
``= local's scores``: what moving the postings changes), p50 of the whole search and of its lexical stage,
the seconds to index (the vectors given, no encoding), and the lexical index's bytes held in this
process per document. Qdrant's local mode is a Python emulation of Qdrant's API, not the engine: its
timings say nothing of a Qdrant server.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder, Retriever, SearchTimings
from adaptive_retrieval.backends import FaissOptions, MilvusOptions, QdrantOptions
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR
from adaptive_retrieval.reporting import (
    markdown_table,
    model_info,
    percentiles_ms,
    settings,
    write_json,
    write_markdown,
)
from evals.beir_eval import first_queries, load_split, score, top_overlap
from evals.hybrid_eval import Prepared, passage_rows, prepared
from evals.suite import dataset_location

K = 10
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("engine", "engine", "s"),
    ("postings", "postings", "s"),
    ("chunk", "chunk", "d"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("R@10", "recall@10", ".3f"),
    ("∩ref@10", "overlap@10", ".4f"),
    ("= ref", "same_order", ".3f"),
    ("= ref's scores", "same_scores", ".3f"),
    ("∩local@10", "overlap_local@10", ".4f"),
    ("= local's scores", "same_scores_local", ".3f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("lexical p50 ms", "lexical_p50_ms", ".2f"),
    ("index s", "index_s", ".1f"),
    ("lexical B/doc here", "lexical_bytes_per_doc", ".1f"),
)


def indexed(p: Prepared, engine: str, postings: str, chunk: int, folder: Path) -> tuple[Retriever, float]:
    """``p``'s rows indexed chunk by chunk on ``engine`` with its postings where ``postings`` says, and the
    seconds it took."""
    options: Any = FaissOptions()
    if engine == "qdrant":
        options = QdrantOptions(
            path=str(folder / "qdrant"), collection=f"c{postings}{chunk}", lexical=postings
        )
    elif engine == "milvus":
        options = MilvusOptions(uri=str(folder / f"milvus-{postings}-{chunk}.db"), lexical=postings)
    t0 = time.perf_counter()
    first = slice(0, chunk)
    r = Retriever.from_vectors(
        p.encoder, p.coarse, p.fine, p.doc_ids[first], p.coarse_docs[first], p.fine_docs[first],
        adaptation=p.adaptation, backend=options, texts=p.texts[first],
    )  # fmt: skip
    for start in range(chunk, len(p.doc_ids), chunk):
        part = slice(start, start + chunk)
        r.add_vectors(p.doc_ids[part], p.coarse_docs[part], p.fine_docs[part], texts=p.texts[part])
    return r, time.perf_counter() - t0


def searched(r: Retriever, queries: dict[str, str]) -> tuple[dict, list[list], dict[str, float]]:
    """A run of one ``k=10`` search a query: the BEIR run, each query's ids in order and its scores (to
    four decimals), the p50s."""
    run, order, totals, lexical = {}, [], [], []
    for q, text in queries.items():
        timings = SearchTimings()
        hits = r.search_batch([text], k=K, timings=timings)[0]
        run[q] = {str(h.doc_id): h.score for h in hits}
        order.append([[str(h.doc_id) for h in hits], [round(h.score, 4) for h in hits]])
        totals.append(timings.total)
        lexical.append(timings.lexical)
    return run, order, {"p50_ms": percentiles_ms(totals)[0], "lexical_p50_ms": percentiles_ms(lexical)[0]}


def evaluate(folder: Path, encoder: Encoder, args: argparse.Namespace) -> list[dict[str, Any]]:
    data_dir, name = dataset_location(folder)
    corpus, queries, qrels = load_split(data_dir, name, "test")
    queries, qrels = first_queries(queries, qrels, args.max_queries)
    rows_corpus, row_ids, encoded, _ = passage_rows(encoder, corpus, args.cache_dir)
    p = prepared(encoder, rows_corpus, args.cache_dir, args.coarse, row_ids=row_ids, encoded=encoded)
    out: list[dict[str, Any]] = []
    reference: tuple[dict, list] | None = None
    local: dict[str, tuple[dict, list]] = {}  # each engine's run with the postings local
    with tempfile.TemporaryDirectory() as tmp:
        plan = [("faiss", "local", max(args.chunks))] + [
            (engine, postings, chunk)
            for engine in args.engines
            for postings in ("local", "engine")
            for chunk in (args.chunks if postings == "engine" else [max(args.chunks)])
        ]
        for engine, postings, chunk in plan:
            r, seconds = indexed(p, engine, postings, chunk, Path(tmp))
            run, order, timing = searched(r, queries)
            if reference is None:
                reference = run, order
            if postings == "local":
                local[engine] = run, order
            mine = local[engine]
            stats = r.lexical.stats
            row = {
                "dataset": name, "engine": engine, "postings": postings, "chunk": chunk, "queries": len(queries),
                "docs": len(corpus), "rows": len(p.doc_ids), **score(qrels, run),
                "overlap@10": top_overlap(run, reference[0]),
                "same_order": float(np.mean([a[0] == b[0] for a, b in zip(order, reference[1])])),
                "same_scores": float(np.mean([a[1] == b[1] for a, b in zip(order, reference[1])])),
                "overlap_local@10": top_overlap(run, mine[0]),
                "same_scores_local": float(np.mean([a[1] == b[1] for a, b in zip(order, mine[1])])),
                **timing, "index_s": seconds,
                "lexical_bytes_per_doc": (stats["bytes"] + stats["vocabulary_bytes"]) / len(corpus),
                "mean_length_used": stats.get("mean_length"),
            }  # fmt: skip
            out.append(row)
            print(
                json.dumps({k: v for k, v in row.items() if not isinstance(v, dict)}),
                file=sys.stderr,
                flush=True,
            )
            r.close()
    return out


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders (…/beir/<name>)"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument(
        "--coarse", default="4x64", help="the coarse view, LAYERxDIM (as Retriever.build's default)"
    )
    ap.add_argument("--engines", nargs="+", default=["qdrant", "milvus"], choices=["qdrant", "milvus"])
    ap.add_argument("--chunks", type=int, nargs="+", default=[10_000], help="documents added per step")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--max-queries", type=int, help="only the first N test queries (a quick look)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = ap.parse_args(argv)
    if any(c < 1 for c in args.chunks):
        ap.error("--chunks must be >= 1")
    encoder = Encoder.from_pretrained(args.model)
    rows: list[dict[str, Any]] = []
    for folder in args.datasets:
        rows += evaluate(folder, encoder, args)
    print(markdown_table(rows, COLUMNS))
    if args.out:
        header = settings(
            labels=(
                f"{args.model}: see its provenance (mpnet-base-2dmse's adapter was trained on SciFact train "
                "qrels); BM25 saw none; the default fusion was chosen on six sets' dev queries (test queries "
                "held out); test qrels only score"
            ),
        )  # fmt: skip
        write_json(args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows})
        write_markdown(args.out / "results.md", "BM25 postings in the engine against the local index", header,
                       markdown_table(rows, COLUMNS))  # fmt: skip


if __name__ == "__main__":
    main()
