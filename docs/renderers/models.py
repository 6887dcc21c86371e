"""Tables that put models side by side: SciFact's exact views and funnels per model (``evals.beir_eval``
results), and STS Spearman per layer (``evals.sts_eval`` results)."""

from __future__ import annotations

from typing import Any

from renderers.common import _load, _table

#: A view as the docs write it: (4, 64) -> "4x64".
View = tuple[int, int]


def _view(v: list[int] | None) -> View | None:
    return None if v is None else (v[0], v[1])


def _name(v: View) -> str:
    return f"{v[0]}x{v[1]}"


def beir_rows(folder: str, model: str | None = None) -> dict[tuple[Any, ...], dict[str, Any]]:
    """One beir_eval results file's rows of ``model`` (the file's only model when None), keyed by
    ``("exact", fine)`` or ``("funnel", coarse, fine, candidates)``; funnels with the shipped coarse head
    only (the adapt a file records, or none)."""
    saved = _load(folder)
    models = list(dict.fromkeys(r["model"] for r in saved["rows"]))
    if model is None:
        if len(models) != 1:
            raise ValueError(f"{folder} holds {models}: name one")
        model = models[0]
    out = {}
    for r in saved["rows"]:
        if r["model"] != model or r.get("adapt", "shipped") != "shipped":
            continue
        fine = _view(r["fine"])
        key = (
            ("exact", fine) if r["kind"] == "exact" else ("funnel", _view(r["coarse"]), fine, r["candidates"])
        )
        out.setdefault(key, r)  # a file's later rows repeat earlier ones with more columns
    return out


def _full(rows: dict[tuple[Any, ...], dict[str, Any]]) -> dict[str, Any]:
    return max(
        (r for k, r in rows.items() if k[0] == "exact"), key=lambda r: r["fine"][0] * 10_000 + r["fine"][1]
    )


def scifact_models(columns: list[tuple[str, str, str | None]], searches: list[tuple[Any, ...]]) -> str:
    """SciFact test per model (columns: header, results folder, model in it): exact views' nDCG@10 /
    Recall@100, funnels' nDCG@10 with its share of the same model's exact full view."""
    data = [beir_rows(folder, model) for _, folder, model in columns]
    rows = []
    for key in searches:
        if key[0] == "exact":
            label = f"exact {_name(key[1])}"
        else:
            label = f"funnel {_name(key[1])} → {_name(key[2])} @ {key[3]}"
        cells = []
        for rows_of in data:
            r = rows_of.get(key)
            if r is None:
                cells.append("")
            elif key[0] == "exact":
                cells.append(f"{r['ndcg@10']:.4f} / {r['recall@100']:.3f}")
            else:
                cells.append(f"{r['ndcg@10']:.4f} ({r['ndcg@10'] / _full(rows_of)['ndcg@10']:.1%})")
        rows.append([label, *cells])
    return _table(["search", *(header for header, _, _ in columns)], rows)


def scifact_quick() -> str:
    """The untrained models' exact views and funnels on SciFact test, with the coarse index's bytes per
    document (docs/results/scifact-quick)."""
    rows = []
    for model, fine in (("minilm-l6", (6, 384)), ("mpnet-base", (12, 768))):
        by = beir_rows("scifact-quick", model)
        exact = sorted((k[1] for k in by if k[0] == "exact"), key=lambda v: v[0])
        for view in exact:
            r = by[("exact", view)]
            label = f"exact {_name(view)}" + (" (full model)" if view == fine else "")
            rows.append(
                [
                    model,
                    label,
                    f"{r['ndcg@10']:.4f}",
                    f"{r['recall@100']:.4f}",
                    f"{r['coarse_bytes_per_doc']:.0f}",
                ]
            )
        coarse = sorted({k[1] for k in by if k[0] == "funnel"})
        for view in coarse:
            for n in (100, 500):
                r = by.get(("funnel", view, fine, n))
                if r:
                    label = f"funnel {_name(view)} → {_name(fine)} @ {n}"
                    rows.append([model, label, f"{r['ndcg@10']:.4f}", "", f"{r['coarse_bytes_per_doc']:.0f}"])
    return _table(["model", "search", "nDCG@10", "Recall@100", "coarse index B/doc"], rows)


