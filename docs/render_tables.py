"""Render the docs' tables from the results files: ``python docs/render_tables.py`` rewrites every table
between ``<!-- table:NAME -->`` and ``<!-- /table -->`` in README.md and docs/*.md from ``docs/results``;
``--check`` changes nothing and exits 1 (naming the tables) where the committed docs differ from what it
renders. A table's figures therefore come from one results file, which names its command, commit,
machine and labels (tests/test_results_provenance.py holds every results file to that).

Each renderer below takes the results file's JSON and returns the table's Markdown lines. Reads files
only; imports nothing of the package.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(<!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name / "results.json").read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _hybrid_columns(saved: dict[str, Any]) -> list[str]:
    chosen = saved["chosen"]["row"]
    cols = ["bm25", "dense", "hybrid convex 0.5", "hybrid convex 0.7", "hybrid convex 0.8", "hybrid rrf 0.6"]
    return [c for c in cols if c != chosen] + [chosen]


def hybrid_test() -> str:
    """nDCG@10 on test per set: BM25, the dense funnel, fixed fusions and the one chosen on dev, in bold
    (docs/results/hybrid)."""
    saved = _load("hybrid")
    docs = {c["dataset"]: c.get("documents", c["docs"]) for c in saved["costs"]}
    cols, chosen = _hybrid_columns(saved), saved["chosen"]["row"]
    by = {(r["dataset"], r["row"]): r["ndcg@10"] for r in saved["rows"] if r["split"] == "test"}
    rows = []
    for dataset in docs:
        cells = []
        for col in cols:
            value = f"{by[(dataset, col)]:.4f}"
            cells.append(f"**{value}**" if col == chosen else value)
        rows.append([f"{dataset} ({docs[dataset]:,})", *cells])
    names = [{"bm25": "BM25", "dense": "dense funnel"}.get(c, c.removeprefix("hybrid ")) for c in cols]
    names = [f"**{n}**" if col == chosen else n for n, col in zip(names, cols)]
    return _table(["set (docs)", *names], rows)


def hybrid_dev() -> str:
    """Each fusion's margin over the better of BM25 alone and dense alone, nDCG@10 on each set's dev
    queries: the worst, the mean, and per set (docs/results/hybrid; the choice: the best worst)."""
    saved = _load("hybrid")
    sets = [c["dataset"] for c in saved["costs"]]
    by = {(r["dataset"], r["row"]): r["ndcg@10"] for r in saved["rows"] if r["split"] == "dev"}
    fusions = [r["row"] for r in saved["rows"] if r["split"] == "dev" and r["dataset"] == sets[0]]
    rows = []
    for fusion in (f for f in fusions if f.startswith("hybrid")):
        margins = [by[(d, fusion)] - max(by[(d, "bm25")], by[(d, "dense")]) for d in sets]
        name = fusion.removeprefix("hybrid ")
        bold = fusion == saved["chosen"]["row"]
        cells = [
            f"{min(margins):+.4f}",
            f"{sum(margins) / len(margins):+.4f}",
            *(f"{m:+.3f}" for m in margins),
        ]
        rows.append([f"**{name}**" if bold else name, *(f"**{c}**" if bold else c for c in cells)])
    return _table(["fusion", "worst", "mean", *sets], rows)


def hybrid_scale() -> str:
    """The lexical index's cost at 10k and 100k documents, beside the earlier layout's (docs/results/bench-hybrid)."""
    rows = [
        [
            str(r["docs"]),
            f"{r['lexical_build_s']:.1f}",
            f"{r['lexical_built_bytes_per_doc']:.0f}",
            f"{r['lexical_ram_bytes_per_doc']:.0f}",
            f"{r['saved_lexical_bytes_per_doc']:.0f}",
            f"{r['bm25s_bytes_per_doc']:.0f}",
            f"{r['vector_bytes_per_doc']:.0f}",
            f"{r['add_s']:.2f}",
            f"{r['dense_p50_ms']:.1f}",
            f"{r['hybrid_p50_ms']:.1f}",
            f"{r['lexical_p50_ms']:.2f}",
            f"{r['lexical_scores_p50_ms']:.2f} / {r['bm25s_scores_p50_ms']:.2f}",
            f"{r['added_p50_ms']:.2f}",  # the p50 of each query's own difference (alternated, paired)
        ]
        for r in _load("bench-hybrid")["rows"]
    ]
    header = ["docs", "lexical build s", "lexical B/doc built", "RAM B/doc opened", "saved B/doc"]
    header += ["earlier layout's RAM B/doc", "vectors B/doc", "add s", "dense p50 ms", "hybrid p50 ms"]
    header += ["lexical stage p50 ms", "BM25 scores p50 ms: ours / bm25s'", "hybrid - dense p50 ms"]
    return _table(header, rows)


def _overlaps(r: dict[str, Any]) -> str:
    return f"{r['overlap@10_c100']:.3f} / {r['overlap@10_c200']:.3f}"


def _gate_pick(rows: list[dict[str, Any]], gate: str) -> str:
    """The variant a gate picks (its best score on pseudo-queries) and its real-query overlap@10 at 100."""
    best = max(rows, key=lambda r: r[gate])
    ridge = "" if best["ridge"] is None else f", {best['ridge']:g}"
    return f"{best['variant']}{ridge}: {best['overlap@10_c100']:.3f}"


def adapt_variants() -> str:
    """Build-time adaptation's variants on each set's dev queries: overlap@10 at 100 / 200 candidates of the
    shipped head and of three ridge-0.01 variants, and what each gate picks (docs/results/adapt-variants)."""
    sets = ["scifact", "stsb-para", "sick-para", "sts12-16-para", "manpages"]
    rows = []
    for name in sets:
        saved = json.loads((RESULTS / "adapt-variants" / name / "results.json").read_text())
        by = {(r["variant"], r["ridge"]): r for r in saved["rows"]}

        variants = [("shipped head", None), ("layer 4 alone", 0.01), ("layers 1-4 stacked", 0.01)]
        variants.append(("stacked + spans", 0.01))
        cells = [_overlaps(by[v]) for v in variants]
        gates = [_gate_pick(saved["rows"], g) for g in ("gate_whole_docs", "gate_first_sentences")]
        rows.append([f"{name} ({saved['queries']})", *cells, *gates])
    header = ["set (dev queries)", "shipped head", "layer 4 alone, ridge 0.01", "layers 1-4 stacked, 0.01"]
    header += ["stacked + spans, 0.01", "gate on whole documents picks", "gate on first sentences picks"]
    return _table(header, rows)


def passages_test() -> str:
    """Passages against truncation beside BM25, on test (docs/results/passages)."""
    saved = _load("passages")
    docs = {c["dataset"]: c for c in saved["costs"]}
    rows = []
    for r in saved["rows"]:
        if r["split"] != "test":
            continue
        cost = docs[r["dataset"]]
        index = {"whole": "whole", "truncated": "cut", "passages": "passages"}[r["index"]]
        default = f"**hybrid {r.get('fusion', 'convex 0.8')} (default)**"
        search = {"bm25": "BM25 alone", "hybrid": default}.get(r["row"], r["row"])
        row = f"{index}, {search}"
        rows.append(
            [
                f"{r['dataset']} ({cost['passages']['documents']:,} docs, {cost['passages']['split']:,} split)",
                row,
                f"{r['ndcg@10']:.4f}",
                f"{r['recall@10']:.3f}",
                f"{r['mrr@10']:.4f}",
                f"{r['p50_ms']:.1f}",
            ]
        )
    return _table(["set", "index, search", "nDCG@10", "R@10", "MRR@10", "p50 ms"], rows)


def passages_cost() -> str:
    """What passages cost beside truncation (docs/results/passages)."""
    rows = []
    for c in _load("passages")["costs"]:
        cut, split = c["truncated"], c["passages"]
        rows.append(
            [
                c["dataset"],
                f"{split['documents']:,}",
                f"{cut['cut']:,}",
                f"{split['rows']:,}",
                f"{split['rows'] / split['documents']:.2f}",
                f"{c['tokens_ratio']:.2f}",
                f"{cut['vector_bytes_per_document']:.0f}",
                f"{split['vector_bytes_per_document']:.0f}",
            ]
        )
    header = ["set", "docs", "longer than the model reads", "rows (passages)", "rows per doc"]
    header += ["tokens encoded, passages / cut", "vector B/doc cut", "vector B/doc passages"]
    return _table(header, rows)


def first_stage() -> str:
    """Shortlists each first stage needs for 0.95 / 0.99 of the exact top 10, per set (docs/results/first-stage)."""
    saved = _load("first-stage")["rows"]
    if (RESULTS / "first-stage-bits" / "results.json").is_file():  # the binary recipes, a second run
        saved += _load("first-stage-bits")["rows"]
    sets = list(dict.fromkeys(r["dataset"] for r in saved))
    by = {(r["representation"], r["dataset"]): r for r in saved}
    reps = sorted(
        dict.fromkeys(r["representation"] for r in saved), key=lambda x: (by[(x, sets[0])]["bytes"], x)
    )
    rows = [
        [rep, str(by[(rep, sets[0])]["bytes"])]
        + [
            f"{by[(rep, d)]['shortlist@0.95']} / {by[(rep, d)]['shortlist@0.99']}" if (rep, d) in by else ""
            for d in sets
        ]
        for rep in reps
    ]
    return _table(["first stage", "B/doc", *(f"{d}" for d in sets)], rows)


def first_stage_default() -> str:
    """The projected view as the library codes it (SQ8 over [-1, 1]) beside float32 (docs/results/first-stage-default):
    shortlists for 0.95 / 0.99 and overlap@10 at the default shortlist of 100."""
    saved = _load("first-stage-default")["rows"]
    sets = list(dict.fromkeys(r["dataset"] for r in saved))
    by = {(r["representation"], r["dataset"]): r for r in saved}
    reps = list(dict.fromkeys(r["representation"] for r in saved))
    rows = [
        [rep, str(by[(rep, sets[0])]["bytes"])]
        + [
            f"{by[(rep, d)]['shortlist@0.95']} / {by[(rep, d)]['shortlist@0.99']} ({by[(rep, d)]['overlap@100']:.3f})"
            for d in sets
        ]
        for rep in reps
    ]
    return _table(["first stage", "B/doc", *sets], rows)


def first_stage_budgets() -> str:
    """The library's choice at each budget beside the best code there, on the test queries
    (docs/results/first-stage-budgets)."""
    rows = []
    for r in _load("first-stage-budgets")["rows"]:
        if r["chosen"] == "refused":
            rows.append([r["dataset"], str(r["budget"]), "refused", "", "", "", "", ""])
            continue
        rows.append(
            [r["dataset"], str(r["budget"]), r["chosen"], r["chosen_pseudo"], r["chosen_test"], r["best"],
             r["best_test"], r["met"]]
        )  # fmt: skip
    header = [
        "set",
        "B/doc",
        "chosen",
        "its shortlist, pseudo-queries",
        "its shortlist, test",
        "best code, test",
    ]
    return _table([*header, "best's shortlist", "no longer than the best"], rows)


def first_stage_scale(*folders: str) -> str:
    """At each size and generator, each method's cheapest setting (by p50) reaching 0.95 of the exact top 10,
    else its best recall (docs/results/<folder>: bench_first_stage --sizes)."""
    rows = []
    for folder in folders:
        runs_of: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
        for r in _load(folder)["rows"]:
            runs_of.setdefault((r["size"], r["topics"], r["method"]), []).append(r)
        order = sorted(runs_of, key=lambda key: (key[0], key[1], runs_of[key][0]["whose"] != "ours",
                                                 runs_of[key][0]["ram_per_doc"] or 0))  # fmt: skip
        for size, n_topics, method in order:
            runs = runs_of[(size, n_topics, method)]
            head = [f"{size:,}", f"{n_topics:,}", method, runs[0]["whose"]]
            if "skipped" in runs[0]:
                ram = runs[0]["ram_per_doc"]
                rows.append([*head, "not run: " + runs[0]["skipped"], "", "", f"{ram:,.0f}" if ram else "", "", "",
                             ""])  # fmt: skip
                continue
            met = [r for r in runs if r["recall@10"] >= 0.95]
            r = min(met, key=lambda r: r["p50_ms"]) if met else max(runs, key=lambda r: r["recall@10"])
            rows.append([*head, r["index"], r["setting"], f"{r['recall@10']:.3f}", f"{r['ram_per_doc']:,.0f}",
                         f"{r['disk_per_doc']:,.0f}", f"{r['build_s']:,.0f}", f"{r['p50_ms']:.2f}"])  # fmt: skip
    header = ["docs", "topics", "method", "whose", "index", "cheapest setting at >= 0.95 (else the best)",
              "recall@10", "RAM B/doc", "disk B/doc", "build s", "p50 ms"]  # fmt: skip
    return _table(header, rows)


def first_stage_scale_calibration() -> str:
    """The synthetic vectors' projected-view curves at 10,000 documents beside the real ones they were matched
    to (docs/results/first-stage-scale: ``calibration``)."""
    cal = _load("first-stage-scale")["calibration"]
    rows = []
    for name, curve in cal["synthetic"].items():
        for kind, c in (("synthetic", curve), ("real (stsb-para)", cal["real"].get(name))):
            if c:
                rows.append([name, kind, *(f"{v:.3f}" for v in c.values())])
    grid = next(iter(cal["synthetic"].values()))
    return _table([f"{cal['docs']:,} documents", "vectors", *(f"@{k}" for k in grid)], rows)


def fine_io() -> str:
    """Re-rank reads of the memory-mapped fine store, cold and warm, both maps (docs/results/fine-io)."""
    rows = [[r["cache"], r["map"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
             f"{r['disk_read_mb_per_query']:.1f} MB" if r["disk_read_mb_per_query"] else "0"]
            for r in _load("fine-io")["rows"]]  # fmt: skip
    return _table(["page cache", "map", "p50 ms", "p95 ms", "read from disk per query"], rows)


def bench_engines() -> str:
    """The same funnel on FAISS, Qdrant's local mode and Milvus Lite (docs/results/bench-engines)."""
    rows = []
    for r in _load("bench-engines")["rows"]:
        rows.append([
            r["engine"], r["rerank"], f"{r['add_s']:.2f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}",
            f"{r['same_top10_as_faiss']:.3f}", f"{r['overlap10_with_faiss']:.3f}",
        ])  # fmt: skip
    header = ["engine", "re-rank", "add s", "p50 ms", "p95 ms", "same top 10 as FAISS", "overlap@10"]
    return _table(header, rows)


