"""Fit a linear coarse head on a frozen encoder: the cheapest honest alternative to 2DMSE training.

    python training/fit_coarse_head.py --base mpnet-base --layers 2 4 6 8 --out adaptive_retrieval/trained/mpnet-base-heads

The head maps the coarse layer's pooled state to the fine view's coordinates on the fine view's own
singular vectors (ordered by singular value), so that cutting the head's output to its first d dims keeps
the best rank-d approximation of the fine view's inner products. It is fitted by ridge regression in
closed form on unlabeled text: the SciFact corpus (5,183 abstracts; no queries, no qrels), i.e.
unsupervised adaptation on the corpus text. Nothing is selected on test data: the ridge strength is a
fixed fraction of the mean feature energy.

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

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "evals"))

from beir_eval import load_beir
from corpus_cache import DEFAULT_CACHE_DIR, encode_beir_corpus

from adaptive_retrieval import Encoder
from adaptive_retrieval.models import HEADS_FILE, save_heads

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def fit_head(
    coarse: np.ndarray, fine: np.ndarray, ridge: float = 1e-2
) -> tuple[torch.Tensor, dict[str, float]]:
    """Ridge regression ``coarse @ W ~ fine @ V`` (``V``: fine's right singular vectors, by singular value).

    ``coarse`` and ``fine`` are ``(n, hidden)`` normalised views of the same texts. ``ridge`` is the
    regularisation as a fraction of the mean diagonal of ``coarse.T @ coarse``. Returns the head
    ``W @ ...`` of shape ``(hidden, hidden)`` and fit statistics.
    """
    x = torch.from_numpy(np.asarray(coarse, dtype=np.float64))
    f = torch.from_numpy(np.asarray(fine, dtype=np.float64))
    _, s, vh = torch.linalg.svd(f, full_matrices=False)
    target = f @ vh.T  # coordinates on the singular vectors, largest first
    gram = x.T @ x
    lam = ridge * float(torch.diagonal(gram).mean())
    w = torch.linalg.solve(gram + lam * torch.eye(gram.shape[0], dtype=gram.dtype), x.T @ target)
    residual = float(((x @ w - target) ** 2).sum() / (target**2).sum())
    energy = (s**2).cumsum(0) / (s**2).sum()
    stats = {
        "relative_residual": residual,
        "lambda": lam,
        **{f"fine_energy_in_top_{d}": float(energy[d - 1]) for d in (32, 64, 128, 256) if d <= len(s)},
    }
    return w.float(), stats


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="mpnet-base")
    ap.add_argument("--layers", type=int, nargs="+", default=[4], help="coarse layers to fit a head for")
    ap.add_argument("--ridge", type=float, default=1e-2)
    ap.add_argument("--dataset", default="scifact", help="BEIR corpus whose text the head is fitted on")
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    t0 = time.time()
    encoder = Encoder.from_pretrained(args.base)
    if encoder.heads:
        raise SystemExit(f"{args.base} already has coarse heads; fit on the plain base model")
    for layer in args.layers:
        encoder.check_view((layer, encoder.hidden_size), name="--layers")
    corpus, _, _ = load_beir(args.data_dir, args.dataset, "test")  # only the corpus is read
    _, layers = encode_beir_corpus(encoder, corpus, args.cache_dir)
    heads, stats = {}, {}
    for layer in args.layers:
        head, stats[layer] = fit_head(layers[layer - 1], layers[-1], args.ridge)
        heads[layer] = head.half()
    args.out.mkdir(parents=True, exist_ok=True)
    save_heads(args.out / HEADS_FILE, heads, metadata={"base_fingerprint": encoder.weights_fingerprint})
    provenance = {
        "command": "python training/fit_coarse_head.py "
        + shlex.join(argv if argv is not None else sys.argv[1:]),
        "base_model": args.base,
        "base_weights_fingerprint": encoder.weights_fingerprint,
        "layers": args.layers,
        "head_shape": [encoder.hidden_size, encoder.hidden_size],
        "dtype": "float16",
        "target": f"layer {encoder.n_layers} full view, on its singular vectors (largest first)",
        "data": f"BEIR {args.dataset} corpus text, {len(corpus)} documents (title + text); no queries, no qrels",
        "ridge": args.ridge,
        "seed": None,
        "fit": stats,
        "seconds": round(time.time() - t0, 1),
    }
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    print(json.dumps(provenance, indent=2))
    return args.out


if __name__ == "__main__":
    main()
