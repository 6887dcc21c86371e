"""The first stage at 1M and 10M documents: the library's coarse codes against the users' own alternatives
(FAISS HNSW over the whole 768-dim vectors; IVF-PQ with a refine step), side by side in one run.

    python -m benchmarks.bench_first_stage --sizes 1000000 --out docs/results/first-stage-scale

(``bench_first_stage --sizes`` runs this module; ``python -m benchmarks.bench_first_stage_scale`` too.)

Encoding millions of texts is out of reach on a 2-core CPU, so the fine vectors are synthetic: the
generator of ``bench_scale`` (:class:`benchmarks.bench_scale.Synthetic`), with its spread and spectrum set so that,
at 10,000 documents, the library's projected view (64 dims, int8) needs the shortlists the default model's
real vectors need on the hardest set of the suite (STS-B paraphrases, 10,000 documents:
``docs/results/first-stage-default``). Each run measures both curves again and records them side by side
(``calibration`` in results.json; ``--match`` names the real results file). The coarse view is then what
a build makes of the fine vectors: their projection on the leading directions of the first 10,000
(:func:`adaptive_retrieval.adapt.fine_basis`, :func:`adaptive_retrieval.adapt.project_fine`); no noise is
added, the projection is the library's own. How the vectors grow past the calibration is the generator's
assumption, not a measurement: ``--topics fixed`` keeps its 4,096 topics (each topic's neighbourhood
fills in), ``--topics proportional`` adds topics at the calibration's density; the two bracket the
question, and each results file says which it ran.

Methods, each over every document of the same vectors, searched by the same 200 queries (fresh draws):

- the library's (``ours``): a coarse :class:`~adaptive_retrieval.index.CoarseIndex` over the projected view
  shortlists ``s`` rows that the float16 fine store, memory-mapped from disk, re-ranks
  (``FaissBackend.rerank``: the retriever's own second stage). ``proj64-sq8``: the build's default
  (exhaustive int8 scan, 64 B); ``proj64-ivf-sq8``: the same codes in ``IVF<nlist>,SQ8``;
  ``proj64-hnsw-sq8``: in ``HNSW32,SQ8`` (efSearch ``max(128, s)``); ``proj256-ivf-opq32``: 32 bytes,
  ``OPQ32,IVF<nlist>,PQ32`` over 256 projected dims; ``proj128-ivf-pq128x4fs``: 64 bytes,
  ``IVF<nlist>,PQ128x4fs`` over 128 projected dims (a 4-bit code a dimension, scanned by FAISS's fast-scan
  kernels, which keep the 16 values of each code in SIMD registers: more lists probed for the time);
- the users' (``users'``): ``exact-768``: ``IndexFlatIP`` over the float32 fine vectors (the reference's cost;
  skipped where it does not fit); ``hnsw-768``: ``IndexHNSWFlat`` (M 32) over them, efSearch 64 / 128 / 256;
  ``ivfpq-768-refine``: ``IVF<nlist>,PQ64`` whose top ``s`` FAISS's ``IndexRefine`` re-scores
  with float16 copies of the fine vectors held in RAM (``k_factor = s / 10``), FAISS's refine recipe.

An IVF index (``nlist``: the power of two nearest the square root of the size) is searched at each of
:data:`NPROBES` lists probed (``--nprobes``), with the shortest and the longest shortlist.

Per row: ``ram_bytes`` (what must be resident to search: the serialised index; ours keep the fine store
on disk, ``disk_bytes``), its bytes per document, ``build_s`` (training included), ``p50_ms``/``p95_ms``
(one query a call, one FAISS thread: a serving thread's cost; timed on a second pass, warm), and ``recall@10`` (of the exact float32
top 10). Rows are written as each method finishes; a rerun skips the methods already there (and records
the earlier runs' commands and commits under ``earlier_runs``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from adaptive_retrieval.adapt import fine_basis, project_fine
from adaptive_retrieval.backends import FaissBackend
from adaptive_retrieval.first_stage import Representation, measure, shortlist_curve
from adaptive_retrieval.index import CoarseIndex, FineStore
from adaptive_retrieval.reporting import earlier_runs, markdown_table, settings, write_json, write_markdown
from adaptive_retrieval.retriever import CHUNK_SIZE
from benchmarks.bench_scale import BLOCK, RAM_BYTES, Synthetic, nlist_for, prepare

OURS = (
    "proj64-sq8",
    "proj64-ivf-sq8",
    "proj64-hnsw-sq8",
    "proj256-ivf-opq32",
    "proj128-sq8",
    "proj128-ivf-sq8",
    "proj128-ivf-pq128x4fs",
)
USERS = ("exact-768", "hnsw-768", "ivfpq-768-refine")
METHODS = OURS + USERS
SHORTLISTS = (100, 200, 400, 800)
EF_SEARCH = (64, 128, 256)
NPROBES = (16, 64, 256)
"""An IVF index's lists probed (each with the shortest and the longest of the shortlists)."""
SPREAD, DECAY = 0.8, 0.4  # matched at 10,000 documents to the real stsb-para curve (see the module's doc)
CALIBRATION_DOCS = 10_000
CALIBRATION_GRID = (20, 50, 100, 200, 400)
COLUMNS = (
    ("docs", "size", ","),
    ("method", "method", "s"),
    ("whose", "whose", "s"),
    ("setting", "setting", "s"),
    ("RAM B/doc", "ram_per_doc", ".0f"),
    ("disk B/doc", "disk_per_doc", ".0f"),
    ("build s", "build_s", ".0f"),
    ("p50 ms", "p50_ms", ".2f"),
    ("p95 ms", "p95_ms", ".2f"),
    ("recall@10", "recall@10", ".3f"),
)


