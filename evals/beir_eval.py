"""The recall-cost trade-off on a BEIR dataset: exact search at a grid of views, and funnels.

    python -m evals.beir_eval --dataset scifact                       # mpnet-base, quick grid
    python -m evals.beir_eval --dataset scifact --model minilm-l6 mpnet-base --grid full --out results/scifact

``python evals/beir_eval.py ...`` runs the same: this script imports only the library, nothing from ``evals/``.

Per model, the corpus is encoded once at every layer (cached on disk, keyed by model and corpus hash).
Every configuration is then run through the library's own funnel (``Retriever.from_vectors`` +
``search_arrays``), one query at a time so that each stage's latency is measured, and scored by BEIR's
``EvaluateRetrieval``:

- ``exact`` rows: search the view's own flat index, top 100;
- ``funnel`` rows: a coarse view's flat index recalls ``candidates`` ids, the fine view (float16, the
  library default) re-ranks them; a funnel returns ``min(100, candidates)`` hits, so its Recall@100
  counts only what it can return. Each funnel runs twice (``--adapt both``, the default): with the
  model's coarse heads as shipped (``adapt`` = ``shipped``), and with the head that
  ``Retriever.build`` fits to the corpus (``adapt`` = ``build``: :func:`adaptive_retrieval.adapt.adapt_encoder`
  on the same first chunk of documents, label-free).

Every row also says how closely it follows the exact fine view, without labels: ``overlap@10``, the share
of the exact fine view's top 10 that the row's own top 10 holds (FAISS's ``knn_intersection_measure``).
For a funnel it is the share of the fine top 10 that its coarse shortlist recalled; 1.0 means the funnel
loses nothing to exact search. It needs no qrels, so a head or a model can be tuned on it with any
query-like text.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from collections.abc import Sequence
from itertools import islice, product
from pathlib import Path
from typing import Any

from beir.retrieval.evaluation import EvaluateRetrieval
from beir.retrieval.search.base import BaseSearch

from adaptive_retrieval import DEFAULT_MODEL, Encoder, FaissOptions, Retriever, SearchTimings, View, datasets
from adaptive_retrieval.adapt import Adaptation, adapt_encoder, project_fine
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.costs import mean_encoder_flops, search_flops
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.models import NAMED_MODELS, labels_of
from adaptive_retrieval.reporting import (
    markdown_table,
    model_info,
    pareto_front,
    percentiles_ms,
    settings,
    write_json,
)
from adaptive_retrieval.retriever import CHUNK_SIZE

DEFAULT_DATA_DIR = datasets.default_data_dir()
CANDIDATES = (20, 50, 100, 200, 500)
FULL_DIMS = (32, 64, 128, 256, 512)
DEPTH = 100  # every run ranks this many documents per query (Recall@100)
STAGES = ("encode_coarse", "coarse_search", "resume_fine", "rerank")
ADAPT_CHOICES = ("shipped", "build", "both")


# ------------------------------------------------------------------------------------------- data


def load_beir(data_dir: Path | None, dataset: str, split: str) -> tuple[dict, dict, dict]:
    """:func:`adaptive_retrieval.datasets.load_beir` (a public BEIR dataset is downloaded when missing and
    the machine is online); what is missing ends the script with the library's message."""
    try:
        return datasets.load_beir(data_dir, dataset, split)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None


def load_split(
    data_dir: Path | None, dataset: str, split: str, *, dev_fraction: float = 0.1, dev_seed: int = 42
) -> tuple[dict, dict, dict]:
    """:func:`adaptive_retrieval.datasets.load_split` (``split="dev"``: the train queries that training
    holds out with the same ``--dev-fraction`` and ``--seed``), ending the script on missing data."""
    data_dir = datasets.default_data_dir() if data_dir is None else Path(data_dir)
    folder = data_dir / "beir" / dataset / "qrels"
    if split == "dev" and not (folder / "dev.tsv").is_file():
        if not 0 < dev_fraction < 1:
            raise SystemExit(f"--dev-fraction must be in (0, 1), got {dev_fraction}")
        if (folder.parent / "corpus.jsonl").is_file() and not (folder / "train.tsv").is_file():
            raise SystemExit(
                f"--split dev is carved from {dataset}'s train queries, but it has no qrels/train.tsv (nor a "
                "qrels/dev.tsv) in --data-dir: choose a split it has"
            )
    try:
        return datasets.load_split(data_dir, dataset, split, dev_fraction=dev_fraction, dev_seed=dev_seed)
    except FileNotFoundError as err:
        raise SystemExit(str(err)) from None