def latency(folder: str = "latency") -> str:
    """One query at a time: the fixed, calibrated and int8 funnels beside exact search (docs/results/<folder>)."""
    saved = _load(folder)
    cal = saved["calibration"]
    names = {
        "fixed @ 100": "funnel, fixed shortlist of 100",
        "calibrated": f"funnel, calibrated (target {cal['target']:g} on dev queries: {cal['rule']} "
        f"{cal['candidates'] if cal['rule'] == 'fixed' else cal['patience']})",
        "calibrated, int8 queries": "the same, int8 query encoder",
        "calibrated, bfloat16 queries": "the same, bfloat16 query encoder",
        "exact": "exact: encode to the last layer, score every fine vector",
    }
    rows = []
    for config, figures in saved["figures"].items():
        stages = figures["stages"]
        parts = ", ".join(
            f"{s.replace('_', ' ')} {v['p50_ms']:.2f}" for s, v in stages.items() if s != "total"
        )
        rows.append([
            names.get(config, config), f"{figures['mean_shortlist']:.1f}", f"{figures['overlap@10']:.3f}",
            f"{stages['total']['p50_ms']:.1f}", f"{stages['total']['p95_ms']:.1f}", parts,
        ])  # fmt: skip
    return _table(["configuration", "mean shortlist", "overlap@10", "p50", "p95", "stages, p50"], rows)


