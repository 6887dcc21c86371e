"""What encoding in bfloat16 changes in the answers, against float32's, on BEIR-format sets.

    python -m evals.precision_eval --datasets ../shared/data/beir/scifact runs/data/beir/stsb-para \\
        runs/data/beir/sick-para runs/data/beir/sts12-16-para runs/data/beir/manpages --out docs/results/precision

Per dataset the corpus is indexed twice as ``Retriever.build`` indexes it (passages, the coarse view fitted to
the corpus, projected coarse vectors, the lexical index; :func:`evals.hybrid_eval.index_for`): once from
the float32 encoder's vectors and once from its bfloat16 copy's (:meth:`adaptive_retrieval.Encoder.bfloat16`;
both cached in the eval-encodings cache under their own keys). Rows, on the dev and test queries
(``k=10`` searches through ``Retriever.search_batch``):

- ``float32``: documents and queries in float32, the reference;
- ``bfloat16``: documents and queries in bfloat16 (an index built with ``precision="bfloat16"``);
- ``bfloat16 queries``: the float32 index, its queries in bfloat16 (``retriever.query_precision``).

Each with the default search's nDCG@10 and its overlap@10 with float32's default search (the same
documents in its top 10: the fidelity a default must keep at >= 0.99, issue #33), and the same two for
exact dense search (the fine view over every row). The encoders' speeds are timed side by side in the same
run on a sample of the corpus' rows (``--sample`` rows, rounds alternating): documents per second each.

Labels: the figures compare two encodings of one model; qrels only score nDCG@10 (the model's own labels
are named in the results' header).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_retrieval import DEFAULT_MODEL, Encoder, Retriever
from adaptive_retrieval.cpu_linear import bfloat16_native
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR
from adaptive_retrieval.reporting import markdown_table, settings, write_json, write_markdown
from evals.beir_eval import first_queries, labels_seen, load_split, score, top_overlap
from evals.hybrid_eval import K, grouped_run, index_for, passage_rows
from evals.suite import dataset_location

COLUMNS = (
    ("dataset", "dataset", "s"),
    ("split", "split", "s"),
    ("row", "row", "s"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("∩float32@10", "overlap@10", ".4f"),
    ("exact nDCG@10", "exact_ndcg@10", ".4f"),
    ("exact ∩float32@10", "exact_overlap@10", ".4f"),
)
ROWS = ("float32", "bfloat16", "bfloat16 queries")


def build(
    encoder: Encoder, corpus: dict, cache_dir: Path | None, coarse: str
) -> tuple[Retriever, float, list[str]]:
    """``corpus`` indexed as build indexes it, from ``encoder``'s vectors; the seconds its encoding took
    here (about 0 when every vector came from the cache); the index's rows' texts."""
    t0 = time.perf_counter()
    rows_corpus, row_ids, encoded, _ = passage_rows(encoder, corpus, cache_dir)
    encode_s = time.perf_counter() - t0
    retriever, _, _ = index_for(encoder, rows_corpus, cache_dir, coarse, row_ids=row_ids, encoded=encoded)
    return retriever, encode_s, [row["text"] for row in rows_corpus.values()]


def speeds(encoders: dict[str, Encoder], texts: list[str], rounds: int) -> dict[str, float]:
    """Documents per second of each encoder on ``texts`` (median of ``rounds``, the order alternating)."""
    seconds: dict[str, list[float]] = {name: [] for name in encoders}
    names = list(encoders)
    for name in names:  # warm-up
        encoders[name].encode(texts[:4], show_progress=False)
    for r in range(rounds):
        for name in names[r % 2 :] + names[: r % 2]:
            t0 = time.perf_counter()
            encoders[name].encode(texts, show_progress=False)
            seconds[name].append(time.perf_counter() - t0)
    return {name: len(texts) / statistics.median(s) for name, s in seconds.items()}


def evaluate(
    folder: Path,
    encoder: Encoder,
    cache_dir: Path | None,
    splits: Sequence[str],
    coarse: str = "4x64",
    sample: int = 64,
    rounds: int = 3,
    max_queries: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data_dir, name = dataset_location(folder)
    half = encoder.bfloat16()
    built: dict[str, tuple[Retriever, float, list[str]]] = {}
    rows: list[dict[str, Any]] = []
    for split_name in splits:
        corpus, queries, qrels = load_split(data_dir, name, split_name)
        queries, qrels = first_queries(queries, qrels, max_queries)
        if not built:
            built = {
                "float32": build(encoder, corpus, cache_dir, coarse),
                "bfloat16": build(half, corpus, cache_dir, coarse),
            }
        qids, texts = list(queries), list(queries.values())
        full, halved = built["float32"][0], built["bfloat16"][0]
        runs: dict[str, tuple[dict, dict]] = {}
        for row, retriever, precision in (
            ("float32", full, "float32"),  # the reference, whatever "auto" means here
            ("bfloat16", halved, None),  # its encoder runs in bfloat16: its queries too
            ("bfloat16 queries", full, "bfloat16"),
        ):
            retriever.query_precision = precision
            every = len(retriever.ids)
            runs[row] = (
                grouped_run(retriever, qids, texts, K),
                grouped_run(retriever, qids, texts, K, candidates=every, hybrid=False),
            )
            retriever.query_precision = None
        for row, (default, exact) in runs.items():
            rows.append(
                {
                    "dataset": name,
                    "split": split_name,
                    "queries": len(queries),
                    "row": row,
                    **score(qrels, default),
                    "overlap@10": top_overlap(default, runs["float32"][0]),
                    "exact_ndcg@10": score(qrels, exact)["ndcg@10"],
                    "exact_overlap@10": top_overlap(exact, runs["float32"][1]),
                }
            )
            print(
                f"{name} {split_name:4s} {row:18s} nDCG@10 {rows[-1]['ndcg@10']:.4f} "
                f"∩float32@10 {rows[-1]['overlap@10']:.4f} exact ∩ {rows[-1]['exact_overlap@10']:.4f}",
                file=sys.stderr,
                flush=True,
            )
    every_text = built["float32"][2]
    texts = every_text[:: max(1, len(every_text) // sample)][:sample]
    per_second = speeds({"float32": encoder, "bfloat16": half}, encoder.as_documents(texts), rounds)
    cost = {
        "dataset": name,
        "rows": len(full.ids),
        "docs_per_s": per_second,
        "speedup": per_second["bfloat16"] / per_second["float32"],
        "corpus_encode_s": {k: v[1] for k, v in built.items()},
    }
    return rows, cost


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders (…/beir/<name>)"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--coarse", default="4x64", help="the coarse view, LAYERxDIM (as Retriever.build's)")
    ap.add_argument("--splits", nargs="+", default=["dev", "test"])
    ap.add_argument("--sample", type=int, default=64, help="rows of each corpus timed in both precisions")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-queries", type=int, help="only the first N queries of each split (a quick look)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = ap.parse_args(argv)
    encoder = Encoder.from_pretrained(args.model)
    if not bfloat16_native():
        print("note: this processor has no native bfloat16: the speeds show emulation", file=sys.stderr)
    rows, costs = [], []
    for folder in args.datasets:
        got, cost = evaluate(
            folder, encoder, args.cache_dir, args.splits, args.coarse, args.sample, args.rounds,
            args.max_queries,
        )  # fmt: skip
        rows += got
        costs.append(cost)
        print(cost, file=sys.stderr, flush=True)
    print(markdown_table(rows, COLUMNS))
    for cost in costs:
        print(
            f"{cost['dataset']}: float32 {cost['docs_per_s']['float32']:.1f} docs/s, bfloat16 "
            f"{cost['docs_per_s']['bfloat16']:.1f} docs/s ({cost['speedup']:.2f}x)"
        )
    if args.out:
        header = settings(
            labels=labels_seen([args.model]), bfloat16_native=bfloat16_native(), coarse=args.coarse
        )
        write_json(args.out / "results.json", {**header, "rows": rows, "costs": costs})
        write_markdown(
            args.out / "results.md", "float32 and bfloat16 encoding", header, markdown_table(rows, COLUMNS)
        )


if __name__ == "__main__":
    main()