def first_queries(queries: dict, qrels: dict, n: int | None) -> tuple[dict, dict]:
    """The first ``n`` queries and their qrels (all of them when ``n`` is ``None`` or 0: a quick look's cut)."""
    if not n:
        return queries, qrels
    queries = dict(islice(queries.items(), n))
    return queries, {q: qrels[q] for q in queries if q in qrels}


def held_out_ids(model: str) -> list[str] | None:
    """The dev query ids a trained model's training recorded as held out (``None``: no such record, e.g.
    an untrained base model)."""
    named = NAMED_MODELS.get(model)
    if named is not None:
        record = named.adapter / "provenance.json" if named.adapter else None
        metadata = json.loads(record.read_text()).get("training", {}) if record and record.is_file() else {}
    else:
        record = Path(model) / "adaptive_retrieval_training.json"
        metadata = json.loads(record.read_text()) if record.is_file() else {}
    ids = [q for d in metadata.get("data", []) for q in d.get("scifact_dev_query_ids", [])]
    return ids or None


def check_dev_split(models: Sequence[str], dev_ids: Sequence[str]) -> None:
    """Refuse to score a trained model on a dev split other than the one its training held out: some of
    those queries would be its training data."""
    for model in models:
        held = held_out_ids(model)
        if held is not None and set(held) != set(dev_ids):
            raise SystemExit(
                f"{model} was trained holding out {len(held)} dev queries, not these {len(dev_ids)}: it has "
                "seen some of them. Pass the --dev-fraction and --dev-seed it was trained with (its --seed)."
            )


# ------------------------------------------------------------------------------------------- grid


def grid_views(encoder: Encoder, grid: str) -> list[View]:
    """``quick``: the diagonal (L/6, H/24) .. (L, H), e.g. 2x32 4x64 6x128 8x256 12x768 for a 12x768 model.
    ``full``: every layer x {32, 64, 128, 256, 512, H}."""
    n, h = encoder.n_layers, encoder.hidden_size
    if grid == "quick":
        fractions = ((1 / 6, 1 / 24), (1 / 3, 1 / 12), (1 / 2, 1 / 6), (2 / 3, 1 / 3), (1, 1))
        return sorted({View(max(1, round(n * fl)), max(1, round(h * fd))) for fl, fd in fractions})
    if grid == "full":
        dims = sorted({d for d in FULL_DIMS if d < h} | {h})
        return [View(layer, d) for layer in range(1, n + 1) for d in dims]
    if grid == "none":
        return []
    raise ValueError(f"grid={grid!r}: choose 'quick', 'full' or 'none'")


# ----------------------------------------------------------------------------------- BEIR search