def fine_dtype() -> str:
    """The fine store in float32 and float16, on SciFact test (docs/results/fine-dtype)."""
    rows = []
    for r in _load("fine-dtype")["rows"]:
        rows.append([
            r["search"].replace("->", "→"), r["fine_dtype"], f"{r['ndcg@10']:.4f}", f"{r['recall@100']:.4f}",
            f"{r['fine_bytes_per_doc']:.0f}",
        ])  # fmt: skip
    return _table(["search", "fine dtype", "nDCG@10", "Recall@100", "fine bytes/doc"], rows)


def build_memory() -> str:
    """Peak RSS growth of a build, fine store in RAM or on disk (docs/results/build-memory)."""
    rows: dict[int, dict[str, Any]] = {}
    for r in _load("build-memory")["rows"]:
        rows.setdefault(r["size"], {})[r["mode"]] = r
    out = []
    for size, modes in rows.items():
        first = next(iter(modes.values()))
        out.append([
            f"{size:,}", f"+{modes['memory']['growth_bytes'] / 1e6:,.0f} MB", f"+{modes['disk']['growth_bytes'] / 1e6:,.0f} MB",
            f"{first['coarse_index']}: {first['coarse_index_bytes'] / 1e6:,.0f} MB", f"{first['fine_bytes'] / 1e6:,.0f} MB",
        ])  # fmt: skip
    header = ["docs", "fine store in RAM (default)", "fine store on disk (`fine_path=`)", "coarse index"]
    return _table([*header, "fine matrix"], out)