def generator(size: int = CALIBRATION_DOCS, topics: str = "fixed") -> Synthetic:
    """The synthetic vectors of this benchmark at ``size`` documents (the calibrated spread and spectrum).
    ``topics``: ``"fixed"``: the calibration's 4,096 topic centres at every size, so a topic's neighbourhood
    fills in as the corpus grows; ``"proportional"``: as many topics per document as at the calibration
    (``size / 10,000 * 4,096``), so the corpus grows by new topics at the calibration's density. The two
    agree at 10,000 documents; which a real corpus resembles at a million is not measured here."""
    clusters = Synthetic.clusters
    if topics == "proportional":
        clusters = max(1, round(size * Synthetic.clusters / CALIBRATION_DOCS))
    return Synthetic(spread=SPREAD, decay=DECAY, clusters=clusters)


def projection_of(gen: Synthetic, size: int, dim: int, folder: Path | None = None) -> np.ndarray:
    """``(768, dim)``: the leading directions of the first chunk's fine vectors, as a build fits them
    (the first rows of the document stream, regenerated in float32; large centres spill to ``folder``)."""
    _, fine = gen.block(1, 0, min(BLOCK, size), gen.centres(spill=folder))
    _, vh = fine_basis(fine[:CHUNK_SIZE])
    return np.ascontiguousarray(vh.numpy()[:dim].T, dtype=np.float32)


def calibration(gen: Synthetic, match: Path | None) -> dict[str, Any]:
    """The projected int8 view's shortlist curve on the synthetic vectors at :data:`CALIBRATION_DOCS`
    documents, beside the real one recorded in ``match`` (the stsb-para row of a first-stage results file)."""
    centres = gen.centres()
    _, fine = gen.block(1, 0, CALIBRATION_DOCS, centres)
    _, queries = gen.block(2, 0, 300, centres)
    exact = np.argsort(-(queries @ fine.T), axis=1)[:, :10]
    _, vh = fine_basis(fine)
    out: dict[str, Any] = {"docs": CALIBRATION_DOCS, "queries": 300, "synthetic": {}, "real": {}}
    for dim in (32, 64, 128):  # measured as the library's budget choice measures a candidate
        row = measure(Representation(dim, "SQ8"), fine, vh.numpy(), queries, exact, CALIBRATION_GRID)
        out["synthetic"][f"proj{dim}-sq8"] = row["curve"]
    if match is not None:
        real = json.loads(match.read_text())
        out["real_file"] = str(match)
        for row in real["rows"]:
            if row["dataset"] == "stsb-para" and row["representation"] in out["synthetic"]:
                curve = {int(k): v for k, v in row["overlap"].items() if int(k) in CALIBRATION_GRID}
                out["real"][row["representation"]] = curve
    return out


