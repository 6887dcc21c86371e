"""Fit linear coarse heads on a frozen encoder: the cheapest honest alternative to 2DMSE training, and
the finishing step on top of it.

    python -m training.fit_coarse_head --base mpnet-base --layers 2 4 6 8 --out runs/mpnet-heads

A head maps a coarse layer's pooled state to the fine view's coordinates, so that the coarse view
``(layer, d)`` (the head's output cut to d dims) ranks documents as the fine view does. Two stages:

1. **Ridge** (closed form): regress the fine view's coordinates on its own singular vectors (largest
   first) from the coarse layer's state. Cutting to d dims then keeps the best rank-d approximation of
   the fine view's inner products, to the extent a linear map of the coarse state can predict them.
2. **Ranking distillation** (``--distil-steps``, default 500): starting from the ridge head, minimise the
   KL divergence between the fine view's similarity distribution over the corpus and the coarse view's,
   for query-like texts, at every width in ``--distil-dims`` and at full width (Matryoshka-style, so the
   head stays usable at any cut). Regression spends its capacity on every coordinate alike; this spends
   it on what the funnel needs: the fine view's top neighbours landing in the coarse shortlist.
3. **Relevance** (``--supervised-weight``, default 0: off): in the same steps, the cross-entropy of the
   coarse view's softmax over the corpus against the train queries' qrels (dev split held out), at the
   same widths. Distillation only copies the fine view, misses included; this term teaches the coarse
   view which documents answer the queries, which is what a funnel loses when it misses. It learns
   whatever the train qrels teach, a prior over the corpus included, so the head is as dataset-specific
   as the qrels it saw; provenance says so.

Texts (``--text``): ``corpus`` (the dataset's documents: the ridge's data and the distillation's
candidates), ``titles`` (the corpus titles: query-like text), ``train-queries`` (the dataset's train
queries, minus the dev split that ``training/train.py`` holds out with the same ``--dev-fraction`` and
``--seed``; their qrels too with ``--supervised-weight``). Test queries and test qrels are never read.
Fitting on the corpus text is unsupervised adaptation; provenance says which texts a head saw.

Writes ``coarse_heads.safetensors`` (one ``(hidden, hidden)`` head per layer, stored as float16: the
values stored are the values used) and ``provenance.json`` (the command, data, base model hash, fit
statistics) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from adaptive_retrieval import Encoder, datasets
from adaptive_retrieval.adapt import distil_head, fit_ridge_head
from adaptive_retrieval.datasets import default_data_dir, split_dev
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus
from adaptive_retrieval.models import HEADS_FILE, save_heads

TEXTS = ("corpus", "titles", "train-queries")

DEFAULT_DATA_DIR = default_data_dir()


def query_like_texts(args: argparse.Namespace, corpus: dict) -> tuple[dict[str, list[str]], list[dict]]:
    """The anchors of the distillation, by kind: corpus titles, and train queries minus the dev split;
    and the qrels of those train queries, in the same order (empty without them)."""
    texts: dict[str, list[str]] = {}
    kept_qrels: list[dict] = []
    if "titles" in args.text:
        texts["titles"] = [d["title"] for d in corpus.values() if d.get("title")]
    train_qrels = Path(args.data_dir) / "beir" / args.dataset / "qrels" / "train.tsv"
    if "train-queries" in args.text and not train_qrels.is_file():
        print(f"no train split ({train_qrels} is missing): fitting without train queries", file=sys.stderr)
    elif "train-queries" in args.text:
        _, queries, qrels = datasets.load_beir(args.data_dir, args.dataset, "train")
        dev = set(split_dev(list(qrels), args.dev_fraction, args.seed))
        kept = [q for q in sorted(qrels) if q not in dev and q in queries]
        texts["train-queries"] = [queries[q] for q in kept]
        kept_qrels = [qrels[q] for q in kept]
    return {k: v for k, v in texts.items() if v}, kept_qrels


def relevance_matrix(qrels: list[dict], doc_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, relevance)``: the indices of the queries with a relevant document in ``doc_ids``, and
    their relevance as ``(len(rows), len(doc_ids))`` distributions (positive qrels scores, normalised)."""
    column = {d: i for i, d in enumerate(doc_ids)}
    dense = torch.zeros(len(qrels), len(doc_ids))
    for i, judged in enumerate(qrels):
        for doc, grade in judged.items():
            if grade > 0 and doc in column:
                dense[i, column[doc]] = float(grade)
    rows = torch.nonzero(dense.sum(1) > 0).flatten()
    return rows, dense[rows] / dense[rows].sum(1, keepdim=True)


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="mpnet-base")
    ap.add_argument("--layers", type=int, nargs="+", default=[4], help="coarse layers to fit a head for")
    ap.add_argument("--ridge", type=float, default=1e-2)
    ap.add_argument("--dataset", default="scifact", help="BEIR dataset whose texts the heads are fitted on")
    ap.add_argument(
        "--text", nargs="+", choices=TEXTS, default=list(TEXTS), help="which texts to fit on (see above)"
    )
    ap.add_argument("--dev-fraction", type=float, default=0.1, help="train queries held out (as train.py)")
    ap.add_argument("--seed", type=int, default=42, help="the dev split's seed (as train.py) and the draws'")
    ap.add_argument(
        "--distil-steps", type=int, default=500, help="ranking distillation steps (0: ridge only)"
    )
    ap.add_argument("--distil-dims", type=int, nargs="+", default=[32, 64, 128, 256])
    ap.add_argument("--temperature", type=float, default=0.05)
    ap.add_argument(
        "--supervised-weight",
        type=float,
        default=0.0,
        help="weight of the relevance term on the train queries' qrels (0: off; needs train-queries)",
    )
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if "corpus" not in args.text:
        ap.error("--text must include corpus: the documents are what the coarse view ranks")
    if args.distil_steps < 0 or args.temperature <= 0 or args.lr <= 0 or args.batch_size < 1:
        ap.error("--distil-steps must be >= 0; --temperature, --lr and --batch-size must be positive")
    if args.supervised_weight < 0:
        ap.error(f"--supervised-weight must be >= 0, got {args.supervised_weight}")
    if args.supervised_weight and ("train-queries" not in args.text or not args.distil_steps):
        ap.error("--supervised-weight needs train-queries in --text and --distil-steps > 0")
    if not 0 <= args.dev_fraction < 1:
        ap.error(f"--dev-fraction must be in [0, 1), got {args.dev_fraction}")

    t0 = time.time()
    encoder = Encoder.from_pretrained(args.base)
    if encoder.heads:
        raise SystemExit(f"{args.base} already has coarse heads; fit on the plain base model")
    for layer in args.layers:
        encoder.check_view((layer, encoder.hidden_size), name="--layers")
    bad = [d for d in args.distil_dims if not 1 <= d <= encoder.hidden_size]
    if bad:
        ap.error(f"--distil-dims must be in 1..{encoder.hidden_size}, got {bad}")
    corpus, _, _ = datasets.load_beir(args.data_dir, args.dataset, "test")  # only the corpus is read
    doc_ids, layers = encode_beir_corpus(encoder, corpus, args.cache_dir)
    extra, train_qrels = query_like_texts(args, corpus)
    if args.distil_steps and not extra:
        ap.error("--distil-steps needs query-like texts: add titles or train-queries to --text (or pass 0)")
    labelled_rows, relevance = torch.zeros(0, dtype=torch.long), None
    if args.supervised_weight:  # dense (queries, documents): built only when the relevance term needs it
        labelled_rows, relevance = relevance_matrix(train_qrels, doc_ids)
        if not len(labelled_rows):
            ap.error(
                f"--supervised-weight: no train query of {args.dataset} has a relevant document in its corpus"
            )
    wanted = sorted({*args.layers, encoder.n_layers})
    encoded = {  # kind -> {layer: (n, hidden)} full-width views of the query-like texts
        kind: {
            v.layer: m for v, m in encoder.encode(texts, [(x, encoder.hidden_size) for x in wanted]).items()
        }
        for kind, texts in extra.items()
    }

    def stack(layer: int) -> torch.Tensor:
        parts = [np.asarray(layers[layer - 1])] + [encoded[k][layer] for k in encoded]
        return torch.from_numpy(np.concatenate(parts).astype(np.float32))

    n_docs = len(corpus)
    fine = stack(encoder.n_layers)
    dims = sorted({*args.distil_dims, encoder.hidden_size})
    heads, stats = {}, {}
    for layer in args.layers:
        coarse = stack(layer)
        head, stats[layer] = fit_ridge_head(coarse.numpy(), fine.numpy(), args.ridge, basis_rows=n_docs)
        if args.distil_steps:
            head, more = distil_head(
                head,
                (coarse[n_docs:], fine[n_docs:]),
                (coarse[:n_docs], fine[:n_docs]),
                dims=dims,
                steps=args.distil_steps,
                temperature=args.temperature,
                lr=args.lr,
                batch_size=args.batch_size,
                seed=args.seed + layer,
                labelled=(
                    None
                    if relevance is None
                    else (torch.from_numpy(encoded["train-queries"][layer][labelled_rows.numpy()]), relevance)
                ),
                supervised_weight=args.supervised_weight,
                desc=f"layer {layer}",
            )
            stats[layer].update(more)
        heads[layer] = head.half()
    args.out.mkdir(parents=True, exist_ok=True)
    save_heads(args.out / HEADS_FILE, heads, metadata={"base_fingerprint": encoder.weights_fingerprint})
    data = [f"BEIR {args.dataset} corpus text, {n_docs} documents (title + text)"]
    if "titles" in extra:
        data.append(f"its titles, {len(extra['titles'])}")
    if "train-queries" in extra:
        data.append(
            f"its train queries minus the dev split (--dev-fraction {args.dev_fraction}, --seed {args.seed}), "
            f"{len(extra['train-queries'])}, "
            + (
                f"with their qrels ({len(labelled_rows)} queries with a relevant document)"
                if args.supervised_weight
                else "text only (no qrels)"
            )
        )
    provenance = {
        "command": "python -m training.fit_coarse_head "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "base_model": args.base,
        "base_weights_fingerprint": encoder.weights_fingerprint,
        "layers": args.layers,
        "head_shape": [encoder.hidden_size, encoder.hidden_size],
        "dtype": "float16",
        "target": f"layer {encoder.n_layers} full view: ridge on its singular vectors (largest first)"
        + (f", then ranking distillation at dims {dims}" if args.distil_steps else "")
        + (
            f", with the train qrels' relevance (weight {args.supervised_weight})"
            if args.supervised_weight
            else ""
        ),
        "data": "; ".join(data) + "; no test queries, no test qrels",
        "ridge": args.ridge,
        "distil": {
            "steps": args.distil_steps,
            "dims": dims,
            "temperature": args.temperature,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "supervised_weight": args.supervised_weight,
        },
        "seed": args.seed,
        "fit": stats,
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    print(json.dumps(provenance, indent=2))
    return args.out


if __name__ == "__main__":
    main()
