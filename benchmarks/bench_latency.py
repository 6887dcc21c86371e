"""Query latency of Retriever.search on SciFact (5,183 documents), split by funnel stage.

Builds (or reuses, from --index-dir) an index of the whole SciFact corpus, then times one query at a
time and prints p50/p95 of: encode to the coarse layer, coarse FAISS search, resume to the fine layer,
and fine re-rank. The index is built with a float32 fine store and searched with the default float16
one, so `fine_dtype_cost.py` can reuse the same encoding.

    python benchmarks/bench_latency.py --model mpnet-base --coarse 4x64 --fine 12x768 --index-dir runs/scifact-mpnet
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from bench_common import DEFAULT_DATA_DIR, machine, percentiles, scifact_queries, scifact_texts

from adaptive_retrieval import Encoder, FineStore, Retriever, SearchTimings

STAGES = ("encode_coarse", "coarse_search", "resume_fine", "rerank")


def build_or_load(args: argparse.Namespace, encoder: Encoder) -> Retriever:
    if (args.index_dir / "manifest.json").is_file():
        print(f"reusing the index in {args.index_dir}", flush=True)
        return Retriever.load(args.index_dir, model=encoder)
    texts = scifact_texts(args.data_dir, args.docs)
    t0 = time.perf_counter()
    r = Retriever.build(
        texts,
        coarse=args.coarse,
        fine=args.fine,
        model=encoder,
        fine_dtype="float32",
        candidates=args.candidates,
        show_progress=True,
    )
    print(f"built an index of {len(r)} documents in {time.perf_counter() - t0:.0f} s", flush=True)
    r.save(args.index_dir)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mpnet-base")
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--fine", default=None, help="default: the model's last layer, full width")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--docs", type=int, default=None, help="first N SciFact documents (default all 5,183)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--index-dir", type=Path, required=True, help="where the built index is saved and reused")
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    encoder = Encoder.from_pretrained(args.model)
    r = build_or_load(args, encoder)
    r.fine_store = FineStore(np.asarray(r.fine_store.vectors, dtype=np.float16))  # the default dtype
    r.candidates = args.candidates
    queries = scifact_queries(args.data_dir, "test")[: args.queries]
    for q in queries[:5]:
        r.search(q, k=10)  # warm-up
    per_stage: dict[str, list[float]] = {s: [] for s in (*STAGES, "total")}
    for q in queries:
        t = SearchTimings()
        r.search_batch([q], k=10, timings=t)
        for s in STAGES:
            per_stage[s].append(getattr(t, s))
        per_stage["total"].append(t.total)

    figures = {s: percentiles(v) for s, v in per_stage.items()}
    print(f"\nmachine: {machine()}")
    print(
        f"model {args.model}, coarse {r.coarse}, fine {r.fine}, {len(r)} docs, {r.candidates} candidates, "
        f"Flat coarse index, float16 fine store, {len(queries)} SciFact test queries one at a time\n"
    )
    print("| stage | p50 ms | p95 ms |\n|---|---|---|")
    for s, f in figures.items():
        print(f"| {s} | {f['p50_ms']:.2f} | {f['p95_ms']:.2f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "docs": len(r),
                    "stages": figures,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