def bench_int8() -> str:
    """int8 queries against float32, per set (docs/results/bench-int8/<set>)."""
    rows = []
    for name in ("stsb-para", "sts12-16-para", "scifact"):
        saved = _load(f"bench-int8/{name}")
        r = saved["result"]
        rows.append([
            f"{name} ({saved['documents']:,})", f"{r['float32']['p50_ms']:.1f}", f"{r['int8']['p50_ms']:.1f}",
            f"{r['speedup_p50']:.2f}x", f"{r['overlap@10_int8_vs_float32']:.3f}",
        ])  # fmt: skip
    header = [
        "set (documents)",
        "float32 p50 ms",
        "int8 p50 ms",
        "speed-up",
        "overlap@10 of int8 results with float32's",
    ]
    return _table(header, rows)


def bench_encode(folder: str) -> str:
    """Encoding speed, float32 (oneDNN's and MKL's linear layers) and bfloat16, beside sentence-transformers
    in each, on one machine (docs/results/<folder>)."""
    rows = []
    for name, label in (("mpnet-base", "mpnet-base"), ("minilm-l6", "all-MiniLM-L6-v2")):
        saved = json.loads((RESULTS / folder / f"{name}.json").read_text())
        rate, rounds = saved["docs_per_s"], saved["ratio_per_round"]
        half_rounds, other_rounds = saved["ratio_bfloat16_per_round"], saved["ratio_other_per_round"]
        rows.append([
            f"{label} ({saved['args']['n']} texts)", f"{rate['adaptive_retrieval']:.1f}",
            f"{rate['sentence_transformers']:.1f}", f"**{saved['ratio']:.2f}** ({min(rounds):.2f}-{max(rounds):.2f})",
            f"{saved['ratio_other']:.2f} ({min(other_rounds):.2f}-{max(other_rounds):.2f})",
            f"{rate['adaptive_retrieval_bfloat16']:.1f}", f"{rate['sentence_transformers_bfloat16']:.1f}",
            f"**{saved['ratio_bfloat16']:.2f}** ({min(half_rounds):.2f}-{max(half_rounds):.2f})",
            f"{saved['ratio_bfloat16_to_theirs_bfloat16']:.2f}", f"{saved['bfloat16_min_cosine']:.6f}",
            f"{saved['max_abs_diff']:.1e}",
        ])  # fmt: skip
    header = [
        "model", "ours float32 docs/s", "sentence-transformers float32", "ratio (rounds)",
        "ours on MKL's linear / theirs", "ours bfloat16", "sentence-transformers bfloat16",
        "ours bfloat16 / theirs float32 (rounds)", "/ theirs bfloat16", "least cosine, ours bfloat16 to float32",
        "max difference, ours float32 to theirs",
    ]  # fmt: skip
    return _table(header, rows)