class RetrieverSearch(BaseSearch):
    """BEIR's ``BaseSearch`` around a built :class:`Retriever`: queries go through the library's funnel,
    one at a time, and the time of every stage is kept in :attr:`timings` (one entry per query)."""

    def __init__(
        self,
        retriever: Retriever,
        doc_ids: Sequence[str],
        candidates: int | None = None,
        coarse_query: str | None = None,
    ) -> None:
        self.retriever = retriever
        self.doc_ids = list(doc_ids)
        self.candidates = candidates
        self.coarse_query = coarse_query
        self.timings: list[SearchTimings] = []

    def search(self, corpus: dict, queries: dict[str, str], top_k: int, *args: Any, **kwargs: Any) -> dict:
        if len(corpus) != len(self.retriever):
            raise ValueError(
                f"the retriever indexes {len(self.retriever)} documents, the corpus has {len(corpus)}"
            )
        results: dict[str, dict[str, float]] = {}
        self.timings = []
        for qid, text in queries.items():
            t = SearchTimings()
            D, I = self.retriever.search_arrays(
                [text], top_k, candidates=self.candidates, coarse_query=self.coarse_query, timings=t
            )
            self.timings.append(t)
            results[qid] = {self.doc_ids[i]: float(s) for s, i in zip(D[0], I[0]) if i >= 0}
        return results

    def encode(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError("the funnel encodes queries itself; use search()")

    def search_from_files(self, *args: Any, **kwargs: Any) -> dict:
        raise NotImplementedError("the funnel encodes queries itself; use search()")


def top_overlap(results: dict, reference: dict, k: int = 10) -> float:
    """Mean over ``reference``'s queries of ``|top k of results ∩ top k of reference| / top k of reference``
    (runs as qid -> {doc id: score}; the top k by score). A query missing from ``results`` counts 0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")

    def top(run: dict[str, float]) -> set[str]:
        return set(sorted(run, key=run.__getitem__, reverse=True)[:k])

    shares = []
    for qid, ranked in reference.items():
        want = top(ranked)
        if want:
            shares.append(len(want & top(results.get(qid, {}))) / len(want))
    return sum(shares) / len(shares) if shares else float("nan")


def score(qrels: dict, results: dict) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100, MRR@10 by BEIR's evaluator (given a copy: it edits in place)."""
    ndcg, _, recall, _ = EvaluateRetrieval.evaluate(qrels, copy.deepcopy(results), [10, 100])
    mrr = EvaluateRetrieval.evaluate_custom(qrels, results, [10], metric="mrr")
    return {
        "ndcg@10": ndcg["NDCG@10"],
        "recall@10": recall["Recall@10"],
        "recall@100": recall["Recall@100"],
        "mrr@10": mrr["MRR@10"],
    }


def labels_seen(models: Sequence[str], adapt: str = "both") -> dict[str, str]:
    """What a run's figures saw (this eval's and the suite's): each model's own labels (its named
    description), the build-time adaptation none (the corpus' text; ``adapt="shipped"``: no adaptation
    ran), the qrels only to score."""
    out = {m: labels_of(m) for m in models}
    out["adaptation"] = (
        "none ran: the models' coarse heads as they ship"
        if adapt == "shipped"
        else "none: fitted at build on the corpus' own text (pseudo-queries)"
    )
    out["qrels"] = "only scored against (nDCG@10, MRR@10); overlap@10 uses none"
    return out


# ------------------------------------------------------------------------------------- evaluation


def run_config(
    encoder: Encoder,
    all_layers: Any,
    doc_ids: list[str],
    corpus: dict,
    queries: dict[str, str],
    qrels: dict,
    coarse: View | None,
    fine: View,
    candidates: int | None,
    fine_dtype: str | None = None,
    *,
    adaptation: Adaptation | None = None,
    coarse_query: str | None = None,
    index: str | None = None,
) -> tuple[dict[str, Any], dict[str, dict[str, float]]]:
    """One configuration: its row of figures, and its BEIR run (qid -> {doc id: score}).

    ``fine_dtype`` defaults to float32 for exact rows (pure exact search) and to the library's
    float16 for funnels; ``index``, a funnel's coarse index, to the library's (an exact row's is Flat). ``adaptation``: the build's record of the head ``encoder`` carries (its
    projection serves ``coarse_query="projected"``, the default when there is one)."""
    exact = coarse is None
    first = fine if exact else coarse
    fine_docs = view_matrix(encoder, all_layers, fine)
    projection = None if exact or adaptation is None else adaptation.projection
    if projection is None:
        first_docs = view_matrix(encoder, all_layers, first)
    else:  # as Retriever.build makes them: each document's fine vector, projected
        first_docs = project_fine(fine_docs, projection)
    retriever = Retriever.from_vectors(
        encoder,
        first,
        fine,
        doc_ids,
        first_docs,
        fine_docs,
        candidates=DEPTH if exact else candidates,
        backend=FaissOptions(
            fine_dtype=fine_dtype or ("float32" if exact else "float16"),
            index="Flat" if exact else (index or FaissOptions.index),
        ),
        adaptation=None if exact else adaptation,
    )
    k = DEPTH if exact else min(DEPTH, candidates)
    coarse_query = None if exact else retriever.resolve_coarse_query(coarse_query)
    search = RetrieverSearch(
        retriever, doc_ids, candidates=None if exact else candidates, coarse_query=coarse_query
    )
    results = EvaluateRetrieval(search, k_values=[k]).retrieve(corpus, queries)
    n_docs = len(doc_ids)
    coarse_bytes, fine_bytes = retriever.backend.nbytes()
    shortlist = DEPTH if exact else max(candidates, k)
    row: dict[str, Any] = {
        "model": encoder.name,
        "kind": "exact" if exact else "funnel",
        "coarse": None if exact else list(coarse.as_tuple()),
        "fine": list(fine.as_tuple()),
        "candidates": None if exact else candidates,
        "coarse_query": coarse_query,
        **score(qrels, results),
        "layers_per_query": fine.layer,
        "encoder_flops_per_query": mean_encoder_flops(encoder, list(queries.values()), fine.layer),
        "search_flops_per_query": search_flops(n_docs, first.dim, 0 if exact else shortlist, fine.dim),
        "coarse_bytes_per_doc": coarse_bytes / n_docs,
        "fine_bytes_per_doc": 0.0 if exact else fine_bytes / n_docs,
    }
    row["flops_per_query"] = row["encoder_flops_per_query"] + row["search_flops_per_query"]
    row["p50_ms"], row["p95_ms"] = percentiles_ms([t.total for t in search.timings])
    for stage in STAGES:
        row[f"{stage}_p50_ms"], row[f"{stage}_p95_ms"] = percentiles_ms(
            [getattr(t, stage) for t in search.timings]
        )
    return row, results


def evaluate_model(
    encoder: Encoder,
    corpus: dict,
    queries: dict[str, str],
    qrels: dict,
    *,
    grid: str = "quick",
    candidates: Sequence[int] = CANDIDATES,
    funnel_coarse: Sequence[View] | None = None,
    fine: View | None = None,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    batch_size: int | None = None,
    adapt: str = "both",
    index: str | None = None,
) -> list[dict[str, Any]]:
    """Every exact view of the grid (``none``: the fine view alone) and every funnel (coarse view x
    candidates -> fine), as rows; funnels with the shipped heads, the head fitted at build, or both
    (``adapt``: ``shipped``, ``build``, ``both``), over the coarse index ``index`` (default: the library's)."""
    if adapt not in ADAPT_CHOICES:
        raise ValueError(f"adapt={adapt!r}: choose one of {', '.join(ADAPT_CHOICES)}")
    doc_ids, all_layers = encode_beir_corpus(encoder, corpus, cache_dir, batch_size=batch_size)
    fine = encoder.full_view if fine is None else encoder.check_view(fine, name="fine")
    views = grid_views(encoder, grid)
    if funnel_coarse is None:
        funnel_coarse = [v for v in grid_views(encoder, "quick") if v.layer < fine.layer or v.dim < fine.dim]
    funnel_coarse = [encoder.check_view(v, name="funnel_coarse") for v in funnel_coarse]
    rows, runs = [], {}
    for view in sorted(set(views) | {fine}):
        row, runs[view] = run_config(encoder, all_layers, doc_ids, corpus, queries, qrels, None, view, None)
        rows.append(row)
        print(f"  exact  {view!s:>8}: nDCG@10 {row['ndcg@10']:.4f}", file=sys.stderr, flush=True)
    for row, run in zip(rows, runs.values()):
        row["overlap@10"] = top_overlap(run, runs[fine])
    fine_docs = view_matrix(encoder, all_layers, fine)
    for coarse in funnel_coarse:
        variants = []
        if adapt in ("shipped", "both"):
            variants.append(("shipped", encoder, None))
        if adapt in ("build", "both"):  # as Retriever.build fits it: on the first chunk of documents
            first = slice(0, CHUNK_SIZE)
            states = [all_layers[i][first] for i in range(coarse.layer)]
            texts = [text for _, text in islice(iter_documents(corpus), CHUNK_SIZE)]
            adapted, record = adapt_encoder(
                encoder, coarse, fine, states, fine_docs[first], texts=texts, candidates=100
            )
            variants.append(("build", adapted, record))
        for kind, enc, record in variants:
            # the build's head: both coarse queries (the early layer's, and the fine vector projected)
            paths = (
                ["early", "projected"] if record is not None and record.projection is not None else ["early"]
            )
            for coarse_query, c in product(paths, candidates):
                row, run = run_config(
                    enc,
                    all_layers,
                    doc_ids,
                    corpus,
                    queries,
                    qrels,
                    coarse,
                    fine,
                    c,
                    adaptation=record,
                    coarse_query=coarse_query,
                    index=index,
                )
                row["index"] = index or FaissOptions.index
                row["overlap@10"] = top_overlap(run, runs[fine])
                row["adapt"] = kind
                if record is not None:
                    row["adaptation"] = record.as_dict()
                    row["adapt_seconds"] = record.seconds
                rows.append(row)
                print(
                    f"  funnel {coarse!s:>8} -> {fine} @ {c} ({kind} head, {coarse_query} coarse query): "
                    f"nDCG@10 {row['ndcg@10']:.4f}, overlap@10 with exact {fine} {row['overlap@10']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
    return rows


# ----------------------------------------------------------------------------------------- output

COLUMNS = (
    ("model", "model", "s"),
    ("kind", "kind", "s"),
    ("coarse", "coarse", ""),
    ("fine", "fine", ""),
    ("cand.", "candidates", "d"),
    ("head", "adapt", "s"),
    ("coarse query", "coarse_query", "s"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("R@10", "recall@10", ".4f"),
    ("R@100", "recall@100", ".4f"),
    ("MRR@10", "mrr@10", ".4f"),
    ("∩fine@10", "overlap@10", ".3f"),
    ("layers", "layers_per_query", "d"),
    ("GFLOP/q", "gflops", ".3f"),
    ("coarse B/doc", "coarse_bytes_per_doc", ".0f"),
    ("fine B/doc", "fine_bytes_per_doc", ".0f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("p95 ms", "p95_ms", ".1f"),
    ("enc→coarse", "encode_coarse_p50_ms", ".1f"),
    ("coarse search", "coarse_search_p50_ms", ".2f"),
    ("resume→fine", "resume_fine_p50_ms", ".1f"),
    ("rerank", "rerank_p50_ms", ".2f"),
)


PANELS = (
    ("flops_per_query", "FLOPs per query (encoder + search)"),
    ("coarse_bytes_per_doc", "index RAM per document, bytes (the fine store is memory-mapped)"),
)


SERIES = (
    ("exact", "o"),
    ("funnel", "^"),
    ("funnel, head fitted at build", "s"),
    ("funnel, head fitted at build, projected query", "D"),
)


def series(row: dict[str, Any]) -> str:
    """The plot's name for a row's kind of configuration (one of :data:`SERIES`)."""
    if row["kind"] == "exact":
        return "exact"
    if row.get("adapt") != "build":
        return "funnel"
    projected = row.get("coarse_query") == "projected"
    return "funnel, head fitted at build" + (", projected query" if projected else "")


def plot_pareto(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """nDCG@10 against per-query FLOPs and against index RAM per document, per model; each panel marks
    the Pareto frontier and the exact full view as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(8 * len(PANELS), 6))
    for ax, (cost, label) in zip(axes, PANELS):
        for n, model in enumerate(dict.fromkeys(r["model"] for r in rows)):
            color = f"C{n}"
            mine = [r for r in rows if r["model"] == model]
            for kind, marker in SERIES:
                pts = [r for r in mine if series(r) == kind]
                ax.scatter(
                    [r[cost] for r in pts],
                    [r["ndcg@10"] for r in pts],
                    marker=marker,
                    color=color,
                    alpha=0.45,
                    label=f"{model} {kind}",
                )
            front = [mine[i] for i in pareto_front([r[cost] for r in mine], [r["ndcg@10"] for r in mine])]
            ax.plot(
                [r[cost] for r in front],
                [r["ndcg@10"] for r in front],
                "-",
                color=color,
                lw=1.5,
                label=f"{model} Pareto frontier",
            )
            for r in front:
                name = (
                    f"{'x'.join(map(str, r['coarse']))}→{r['candidates']}"
                    if r["kind"] == "funnel"
                    else "x".join(map(str, r["fine"]))
                )
                ax.annotate(
                    name,
                    (r[cost], r["ndcg@10"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=color,
                )
            full = max((r for r in mine if r["kind"] == "exact"), key=lambda r: tuple(r["fine"]))
            ax.axhline(
                full["ndcg@10"],
                color=color,
                ls="--",
                lw=1,
                label=f"{model} exact {'x'.join(map(str, full['fine']))}",
            )
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("nDCG@10")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="scifact")
    ap.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help="folder holding beir/<dataset>/ (default: $ADAPTIVE_RETRIEVAL_DATA or the cache folder)",
    )
    ap.add_argument(
        "--split", default="test", help="test, or dev: the train queries training holds out (see below)"
    )
    ap.add_argument(
        "--dev-fraction", type=float, default=0.1, help="--split dev: as train.py's --dev-fraction"
    )
    ap.add_argument("--dev-seed", type=int, default=42, help="--split dev: as train.py's --seed")
    ap.add_argument("--model", nargs="+", default=[DEFAULT_MODEL], help="one or more models, side by side")
    ap.add_argument(
        "--grid", choices=("quick", "full", "none"), default="quick", help="exact views (none: the fine view)"
    )
    ap.add_argument(
        "--adapt",
        choices=ADAPT_CHOICES,
        default="both",
        help="funnels with the shipped coarse heads, the head fitted to the corpus at build, or both",
    )
    ap.add_argument("--candidates", type=int, nargs="+", default=list(CANDIDATES))
    ap.add_argument(
        "--funnel-coarse", nargs="+", help="coarse views of the funnels (default: the quick grid)"
    )
    ap.add_argument("--fine", help="fine view of the funnels (default: the model's full view)")
    ap.add_argument("--max-queries", type=int, help="only the first N queries (for a quick look)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR, help="corpus encodings cache")
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument(
        "--index", help="the funnels' coarse index, a FAISS factory string (default: the library's)"
    )
    ap.add_argument("--out", type=Path, help="write results.json and pareto.png here")
    ap.add_argument(
        "--replot",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only redraw pareto.png (into --out) from the rows of one or more results.json files",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.replot:
        rows = [r for f in args.replot for r in json.loads(Path(f).read_text())["rows"]]
        out = args.out or args.replot[0].parent
        plot_pareto(rows, out / "pareto.png", f"{args.dataset} {args.split}: quality vs cost")
        print(f"wrote {out / 'pareto.png'}")
        return rows

    corpus, queries, qrels = load_split(
        args.data_dir, args.dataset, args.split, dev_fraction=args.dev_fraction, dev_seed=args.dev_seed
    )
    if args.split == "dev":
        check_dev_split(args.model, list(qrels))
    queries, qrels = first_queries(queries, qrels, args.max_queries)
    rows: list[dict[str, Any]] = []
    models = {}
    for name in args.model:
        encoder = Encoder.from_pretrained(name)
        models[name] = model_info(encoder)
        print(f"{name}: {len(corpus)} documents, {len(queries)} queries", file=sys.stderr, flush=True)
        mine = evaluate_model(
            encoder,
            corpus,
            queries,
            qrels,
            grid=args.grid,
            candidates=args.candidates,
            funnel_coarse=[View.parse(v, name="--funnel-coarse") for v in args.funnel_coarse]
            if args.funnel_coarse
            else None,
            fine=View.parse(args.fine, name="--fine") if args.fine else None,
            cache_dir=None if args.no_cache else args.cache_dir,
            batch_size=args.batch_size,
            adapt=args.adapt,
            index=args.index,
        )
        rows += [{**r, "model": name} for r in mine]  # as given: a folder's resolved path names a machine
    for r in rows:
        r["gflops"] = r["flops_per_query"] / 1e9
    run_settings = settings(
        dataset=args.dataset,
        split=args.split,
        **({"dev_fraction": args.dev_fraction, "dev_seed": args.dev_seed} if args.split == "dev" else {}),
        n_docs=len(corpus),
        n_queries=len(queries),
        grid=args.grid,
        models=models,
        depth=DEPTH,
        labels=labels_seen(args.model, args.adapt),
    )
    print(
        f"\n{args.dataset} ({args.split}): {len(corpus)} docs, {len(queries)} queries; "
        f"machine: {run_settings['machine']['cpu']}, {run_settings['machine']['cores']} cores\n"
    )
    table = markdown_table(rows, COLUMNS)
    print(table)
    if args.out:
        write_json(args.out / "results.json", {**run_settings, "rows": rows})
        (args.out / "table.md").write_text(table + "\n")
        plot_pareto(rows, args.out / "pareto.png", f"{args.dataset} {args.split}: quality vs cost")
        print(f"\nwrote results.json, table.md and pareto.png into {args.out}")
    return rows


if __name__ == "__main__":
    main()
