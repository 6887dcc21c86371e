"""Tables of answers' quality: hybrid search, passages, build-time adaptation, bfloat16 against float32."""

from __future__ import annotations

import json
from typing import Any

from renderers.common import RESULTS, _load, _table


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


def engine_lexical() -> str:
    """BM25 postings in Qdrant's and Milvus' own sparse search against the local index
    (docs/results/engine-lexical)."""
    names = {"faiss": "FAISS", "qdrant": "Qdrant (local mode)", "milvus": "Milvus Lite"}
    rows = []
    for r in _load("engine-lexical")["rows"]:
        rows.append([
            r["dataset"], names[r["engine"]], r["postings"], f"{r['chunk']:,}", f"{r['ndcg@10']:.4f}",
            f"{r['overlap@10']:.4f}", f"{r['overlap_local@10']:.4f}", f"{r['same_scores_local']:.3f}",
            f"{r['p50_ms']:.1f}", f"{r['lexical_p50_ms']:.1f}",
            f"{r['index_s']:.1f}", f"{r['lexical_bytes_per_doc']:.0f}",
        ])  # fmt: skip
    header = [
        "set", "engine", "BM25 postings", "chunk", "nDCG@10", "top 10 ∩ FAISS's", "top 10 ∩ local postings'",
        "same ten scores as local postings", "p50 ms",
        "lexical stage p50 ms", "index s", "lexical B/doc in this process",
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
