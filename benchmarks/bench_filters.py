"""Filtered search at scale: the funnel's fidelity and latency under metadata filters of every selectivity.

    python -m benchmarks.bench_filters --size 1000000 --out docs/results/filters
    python -m benchmarks.bench_filters --size 1000000 --calibrate 500 --indexes IVF --out docs/results/filters-calibrated
    python -m benchmarks.bench_filters --size 50000 --queries 30 --indexes milvus --out docs/results/filters-milvus

The vectors are :class:`benchmarks.bench_scale.Synthetic` (the coarse view as an adapted index has it,
``--coarse-noise 0.2``: the noise ``bench_scale --calibrate ... --projected`` matched to a real model's
projected view on SciFact). Each document gets a metadata field ``bucket``, drawn uniformly from
``0..9999`` independently of its vector; a filter ``{"bucket": {"$lt": b}}`` matches a share ``b / 10000``
of the documents (50%, 10%, 1%, 0.1%, 0.01%).

For each coarse index (``Flat``, ``HNSW32``, ``IVF<nlist>,Flat``) and each selectivity, with the library's
own policy (:func:`adaptive_retrieval.querying.allowed_rows`: a filter matching at most
``--exact-below`` documents, the shortlist, or the engine's cost estimate of a filtered funnel
(``FaissBackend.filtered_cost``) ranks them exactly; otherwise the coarse search runs with a
FAISS selector and a shortlist widened by ``1 / sqrt(share)`` (:func:`adaptive_retrieval.querying.filtered_shortlist`),
HNSW's ``efSearch`` and IVF's ``nprobe`` widened by the share matched):

- ``overlap@10``: the share of the exact fine view's top 10 among the matching documents (float16 fine
  store, as the funnel re-ranks it) that the search returns; the unfiltered row: against the unfiltered
  exact top 10;
- ``p50_ms``: one query at a time; ``exact_p50_ms``: the exact filtered search (every matching document
  scored by the fine view), timed on the first ``--timed-exact`` queries;
- ``path``: what ran (``funnel``, ``filtered funnel``, ``filtered exact``).

``--calibrate N``: each index calibrated first on ``N`` synthetic queries of their own, as
``Retriever.calibrate`` does (:func:`adaptive_retrieval.calibration.choose_width`: the shortlist, an IVF
index's ``nprobe`` from its default doubled while it pays, the filtered widening's exponent); the searches
then use what it chose instead of ``--candidates``.

Rows go to ``results.json`` (with the run's header: command, machine, commit) and a markdown table.
No labels are involved: the reference is the exact fine view.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_retrieval.backends import FaissOptions, MilvusOptions, create_engine
from adaptive_retrieval.calibration import choose_width, filter_evidence
from adaptive_retrieval.filters import native, parse
from adaptive_retrieval.ids import IdMap
from adaptive_retrieval.locks import ReadWriteLock
from adaptive_retrieval.metadata import MetadataStore
from adaptive_retrieval.querying import allowed_rows, filtered_shortlist
from adaptive_retrieval.reporting import markdown_table, percentiles_ms, settings, write_json, write_markdown
from adaptive_retrieval.shortlist import MAX_CANDIDATES, Calibration
from adaptive_retrieval.views import View
from adaptive_retrieval.writer import IndexWriter
from benchmarks.bench_scale import Synthetic, nlist_for

SHARES = (None, 0.5, 0.1, 0.01, 0.001, 0.0001)
BUCKETS = 10_000


def build(index: str, size: int, gen: Synthetic, workdir: Path, knobs: dict) -> tuple:
    """An engine of ``size`` synthetic documents (fine store on disk) with their ``bucket`` metadata."""
    if index == "milvus":  # Milvus Lite, a file in the work folder (FLAT coarse index)
        uri = workdir / "filters-milvus.db"
        shutil.rmtree(uri, ignore_errors=True)  # Milvus Lite may keep a folder under the name
        uri.unlink(missing_ok=True)
        options: Any = MilvusOptions(uri=str(uri), collection="filters")
    else:
        fine_path = workdir / f"fine-{index.replace(',', '_')}.npy"
        fine_path.unlink(missing_ok=True)
        options = FaissOptions(index=index, fine_path=str(fine_path))
    engine = create_engine(options, gen.coarse_dim, gen.dim)
    ids, metadata = IdMap(key=engine.key, renew=engine.renew), MetadataStore()
    engine.attach(ids)
    writer = IndexWriter(
        ids, engine, None, metadata, View(1, gen.coarse_dim), View(2, gen.dim), ReadWriteLock()
    )
    centres = gen.centres()
    rng = np.random.default_rng(7)

    def batches():
        start = 0
        for coarse, fine in gen.stream(1, size, centres):
            n = len(coarse)
            buckets = rng.integers(BUCKETS, size=n)
            yield (
                list(range(start, start + n)),
                coarse,
                fine,
                None,
                [{"bucket": int(b)} for b in buckets],
            )
            start += n

    t0 = time.perf_counter()
    writer.add_batches(batches())
    if knobs:
        engine.set_knobs(**knobs)
    return engine, ids, metadata, time.perf_counter() - t0


def calibrated(engine, ids, gen: Synthetic, n: int, target: float) -> Calibration:
    """The library's calibration (:func:`adaptive_retrieval.calibration.choose_width`, then the filters'
    widening) on ``n`` synthetic queries of their own stream (3: neither documents nor test queries)."""
    coarse_q, fine_q = next(gen.stream(3, n, gen.centres()))
    t0 = time.perf_counter()
    choice, measured, knobs = choose_width(
        engine, fine_q, coarse_q, 10, MAX_CANDIDATES, None, ids.alive, target, 0
    )
    params = engine.search_parameters(calibrated=knobs) if knobs else None
    measured |= filter_evidence(
        engine, ids, fine_q, coarse_q, 10, MAX_CANDIDATES, None, target, choice["candidates"], 0, params
    )
    return Calibration(
        target=target, k=10, coarse_query="coarse", queries=f"{n} synthetic queries", measured=measured,
        seconds=time.perf_counter() - t0, documents=len(ids), knobs=knobs, **choice,
    )  # fmt: skip


def measure(
    engine, ids, metadata, queries, k: int, shortlist: int, exact_below: int, share, timed: int,
    calibration: Calibration | None = None,
) -> dict:  # fmt: skip
    """One selectivity: every query searched one at a time (the funnel's p50), the exact filtered
    reference in one batch (every block read once for all queries), its p50 on ``timed`` queries alone.
    With a ``calibration``: its fixed shortlist, width and filtered widening, as a retriever searches."""
    q_coarse, q_fine = queries
    node = None if share is None else parse({"bucket": {"$lt": max(round(share * BUCKETS), 1)}})
    params = None
    if calibration is not None:
        shortlist = calibration.candidates
        params = engine.search_parameters(calibrated=calibration.knobs) if calibration.knobs else None
    params = engine.native_filter(params, native(node, metadata))  # a keyed engine's: see in_engine
    found, seconds, path, allowed = [], [], "", None
    for i in range(len(q_fine)):
        t0 = time.perf_counter()
        allowed, exact, path = allowed_rows(
            ids, metadata, node, max(shortlist, exact_below),
            lambda s: engine.filtered_cost(s, shortlist, params),
        )  # fmt: skip
        depth = shortlist
        if node is not None and not exact:
            depth = filtered_shortlist(shortlist, allowed, calibration)
        _, I, _, _ = engine.search(
            q_coarse[i : i + 1], q_fine[i : i + 1], k, depth, params=params, allowed=allowed, exact=exact
        )
        seconds.append(time.perf_counter() - t0)
        found.append(set(I[0][I[0] >= 0].tolist()))
    _, truth = engine.exact_search(q_fine, k, allowed=allowed)
    exact_seconds = []
    for i in range(min(timed, len(q_fine))):
        t0 = time.perf_counter()
        engine.exact_search(q_fine[i : i + 1], k, allowed=allowed)
        exact_seconds.append(time.perf_counter() - t0)
    overlaps = []
    for got, want in zip(found, truth):
        want = set(want[want >= 0].tolist())
        overlaps.append(len(got & want) / len(want) if want else float(not got))  # none to find: found none
    return {
        "shortlist": shortlist,
        "share": share,
        "matched": len(ids) if allowed is None else int(allowed.sum()),
        "path": path,
        "overlap@10": float(np.mean(overlaps)),
        "min_overlap@10": float(np.min(overlaps)),
        "p50_ms": percentiles_ms(seconds)[0],
        "exact_p50_ms": percentiles_ms(exact_seconds)[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=100, help="the shortlist (default 100)")
    ap.add_argument(
        "--timed-exact", type=int, default=10, help="queries the exact filtered search is timed on"
    )
    ap.add_argument("--exact-below", type=int, default=1_000, help="Retriever.exact_below (default 1,000)")
    ap.add_argument("--coarse-noise", type=float, default=0.2)
    ap.add_argument(
        "--indexes", default="Flat,HNSW32,IVF",
        help="comma-separated; IVF: IVF<sqrt n>,Flat; milvus: a Milvus Lite collection, each filter where "
        "the library puts it, run by Milvus, and applied to its answers",
    )  # fmt: skip
    ap.add_argument(
        "--calibrate", type=int, default=0, metavar="N",
        help="calibrate each index on N synthetic queries (shortlist, IVF nprobe, filtered widening), "
        "as Retriever.calibrate does, instead of --candidates",
    )  # fmt: skip
    ap.add_argument("--target", type=float, default=0.95, help="with --calibrate: the overlap@10 target")
    ap.add_argument("--workdir", type=Path, default=Path("runs/bench-filters"))
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    gen = Synthetic(coarse_noise=args.coarse_noise)
    args.workdir.mkdir(parents=True, exist_ok=True)
    nlist = nlist_for(args.size)
    queries = next(gen.stream(2, args.queries, gen.centres()))
    header = settings(
        benchmark="bench_filters", size=args.size, queries=args.queries, candidates=args.candidates,
        exact_below=args.exact_below, synthetic=asdict(gen), calibrate=args.calibrate, target=args.target,
        labels="none: the reference is the exact fine view among the matching documents",
    )  # fmt: skip
    rows = []
    for kind in args.indexes.split(","):
        index = f"IVF{nlist},Flat" if kind == "IVF" else kind
        knobs = {"nprobe": 16} if kind == "IVF" else {"efSearch": 64} if kind.startswith("HNSW") else {}
        engine, ids, metadata, build_s = build(index, args.size, gen, args.workdir, knobs)
        print(
            f"{index}: built {args.size:,} documents in {build_s:.0f} s (default knobs {knobs})", flush=True
        )
        cal = calibrated(engine, ids, gen, args.calibrate, args.target) if args.calibrate else None
        if cal is not None:
            print(f"  calibrated in {cal.seconds:.0f} s: shortlist {cal.candidates}, {cal.knobs}", flush=True)
        modes = ("library", "in engine", "answers filtered") if kind == "milvus" else ("library",)
        policy = getattr(engine, "in_engine", None)  # a keyed engine's
        for share, mode in [(s, m) for s in SHARES for m in modes]:
            if share is None and mode != "library":
                continue  # no filter: one way
            # Milvus: where the library puts a filter (its in_engine policy), or always in the engine, or
            # always on its answers
            if policy is not None:
                engine.in_engine = policy if mode == "library" else (lambda d, s, on=mode == "in engine": on)
            row = {
                "index": index if kind != "milvus" else f"milvus ({mode})",
                "knobs": knobs,
                "build_s": build_s,
                **({} if cal is None else {"calibration": cal.as_dict(), "calibrated": cal.knobs}),
                **measure(
                    engine,
                    ids,
                    metadata,
                    queries,
                    10,
                    args.candidates,
                    args.exact_below,
                    share,
                    args.timed_exact,
                    cal,
                ),
            }
            rows.append(row)
            print(
                f"  share {share}: matched {row['matched']:,} path {row['path']}: overlap@10 "
                f"{row['overlap@10']:.3f} (min {row['min_overlap@10']:.1f}), p50 {row['p50_ms']:.2f} ms, "
                f"exact {row['exact_p50_ms']:.1f} ms",
                flush=True,
            )
            write_json(args.out / "results.json", {**header, "rows": rows})
        if kind != "milvus":
            engine.close()
        engine.discard()  # the fine file removed; a Milvus collection dropped, and its client closed
    table = markdown_table(
        rows,
        [
            ("coarse index", "index", ""),
            *([("calibrated", "calibrated", ""), ("shortlist", "shortlist", "")] if args.calibrate else []),
            ("filter matches", "matched", ","),
            ("path", "path", ""),
            ("overlap@10", "overlap@10", ".3f"),
            ("min", "min_overlap@10", ".1f"),
            ("p50 ms", "p50_ms", ".2f"),
            ("exact filtered p50 ms", "exact_p50_ms", ".1f"),
        ],
    )
    write_markdown(
        args.out / "results.md", f"Filtered search, {args.size:,} synthetic documents", header, table
    )
    print(table)
    shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
