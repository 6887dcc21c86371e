"""The funnel at 100k, 1M and 10M documents on one machine, against exact and compressed 768-dim search.

    python -m benchmarks.bench_scale --sizes 100000,1000000,10000000 --out results/scale

Real encoding of millions of texts is out of reach on a 2-core CPU (mpnet-base: ~1.5 SciFact docs/s),
so the vectors are synthetic, made to behave like a 2DMSE model's two views (see :class:`Synthetic`).
Only the search side is measured: query encoding is the same for every method at a given coarse layer
and is measured on real text by ``bench_latency.py``.

Methods, side by side per size (each one runs in its own process, so its peak RSS is its own):

- ``exact-768``: ``faiss.IndexFlatIP`` over the float32 768-dim fine vectors (skipped, and said so,
  where it does not fit in RAM);
- ``ivfpq-768``: FAISS's compressed option on the same vectors, ``IVF<nlist>,PQ96np`` (96 bytes a vector;
  ``np``: no polysemous training, which is 20x slower to train and unused by a plain search);
- ``funnel-flat`` / ``funnel-hnsw`` / ``funnel-ivfpq``: the library's funnel, a 64-dim coarse
  :class:`~adaptive_retrieval.index.CoarseIndex` (``Flat``, ``HNSW32``, ``IVF<nlist>,PQ32np``) shortlisting
  ``--candidates`` (100 and 400) that the float16 768-dim :class:`~adaptive_retrieval.index.FineStore`, memory-mapped
  from disk, re-ranks (``FaissBackend.rerank``: the retriever's own second stage).

Every row: ``size, method, candidates`` (funnels; one row per ``--candidates`` value), ``ram_bytes`` (what must be resident to search: the index; the fine store is
on disk), ``disk_bytes``, ``rss_peak_bytes`` (of the method's process, build included; pages of
memory-mapped files count while they are mapped, and the kernel maps whole cached folios around each
row a re-rank touches, so this grows with the page cache, not with what the process needs),
``rss_anon_bytes`` (the process's own heap after its searches: the index, the arrays), ``build_s``, ``p50_ms`` / ``p95_ms`` (one query at a
time), ``qps`` (all queries in one batch), ``recall@10`` (of the exact 768-dim top-10, computed in
float32), and ``speedup_vs_exact`` (exact p50 / this p50, where exact ran). Rows are written to
``results.json`` as each finishes; a rerun skips rows already there (``--fresh`` to redo).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

from adaptive_retrieval.backends import FaissBackend
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.errors import InvalidArgument
from adaptive_retrieval.index import CoarseIndex, FineStore
from adaptive_retrieval.reporting import earlier_runs, markdown_table, process_memory, settings, write_json
from adaptive_retrieval.shortlist import calibrate_shortlist, check_calibration

BLOCK = 65_536  # rows generated per block; block b of a stream is a function of (seed, stream, b)
METHODS = ("exact-768", "ivfpq-768", "funnel-flat", "funnel-hnsw", "funnel-ivfpq")
RAM_BYTES = 24 * 1024**3
CENTRES_IN_RAM = 2 * 1024**3  # topic centres above this many bytes spill to a memory map (Synthetic.centres)


@dataclass(frozen=True)
class Synthetic:
    """Vectors shaped like a 2DMSE model's fine (768-dim) and coarse (64-dim) views.

    A document is ``x = centre[c] + spread * noise``, drawn from ``clusters`` topic centres, with
    per-dimension scales ``(1 + j) ** -decay``: variance is concentrated in the leading dimensions, as
    matryoshka training puts it there. The fine view is ``x`` normalised. The coarse view is a different,
    noisier reading of the same document: the first ``coarse_dim`` dimensions of ``x`` plus independent
    noise of relative size ``coarse_noise`` (the information an early layer has not yet resolved),
    normalised. ``coarse_noise`` sets how well the coarse ranking agrees with the fine one; it is
    calibrated (``--calibrate MODEL``) so that at SciFact's size the agreement of the synthetic views
    equals that of a real model's views on SciFact: :func:`agreement` of both is printed side by side.
    Queries are fresh draws from the same distribution (a different stream), not copies of documents.
    """

    dim: int = 768
    coarse_dim: int = 64
    clusters: int = 4096
    spread: float = 0.6
    decay: float = 0.5
    coarse_noise: float = 0.30
    seed: int = 0

    def scales(self) -> np.ndarray:
        return ((1.0 + np.arange(self.dim)) ** -self.decay).astype(np.float32)

    def centres(self, spill: Path | None = None) -> np.ndarray:
        """The ``(clusters, dim)`` topic centres. Over :data:`CENTRES_IN_RAM` bytes and given a ``spill``
        folder, a read-only memory map of them written there once (in blocks from the same random stream:
        the same values) and reused: 4.1M centres, 12.6 GB at 10M documents with topics proportional, then
        live in the page cache, which gives them back under pressure, instead of the process's memory."""
        rng = np.random.default_rng([self.seed, 0])
        if spill is None or self.clusters * self.dim * 4 <= CENTRES_IN_RAM:
            return rng.standard_normal((self.clusters, self.dim), dtype=np.float32) * self.scales()
        path = Path(spill) / f"centres-{self.seed}-{self.clusters}x{self.dim}-decay{self.decay}.npy"
        if not path.is_file():  # written under another name and renamed: never a partial file here
            part = path.with_suffix(".part")
            out = np.lib.format.open_memmap(
                part, mode="w+", dtype=np.float32, shape=(self.clusters, self.dim)
            )
            for start in range(0, self.clusters, BLOCK):
                n = min(BLOCK, self.clusters - start)
                out[start : start + n] = rng.standard_normal((n, self.dim), dtype=np.float32) * self.scales()
            out.flush()
            del out
            part.rename(path)
        return np.load(path, mmap_mode="r")

    def block(self, stream: int, b: int, n: int, centres: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``b*BLOCK .. b*BLOCK+n`` of ``stream`` (1: documents, 2: queries): ``(coarse, fine)``."""
        rng = np.random.default_rng([self.seed, stream, b])
        scales = self.scales()
        x = centres[rng.integers(self.clusters, size=n)]
        x += self.spread * rng.standard_normal((n, self.dim), dtype=np.float32) * scales
        coarse = x[:, : self.coarse_dim] + self.coarse_noise * rng.standard_normal(
            (n, self.coarse_dim), dtype=np.float32
        ) * scales[: self.coarse_dim] * math.sqrt(1 + self.spread**2)
        return _normalise(coarse), _normalise(x)

    def stream(self, stream: int, n: int, centres: np.ndarray):
        for b in range(math.ceil(n / BLOCK)):
            yield self.block(stream, b, min(BLOCK, n - b * BLOCK), centres)


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def nlist_for(size: int) -> int:
    """IVF lists: the power of two nearest sqrt(size), at least 16."""
    return max(16, 2 ** round(math.log2(math.sqrt(size))))


def agreement(
    coarse: np.ndarray, fine: np.ndarray, q_coarse: np.ndarray, q_fine: np.ndarray, candidates: int
) -> float:
    """Recall@10 of the exact fine top-10 by a Flat funnel with ``candidates``: how well a coarse view
    agrees with its fine view, the one property of the two views the scale benchmark depends on."""
    short = np.argsort(-(q_coarse @ coarse.T), axis=1)[:, :candidates]
    fine_scores = q_fine @ fine.T
    truth = np.argsort(-fine_scores, axis=1)[:, :10]
    picked = np.take_along_axis(short, np.argsort(-np.take_along_axis(fine_scores, short, 1), axis=1), 1)[
        :, :10
    ]
    return float(knn_intersection_measure(picked, truth))


def calibrate(
    model: str,
    data_dir: Path,
    candidates: int,
    n_queries: int = 300,
    projected: bool = False,
    out: Path | None = None,
) -> None:
    """Print the agreement of ``model``'s coarse (4,64) and fine (last layer, full) views on SciFact
    (documents held out as queries, searched among the rest), beside the synthetic views' agreement
    for a range of ``coarse_noise`` at the same size. ``projected``: the coarse view as an adapted index
    has it, each vector the fine one projected on the corpus' 64 leading fine directions (documents,
    and queries searched with ``coarse_query="projected"``). ``out``: also written as
    ``calibration-<early|projected>.json`` there."""
    from adaptive_retrieval import Encoder, datasets
    from adaptive_retrieval.encoding_cache import encode_beir_corpus, view_matrix

    encoder = Encoder.from_pretrained(model)
    corpus, _, _ = datasets.load_beir(data_dir, "scifact", "test")
    _, layers = encode_beir_corpus(encoder, corpus)
    fine = view_matrix(encoder, layers, encoder.full_view)
    held = np.random.default_rng(0).choice(len(fine), n_queries, replace=False)
    rest = np.setdiff1d(np.arange(len(fine)), held)
    if projected:  # the directions come from the indexed documents only
        _, _, vt = np.linalg.svd(fine[rest].astype(np.float64), full_matrices=False)
        coarse = _normalise((fine @ vt[:64].T).astype(np.float32))
    else:
        coarse = view_matrix(encoder, layers, encoder.check_view((4, 64)))
    real = agreement(coarse[rest], fine[rest], coarse[held], fine[held], candidates)
    print(
        f"{model} on SciFact ({len(rest)} docs, {n_queries} held-out docs as queries): agreement {real:.3f}"
    )
    synthetic = {}
    for noise in (0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.35, 0.4, 0.5, 0.6, 0.8):
        gen = Synthetic(coarse_noise=noise)
        centres = gen.centres()
        c, f = gen.block(1, 0, len(rest), centres)
        qc, qf = gen.block(2, 0, n_queries, centres)
        synthetic[noise] = agreement(c, f, qc, qf, candidates)
        print(f"  synthetic coarse_noise={noise}: agreement {synthetic[noise]:.3f}")
    if out is not None:
        kind = "projected" if projected else "early"
        write_json(
            Path(out) / f"calibration-{kind}.json",
            {
                **settings(benchmark="bench_scale --calibrate", model=model, coarse=kind),
                "labels": "none (SciFact documents held out as queries)",
                "candidates": candidates,
                "queries": n_queries,
                "real_agreement": real,
                "synthetic_agreement_by_noise": {str(k): v for k, v in synthetic.items()},
            },
        )


# ------------------------------------------------------------------------------------ preparation


def prepare(size: int, n_queries: int, workdir: Path, gen: Synthetic) -> Path:
    """Write the fine store (float16, through the library's on-disk FineStore), the coarse vectors,
    the queries and the exact float32 top-10 to ``workdir/n<size>`` once; later runs reuse them."""
    folder = workdir / f"n{size}"
    done = folder / "prepared.json"
    if done.is_file() and json.loads(done.read_text()) == {"size": size, "queries": n_queries, **asdict(gen)}:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.iterdir():
        f.unlink()
    centres = gen.centres(spill=folder)
    t0 = time.time()
    store = FineStore.on_disk(folder / "fine.npy", gen.dim, "float16")
    coarse = np.lib.format.open_memmap(
        folder / "coarse.npy", mode="w+", dtype=np.float32, shape=(size, gen.coarse_dim)
    )
    q_coarse, q_fine = next(gen.stream(2, n_queries, centres))
    best_s = np.full((n_queries, 10), -np.inf, dtype=np.float32)
    best_i = np.full((n_queries, 10), -1, dtype=np.int64)
    row = 0
    for c, f in gen.stream(1, size, centres):
        store.extend(f)
        coarse[row : row + len(c)] = c
        scores = np.concatenate([best_s, q_fine @ f.T], axis=1)  # exact float32 scores
        ids = np.concatenate(
            [best_i, np.broadcast_to(np.arange(row, row + len(f)), (n_queries, len(f)))], axis=1
        )
        top = np.argpartition(-scores, 9, axis=1)[:, :10]
        best_s, best_i = np.take_along_axis(scores, top, 1), np.take_along_axis(ids, top, 1)
        row += len(c)
        print(f"  prepared {row:,}/{size:,} ({time.time() - t0:.0f} s)", end="\r", file=sys.stderr)
    coarse.flush()
    del coarse
    np.savez(folder / "queries.npz", coarse=q_coarse, fine=q_fine, truth=best_i)
    done.write_text(json.dumps({"size": size, "queries": n_queries, **asdict(gen)}))
    print(f"\n  n={size:,}: data written in {time.time() - t0:.0f} s", file=sys.stderr)
    return folder


# ---------------------------------------------------------------------------------------- workers


def _timed(search, coarse_q: np.ndarray, fine_q: np.ndarray) -> tuple[list[float], float, np.ndarray]:
    """Per-query latencies (one query a call), batch QPS, and the top-10 ids of the batch call."""
    search(coarse_q[:1], fine_q[:1])  # warm-up
    lat = []
    for i in range(len(fine_q)):
        t = time.perf_counter()
        search(coarse_q[i : i + 1], fine_q[i : i + 1])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    ids = search(coarse_q, fine_q)
    return lat, len(fine_q) / (time.perf_counter() - t), ids


def run_method(
    method: str, size: int, folder: Path, gen: Synthetic, candidates: list[int], target: float | None = None
) -> list[dict]:
    """Build one method's index over the prepared data and time its searches (a funnel: once per
    shortlist size in ``candidates``; with ``target``, also the shortlist calibrated for it: see
    :func:`calibrated_rows`)."""
    q = np.load(folder / "queries.npz")
    coarse_q, fine_q, truth = q["coarse"], q["fine"], q["truth"]
    nlist = nlist_for(size)
    t0 = time.time()
    if method in ("exact-768", "ivfpq-768"):
        factory = "Flat" if method == "exact-768" else f"IVF{nlist},PQ96np"
        index = CoarseIndex(gen.dim, factory)  # the library's FAISS wrapper, here over 768 dims
        centres = gen.centres()
        if not index.is_trained:
            sample = np.concatenate(
                [f for _, f in gen.stream(1, min(size, max(40 * nlist, 100_000)), centres)]
            )
            index.train(sample)
            del sample
        for _, f in gen.stream(1, size, centres):  # regenerated in float32: exact, nothing stored
            index.add(f)
        knobs = {"nprobe": 32} if method == "ivfpq-768" else {}
        if knobs:
            index.set_knobs(**knobs)

        def search(cq, fq, _c=None):
            return index.search(fq, 10)[1]

        ram, disk, shortlists = index.nbytes(), 0, [None]
    else:
        factory = {"funnel-flat": "Flat", "funnel-hnsw": "HNSW32", "funnel-ivfpq": f"IVF{nlist},PQ32np"}[
            method
        ]
        index = CoarseIndex(gen.coarse_dim, factory)
        coarse = np.load(folder / "coarse.npy", mmap_mode="r")
        if not index.is_trained:
            rows = np.sort(np.random.default_rng(0).choice(size, min(size, 40 * nlist), replace=False))
            index.train(np.asarray(coarse[rows]))
        for start in range(0, size, BLOCK):
            index.add(np.asarray(coarse[start : start + BLOCK]))
        del coarse
        store = FineStore.load(folder / "fine.npy", mmap=True)
        knobs = {"funnel-hnsw": {"efSearch": 128}, "funnel-ivfpq": {"nprobe": 32}}.get(method, {})
        if knobs:
            index.set_knobs(**knobs)

        engine = FaissBackend(index, store)  # the retriever's own second stage

        def search(cq, fq, shortlist, patience=None, params=None):
            _, cand = index.search(cq, shortlist, params=params)
            return engine.rerank(fq, cand, 10, patience=patience)[1]

        ram, disk, shortlists = index.nbytes(), (folder / "fine.npy").stat().st_size, candidates
    build_s = time.time() - t0
    rows = []
    for shortlist in shortlists:
        lat, qps, ids = _timed(lambda cq, fq, s=shortlist: search(cq, fq, s), coarse_q, fine_q)
        recall = float(knn_intersection_measure(np.asarray(ids), truth))
        ms = np.asarray(lat) * 1000
        rows.append(
            {
                "size": size,
                "method": method,
                "index": factory,
                "knobs": knobs,
                "candidates": shortlist,
                "ram_bytes": int(ram),
                "disk_bytes": int(disk),
                "rss_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                # the peak counts pages of memory-mapped files (reclaimable page cache); the heap does not
                "rss_anon_bytes": process_memory().get("rss_anon"),
                "build_s": round(build_s, 2),
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
                "qps": float(qps),
                "recall@10": recall,
            }
        )
    if target is not None and method.startswith("funnel"):
        rows += calibrated_rows(rows, index, store, search, coarse_q, fine_q, truth, max(candidates), target)
    return rows


def calibrated_rows(
    fixed: list[dict],
    index: CoarseIndex,
    store: FineStore,
    search: Any,
    coarse_q: np.ndarray,
    fine_q: np.ndarray,
    truth: np.ndarray,
    cap: int,
    target: float,
) -> list[dict]:
    """The adaptive funnel beside the fixed ones: :func:`~adaptive_retrieval.shortlist.calibrate_shortlist`
    (what ``Retriever.calibrate`` runs) chooses a fixed shortlist and a patience for ``target`` recall@10
    on the first half of the queries (capped at ``cap`` candidates); the second half measures the chosen
    rule (``rerank(patience=...)``: what a search runs) and, on the same queries, each fixed
    shortlist, so the rows compare like with like. Adds ``half: "test"`` rows."""
    half = len(fine_q) // 2
    fit, test = slice(0, half), slice(half, len(fine_q))
    _, cand = index.search(coarse_q[fit], cap)
    valid = cand >= 0
    scores = np.full(cand.shape, -np.inf, dtype=np.float32)
    scores[valid] = store.scores(fine_q[fit], np.where(valid, cand, 0))[valid]
    members = np.array([np.isin(c, t) & v for c, t, v in zip(cand, truth[fit], valid)])
    choice, _ = calibrate_shortlist(scores, members, 10, target)
    rules = {"fixed": (choice["candidates"], None), "patient": (cap, choice["patience"])}
    shortlist, patience = rules[choice["rule"]]
    # as Retriever searches with a calibration: an HNSW index explores as deep as the calibration did
    ef = index.hnsw_ef()
    deep = index.search_parameters(efSearch=max(ef, cap)) if ef is not None else None
    rows = []
    runs = [(f"fixed {c}", (c, None)) for c in sorted({r["candidates"] for r in fixed})]
    for name, (s, p) in [*runs, ("calibrated", (shortlist, patience))]:  # the calibrated one last: as warm
        params = deep if name == "calibrated" else None
        lat, _, ids = _timed(
            lambda cq, fq, s=s, p=p, params=params: search(cq, fq, s, p, params), coarse_q[test], fine_q[test]
        )
        recall = float(knn_intersection_measure(np.asarray(ids), truth[test]))
        _, got = index.search(coarse_q[test], s, params=params)
        read = (
            FaissBackend(index, store).rerank(fine_q[test], got, 10, patience=p)[3]
            if p is not None
            else (got >= 0).sum(axis=1)
        )
        ms = np.asarray(lat) * 1000
        rows.append(
            {
                **{
                    k: fixed[0][k]
                    for k in ("size", "method", "index", "knobs", "ram_bytes", "disk_bytes", "build_s")
                },
                "candidates": name
                if name != "calibrated"
                else f"calibrated {target}: {choice['rule']} "
                f"(fixed {choice['candidates']}, patience {choice['patience']}, cap {cap})",
                "half": "test",
                "target": target,
                # the rule calibrated on the first half (the same on every row of this search)
                "calibrated": {"cap": cap, **{k: choice[k] for k in ("rule", "candidates", "patience")}},
                "mean_read": float(np.mean(read)),
                "p50_ms": float(np.percentile(ms, 50)),
                "p95_ms": float(np.percentile(ms, 95)),
                "recall@10": recall,
            }
        )
    return rows


# --------------------------------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000,10000000", help="comma-separated corpus sizes")
    ap.add_argument(
        "--methods", default=",".join(METHODS), help=f"comma-separated, from {', '.join(METHODS)}"
    )
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--candidates", default="100,400", help="coarse shortlists the fine view re-ranks (comma-separated)"
    )
    ap.add_argument("--out", type=Path, help="folder for results.json and table.md")
    ap.add_argument("--workdir", type=Path, help="where the vectors go (default: OUT/data)")
    ap.add_argument("--coarse-noise", type=float, default=Synthetic.coarse_noise)
    ap.add_argument("--clusters", type=int, default=Synthetic.clusters)
    ap.add_argument(
        "--target",
        type=float,
        help="also calibrate each funnel's shortlist for this recall@10 on half the queries and measure it "
        "on the other half, beside the fixed shortlists on the same half (the adaptive funnel)",
    )
    ap.add_argument("--fresh", action="store_true", help="redo rows already in results.json")
    ap.add_argument("--calibrate", metavar="MODEL", help="print real vs synthetic view agreement, and stop")
    ap.add_argument(
        "--projected",
        action="store_true",
        help="--calibrate against an adapted index's coarse view (fine vectors projected), not the early layer's",
    )
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--worker", nargs=2, metavar=("SIZE", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    try:
        args.sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        ap.error(f"--sizes must be comma-separated integers, got {args.sizes!r}")
    args.methods = args.methods.split(",")
    try:
        args.candidates = [int(c) for c in args.candidates.split(",")]
    except ValueError:
        ap.error(f"--candidates must be comma-separated integers, got {args.candidates!r}")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    if any(s < 1000 for s in args.sizes) or args.queries < 1 or min(args.candidates) < 10:
        ap.error("sizes must be >= 1000, --queries >= 1, --candidates >= 10")
    if args.target is not None:  # the first half of the queries fits the rule: as check_calibration asks
        try:
            check_calibration(args.queries // 2, args.target)
        except InvalidArgument as e:
            ap.error(f"--target {args.target} with --queries {args.queries}: {e}")
    if args.out is None and not args.calibrate:
        ap.error("--out is required")
    args.workdir = args.workdir or (args.out / "data" if args.out else None)
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    if args.calibrate:
        calibrate(args.calibrate, args.data_dir, args.candidates[0], projected=args.projected, out=args.out)
        return []
    gen = Synthetic(coarse_noise=args.coarse_noise, clusters=args.clusters)
    if args.worker:
        size, method = int(args.worker[0]), args.worker[1]
        rows = run_method(method, size, args.workdir / f"n{size}", gen, args.candidates, args.target)
        print("ROWS " + json.dumps(rows))
        return rows
    results_file = args.out / "results.json"
    saved = {} if args.fresh or not results_file.is_file() else json.loads(results_file.read_text())
    rows = saved.get("rows", [])
    header = settings(
        benchmark="bench_scale",
        synthetic=asdict(gen),
        queries=args.queries,
        candidates=args.candidates,
        threads=faiss.omp_get_max_threads(),
        target=args.target,
        labels="none: synthetic vectors; the reference is their exact float32 top 10",
    )
    if saved:  # rows of earlier runs kept: their provenance too
        header["earlier_runs"] = earlier_runs(saved)
    for size in args.sizes:
        print(f"n={size:,}: preparing vectors", file=sys.stderr)
        prepare(size, args.queries, args.workdir, gen)
        for method in args.methods:
            if any(r["size"] == size and r["method"] == method for r in rows):
                continue
            exact_bytes = size * gen.dim * 4
            if method == "exact-768" and exact_bytes > 0.8 * RAM_BYTES:
                new = [
                    {
                        "size": size,
                        "method": method,
                        "ram_bytes": exact_bytes,
                        "skipped": (
                            f"a float32 {gen.dim}-dim flat index needs {exact_bytes / 1e9:.1f} GB: more than this "
                            f"{RAM_BYTES / 1024**3:.0f} GB machine can hold beside the OS"
                        ),
                    }
                ]
            else:
                cmd = [
                    sys.executable,
                    "-u",
                    "-m",
                    __spec__.name,  # this module, by its package name
                    "--worker",
                    str(size),
                    method,
                    "--out",
                    str(args.out),
                    "--workdir",
                    str(args.workdir),
                    "--queries",
                    str(args.queries),
                    "--candidates",
                    ",".join(map(str, args.candidates)),
                    "--coarse-noise",
                    str(args.coarse_noise),
                    "--clusters",
                    str(args.clusters),
                    *(["--target", str(args.target)] if args.target is not None else []),
                ]
                done = subprocess.run(cmd, capture_output=True, text=True)
                line = next((x for x in done.stdout.splitlines() if x.startswith("ROWS ")), None)
                if done.returncode != 0 or line is None:
                    print(done.stderr[-2000:], file=sys.stderr)
                    raise SystemExit(f"n={size} {method}: the worker failed (exit {done.returncode})")
                new = json.loads(line[5:])
            rows.extend(new)
            exact = next(
                (r for r in rows if r["size"] == size and r["method"] == "exact-768" and "p50_ms" in r), None
            )
            for r in rows:
                if r["size"] == size and exact and "p50_ms" in r:
                    r["speedup_vs_exact"] = exact["p50_ms"] / r["p50_ms"]
            write_json(results_file, {**header, "rows": rows})
            for row in new:
                print(json.dumps(row), file=sys.stderr)
    table = _table(rows)
    (args.out / "table.md").write_text(table + "\n")
    print(table)
    return rows


def _table(rows: list[dict]) -> str:
    halves = [r for r in rows if r.get("half") == "test"]
    rows = [r for r in rows if "half" not in r]
    shown = []
    for r in rows:
        shown.append(
            {
                **r,
                "ram_mb": r["ram_bytes"] / 1e6,
                "disk_mb": r.get("disk_bytes", 0) / 1e6,
                "rss_mb": r["rss_peak_bytes"] / 1e6 if "rss_peak_bytes" in r else None,
                "anon_mb": r["rss_anon_bytes"] / 1e6 if r.get("rss_anon_bytes") else None,
                "note": r.get("skipped", ""),
            }
        )
    table = markdown_table(
        shown,
        [
            ("docs", "size", ","),
            ("method", "method", ""),
            ("candidates", "candidates", ""),
            ("index RAM (MB)", "ram_mb", ",.0f"),
            ("fine store on disk (MB)", "disk_mb", ",.0f"),
            ("peak RSS (MB)", "rss_mb", ",.0f"),
            ("heap (MB)", "anon_mb", ",.0f"),
            ("build (s)", "build_s", ".1f"),
            ("p50 (ms)", "p50_ms", ".2f"),
            ("p95 (ms)", "p95_ms", ".2f"),
            ("QPS", "qps", ",.0f"),
            ("recall@10", "recall@10", ".3f"),
            ("speed-up vs exact", "speedup_vs_exact", ".1f"),
            ("note", "note", ""),
        ],
    )
    if not halves:
        return table
    return (
        table
        + "\n\nCalibrated (fitted on the first half of the queries) and fixed shortlists, measured on the "
        + "second half:\n\n"
        + markdown_table(
            halves,
            [
                ("docs", "size", ","),
                ("method", "method", ""),
                ("shortlist", "candidates", ""),
                ("mean read", "mean_read", ".1f"),
                ("p50 (ms)", "p50_ms", ".2f"),
                ("p95 (ms)", "p95_ms", ".2f"),
                ("recall@10", "recall@10", ".3f"),
            ],
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    main()
