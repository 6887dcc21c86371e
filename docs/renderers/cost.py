"""Tables of cost: engines, latency per stage, the fine store's dtype, build memory, int8 queries, encoding speed."""

from __future__ import annotations

import json
from typing import Any

from renderers.common import RESULTS, _load, _table


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


def _parts(saved: dict) -> list[str]:
    """bench_encode's two sides on running a batch in parts (runs from before parts have neither: "—")."""
    if "ratio_whole_batches" not in saved:
        return ["—", "—"]
    rounds = saved["ratio_to_theirs_parts_per_round"]
    return [
        f"{saved['ratio_whole_batches']:.2f}",
        f"{saved['ratio_to_theirs_parts']:.2f} at {saved['forward_part']} ({min(rounds):.2f}-{max(rounds):.2f})",
    ]


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
            f"{saved['max_abs_diff']:.1e}", *_parts(saved),
        ])  # fmt: skip
    header = [
        "model", "ours float32 docs/s", "sentence-transformers float32", "ratio (rounds)",
        "ours on MKL's linear / theirs", "ours bfloat16", "sentence-transformers bfloat16",
        "ours bfloat16 / theirs float32 (rounds)", "/ theirs bfloat16", "least cosine, ours bfloat16 to float32",
        "max difference, ours float32 to theirs", "ours in whole batches / theirs",
        "ours / theirs at our part's batch (rounds)",
    ]  # fmt: skip
    return _table(header, rows)
