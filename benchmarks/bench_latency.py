"""Query latency of Retriever.search on SciFact (5,183 documents), split by funnel stage.

Side by side in one run, one query at a time over the first --queries SciFact test queries:
the funnel (coarse view -> Flat FAISS search for `candidates` ids -> resume -> float16 re-rank) and
exact search of the fine view alone (encode to the fine layer -> Flat FAISS search). Prints p50/p95
of each stage: encode to the coarse layer, coarse search, resume to the fine layer, re-rank.

The corpus vectors come from the evaluation cache (evals/corpus_cache.py: encoded once per model, all
layers), and the index is made with Retriever.from_vectors, the same path Retriever.build takes
after encoding.

    python benchmarks/bench_latency.py --model mpnet-base --coarse 4x64 --candidates 100
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench_common import DEFAULT_DATA_DIR, percentiles

from adaptive_retrieval import Encoder, Retriever, SearchTimings, View, datasets
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json

STAGES = ("encode_coarse", "coarse_search", "resume_fine", "rerank")


def time_queries(r: Retriever, queries: list[str], k: int) -> dict[str, dict[str, float]]:
    for q in queries[:5]:
        r.search(q, k=k)  # warm-up
    per_stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for q in queries:
        t = SearchTimings()
        r.search_batch([q], k=k, timings=t)
        for s in STAGES:
            per_stage[s].append(getattr(t, s))
        per_stage["total"].append(t.total)
    return {s: percentiles(v) for s, v in per_stage.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mpnet-base")
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--fine", default=None, help="default: the model's last layer, full width")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    encoder = Encoder.from_pretrained(args.model)
    coarse = encoder.check_view(args.coarse, name="--coarse")
    fine = encoder.full_view if args.fine is None else encoder.check_view(args.fine, name="--fine")
    corpus, queries, _ = datasets.load_beir(args.data_dir, "scifact", "test")
    doc_ids, layers = encode_beir_corpus(encoder, corpus, args.cache_dir)
    texts = list(queries.values())[: args.queries]

    def retriever(first: View, candidates: int) -> Retriever:
        return Retriever.from_vectors(
            encoder,
            first,
            fine,
            doc_ids,
            view_matrix(encoder, layers, first),
            view_matrix(encoder, layers, fine),
            candidates=candidates,
        )

    figures = {
        f"funnel {coarse} -> {fine} @ {args.candidates}": time_queries(
            retriever(coarse, args.candidates), texts, args.k
        ),
        f"exact {fine}": time_queries(retriever(fine, args.k), texts, args.k),
    }
    print(f"\nmachine: {machine()}")
    print(
        f"model {args.model}, {len(doc_ids)} SciFact docs, Flat coarse index, float16 fine store, "
        f"k={args.k}, {len(texts)} SciFact test queries one at a time; milliseconds\n"
    )
    print("| configuration | stage | p50 ms | p95 ms |\n|---|---|---|---|")
    for name, stages in figures.items():
        for s, f in stages.items():
            print(f"| {name} | {s} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} |")
    funnel, exact = (f["total"]["p50_ms"] for f in figures.values())
    print(f"\np50 total, exact / funnel: {exact / funnel:.2f}")
    if args.out:
        write_json(
            args.out,
            settings(args={k: str(v) for k, v in vars(args).items()}, docs=len(doc_ids), figures=figures),
        )


if __name__ == "__main__":
    main()
