"""Re-rank I/O of a memory-mapped fine store: the library's random-access advice vs numpy's default map.

The funnel's second stage reads ``candidates`` scattered rows of the fine store per query. Under the
kernel's default advice every page fault also reads ahead its neighbours (~128 KB), which a re-rank never
uses. ``FineStore.load`` maps the file with ``MADV_RANDOM`` instead. This benchmark re-ranks the same
random candidate lists through both maps of one ``.npy`` file, one query at a time, and prints per-query
latency, bytes read from disk (``/proc/self/io``) and the page cache the process mapped (``RssFile``).

Cold runs drop the page cache first (``/proc/sys/vm/drop_caches``: needs root; without it only warm runs
are measured, and the output says so). Warm runs repeat the same queries with the pages cached.

    python -m benchmarks.bench_scale --sizes 10000000 --methods funnel-flat --out results/scale  # makes the file
    python -m benchmarks.bench_fine_io --fine results/scale/data/n10000000/fine.npy --out results/fine-io
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval.index import FineStore
from adaptive_retrieval.reporting import machine, markdown_table, process_memory, settings, write_json

DROP_CACHES = Path("/proc/sys/vm/drop_caches")


def _read_bytes() -> int:
    try:
        with open("/proc/self/io") as fh:
            return next(int(x.split()[1]) for x in fh if x.startswith("read_bytes:"))
    except (OSError, StopIteration):
        return 0


def drop_page_cache() -> bool:
    """Write back and drop the page cache; False where this process may not."""
    try:
        os.sync()
        DROP_CACHES.write_text("1\n")
        return True
    except OSError:
        return False


def run(store: FineStore, queries: np.ndarray, candidates: np.ndarray) -> dict[str, float]:
    rss0, io0 = process_memory().get("rss_file", 0), _read_bytes()
    lat = []
    for q, c in zip(queries, candidates):
        t = time.perf_counter()
        store.scores(q[None], c[None])  # the re-rank's reads: one row per candidate
        lat.append(time.perf_counter() - t)
    ms = np.asarray(lat) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "disk_read_mb_per_query": (_read_bytes() - io0) / 1e6 / len(queries),
        "page_cache_mapped_mb": (process_memory().get("rss_file", 0) - rss0) / 1e6,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fine", type=Path, required=True, help="a fine-vector .npy file (float16 or float32)")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--candidates", type=int, default=400, help="rows re-ranked per query")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm-only", action="store_true", help="never drop the page cache")
    ap.add_argument("--out", type=Path, help="folder for results.json (optional)")
    args = ap.parse_args(argv)
    if not args.fine.is_file():
        ap.error(f"--fine {args.fine} is not a file")
    if args.queries < 1 or args.candidates < 1:
        ap.error("--queries and --candidates must be positive")

    maps = {
        "numpy default map": lambda: FineStore(np.load(args.fine, mmap_mode="r")),
        "FineStore.load (MADV_RANDOM)": lambda: FineStore.load(args.fine),
    }
    n, dim = maps["numpy default map"]().vectors.shape
    rng = np.random.default_rng(args.seed)
    queries = rng.standard_normal((args.queries, dim)).astype(np.float32)
    candidates = rng.integers(0, n, size=(args.queries, args.candidates))
    cold = not args.warm_only and drop_page_cache()
    if not cold and not args.warm_only:
        print("cannot drop the page cache (needs root): measuring warm runs only", file=sys.stderr)
    rows = []
    for cache in ("cold", "warm") if cold else ("warm",):
        for name, load in maps.items():
            store = load()
            if cache == "cold":
                drop_page_cache()
            else:
                run(store, queries, candidates)  # bring the pages in
            rows.append({"cache": cache, "map": name, **run(store, queries, candidates)})
            del store
            print(rows[-1], file=sys.stderr, flush=True)
    print(
        f"\n{n:,} x {dim} {args.fine.name}, {args.candidates} random rows per query, {args.queries} queries"
    )
    print(f"machine: {machine()}\n")
    columns = (
        ("page cache", "cache", "s"),
        ("map", "map", "s"),
        ("p50 ms", "p50_ms", ".1f"),
        ("p95 ms", "p95_ms", ".1f"),
        ("disk read MB/query", "disk_read_mb_per_query", ".2f"),
        ("page cache mapped MB", "page_cache_mapped_mb", ",.0f"),
    )
    print(markdown_table(rows, columns))
    for cache in ("cold", "warm"):
        pair = [r for r in rows if r["cache"] == cache]
        if len(pair) == 2:
            print(f"\n{cache}: p50 default / random advice = {pair[0]['p50_ms'] / pair[1]['p50_ms']:.2f}x")
    if args.out:
        header = settings(
            benchmark="bench_fine_io",
            fine=str(args.fine),
            rows_total=n,
            dim=dim,
            queries=args.queries,
            candidates=args.candidates,
            seed=args.seed,
            cold_measured=cold,
        )
        write_json(args.out / "results.json", {**header, "rows": rows})
    return rows


if __name__ == "__main__":
    main()
