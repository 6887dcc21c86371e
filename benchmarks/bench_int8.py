"""int8 query encoding against float32, side by side in one run: speed, and the results it changes.

    python -m benchmarks.bench_int8 --dataset runs/data/beir/stsb-para --n 2000 --out docs/results/bench-int8/stsb-para

An index is built over the first ``--n`` documents of a BEIR-format folder (``Retriever.build``: float32
documents, the coarse head adapted to them); then the test queries are searched one at a time with
float32 queries and with int8 queries (``Retriever.set_query_precision("int8")``: the encoder's linear
layers in int8, each token quantized on its own, outlier channels smoothed:
``adaptive_retrieval/quantization.py``), alternating, ``--rounds`` times each. Reported: p50/p95 per query of each,
their speed ratio, and overlap@10 of the int8 results with the float32 results (the same index, the
same coarse query, the same shortlist).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from adaptive_retrieval import DEFAULT_MODEL, Encoder, Retriever
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json
from benchmarks.bench_adapt import corpus_texts
from benchmarks.bench_common import percentiles


def queries_of(folder: Path, split: str, n: int) -> list[str]:
    ids = []
    with open(folder / "qrels" / f"{split}.tsv") as fh:
        next(fh)
        for line in fh:
            ids.append(line.split("\t")[0])
    wanted = list(dict.fromkeys(ids))[:n]
    text = {}
    with open(folder / "queries.jsonl") as fh:
        for line in fh:
            q = json.loads(line)
            text[q["_id"]] = q["text"]
    return [text[i] for i in wanted]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dataset", type=Path, required=True, help="a BEIR-format folder")
    ap.add_argument("--n", type=int, default=2000, help="documents to index")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    print(machine())
    encoder = Encoder.from_pretrained(args.model)
    texts = corpus_texts(args.dataset, args.n)
    queries = queries_of(args.dataset, "test", args.queries)
    r = Retriever.build(texts, coarse=(4, 64), model=encoder, hybrid=False)
    results: dict[str, list[list[int]]] = {}
    seconds: dict[str, list[float]] = {"float32": [], "int8": []}
    for _ in range(args.rounds):
        for precision in ("float32", "int8"):
            r.set_query_precision(precision)
            _ = r.query_encoder  # quantize outside the timed searches (once)
            got = []
            for q in queries:
                t0 = time.perf_counter()
                _, ids = r.search_arrays([q], 10)
                seconds[precision].append(time.perf_counter() - t0)
                got.append(list(ids[0]))
            results[precision] = got
    overlap = float(knn_intersection_measure(np.array(results["float32"]), np.array(results["int8"])))
    row = {
        "float32": percentiles(seconds["float32"]),
        "int8": percentiles(seconds["int8"]),
        "overlap@10_int8_vs_float32": overlap,
    }
    row["speedup_p50"] = row["float32"]["p50_ms"] / row["int8"]["p50_ms"]
    print(json.dumps(row, indent=2))
    if args.out:
        write_json(
            args.out / "results.json",
            {
                **settings(
                    benchmark="bench_int8",
                    labels=f"none by the measure (int8 results against float32's); {args.model}'s own "
                    "provenance says what its weights saw",
                    model=args.model,
                    dataset=args.dataset.name,
                    documents=len(texts),
                    queries=len(queries),
                    rounds=args.rounds,
                    coarse_query=r.resolve_coarse_query(None),
                ),
                "result": row,
            },
        )


if __name__ == "__main__":
    main()
