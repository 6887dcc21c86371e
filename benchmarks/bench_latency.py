"""Query latency of the funnel, fixed and calibrated, beside exact search, in one run.

An index is built over a BEIR-format folder's corpus as users build it (``Retriever.build``: the
default model, the coarse head adapted to the corpus without labels). Then, side by side over the same
test queries, one query at a time, in alternating rounds:

- ``fixed @ N``: the funnel with a fixed shortlist of ``--candidates``;
- ``calibrated``: the funnel after ``Retriever.calibrate(target=--target)`` on the dev queries (no qrels
  read: the target is overlap@10 with exact search), each query widening its own shortlist when the
  calibration chose the patient rule;
- ``calibrated, int8 queries``: the same with the query encoder in int8 (``set_query_precision``);
- ``calibrated, bfloat16 queries``: the same with the query encoder in bfloat16 (what an index built with
  ``precision="auto"`` runs where bfloat16 pays, :func:`adaptive_retrieval.cpu_linear.bfloat16_faster`; the
  documents here stay float32);
- ``exact``: the query encoded to the fine view, then every fine vector scored (the fine store).

Prints p50/p95 per stage (encode to the coarse layer, coarse search, resume to the fine layer,
re-rank) and in total, the mean shortlist, and overlap@10 with the exact top 10.

    python -m benchmarks.bench_latency --dataset runs/data/beir/sick-para --out results/latency
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from adaptive_retrieval import DEFAULT_MODEL, Encoder, Retriever, SearchTimings, cpu_linear
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import model_info, settings, write_json
from benchmarks.bench_adapt import corpus_texts
from benchmarks.bench_common import DEFAULT_DATA_DIR, percentiles
from benchmarks.bench_int8 import queries_of

STAGES = ("encode_coarse", "coarse_search", "resume_fine", "rerank")


def funnel_query(r: Retriever, q: str, k: int, candidates: int | None) -> tuple[dict[str, float], int, list]:
    t = SearchTimings()
    _, ids = r.search_arrays([q], k, candidates=candidates, timings=t)
    stages = {s: getattr(t, s) for s in STAGES}
    return {**stages, "total": t.total}, t.shortlists[0], list(ids[0])


def exact_query(r: Retriever, q: str, k: int) -> tuple[dict[str, float], int, list]:
    t0 = time.perf_counter()
    fine_q = r.encoder.encode(r.encoder.as_queries([q]), [r.fine])[r.fine]  # float32, as documents
    t1 = time.perf_counter()
    _, rows = r.backend.exact_search(fine_q, k)
    t2 = time.perf_counter()
    return {"encode_fine": t1 - t0, "score_all": t2 - t1, "total": t2 - t0}, len(r), list(rows[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--dataset", type=Path, default=DEFAULT_DATA_DIR / "beir" / "scifact")
    ap.add_argument("--n", type=int, default=None, help="index only the first n documents")
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the figures as JSON here (results.json)")
    args = ap.parse_args()
    print(machine(), flush=True)

    encoder = Encoder.from_pretrained(args.model)
    texts = corpus_texts(args.dataset, args.n or 10**9)
    dev, test = (queries_of(args.dataset, split, 10**9) for split in ("dev", "test"))
    test = test[: args.queries]
    r = Retriever.build(
        texts,
        coarse=args.coarse,
        model=encoder,
        candidates=args.candidates,
        hybrid=False,
        precision="float32",
    )
    t0 = time.perf_counter()
    cal = r.calibrate(dev, target=args.target, k=args.k)
    print(f"calibrated on {len(dev)} dev queries in {time.perf_counter() - t0:.0f} s: {cal}", flush=True)

    def funnel(precision: str, candidates: int | None):
        def run(q: str):
            r.set_query_precision(precision)
            _ = r.query_encoder  # made once, by the warm-up
            return funnel_query(r, q, args.k, candidates)

        return run

    configs = {
        f"fixed @ {args.candidates}": funnel("float32", args.candidates),
        "calibrated": funnel("float32", None),
        "calibrated, int8 queries": funnel("int8", None),
        "calibrated, bfloat16 queries": funnel("bfloat16", None),
        "exact": lambda q: exact_query(r, q, args.k),
    }
    seconds: dict[str, dict[str, list[float]]] = {c: {} for c in configs}
    shortlists: dict[str, list[int]] = {c: [] for c in configs}
    answers: dict[str, list[list]] = {}
    for run in configs.values():  # warm-up, and the int8 and bfloat16 encoders made
        run(test[0])
    for _ in range(args.rounds):
        for c, run in configs.items():
            answers[c] = []
            for q in test:
                stages, shortlist, ids = run(q)
                for s, v in stages.items():
                    seconds[c].setdefault(s, []).append(v)
                shortlists[c].append(shortlist)
                answers[c].append(ids)
    r.set_query_precision("float32")

    figures = {}
    for c in configs:
        overlap = knn_intersection_measure(np.array(answers[c]), np.array(answers["exact"]))
        figures[c] = {
            "stages": {s: percentiles(v) for s, v in seconds[c].items()},
            "mean_shortlist": float(np.mean(shortlists[c])),
            f"overlap@{args.k}": float(overlap),
        }
    print(
        f"\nmodel {args.model}, {len(r)} documents of {args.dataset.name}, {len(test)} test queries one at "
        f"a time, {args.rounds} rounds; milliseconds; overlap@{args.k} with the exact top {args.k}\n"
    )
    print("| configuration | mean shortlist | overlap@10 | p50 total | p95 total | stages p50 |")
    print("|---|---|---|---|---|---|")
    for c, f in figures.items():
        stages = ", ".join(f"{s} {v['p50_ms']:.2f}" for s, v in f["stages"].items() if s != "total")
        total = f["stages"]["total"]
        print(
            f"| {c} | {f['mean_shortlist']:.1f} | {f[f'overlap@{args.k}']:.3f} | {total['p50_ms']:.2f} | "
            f"{total['p95_ms']:.2f} | {stages} |"
        )
    if args.out:
        write_json(
            args.out / "results.json",
            {
                **settings(
                    benchmark="bench_latency",
                    labels="none by the measure (overlap@10 with the exact top 10; the calibration saw the dev "
                    f"queries, no qrels); {args.model}'s own provenance says what its weights saw",
                    model={"name": args.model, **model_info(encoder)},
                    dataset=args.dataset.name,
                    documents=len(r),
                    test_queries=len(test),
                    dev_queries=len(dev),
                    rounds=args.rounds,
                    calibration=cal.as_dict(),
                    bfloat16_native=cpu_linear.bfloat16_native(),
                    bfloat16_probe_speedup=cpu_linear.bfloat16_speedup(),
                ),
                "figures": figures,
            },
        )


if __name__ == "__main__":
    main()
