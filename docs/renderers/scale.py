"""Tables of ``benchmarks/bench_scale`` (the earlier generator: a coarse view that is the fine one plus noise)."""

from __future__ import annotations

from typing import Any

from renderers.common import _knobs, _load, _table


def _method(row: dict[str, Any], coarse_dim: int) -> str:
    knobs = _knobs(row.get("knobs") or {})
    index = row["index"].removesuffix("np") if "index" in row else ""
    if row["method"] == "exact-768":
        return "exact 768-dim Flat (float32)"
    if row["method"] == "ivfpq-768":
        return f"FAISS {index} over 768 dims ({knobs})"
    return f"funnel: {index} {coarse_dim}-dim" + (f" ({knobs})" if knobs else "") + " + re-rank"


def _ms(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}"


def _groups(rows: list[dict[str, Any]]) -> dict[tuple[int, str], list[dict[str, Any]]]:
    groups: dict[tuple[int, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["size"], r["method"]), []).append(r)
    return groups


def search(folder: str, sizes: tuple[int, ...] = ()) -> str:
    """One row per size (all, or ``sizes``) and method, its shortlists side by side (``a / b / c``): index RAM,
    the process's heap, build time, p50/p95 per query, recall@10 of the exact top 10, p50 speed-up over exact
    search."""
    saved = _load(folder)
    coarse_dim = saved["synthetic"]["coarse_dim"]
    rows = []
    shown = [r for r in saved["rows"] if "half" not in r and (not sizes or r["size"] in sizes)]
    for (size, _), group in _groups(shown).items():
        first = group[0]
        if "skipped" in first:
            rows.append([f"{size:,}", _method(first, coarse_dim), f"not run: {first['skipped']}", *[""] * 7])
            continue

        def each(fmt, group=group) -> str:
            return " / ".join(fmt(r) for r in group)

        rows.append(
            [
                f"{size:,}",
                _method(first, coarse_dim),
                "-" if first["candidates"] is None else each(lambda r: str(r["candidates"])),
                f"{first['ram_bytes'] / 1e6:,.0f} MB",
                f"{max(r['rss_anon_bytes'] for r in group) / 1e6:,.0f} MB",
                f"{first['build_s']:.0f} s",
                each(lambda r: _ms(r["p50_ms"])),
                each(lambda r: _ms(r["p95_ms"])),
                each(lambda r: f"{r['recall@10']:.3f}"),
                each(lambda r: f"{r['speedup_vs_exact']:.0f}") if "speedup_vs_exact" in first else "",
            ]
        )
    header = [
        "docs", "method", "candidates", "index RAM", "heap", "build", "p50 ms", "p95 ms", "recall@10",
        "speed-up vs exact (p50)",
    ]  # fmt: skip
    return _table(header, rows)


def calibrated(folder: str) -> str:
    """The shortlist rule calibrated for a target on the first half of the queries, measured on the second
    half beside every fixed shortlist on the same queries."""
    saved = _load(folder)
    coarse_dim = saved["synthetic"]["coarse_dim"]
    rows = []
    for (size, _), group in _groups([r for r in saved["rows"] if r.get("half") == "test"]).items():
        chosen = next(r for r in group if r["candidates"].startswith("calibrated"))
        rule = chosen["calibrated"]
        said = (
            f"fixed {rule['candidates']}"
            if rule["rule"] == "fixed"
            else f"patient (patience {rule['patience']}, cap {rule['cap']})"
        )
        fixed = [r for r in group if r is not chosen]
        rows.append(
            [
                f"{size:,}",
                _method(chosen, coarse_dim),
                f"{chosen['target']}",
                said,
                f"{chosen['mean_read']:.1f}",
                _ms(chosen["p50_ms"]),
                f"{chosen['recall@10']:.3f}",
                ", ".join(f"{r['candidates'].removeprefix('fixed ')}: {r['recall@10']:.3f}" for r in fixed),
            ]
        )
    header = [
        "docs", "method", "target", "chosen", "read per query", "p50 ms", "recall@10 (test half)",
        "fixed on the same half",
    ]  # fmt: skip
    return _table(header, rows)
