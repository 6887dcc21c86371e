"""The first stage's frontier: for each representation of the documents a first stage can hold in RAM,
its bytes per document and the shortlist the fine re-rank needs to return 0.95 (0.99) of the exact fine
view's top 10, side by side on the same real vectors.

    python -m benchmarks.bench_first_stage --datasets ../shared/data/beir/scifact runs/data/beir/stsb-para \\
        runs/data/beir/sick-para runs/data/beir/sts12-16-para runs/data/beir/manpages --out docs/results/first-stage

With ``--sizes 1000000 ...`` it runs :mod:`benchmarks.bench_first_stage_scale` instead: the library's codes
beside FAISS HNSW over the whole fine vectors and IVF-PQ with a refine step, at 1M and 10M synthetic documents.

Per set: the corpus' fine vectors through the default model (cached encodings, as the evals use), its test
queries' fine vectors, and the exact fine top 10 of each query (the reference; no qrels). Representations,
each a FAISS index over every document, searched with the query transformed the same way:

- ``proj<d> f32``: the fine vector projected on the corpus' ``d`` leading directions (the library's coarse
  view: :func:`adaptive_retrieval.adapt.fine_basis` of the first chunk, :func:`adaptive_retrieval.adapt.project_fine`),
  float32 (``4d`` bytes); ``proj<d> sq8`` / ``sq4``: the same, scalar-quantized (``d``, ``d/2`` bytes) as
  :class:`adaptive_retrieval.index.CoarseIndex` builds it (SQ8 over ``[-1, 1]``, the engine's default; SQ4 over
  the range FAISS trains on the corpus);
- ``fine pq<m>``: product quantization of the fine vector, ``m`` sub-vectors of 8 bits (``m`` bytes);
  ``fine opq<m>``: the same after FAISS's learned rotation;
- ``bits<b>``: the signs of the centred fine vector rotated onto its ``b`` leading directions, Hamming
  distance (``b/8`` bytes); ``fine-bits``: the signs of the fine vector itself (the sentence-transformers /
  Qdrant binary-quantization recipe; ``fine-bits-c``: centred first), ``dim/8`` bytes.

The shortlist a representation needs: the fine view re-ranks its top ``s``; its overlap@10 with the exact
top 10 is the share of the exact top 10 among those ``s`` (a document of the exact top 10 in the shortlist
is in the re-ranked top 10), averaged over queries; the table gives the smallest ``s`` of a grid reaching
each target, and each index's build seconds (training included) and its search milliseconds per query
(batched, the ``s`` of the 0.95 target).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder
from adaptive_retrieval.adapt import adapt_encoder, fine_basis, project_fine
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.errors import InvalidArgument
from adaptive_retrieval.first_stage import choose, measure, representations, shortlist_curve
from adaptive_retrieval.first_stage import needed as shortlist_for
from adaptive_retrieval.index import CoarseIndex
from adaptive_retrieval.reporting import markdown_table, model_info, settings, write_json, write_markdown
from adaptive_retrieval.retriever import CHUNK_SIZE
from evals.beir_eval import load_split
from evals.suite import dataset_location

GRID = (10, 15, 20, 30, 40, 50, 60, 80, 100, 120, 150, 200, 250, 300, 400, 500, 600, 800, 1000, 1500, 2000)
TARGETS = (0.95, 0.99)
DEFAULT_SPECS = (
    "proj64-f32", "proj16-f32", "proj32-f32",
    "proj16-sq8", "proj32-sq8", "proj64-sq8", "proj128-sq8", "proj256-sq8",
    "proj32-sq4", "proj64-sq4", "proj128-sq4", "proj256-sq4",
    "fine-pq16", "fine-pq32", "fine-pq64", "fine-pq128",
    "fine-opq16", "fine-opq32", "fine-opq64",
    "bits128", "bits256", "bits512", "bits768",
)  # fmt: skip
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("representation", "representation", "s"),
    ("B/doc", "bytes", "d"),
    ("shortlist for 0.95", "shortlist@0.95", "s"),
    ("for 0.99", "shortlist@0.99", "s"),
    ("overlap@10 at 100", "overlap@100", ".3f"),
    ("build s", "build_s", ".2f"),
    ("search ms/query", "search_ms", ".3f"),
)


class Representation:
    """One first stage: how documents and queries become codes, and the FAISS index over them."""

    def __init__(self, spec: str, fine: np.ndarray, basis: np.ndarray, mean: np.ndarray) -> None:
        self.spec = spec
        self.transform: Callable[[np.ndarray], np.ndarray]
        dim = fine.shape[1]
        if spec.startswith("proj"):
            d, kind = spec[4:].split("-")
            d = int(d)
            projection = basis[:d].T.astype(np.float32)
            self.transform = lambda x: project_fine(x, projection)
            factory = {"f32": "Flat", "sq8": "SQ8", "sq4": "SQ4"}[kind]
            self.index = CoarseIndex(d, factory).index  # as the library builds it (SQ8: over [-1, 1])
            self.bytes = {"f32": 4 * d, "sq8": d, "sq4": d // 2}[kind]
        elif spec in ("fine-bits", "fine-bits-c"):  # the usual binary quantization: the signs of the vector
            shift = mean if spec.endswith("-c") else np.zeros_like(mean)
            self.transform = lambda x: np.packbits((x - shift) > 0, axis=1)
            self.index = faiss.IndexBinaryFlat(dim)
            self.bytes = dim // 8
        elif spec.startswith("fine-"):
            kind = spec[5:]
            m = int(kind.lstrip("opq"))
            self.transform = lambda x: np.ascontiguousarray(x, dtype=np.float32)
            factory = f"OPQ{m},PQ{m}" if kind.startswith("opq") else f"PQ{m}"
            self.index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            self.bytes = m
        elif spec.startswith("bits"):
            b = int(spec[4:])
            rotation = basis[:b].T.astype(np.float32)
            self.transform = lambda x: np.packbits(((x - mean) @ rotation) > 0, axis=1)
            self.index = faiss.IndexBinaryFlat(b)
            self.bytes = b // 8
        else:
            raise SystemExit(f"unknown representation {spec!r}")

    def build(self, fine: np.ndarray) -> float:
        t0 = time.perf_counter()
        codes = self.transform(fine)
        if not self.index.is_trained:
            self.index.train(codes)
        self.index.add(codes)
        return time.perf_counter() - t0

    def search(self, fine_q: np.ndarray, depth: int) -> tuple[np.ndarray, float]:
        t0 = time.perf_counter()
        _, rows = self.index.search(self.transform(fine_q), depth)
        return rows, time.perf_counter() - t0


def needed(curve: dict[int, float], target: float) -> str:
    """The smallest shortlist of the grid reaching ``target`` (``">N"``: none did), as the table prints it."""
    found = shortlist_for(curve, target)
    return f">{max(curve)}" if found is None else str(found)


def evaluate(folder: Path, encoder: Encoder, cache_dir: Path | None, specs: Sequence[str], max_queries: int | None) -> list[dict[str, Any]]:  # fmt: skip
    data_dir, name = dataset_location(folder)
    corpus, queries, _ = load_split(data_dir, name, "test")
    texts = list(queries.values())[:max_queries] if max_queries else list(queries.values())
    _, layers = encode_beir_corpus(encoder, corpus, cache_dir)
    fine = np.ascontiguousarray(view_matrix(encoder, layers, encoder.full_view), dtype=np.float32)
    del layers
    fine_q = encoder.encode(encoder.as_queries(texts), [encoder.full_view], show_progress=False)
    fine_q = np.ascontiguousarray(fine_q[encoder.full_view], dtype=np.float32)
    exact = np.argsort(-(fine_q @ fine.T), axis=1)[:, :10]
    _, vh = fine_basis(fine, CHUNK_SIZE)  # as a build fits it: on the first chunk
    basis = vh.numpy()
    mean = fine[:CHUNK_SIZE].mean(axis=0)
    grid = [s for s in GRID if s <= len(fine)] or [len(fine)]
    out = []
    for spec in specs:
        width = int("".join(c for c in spec.split("-")[0] if c.isdigit()) or 0)
        if spec.startswith(("proj", "bits")) and width > len(basis):
            print(f"{name} {spec}: skipped, the corpus has {len(basis)} directions", flush=True)
            continue
        rep = Representation(spec, fine, basis, mean)
        build_s = rep.build(fine)
        rows, _ = rep.search(fine_q, max(grid))
        curve = shortlist_curve(rows, exact, grid)
        row = {"dataset": name, "docs": len(fine), "queries": len(texts), "representation": spec,
               "bytes": rep.bytes, "build_s": build_s, "overlap": curve,
               "overlap@100": curve.get(100, curve[max(grid)])}  # fmt: skip
        for target in TARGETS:
            row[f"shortlist@{target}"] = needed(curve, target)
        first = row["shortlist@0.95"]
        depth = int(first) if first.isdigit() else max(grid)
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # one query stream, as a search runs (the build used every core)
        _, seconds = rep.search(fine_q, depth)
        faiss.omp_set_num_threads(threads)
        row["search_ms"] = 1000 * seconds / len(texts)
        out.append(row)
        print(f"{name} {spec:12s} {rep.bytes:4d} B  0.95: {row['shortlist@0.95']:>6s}  0.99: "
              f"{row['shortlist@0.99']:>6s}", flush=True)  # fmt: skip
    return out


BUDGET_COLUMNS = (
    ("dataset", "dataset", "s"),
    ("B/doc", "budget", "d"),
    ("library's choice", "chosen", "s"),
    ("its shortlist (pseudo-queries)", "chosen_pseudo", "s"),
    ("its shortlist (test)", "chosen_test", "s"),
    ("best at the budget (test)", "best", "s"),
    ("best's shortlist (test)", "best_test", "s"),
    ("met", "met", "s"),
    ("choice s", "choice_s", ".1f"),
)


def budget_rows(folder: Path, encoder: Encoder, cache_dir: Path | None, budgets: Sequence[int], max_queries: int | None, coarse_view: str = "4x64") -> list[dict[str, Any]]:  # fmt: skip
    """For each budget: what ``Retriever.build(coarse_bytes=...)`` chooses on this corpus (the build's own
    adaptation and pseudo-queries, on the first chunk), and, on the test queries, the shortlist its choice
    needs for 0.95 of the exact fine top 10 beside the best of every candidate the budget allows."""
    data_dir, name = dataset_location(folder)
    corpus, queries, _ = load_split(data_dir, name, "test")
    texts = list(queries.values())[:max_queries] if max_queries else list(queries.values())
    _, layers = encode_beir_corpus(encoder, corpus, cache_dir)
    fine = np.ascontiguousarray(view_matrix(encoder, layers, encoder.full_view), dtype=np.float32)
    coarse = encoder.check_view(coarse_view)  # the build's coarse view: its layer's states feed the fit
    first = slice(0, CHUNK_SIZE)
    states = [layers[i][first] for i in range(coarse.layer)]
    del layers
    docs = [text for _, text in islice(iter_documents(corpus), CHUNK_SIZE)]
    _, record = adapt_encoder(encoder, coarse, encoder.full_view, states, fine[first], texts=docs)
    if record.directions is None or record.pseudo_fine is None:
        raise SystemExit(f"{name}: the build kept the model's head (no projection): nothing to choose on")
    directions, pseudo = record.directions, record.pseudo_fine
    fine_q = encoder.encode(encoder.as_queries(texts), [encoder.full_view], show_progress=False)
    fine_q = np.ascontiguousarray(fine_q[encoder.full_view], dtype=np.float32)
    exact = np.argsort(-(fine_q @ fine.T), axis=1)[:, :10]
    out = []
    for budget in budgets:
        t0 = time.perf_counter()
        try:
            chosen = choose(budget, fine[first], directions, pseudo, queries=record.pseudo_queries)
        except InvalidArgument as err:
            print(f"{name} {budget} B: refused: {err}", flush=True)
            out.append({"dataset": name, "budget": budget, "chosen": "refused", "refusal": str(err)})
            continue
        seconds = time.perf_counter() - t0
        tested = {}
        for rep in representations(budget, fine.shape[1]):
            row = measure(rep, fine, directions, fine_q, exact, GRID)
            tested[rep.name] = shortlist_for(row["curve"], 0.95)
        pick = f"proj{chosen.dim}-{chosen.index}"
        best = min(tested, key=lambda n: (tested[n] is None, tested[n] or 0))
        show = {n: ">" + str(GRID[-1]) if v is None else str(v) for n, v in tested.items()}
        out.append({
            "dataset": name, "budget": budget, "chosen": pick, "chosen_pseudo": str(chosen.shortlist),
            "chosen_test": show[pick], "best": best, "best_test": show[best],
            "met": "yes" if tested[pick] is not None and tested[pick] <= (tested[best] or 0) else "no",
            "choice_s": seconds, "test_shortlists": show, "frontier": chosen.frontier,
        })  # fmt: skip
        print(f"{name} {budget:4d} B: chose {pick} ({chosen.shortlist} on pseudo-queries, {show[pick]} on test); "
              f"test: {show}", flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "--sizes" in argv:  # the same frontier at 1M and 10M documents, on synthetic vectors
        from benchmarks import bench_first_stage_scale

        bench_first_stage_scale.main(argv)
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders (…/beir/<name>)"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--representations", nargs="+", default=list(DEFAULT_SPECS))
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--max-queries", type=int)
    ap.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        help="instead: the library's choice at each budget against the best there",
    )
    ap.add_argument(
        "--coarse", default="4x64", help="with --budgets: the build's coarse view (the layer it fits on)"
    )
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    encoder = Encoder.from_pretrained(args.model)
    if args.budgets:
        rows: list[dict[str, Any]] = []
        header = settings(labels="none: the choice sees pseudo-queries (first sentences of held-out documents); "
                          f"the test columns the exact fine view's top 10 of the test queries (no qrels); "
                          f"{args.model}'s own provenance says what its weights saw")  # fmt: skip
        table = ""
        for folder in args.datasets:  # written after each set: a long run keeps what it measured
            rows += budget_rows(folder, encoder, args.cache_dir, args.budgets, args.max_queries, args.coarse)
            table = markdown_table([r for r in rows if r["chosen"] != "refused"], BUDGET_COLUMNS)
            if args.out:
                write_json(args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows})
                title = "The first stage within a budget: the library's choice"
                write_markdown(args.out / "results.md", title, header, table)
        print(table)
        return
    rows = []
    for folder in args.datasets:
        rows += evaluate(folder, encoder, args.cache_dir, args.representations, args.max_queries)
    table = markdown_table(rows, COLUMNS)
    print(table)
    if args.out:
        header = settings(labels="none: the reference is the exact fine view's top 10 (no qrels); "
                          f"{args.model}'s own provenance says what its weights saw")  # fmt: skip
        write_json(args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows})
        write_markdown(args.out / "results.md", "The first stage's frontier", header, table)


if __name__ == "__main__":
    main()
