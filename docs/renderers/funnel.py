"""Tables of the funnel's shortlist rules."""

from __future__ import annotations

from typing import Any

from renderers.common import _load, _table


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


def _frontier(folders: list[str]) -> list[dict[str, Any]]:
    """The saved runs of ``evals.funnel_frontier`` in ``folders`` (docs/results/<folder>), in order."""
    return [_load(folder) for folder in folders]


def _set_name(saved: dict[str, Any], name: str) -> str:
    return f"{name} ({saved['datasets'][name]['documents']:,})"


def frontier_projected(folders: list[str]) -> str:
    """Calibrated shortlists, projected coarse queries, test overlap@10 / shortlist (``*``: the rule chosen)."""
    rows = []
    for saved in _frontier(folders):
        for name in saved["datasets"]:
            cells = [_set_name(saved, name)]
            for on in ("dev queries", "pseudo-queries"):
                by = {
                    r["rule"]: r
                    for r in saved["rows"]
                    if r["dataset"] == name and r["coarse_query"] == "projected" and r["calibrated_on"] == on
                }
                fixed, patient = by["fixed"], by["patient"]
                cells += [
                    f"{fixed['test_overlap@10']:.3f} / {fixed['candidates']}{'*' if fixed['chosen'] else ''}",
                    f"{patient['test_overlap@10']:.3f} / {patient['mean_shortlist']:.1f}"
                    + ("*" if patient["chosen"] else ""),
                    f"{patient['ratio']:.2f}",
                ]
            rows.append(cells)
    header = [
        "set", "calibrated on dev queries: fixed", "patient", "ratio", "on pseudo-queries: fixed", "patient",
        "ratio",
    ]  # fmt: skip
    return _table(header, rows)


def frontier_exit(folders: list[str]) -> str:
    """Early exit at the 10% and 25% of dev's most confident gaps, test (exit share, mean layers, overlap@10)."""
    rows = []
    for saved in _frontier(folders):
        for name in saved["datasets"]:
            by = {r["dev_exit_share"]: r for r in saved["early_exit"] if r["dataset"] == name}
            cells = [_set_name(saved, name)]
            for share in (0.1, 0.25):
                r = by[share]
                cells += [
                    f"{r['test_exit_share']:.2f}",
                    f"{r['mean_layers']:.1f}",
                    f"{r['test_overlap@10']:.3f}",
                ]
            rows.append([*cells, f"{by[0.0]['test_overlap@10']:.3f}"])
    header = [
        "set", "exits", "mean layers", "∩fine@10", "exits", "mean layers", "∩fine@10", "nobody exits: ∩fine@10",
    ]  # fmt: skip
    return _table(header, rows)
