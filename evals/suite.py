"""One table over many BEIR-format sets: the exact full view, the funnel as shipped, the funnel adapted.

    python -m evals.make_datasets --data-dir ../shared/data --out runs/data
    python -m evals.suite --datasets ../shared/data/beir/scifact runs/data/beir/stsb-para \\
        runs/data/beir/sick-para runs/data/beir/sts12-16-para runs/data/beir/manpages --out results/suite

For each dataset folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv``) and model, the
corpus is encoded once (cached, as in ``beir_eval.py``), then three kinds of row are run through the
library's own funnel: exact search over the fine view, the funnel with the model's coarse heads as
shipped, and the funnel with the head ``Retriever.build`` fits to the corpus (label-free), each at
every ``--candidates``. Each row has quality (nDCG@10, MRR@10, Recall@100, and their share of the exact
full view's), fidelity (``overlap@10``: the share of the exact full view's top 10 it returns) and cost
(GFLOPs and p50 latency per query, and the adaptation's fit time).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from adaptive_retrieval import DEFAULT_MODEL, Encoder, View
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR
from adaptive_retrieval.reporting import markdown_table, model_info, settings, write_json
from evals.beir_eval import ADAPT_CHOICES, evaluate_model, first_queries, labels_seen, load_split

COARSE = View(4, 64)
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("docs", "n_docs", "d"),
    ("model", "model", "s"),
    ("row", "row", "s"),
    ("cand.", "candidates", "d"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("% exact", "ndcg_share", ".1%"),
    ("MRR@10", "mrr@10", ".4f"),
    ("% exact", "mrr_share", ".1%"),
    ("R@100", "recall@100", ".3f"),
    ("∩fine@10", "overlap@10", ".3f"),
    ("GFLOP/q", "gflops", ".3f"),
    ("fit s", "adapt_seconds", ".1f"),
)  # latencies (p50/p95 by stage) are in results.json; GFLOPs do not depend on what else the machine runs


def dataset_location(folder: Path) -> tuple[Path, str]:
    """``(data_dir, name)`` such that ``data_dir/beir/name`` is ``folder`` (BEIR's layout)."""
    folder = Path(folder)
    if not (folder / "corpus.jsonl").is_file():
        raise SystemExit(f"{folder} is not a BEIR-format dataset folder (no corpus.jsonl)")
    if folder.parent.name != "beir":
        raise SystemExit(f"{folder}: put the dataset in a folder named beir/ (…/beir/{folder.name})")
    return folder.parent.parent, folder.name


def label(row: dict[str, Any]) -> str:
    if row["kind"] == "exact":
        return f"exact {'x'.join(map(str, row['fine']))}"
    head = "adapted at build" if row.get("adapt") == "build" else "shipped heads"
    query = ", projected query" if row.get("coarse_query") == "projected" else ""
    return f"funnel {'x'.join(map(str, row['coarse']))}, {head}{query}"


def run_suite(
    folders: Sequence[Path],
    models: Sequence[str],
    *,
    split: str = "test",
    coarse: View = COARSE,
    candidates: Sequence[int] = (100, 200),
    adapt: str = "both",
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    max_queries: int | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows of every dataset x model, and what the results file records of models and datasets."""
    rows: list[dict[str, Any]] = []
    info: dict[str, Any] = {"models": {}, "datasets": {}}
    encoders = {name: Encoder.from_pretrained(name) for name in models}
    for folder in folders:
        data_dir, name = dataset_location(folder)
        corpus, queries, qrels = load_split(data_dir, name, split)
        queries, qrels = first_queries(queries, qrels, max_queries)
        info["datasets"][name] = {"documents": len(corpus), "queries": len(queries), "split": split}
        for model, encoder in encoders.items():
            info["models"][model] = model_info(encoder)
            print(f"{name}: {model}, {len(corpus)} documents, {len(queries)} queries", file=sys.stderr)
            mine = evaluate_model(
                encoder,
                corpus,
                queries,
                qrels,
                grid="none",
                candidates=candidates,
                funnel_coarse=[coarse],
                cache_dir=cache_dir,
                adapt=adapt,
            )
            mine = [{**r, "model": model} for r in mine]  # as given: a folder's resolved path names a machine
            exact = next(r for r in mine if r["kind"] == "exact")
            for r in mine:
                r.update(dataset=name, n_docs=len(corpus), row=label(r), gflops=r["flops_per_query"] / 1e9)
                r["ndcg_share"] = r["ndcg@10"] / exact["ndcg@10"] if exact["ndcg@10"] else None
                r["mrr_share"] = r["mrr@10"] / exact["mrr@10"] if exact["mrr@10"] else None
            rows += mine
    return rows, info


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=Path, nargs="+", help="BEIR-format dataset folders")
    ap.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="RESULTS_JSON",
        help="only write one table (and results.json, into --out) from the rows of earlier runs",
    )
    ap.add_argument("--model", nargs="+", default=[DEFAULT_MODEL])
    ap.add_argument("--split", default="test", help="test (report) or dev (choose)")
    ap.add_argument("--coarse", default="4x64", help="the funnel's coarse view")
    ap.add_argument("--candidates", type=int, nargs="+", default=[100, 200])
    ap.add_argument("--adapt", choices=ADAPT_CHOICES, default="both")
    ap.add_argument("--max-queries", type=int, help="only the first N queries of each set (a quick look)")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, help="write results.json and table.md here")
    args = ap.parse_args(argv)
    if args.table:
        runs = [json.loads(Path(f).read_text()) for f in args.table]
        rows = [r for run in runs for r in run["rows"]]
        print(markdown_table(rows, COLUMNS))
        if args.out:
            merged = settings(labels=[run.get("labels") for run in runs], merged=[str(f) for f in args.table])
            write_json(args.out / "results.json", {**merged, "rows": rows})
            (args.out / "table.md").write_text(markdown_table(rows, COLUMNS) + "\n")
        return rows
    if not args.datasets:
        ap.error("--datasets is required (or --table to merge earlier runs)")
    rows, info = run_suite(
        args.datasets,
        args.model,
        split=args.split,
        coarse=View.parse(args.coarse, name="--coarse"),
        candidates=args.candidates,
        adapt=args.adapt,
        cache_dir=args.cache_dir,
        max_queries=args.max_queries,
    )
    run_settings = settings(
        split=args.split, coarse=args.coarse, labels=labels_seen(args.model, args.adapt), **info
    )
    table = markdown_table(rows, COLUMNS)
    print(
        f"\nsplit {args.split}; machine: {run_settings['machine']['cpu']}, {run_settings['machine']['cores']} cores\n"
    )
    print(table)
    if args.out:
        write_json(args.out / "results.json", {**run_settings, "rows": rows})
        (args.out / "table.md").write_text(table + "\n")
        print(f"\nwrote {args.out / 'results.json'} and {args.out / 'table.md'}")
    return rows


if __name__ == "__main__":
    main()
