"""Spearman correlation per (layer, dim) view on STS12-16, STS-B test and SICK-R test.

    python -m evals.sts_eval                                   # mpnet-base, every layer x {32..512, full}
    python -m evals.sts_eval --model minilm-l6 mpnet-base --out results/sts

Every unique sentence is encoded once per model at every layer (cached like the BEIR corpus); a view's
score for a pair is the cosine of the two view vectors. STS12-16 are scored as SentEval's "all" setting
(Spearman over the concatenated subsets of a year), as the 2DMSE and SimCSE papers report them; each
subset's own Spearman is kept in results.json. "avg" is the mean of the seven tasks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from adaptive_retrieval import DEFAULT_MODEL, Encoder, View
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_all_layers, view_matrix
from adaptive_retrieval.models import labels_of
from adaptive_retrieval.reporting import markdown_table, model_info, settings, write_json
from adaptive_retrieval.sts import Pairs, read_all
from evals.beir_eval import grid_views

DEFAULT_DATA_DIR = default_data_dir()  # $ADAPTIVE_RETRIEVAL_DATA or the cache folder
TASKS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICK-R")


def spearman(pairs_scores: np.ndarray, gold: Sequence[float]) -> float:
    return float(spearmanr(pairs_scores, gold).statistic) * 100


def evaluate_model(
    encoder: Encoder,
    tasks: dict[str, dict[str, Pairs]],
    views: Sequence[View],
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    batch_size: int | None = None,
) -> list[dict[str, Any]]:
    """One row per view: Spearman x 100 per task ("all" for STS12-16), per subset, and their average."""
    sentences = sorted(
        {s for subsets in tasks.values() for pairs in subsets.values() for p in pairs for s in p[:2]}
    )
    row_of = {s: i for i, s in enumerate(sentences)}
    layers = encode_all_layers(
        encoder, list(range(len(sentences))), sentences, cache_dir, batch_size=batch_size
    )
    index = {
        (task, subset): (
            np.array([row_of[a] for a, _, _ in pairs]),
            np.array([row_of[b] for _, b, _ in pairs]),
            [g for _, _, g in pairs],
        )
        for task, subsets in tasks.items()
        for subset, pairs in subsets.items()
    }
    rows = []
    for view in views:
        vectors = view_matrix(encoder, layers, view)
        row: dict[str, Any] = {"model": encoder.name, "layer": view.layer, "dim": view.dim, "subsets": {}}
        for task, subsets in tasks.items():
            cosines, golds = [], []
            for subset in subsets:
                a, b, gold = index[(task, subset)]
                cos = np.einsum("nd,nd->n", vectors[a], vectors[b])
                row["subsets"][f"{task}/{subset}"] = spearman(cos, gold)
                cosines.append(cos)
                golds.extend(gold)
            row[task] = spearman(np.concatenate(cosines), golds)
        row["avg"] = float(np.mean([row[t] for t in tasks]))
        rows.append(row)
    return rows


def plot_heatmaps(rows: list[dict[str, Any]], path: Path, metric: str = "avg") -> None:
    """One layer x dim heatmap of ``metric`` per model, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 5), squeeze=False)
    for ax, model in zip(axes[0], models):
        mine = [r for r in rows if r["model"] == model]
        layers = sorted({r["layer"] for r in mine})
        dims = sorted({r["dim"] for r in mine})
        grid = np.full((len(layers), len(dims)), np.nan)
        for r in mine:
            grid[layers.index(r["layer"]), dims.index(r["dim"])] = r[metric]
        im = ax.imshow(grid, origin="lower", aspect="auto", cmap="viridis")
        for i in range(len(layers)):
            for j in range(len(dims)):
                if not np.isnan(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.1f}", ha="center", va="center", fontsize=7, color="w")
        ax.set_xticks(range(len(dims)), [str(d) for d in dims])
        ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
        ax.set_xlabel("dims")
        ax.set_ylabel("layer")
        ax.set_title(f"{model}: Spearman x100 ({metric})")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="folder holding sts/")
    ap.add_argument("--model", nargs="+", default=[DEFAULT_MODEL])
    ap.add_argument("--grid", choices=("quick", "full"), default="full")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--no-cache", action="store_true")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--out", type=Path, help="write results.json, table.md and heatmap.png here")
    args = ap.parse_args(argv)

    tasks = read_all(args.data_dir)
    rows: list[dict[str, Any]] = []
    models = {}
    for name in args.model:
        encoder = Encoder.from_pretrained(name)
        models[name] = model_info(encoder)
        print(f"{name}: encoding the STS sentences at every layer", file=sys.stderr, flush=True)
        mine = evaluate_model(
            encoder,
            tasks,
            grid_views(encoder, args.grid),
            None if args.no_cache else args.cache_dir,
            args.batch_size,
        )
        rows += [{**r, "model": name} for r in mine]  # as given: a folder's resolved path names a machine
    columns = [("model", "model", "s"), ("layer", "layer", "d"), ("dim", "dim", "d")]
    columns += [(t, t, ".2f") for t in TASKS] + [("avg", "avg", ".2f")]
    table = markdown_table(rows, columns)
    print(table)
    if args.out:
        pairs = {t: sum(len(p) for p in s.values()) for t, s in tasks.items()}
        labels = {name: labels_of(name) for name in args.model}
        labels["sts"] = "the STS gold scores are only scored against (Spearman), never fitted"
        header = settings(tasks=pairs, models=models, grid=args.grid, labels=labels)
        write_json(args.out / "results.json", {**header, "rows": rows})
        (args.out / "table.md").write_text(table + "\n")
        plot_heatmaps(rows, args.out / "heatmap.png")
        print(f"\nwrote results.json, table.md and heatmap.png into {args.out}")
    return rows


if __name__ == "__main__":
    main()
