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

from renderers import cost, first_stage, funnel, quality
from renderers.common import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


TABLES: dict[str, Callable[[], str]] = {
    "funnel-rules": funnel.funnel_rules,
    "funnel-rules-order": funnel.funnel_rules_order,
    "bench-encode-xeon": lambda: cost.bench_encode("bench-encode-xeon"),
    "bench-encode-epyc": lambda: cost.bench_encode("bench-encode-epyc"),
    "precision": quality.precision,
    "bench-int8": cost.bench_int8,
    "build-memory": cost.build_memory,
    "fine-dtype": cost.fine_dtype,
    "latency": cost.latency,
    "latency-epyc": lambda: cost.latency("latency-epyc"),
    "bench-engines": cost.bench_engines,
    "first-stage": first_stage.first_stage,
    "first-stage-budgets": first_stage.first_stage_budgets,
    "first-stage-default": first_stage.first_stage_default,
    "first-stage-scale-calibration": first_stage.first_stage_scale_calibration,
    "fine-io": first_stage.fine_io,
    "first-stage-scale": lambda: first_stage.first_stage_scale(
        "first-stage-scale", "first-stage-scale-topics", "first-stage-scale-10m"
    ),
    "hybrid-test": quality.hybrid_test,
    "hybrid-dev": quality.hybrid_dev,
    "hybrid-scale": quality.hybrid_scale,
    "adapt-variants": quality.adapt_variants,
    "passages-test": quality.passages_test,
    "passages-cost": quality.passages_cost,
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
