"""Tables of a living index: filtered search per selectivity and index, filters on Milvus, churn and refit."""

from __future__ import annotations

from typing import Any

from renderers.common import _knobs, _load, _table


def _percent(share: float | None) -> str:
    """0.5 -> "50%", 0.001 -> "0.1%", 0.0001 -> "0.01%"."""
    return "unfiltered" if share is None else f"{share * 100:g}%"


def _overlap(r: dict[str, Any]) -> str:
    return f"{r['overlap@10']:.3f}" + (" (exact)" if r["path"] == "filtered exact" else "")


def _ms(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def filters(folder: str = "filters") -> str:
    """Overlap@10 with the exact filtered top 10 and p50 per index and filter share, beside exact
    filtered search (docs/results/<folder>: bench_filters)."""
    saved = _load(folder)["rows"]
    shares = list(dict.fromkeys(r["share"] for r in saved))
    rows = []
    for index in dict.fromkeys(r["index"] for r in saved):
        by = {r["share"]: r for r in saved if r["index"] == index}
        first = next(iter(by.values()))
        knobs = first.get("calibrated") or first["knobs"]
        said = ([_knobs(knobs)] if knobs else []) + (
            [f"shortlist {first['shortlist']}"] if "calibrated" in first else []
        )
        name = index + (f" ({', '.join(said)})" if said else "")
        rows.append([f"{name}: overlap@10", *(_overlap(by[s]) if s in by else "" for s in shares)])
        rows.append([f"{index}: p50 ms", *(_ms(by[s]["p50_ms"]) if s in by else "" for s in shares)])
    first_index = {r["share"]: r for r in saved if r["index"] == saved[0]["index"]}
    label = f"exact filtered search: p50 ms (timed in the {saved[0]['index']} run)"
    rows.append([label, *(_ms(first_index[s]["exact_p50_ms"]) for s in shares)])
    return _table(["coarse index", *map(_percent, shares)], rows)


def filters_milvus() -> str:
    """Milvus: the library's choice of path beside filtering in Milvus and on its answers, p50 per query
    (docs/results/filters-milvus)."""
    saved = _load("filters-milvus")["rows"]
    by = {(r["index"], r["share"]): r for r in saved}
    rows = []
    for share in dict.fromkeys(r["share"] for r in saved):
        lib = by[("milvus (library)", share)]
        path = {"funnel": "funnel", "filtered exact": "exact"}.get(lib["path"], "filtered funnel")
        others = [by.get((f"milvus ({w})", share)) for w in ("in engine", "answers filtered")]
        label = "100% (no filter)" if share is None else f"{_percent(share)} ({lib['matched']:,})"
        rows.append([
            label, f"{_ms(lib['p50_ms'])} ms ({path})",
            *(f"{_ms(o['p50_ms'])} ms" if o else "" for o in others),
            f"{_ms(lib['exact_p50_ms'])} ms", f"{lib['overlap@10']:.3f}",
        ])  # fmt: skip
    header = ["filter matches", "the library (path)", "in Milvus", "on its answers", "exact filtered"]
    return _table([*header, "overlap@10"], rows)


def churn() -> str:
    """Overlap@10 at fixed shortlists after replacing half the corpus, after refit(), and for a fresh build
    (docs/results/churn)."""
    rows = []
    for r in _load("churn")["rows"]:
        state = r["state"] + (f" ({r['seconds']:.2f} s)" if r["seconds"] is not None else "")
        rows.append([state, f"{r['drift_ratio']:.3f}", *(f"{r[f'overlap@{n}']:.3f}" for n in (10, 20, 50))])
    return _table(["state", "drift ratio", "shortlist 10", "20", "50"], rows)