def precision() -> str:
    """bfloat16's answers against float32's, test queries, per set (docs/results/precision)."""
    saved = _load("precision")
    speed = {c["dataset"]: c["speedup"] for c in saved["costs"]}
    by = {(r["dataset"], r["row"]): r for r in saved["rows"] if r["split"] == "test"}
    rows = []
    for name, rate in speed.items():
        full, half, queries = by[(name, "float32")], by[(name, "bfloat16")], by[(name, "bfloat16 queries")]
        rows.append([
            name, f"{full['ndcg@10']:.4f}", f"{half['ndcg@10']:.4f}", f"**{half['overlap@10']:.4f}**",
            f"{half['exact_overlap@10']:.4f}", f"{queries['ndcg@10']:.4f}", f"{queries['overlap@10']:.4f}",
            f"{rate:.2f}x",
        ])  # fmt: skip
    header = [
        "set", "float32 nDCG@10", "bfloat16 nDCG@10", "bfloat16 ∩ float32's top 10", "exact dense: ∩",
        "bfloat16 queries only: nDCG@10", "∩", "documents/s, bfloat16 / float32",
    ]  # fmt: skip
    return _table(header, rows)


def _rules() -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["dataset"], r["rule"]): r for r in _load("funnel-rules")["rules"]}


def _rule_cell(r: dict[str, Any], *keys: str) -> str:
    formats = {"test_overlap@10": ".3f", "mean_shortlist": ".1f", "ratio": ".2f", "p95_shortlist": ".0f"}
    return " / ".join(format(r[k], formats[k]) for k in keys)