def _timed(search: Callable[[slice], np.ndarray], n: int) -> tuple[list[float], np.ndarray]:
    """Per-query seconds (``search(slice(i, i + 1))``, one query a call, on one FAISS thread: a serving
    thread's cost) and the top-10 ids of every query. An untimed pass over the queries first brings the
    pages they touch into the page cache, so every setting is timed warm, whichever ran before it."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        for i in range(n):
            search(slice(i, i + 1))
        seconds, ids = [], []
        for i in range(n):
            t = time.perf_counter()
            ids.append(search(slice(i, i + 1)))
            seconds.append(time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(threads)
    return seconds, np.concatenate(ids)


def _coarse(method: str, size: int) -> tuple[int, str]:
    """The projected dims and the factory of one of the library's methods."""
    nlist = nlist_for(size)
    return {
        "proj64-sq8": (64, "SQ8"),
        "proj64-ivf-sq8": (64, f"IVF{nlist},SQ8"),
        "proj64-hnsw-sq8": (64, "HNSW32,SQ8"),
        "proj256-ivf-opq32": (256, f"OPQ32,IVF{nlist},PQ32"),
        "proj128-sq8": (128, "SQ8"),
        "proj128-ivf-sq8": (128, f"IVF{nlist},SQ8"),
        "proj128-ivf-pq128x4fs": (128, f"IVF{nlist},PQ128x4fs"),
    }[method]


def _sample(gen: Synthetic, size: int, rows: int, folder: Path | None = None) -> np.ndarray:
    """The first ``rows`` fine vectors (float32; at least a block of them, at most ``size``), a training sample."""
    centres = gen.centres(spill=folder)
    return np.concatenate([fine for _, fine in gen.stream(1, min(size, max(rows, BLOCK)), centres)])


def run_ours(
    method: str, size: int, folder: Path, gen: Synthetic, shortlists: list[int], nprobes: list[int]
) -> list[dict]:
    """Build one of the library's coarse indexes over the projected view and time its funnel."""
    dim, factory = _coarse(method, size)
    projection = projection_of(gen, size, dim, folder)
    t0 = time.perf_counter()
    index = CoarseIndex(dim, factory)
    if not index.is_trained:
        index.train(project_fine(_sample(gen, size, 40 * nlist_for(size), folder), projection))
    centres = gen.centres(spill=folder)
    for _, fine in gen.stream(1, size, centres):  # regenerated in float32, as a build projects them
        index.add(project_fine(fine, projection))
    build_s = time.perf_counter() - t0
    engine = FaissBackend(index, FineStore.load(folder / "fine.npy", mmap=True))
    queries = np.load(folder / "queries.npz")
    fine_q, truth = queries["fine"], queries["truth"]
    coarse_q = project_fine(fine_q, projection)
    if index.ivf() is not None:
        grid = [({"nprobe": p}, s) for p in nprobes for s in (min(shortlists), max(shortlists))]
    else:
        grid = [({"efSearch": max(128, s)} if index.is_hnsw() else {}, s) for s in shortlists]
    rows = []
    for knobs_, s in grid:
        params = index.search_parameters(**knobs_) if knobs_ else None

        def search(i: slice, s: int = s, params: Any = params) -> np.ndarray:
            _, cand = index.search(coarse_q[i], s, params=params)
            return engine.rerank(fine_q[i], cand, 10)[1]

        lat, ids = _timed(search, len(fine_q))
        setting = ", ".join([f"{k} {v}" for k, v in knobs_.items() if k == "nprobe"] + [f"shortlist {s}"])
        rows.append(_row(size, method, "ours", factory, setting, index.nbytes(),
                         (folder / "fine.npy").stat().st_size, build_s, lat, ids, truth))  # fmt: skip
    return rows


