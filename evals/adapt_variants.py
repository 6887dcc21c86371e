"""What the build-time adaptation chooses between, measured on a split's real queries (choose on dev).

    python -m evals.adapt_variants --dataset runs/data/beir/manpages --split dev --out results/adapt-variants

For one BEIR-format set and the default coarse view (4x64 -> 12x768), from the encoding cache of
``beir_eval.py``, each variant of the coarse head is fitted on the corpus (no labels) and scored twice:
by the label-free gate ``Retriever.build`` uses (pseudo-query fidelity on held-out documents: the whole
documents as queries, or their first sentences, ``adapt.pseudo_query``) and by the real queries of the
split (overlap@10: the share of the exact full view's top 10 inside the coarse shortlist of 100 and 200).
Variants: the model's shipped head; ridge heads reading layer 4 alone or layers 1-4 stacked, at three
strengths; stacked with first-sentence spans of other documents as extra rows. The gate picks well when
its ranking of the variants follows the real queries'. Two diagnostics beside overlap@10: how often the
exact top 1 is in the shortlist of 100, and (the only use of labels here) the share of each query's
relevant documents (qrels) in it. Prints a table; writes ``results.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adaptive_retrieval import DEFAULT_MODEL, Encoder, View, datasets
from adaptive_retrieval.adapt import (
    RIDGES,
    check_rows,
    distil_head,
    fidelity,
    fit_ridge_heads,
    span_rows,
    stack_layers,
)
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.models import NAMED_MODELS
from adaptive_retrieval.reporting import markdown_table, settings, write_json
from adaptive_retrieval.views import view_vector


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, required=True, help="a BEIR-format folder")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--layer", type=int, default=4)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--distil-steps",
        type=int,
        default=0,
        help="also refine the stacked + spans head (ridge 0.01) by ranking distillation of its first --dim "
        "columns (adapt.distil_head; anchors: the spans fitted on; temperature 0.05, lr 1e-3)",
    )
    args = parser.parse_args(argv)

    encoder = Encoder.from_pretrained(args.model)
    corpus, queries, qrels = datasets.load_split(args.dataset.parent.parent, args.dataset.name, args.split)
    _, all_layers = encode_beir_corpus(encoder, corpus, args.cache_dir)
    texts = [t for _, t in iter_documents(corpus)]
    L, dim, hidden = args.layer, args.dim, encoder.hidden_size
    fine = encoder.full_view
    views = [View(i, hidden) for i in range(1, L + 1)] + [fine]
    docs_fine = view_matrix(encoder, all_layers, fine)
    stacked = stack_layers([np.asarray(all_layers[i], dtype=np.float32) for i in range(L)])
    n, width = len(texts), stacked.shape[1]

    q = encoder.encode(list(queries.values()), views, apply_heads=False, show_progress=False)
    q_stacked = stack_layers([q[v] for v in views[:L]])
    exact = np.argsort(-(q[fine] @ docs_fine.T), axis=1)[:, :10]
    row_of = {d: i for i, (d, _) in enumerate(iter_documents(corpus))}
    relevant = [
        {row_of[d] for d, g in qrels.get(qid, {}).items() if g > 0 and d in row_of} for qid in queries
    ]

    check = check_rows(n)
    rows, spans = span_rows(texts, check, seed=0)
    t0 = time.perf_counter()
    s = encoder.encode(spans, views, apply_heads=False, show_progress=True)
    span_seconds = time.perf_counter() - t0
    span_stacked, span_fine = stack_layers([s[v] for v in views[:L]]), s[fine]
    fit_rows = np.setdiff1d(np.arange(n), check)
    extra = np.arange(len(check), len(rows))

    def coarse(x: np.ndarray, head: torch.Tensor | None) -> np.ndarray:
        if head is not None and head.shape[0] != x.shape[1]:
            x = x[:, -head.shape[0] :]
        return view_vector(torch.from_numpy(np.ascontiguousarray(x)), dim, head).numpy()

    def real(head: torch.Tensor | None, c: int) -> dict[str, float]:
        short = np.argsort(-(coarse(q_stacked, head) @ coarse(stacked, head).T), axis=1)[:, :c]
        kept = [set(s) for s in short]
        return {
            f"overlap@10_c{c}": float(np.mean([len(set(e) & s) / 10 for e, s in zip(exact, kept)])),
            f"top1_kept_c{c}": float(np.mean([e[0] in s for e, s in zip(exact, kept)])),
            f"relevant_kept_c{c}": float(np.mean([len(r & s) / len(r) for r, s in zip(relevant, kept) if r])),
        }

    def gate(head: torch.Tensor | None) -> tuple[float, float]:
        d = coarse(stacked, head)
        whole = fidelity(d, docs_fine, (d[check], docs_fine[check]), exclude=check)
        first = fidelity(d, docs_fine, (coarse(span_stacked[: len(check)], head), span_fine[: len(check)]))
        return whole, first

    rows_out = []

    def record(variant: str, ridge: float | None, head: torch.Tensor | None) -> None:
        whole, first = gate(head)
        row = {
            "dataset": args.dataset.name,
            "split": args.split,
            "variant": variant,
            "ridge": ridge,
            "gate_whole_docs": whole,
            "gate_first_sentences": first,
            **real(head, 100),
            **real(head, 200),
        }
        rows_out.append(row)
        print(
            f"{args.dataset.name:14s} {variant:30s} {ridge or '':>6} gate docs {whole:.3f} spans {first:.3f}"
            f" | real @100 {row['overlap@10_c100']:.3f} @200 {row['overlap@10_c200']:.3f}"
            f" top1 {row['top1_kept_c100']:.3f} relevant {row['relevant_kept_c100']:.3f}",
            file=sys.stderr,
        )

    record("shipped head", None, encoder.heads.get(L))
    for label, x, xs in (
        ("layer 4 alone", stacked[:, -hidden:], None),
        ("layers 1-4 stacked", stacked, None),
        ("stacked + spans", stacked, span_stacked[extra]),
    ):
        fx, ff = x[fit_rows], docs_fine[fit_rows]
        if xs is not None:
            fx, ff = np.concatenate([fx, xs]), np.concatenate([ff, span_fine[extra]])
        for ridge, (head, _) in zip(RIDGES, fit_ridge_heads(fx, ff, RIDGES, basis_rows=len(fit_rows))):
            if head.shape[0] != width:
                head = torch.cat([torch.zeros(width - hidden, head.shape[1]), head])  # reads layer 4 only
            record(label, ridge, head)
    if args.distil_steps:
        x = np.concatenate([stacked[fit_rows], span_stacked[extra]])
        y = np.concatenate([docs_fine[fit_rows], span_fine[extra]])
        ((head, _),) = fit_ridge_heads(x, y, (1e-2,), basis_rows=len(fit_rows))
        anchors = (torch.from_numpy(span_stacked[extra]), torch.from_numpy(span_fine[extra]))
        docs = (torch.from_numpy(stacked[fit_rows]), torch.from_numpy(docs_fine[fit_rows]))
        first, _ = distil_head(head[:, :dim].contiguous(), anchors, docs, dims=[dim], steps=args.distil_steps)
        record(
            f"stacked + spans, distilled {args.distil_steps}", 0.01, torch.cat([first, head[:, dim:]], dim=1)
        )
    columns = [
        ("variant", "variant", "s"),
        ("ridge", "ridge", "g"),
        ("gate: whole docs", "gate_whole_docs", ".3f"),
        ("gate: first sentences", "gate_first_sentences", ".3f"),
        ("real queries ∩fine@10 @100", "overlap@10_c100", ".3f"),
        ("@200", "overlap@10_c200", ".3f"),
        ("exact top 1 kept @100", "top1_kept_c100", ".3f"),
        ("relevant kept @100 (qrels)", "relevant_kept_c100", ".3f"),
    ]
    table = markdown_table(rows_out, columns)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    model = (
        NAMED_MODELS[args.model].description if args.model in NAMED_MODELS else "see the model's provenance"
    )
    header = settings(
        labels=f"the fitted heads: none (the corpus' own text); the dev queries' qrels only for the "
        f"'relevant kept' diagnostic; {args.model}: {model}",
        split=args.split,
        dataset=args.dataset.name,
        documents=n,
        queries=len(queries),
        spans_encoded=len(rows),
        span_seconds=span_seconds,
        model=args.model,
    )
    write_json(args.out / "results.json", {**header, "rows": rows_out})


if __name__ == "__main__":
    main()
