"""Tables of the first stage: shortlists per code, the byte budget, 1M and 10M documents, the fine store's reads."""

from __future__ import annotations

from typing import Any

from renderers.common import RESULTS, _load, _table


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
    runs_of: dict[tuple[int, int, str], list[dict[str, Any]]] = {}  # the folders' rows by size and generator
    for folder in folders:
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
