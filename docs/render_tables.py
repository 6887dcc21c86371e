"""Render the docs' tables from the results files: ``python docs/render_tables.py`` rewrites every table
between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in README.md and docs/*.md from ``docs/results``;
``--check`` changes nothing and exits 1 (naming the tables) where the committed docs differ from what it
renders. A table's figures therefore come from one results file, which names its command, commit,
machine and labels (tests/test_results_provenance.py holds every results file to that).

The renderers live in ``docs/renderers/`` (one module per kind of table); each returns one table's
Markdown from a results file. Reads files only; imports nothing of the package.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable

from renderers import cost, examples, first_stage, funnel, living, models, quality, scale
from renderers.common import ROOT

#: The SciFact test table of the Training section: one column per model (header, results folder, model).
TRAINED = [
    ("mpnet-base", "scifact-quick", "mpnet-base"),
    ("ridge heads (the earlier mpnet-base-heads)", "scifact-heads-ridge", None),
    ("**mpnet-base-heads** (untrained + distilled heads)", "scifact-heads", None),
    ("2DMSE, 100 steps, no heads", "scifact-2dmse", None),
    ("2DMSE 100 steps + distilled heads", "scifact-2dmse-heads-distil", None),
    (
        "**mpnet-base-2dmse** (2DMSE 400 steps + distilled heads; the default)",
        "scifact-2dmse-400-heads-distil",
        None,
    ),
    (
        "mpnet-base-2dmse-scifact (2DMSE 400 steps + heads distilled and taught the train qrels)",
        "scifact-2dmse-400-heads-sup",
        None,
    ),
]
EXACT = [("exact", (n, d)) for n, d in ((2, 32), (4, 64), (6, 128), (8, 256), (12, 768))]
FUNNELS = [("funnel", c, (12, 768), n) for c, n in (((4, 64), 100), ((4, 64), 200), ((4, 64), 500))]
FUNNELS += [("funnel", c, (12, 768), n) for c, n in (((6, 128), 100), ((8, 256), 100), ((8, 256), 200))]
PEER = [
    ("ours: 2DMSE, 100 steps", "scifact-2dmse", None),
    ("peer: `Matryoshka2dLoss`, 100 steps", "scifact-st2d", None),
]
PEER_FUNNELS = [("funnel", c, (12, 768), n) for c, n in (((4, 64), 100), ((4, 64), 500), ((6, 128), 100))]
PEER_FUNNELS += [("funnel", (8, 256), (12, 768), n) for n in (100, 500)]
#: The runs of evals.funnel_frontier whose sets the Calibrated shortlists section tabulates, in order.
FRONTIER = ["funnel-frontier/scifact", "funnel-frontier/sts-para", "funnel-frontier/manpages"]
HEADS = [("mpnet-base", "scifact-quick", "mpnet-base"), ("ridge heads", "scifact-heads-ridge", None)]
STS = [
    ("mpnet-base", "sts", "mpnet-base"),
    ("ridge heads (the earlier mpnet-base-heads)", "sts-heads-ridge", None),
    ("mpnet-base-heads (distilled heads, untrained)", "sts", "mpnet-base-heads"),
    ("2DMSE 100 steps + distilled heads", "sts-2dmse", None),
    ("**mpnet-base-2dmse** (2DMSE 400 steps + distilled heads; the default)", "sts-2dmse-400", None),
    ("mpnet-base-2dmse-scifact (2DMSE 400 steps + heads taught the train qrels)", "sts-2dmse-400-sup", None),
]

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


TABLES: dict[str, Callable[[], str]] = {
    "readme-quickstart": examples.quickstart,
    "readme-passages": examples.passages,
    "funnel-rules": funnel.funnel_rules,
    "funnel-rules-order": funnel.funnel_rules_order,
    "funnel-frontier-projected": lambda: funnel.frontier_projected(FRONTIER),
    "funnel-frontier-exit": lambda: funnel.frontier_exit(FRONTIER),
    "bench-encode-xeon": lambda: cost.bench_encode("bench-encode-xeon"),
    "bench-encode-epyc": lambda: cost.bench_encode("bench-encode-epyc"),
    "bench-encode-xeon-noamx": lambda: cost.bench_encode("bench-encode-xeon-noamx"),
    "precision": quality.precision,
    "bench-int8": cost.bench_int8,
    "build-memory": cost.build_memory,
    "fine-dtype": cost.fine_dtype,
    "latency": cost.latency,
    "latency-epyc": lambda: cost.latency("latency-epyc"),
    "latency-xeon-noamx": lambda: cost.latency("latency-xeon-noamx"),
    "bench-engines": cost.bench_engines,
    "first-stage": first_stage.first_stage,
    "first-stage-budgets": first_stage.first_stage_budgets,
    "first-stage-default": first_stage.first_stage_default,
    "first-stage-scale-calibration": first_stage.first_stage_scale_calibration,
    "fine-io": first_stage.fine_io,
    "scale": lambda: scale.search("scale", (100_000, 1_000_000)),
    "scale-10m": lambda: scale.search("scale", (10_000_000,)),
    "scale-projected": lambda: scale.search("scale-projected"),
    "scale-calibrated": lambda: scale.calibrated("scale-calibrated"),
    "first-stage-scale": lambda: first_stage.first_stage_scale(
        "first-stage-scale", "first-stage-scale-topics", "first-stage-scale-10m"
    ),
    "hybrid-test": quality.hybrid_test,
    "hybrid-dev": quality.hybrid_dev,
    "hybrid-scale": quality.hybrid_scale,
    "engine-lexical": quality.engine_lexical,
    "adapt-variants": quality.adapt_variants,
    "passages-test": quality.passages_test,
    "passages-cost": quality.passages_cost,
    "scifact-quick": models.scifact_quick,
    "scifact-trained": lambda: models.scifact_models(TRAINED, EXACT + FUNNELS),
    "scifact-peer": lambda: models.scifact_models(PEER, EXACT + PEER_FUNNELS),
    "scifact-heads-ridge": lambda: models.scifact_models(HEADS, EXACT + FUNNELS),
    "filters": living.filters,
    "filters-calibrated": lambda: living.filters("filters-calibrated"),
    "filters-milvus": living.filters_milvus,
    "churn": living.churn,
    "suite": lambda: models.suite("suite"),
    "suite-dev": lambda: models.suite("suite-dev"),
    "suite-sets": models.suite_sets,
    "sts-layers": lambda: models.sts_layers(STS, [1, 2, 4, 6, 8, 10, 11, 12]),
    "sts-minilm": lambda: models.sts_layers([("minilm-l6", "sts", "minilm-l6")], [1, 2, 3, 4, 5, 6]),
}


def render(text: str, unknown: list[str]) -> str:
    def one(match: re.Match) -> str:
        name = match["name"]
        if name not in TABLES:
            unknown.append(name)
            return match[0]
        return match[1] + TABLES[name]() + match[4]

    return BLOCK.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 where the docs differ")
    args = ap.parse_args(argv)
    stale, unknown = [], []
    for path in DOCS:
        text = path.read_text()
        new = render(text, unknown)
        if new != text:
            stale.append(str(path.relative_to(ROOT)))
            if not args.check:
                path.write_text(new)
    if unknown:
        print(f"render_tables: unknown tables {sorted(set(unknown))}", file=sys.stderr)
        return 1
    if args.check and stale:
        print(
            f"render_tables: {', '.join(stale)} differ from their results: run python docs/render_tables.py"
        )
        return 1
    print("render_tables: " + ("ok" if args.check else f"rewrote {stale or 'nothing'}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
