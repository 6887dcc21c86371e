"""The same funnel on every engine: FAISS, Qdrant (local mode) and Milvus Lite, side by side in one run.

    python -m benchmarks.bench_engines --docs 20000 --queries 200 --out docs/results/bench-engines

Each engine gets the same documents (unit vectors made to look like two views: the coarse one a noisy
64-dim projection of the 384-dim fine one, as ``minilm-l6``'s 2x64 and 6x384 views) through
``Retriever.from_vector_batches(..., backend=...)`` and answers the same queries with its own funnel
(``backend.search``: shortlist 100, top 10). Only the search side is measured (query encoding is the
same for every engine). Per engine: seconds to add the documents, p50/p95 milliseconds per query (one
query at a time), and agreement with FAISS's top 10 (share of queries with the same ids in the same
order, and mean overlap@10). For Milvus, two ways to re-rank a shortlist: server-side (a fine-vector
search filtered to the shortlist's keys: ``rerank="server"``) and fetched (the shortlist's fine vectors
fetched and scored here: the generic form, ``rerank="fetch"``, the default this run chose).

Qdrant's local mode is a Python emulation of Qdrant's API, not the engine: its timings say nothing of
a Qdrant server. Milvus Lite is Milvus' embedded engine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.backends import Backend, FaissOptions
from adaptive_retrieval.reporting import settings

COARSE, FINE = (2, 64), (6, 384)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def views(
    n: int, rng: np.random.Generator, basis: np.ndarray, centres: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    fine = unit(centres[rng.integers(len(centres), size=n)] + 0.6 * rng.standard_normal((n, FINE[1])))
    coarse = unit(fine @ basis + 0.05 * rng.standard_normal((n, COARSE[1])))
    return coarse, fine


def timed(
    backend: Backend, coarse_q: np.ndarray, fine_q: np.ndarray, generic: bool
) -> tuple[np.ndarray, list[float]]:
    search = super(type(backend), backend).search if generic else backend.search
    found, ms = [], []
    for c, f in zip(coarse_q, fine_q):
        t0 = time.perf_counter()
        _, I, _, _ = search(c[None], f[None], 10, 100)
        ms.append(1000 * (time.perf_counter() - t0))
        found.append(I[0])
    return np.stack(found), ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    basis = np.linalg.qr(rng.standard_normal((FINE[1], COARSE[1])))[0].astype(np.float32)
    centres = unit(rng.standard_normal((200, FINE[1])))
    coarse, fine = views(args.docs, rng, basis, centres)
    coarse_q, fine_q = views(args.queries, rng, basis, centres)
    doc_ids = [f"doc-{i}" for i in range(args.docs)]
    encoder = Encoder.from_pretrained("minilm-l6")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        engines = {
            "faiss": ("faiss", None),
            "qdrant (local mode)": ("qdrant", {"path": f"{scratch}/qdrant", "collection": "bench"}),
            "milvus lite": (
                "milvus",
                {"uri": f"{scratch}/milvus.db", "collection": "bench", "rerank": "server"},
            ),
        }
        reference = None
        for label, (name, options) in engines.items():
            t0 = time.perf_counter()
            r = Retriever.from_vector_batches(
                encoder,
                COARSE,
                FINE,
                [
                    (doc_ids[i : i + 5000], coarse[i : i + 5000], fine[i : i + 5000])
                    for i in range(0, args.docs, 5000)
                ],
                backend=FaissOptions(index="Flat", fine_dtype="float32") if name == "faiss" else name,
                **({} if options is None else {"backend_options": options}),
            )
            add_s = time.perf_counter() - t0
            for generic in (False, True) if name == "milvus" else (False,):
                rows_found, ms = timed(r.backend, coarse_q, fine_q, generic)
                found = [[r.doc_ids[i] if i >= 0 else None for i in q] for q in rows_found]
                if reference is None:
                    reference = found
                same = float(np.mean([a == b for a, b in zip(found, reference)]))
                overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, reference)]))
                row = {
                    "engine": label + (" (fetched re-rank)" if generic else ""),
                    "rerank": "here" if name == "faiss" or generic else "server-side",
                    "add_s": round(add_s, 2),
                    "p50_ms": round(statistics.median(ms), 2),
                    "p95_ms": round(float(np.percentile(ms, 95)), 2),
                    "same_top10_as_faiss": same,
                    "overlap10_with_faiss": overlap,
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            r.close()
    result = {
        **settings(benchmark="bench_engines"),
        "docs": args.docs,
        "queries": args.queries,
        "views": {"coarse": COARSE, "fine": FINE},
        "shortlist": 100,
        "k": 10,
        "labels": "none (synthetic vectors; agreement is measured against the FAISS funnel)",
        "rows": rows,
    }
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        lines = [
            "| engine | re-rank | add s | p50 ms | p95 ms | same top 10 as FAISS | overlap@10 |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['engine']} | {r['rerank']} | {r['add_s']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['same_top10_as_faiss']:.3f} | {r['overlap10_with_faiss']:.3f} |"
            for r in rows
        ]
        (args.out / "table.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