def sts_layers(columns: list[tuple[str, str, str | None]], layers: list[int]) -> str:
    """STS Spearman x 100 at full width per layer: the average of the seven tasks (STS-B test in
    brackets), one row per (label, results folder, model in it)."""
    rows = []
    for label, folder, model in columns:
        saved = _load(folder)["rows"]
        model = model or saved[0]["model"]
        full = max(r["dim"] for r in saved if r["model"] == model)
        by = {r["layer"]: r for r in saved if r["model"] == model and r["dim"] == full}
        rows.append(
            [label, *(f"{by[n]['avg']:.1f} ({by[n]['STSBenchmark']:.1f})" if n in by else "" for n in layers)]
        )
    return _table(["layer", *map(str, layers)], rows)


def suite(folder: str) -> str:
    """Per set: the exact full view's nDCG@10, then each funnel's share of it / overlap@10 with its top 10,
    and the adaptation's seconds (docs/results/<folder>: evals.suite)."""
    saved = _load(folder)["rows"]
    columns = [("funnel 4x64, shipped heads", 100), ("funnel 4x64, adapted at build", 100)]
    columns += [("funnel 4x64, adapted at build", 200)]
    columns += [("funnel 4x64, adapted at build, projected query", n) for n in (50, 100, 200)]
    rows = []
    for dataset in dict.fromkeys(r["dataset"] for r in saved):
        mine = [r for r in saved if r["dataset"] == dataset]
        exact = next(r for r in mine if r["kind"] == "exact")
        by = {(r["row"], r["candidates"]): r for r in mine}
        cells = []
        for key in columns:
            r = by.get(key)
            cells.append(
                "" if r is None else f"{r['ndcg@10'] / exact['ndcg@10']:.1%} / {r['overlap@10']:.3f}"
            )
        fitted = next((r["adaptation"]["seconds"] for r in mine if r.get("adaptation")), None)
        rows.append([f"{dataset} ({exact['n_docs']:,})", f"{exact['ndcg@10']:.4f}", *cells,
                     "" if fitted is None else f"{fitted:.1f}"])  # fmt: skip
    header = ["set (docs)", "exact nDCG@10", "shipped heads @ 100", "early @ 100", "early @ 200"]
    return _table([*header, "**projected** @ 50", "**@ 100**", "@ 200", "adaptation s"], rows)


#: What each set of the suite is (the rest of its row comes from the suite's results).
SETS = {
    "scifact": "BEIR SciFact: claims → the abstracts that support or refute them",
    "stsb-para": "STS-B (all splits): a sentence → its partner in a pair scored ≥ 4 of 5; corpus: every sentence but "
    "the queries (sampled to 10,000)",
    "sick-para": "SICK (train, trial, test), relatedness ≥ 4 of 5, likewise",
    "sts12-16-para": "SemEval STS 2012-2016, score ≥ 4 of 5, likewise",
    "manpages": "Linux man pages, sections 2-3 (Debian `manpages-dev` 6.03, rendered by `man`): the NAME line's "
    'description ("open and possibly create a file", no function name) → the rest of the page, its first 250 words',
}


def suite_sets(folder: str = "suite") -> str:
    """The suite's sets: documents and test queries as the suite's run counted them, and what each is."""
    datasets = _load(folder)["datasets"]
    rows = [
        [f"`{name}`", f"{d['documents']:,}", str(d["queries"]), SETS.get(name, "")]
        for name, d in datasets.items()
    ]
    return _table(["set", "documents", "test queries", "what"], rows)