def funnel_rules() -> str:
    """Shortlist rules in coarse order beside the oracle's bound, test (docs/results/funnel-rules)."""
    by = _rules()
    rows = []
    for name in dict.fromkeys(d for d, _ in by):
        depth = by[(name, "learned depth")]
        rows.append([
            name, _rule_cell(by[(name, "patient")], "test_overlap@10", "mean_shortlist", "ratio"),
            _rule_cell(depth, "test_overlap@10", "mean_shortlist", "ratio"),
            f"{depth['oracle_bound']:.1f} ({depth['oracle_ratio']:.2f}; {depth['oracle_ratio_step_1']:.2f})",
        ])  # fmt: skip
    header = [
        "set", "patient: ∩fine@10 / mean shortlist / ratio", "learned depth: ∩fine@10 / mean / ratio",
        "oracle bound at the learned depth's ∩ (ratio; in steps of 1)",
    ]  # fmt: skip
    return _table(header, rows)


def funnel_rules_order() -> str:
    """Rules reading in another order than the coarse one, test (docs/results/funnel-rules)."""
    by = _rules()
    rows = []
    for name in dict.fromkeys(d for d, _ in by):
        walk = by[(name, "graph walk")]
        ratio = f"{walk['ratio']:.2f}"
        rows.append([
            name, _rule_cell(by[(name, "feedback order")], "test_overlap@10", "mean_shortlist", "ratio"),
            _rule_cell(by[(name, "feedback order, learned depth")], "test_overlap@10", "mean_shortlist", "ratio"),
            _rule_cell(walk, "test_overlap@10", "mean_shortlist", "p95_shortlist")
            + f" / {f'**{ratio}**' if walk['ratio'] < 0.6 else ratio} ({walk['ratio_step_1']:.2f})",
        ])  # fmt: skip
    header = [
        "set", "feedback order, fixed: ∩ / mean / ratio", "feedback order, learned depth",
        "graph walk: ∩ / mean / p95 / ratio (steps of 1)",
    ]  # fmt: skip
    return _table(header, rows)


TABLES: dict[str, Callable[[], str]] = {
    "funnel-rules": funnel_rules,
    "funnel-rules-order": funnel_rules_order,
    "bench-encode-xeon": lambda: bench_encode("bench-encode-xeon"),
    "bench-encode-epyc": lambda: bench_encode("bench-encode-epyc"),
    "precision": precision,
    "bench-int8": bench_int8,
    "build-memory": build_memory,
    "fine-dtype": fine_dtype,
    "latency": latency,
    "latency-epyc": lambda: latency("latency-epyc"),
    "bench-engines": bench_engines,
    "first-stage": first_stage,
    "first-stage-budgets": first_stage_budgets,
    "first-stage-default": first_stage_default,
    "first-stage-scale-calibration": first_stage_scale_calibration,
    "fine-io": fine_io,
    "first-stage-scale": lambda: first_stage_scale(
        "first-stage-scale", "first-stage-scale-topics", "first-stage-scale-10m"
    ),
    "hybrid-test": hybrid_test,
    "hybrid-dev": hybrid_dev,
    "hybrid-scale": hybrid_scale,
    "adapt-variants": adapt_variants,
    "passages-test": passages_test,
    "passages-cost": passages_cost,
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