def run_users(
    method: str, size: int, folder: Path, gen: Synthetic, shortlists: list[int], nprobes: list[int]
) -> list[dict]:
    """Build one of the users' alternatives over the float32 fine vectors and time it."""
    nlist = nlist_for(size)
    t0 = time.perf_counter()
    if method == "exact-768":
        index, factory = faiss.IndexFlatIP(gen.dim), "Flat"
    elif method == "hnsw-768":
        index, factory = faiss.IndexHNSWFlat(gen.dim, 32, faiss.METRIC_INNER_PRODUCT), "HNSW32"
    else:
        base = faiss.index_factory(gen.dim, f"IVF{nlist},PQ64", faiss.METRIC_INNER_PRODUCT)
        refine = faiss.IndexScalarQuantizer(
            gen.dim, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        index, factory = faiss.IndexRefine(base, refine), f"IVF{nlist},PQ64 + refine (float16, RAM)"
        index.train(_sample(gen, size, 40 * nlist, folder))
    for _, fine in gen.stream(1, size, gen.centres(spill=folder)):
        index.add(fine)
    build_s = time.perf_counter() - t0
    ram = _saved_size(index, folder / "index.faiss")
    queries = np.load(folder / "queries.npz")
    fine_q, truth = queries["fine"], queries["truth"]
    settings_: list[tuple[str, Any]] = (
        [("exact", None)] if method == "exact-768"
        else [(f"efSearch {ef}", faiss.SearchParametersHNSW(efSearch=ef)) for ef in EF_SEARCH] if method == "hnsw-768"
        else [(f"nprobe {p}, shortlist {s}", (p, s)) for p in nprobes for s in (min(shortlists), max(shortlists))]
    )  # fmt: skip
    rows = []
    for label, param in settings_:
        if method == "ivfpq-768-refine":
            faiss.extract_index_ivf(index.base_index).nprobe, index.k_factor = param[0], param[1] / 10

        def search(i: slice, param: Any = param) -> np.ndarray:
            if method == "hnsw-768":
                return index.search(fine_q[i], 10, params=param)[1]
            return index.search(fine_q[i], 10)[1]

        lat, ids = _timed(search, len(fine_q))
        rows.append(_row(size, method, "users'", factory, label, ram, 0, build_s, lat, ids, truth))
    return rows


def _saved_size(index: faiss.Index, path: Path) -> int:
    """The index's bytes as FAISS writes it (to a file, not a second copy in RAM: 16 GB at 10M documents)."""
    try:
        faiss.write_index(index, str(path))
        return path.stat().st_size
    finally:
        path.unlink(missing_ok=True)


def _row(size: int, method: str, whose: str, factory: str, setting: str, ram: int, disk: int,
         build_s: float, lat: list[float], ids: np.ndarray, truth: np.ndarray) -> dict[str, Any]:  # fmt: skip
    ms = np.asarray(lat) * 1000
    recall = shortlist_curve(ids, truth, [10])[10]  # the share of the exact top 10 in the returned 10
    return {"size": size, "method": method, "whose": whose, "index": factory, "setting": setting,
            "ram_bytes": ram, "ram_per_doc": ram / size, "disk_bytes": disk, "disk_per_doc": disk / size,
            "build_s": round(build_s, 2), "p50_ms": float(np.percentile(ms, 50)),
            "p95_ms": float(np.percentile(ms, 95)), "recall@10": recall}  # fmt: skip


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000_000], help="corpus sizes (>= 10,000)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                    help=f"from {', '.join(METHODS)}")  # fmt: skip
    ap.add_argument("--shortlists", type=int, nargs="+", default=list(SHORTLISTS))
    ap.add_argument("--nprobes", type=int, nargs="+", default=list(NPROBES),
                    help="an IVF index's lists probed, each with the shortest and the longest shortlist")  # fmt: skip
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--topics", choices=("fixed", "proportional"), default="fixed",
                    help="the generator's topics: fixed at 4,096, or growing with the corpus (see generator())")  # fmt: skip
    ap.add_argument("--match", type=Path, help="a first-stage results file with the real stsb-para curves")
    ap.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    ap.add_argument("--workdir", type=Path, help="where the vectors go (default: OUT/data)")
    ap.add_argument("--fresh", action="store_true", help="redo the methods already in results.json")
    args = ap.parse_args(argv)
    if (
        min(args.sizes) < CALIBRATION_DOCS
        or args.queries < 1
        or min(args.shortlists) < 10
        or min(args.nprobes) < 1
    ):
        ap.error(
            f"--sizes must be >= {CALIBRATION_DOCS:,}, --queries >= 1, --shortlists >= 10, --nprobes >= 1"
        )
    args.workdir = args.workdir or args.out / "data"
    return args


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    results = args.out / "results.json"
    saved = json.loads(results.read_text()) if results.is_file() and not args.fresh else {}
    rows: list[dict] = saved.get("rows", [])
    header = settings(
        benchmark="bench_first_stage_scale", synthetic=asdict(generator()), topics=args.topics,
        queries=args.queries, calibration=saved.get("calibration") or calibration(generator(), args.match),
        labels="none: synthetic vectors; the reference is their exact float32 top 10",
    )  # fmt: skip
    if saved:  # rows of earlier runs kept: their provenance too
        header["earlier_runs"] = earlier_runs(saved)
    cal = header["calibration"]
    for name, curve in cal["synthetic"].items():
        real = cal["real"].get(name, {})
        print(f"calibration {name}: synthetic {curve}  real {real}", file=sys.stderr)
    for size in args.sizes:
        gen = generator(size, args.topics)
        print(f"n={size:,}, {gen.clusters:,} topics: preparing vectors", file=sys.stderr)
        folder = prepare(size, args.queries, args.workdir, gen)
        for method in args.methods:
            if any(
                r["size"] == size and r["method"] == method and r.get("topics") == gen.clusters for r in rows
            ):
                continue
            if method in ("exact-768", "hnsw-768") and size * gen.dim * 4 > 0.6 * RAM_BYTES:
                new = [{"size": size, "method": method, "whose": "users'", "setting": "not run",
                        "ram_bytes": size * gen.dim * 4, "ram_per_doc": gen.dim * 4,
                        "skipped": f"its float32 vectors alone need {size * gen.dim * 4 / 1e9:.0f} GB"}]  # fmt: skip
            else:
                run = run_ours if method in OURS else run_users  # builds on every core, searches on one
                try:
                    new = run(method, size, folder, gen, args.shortlists, args.nprobes)
                except MemoryError as err:  # a result too: the method does not fit on this machine
                    new = [{"size": size, "method": method, "whose": "ours" if method in OURS else "users'",
                            "setting": "not run", "ram_bytes": None, "ram_per_doc": None,
                            "skipped": f"out of memory while building it on this {RAM_BYTES / 1024**3:.0f} GB "
                                       f"machine ({type(err).__name__}: {err})"}]  # fmt: skip
            for row in new:
                row["topics"] = gen.clusters
            rows.extend(new)
            write_json(results, {**header, "rows": rows})
            for row in new:
                print(json.dumps({k: v for k, v in row.items() if k != "index"}), file=sys.stderr)
    table = markdown_table(rows, COLUMNS)
    write_markdown(args.out / "results.md", "The first stage at scale: the library's codes and the users' alternatives",
                   header, table)  # fmt: skip
    print(table)
    return rows


if __name__ == "__main__":
    main()
