"""What build-time adaptation costs beside the build's own encoding, and how that grows.

    python -m benchmarks.bench_adapt --model minilm-l6 --dataset runs/data/beir/manpages --n 1000

1. Side by side on the same texts: ``Retriever.build(adapt=False)`` and ``Retriever.build(adapt=True)``
   (same model, views and texts); the adapted build's fit time (``retriever.adaptation.seconds``)
   against the plain build's time, which is almost all encoding.
2. Growth: :func:`adaptive_retrieval.adapt.adapt_head` timed on ``--fit-sizes`` documents (synthetic
   stacked states, layers 1 .. coarse of the model's width: the fit's arithmetic does not depend on the
   values; the pseudo-queries' encoding, bounded by ``MAX_FIT_SPANS`` spans, is in 1. only), against what
   encoding that many documents costs at the rate measured in 1. A build fits on its first chunk only
   (``CHUNK_SIZE`` documents), so past that size the fit's cost stays put while encoding grows.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, Retriever, View, document_text
from adaptive_retrieval.adapt import adapt_head
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json
from adaptive_retrieval.retriever import CHUNK_SIZE


def corpus_texts(folder: Path, n: int) -> list[str]:
    path = Path(folder) / "corpus.jsonl"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: --dataset takes a BEIR-format folder")
    texts = []
    with open(path) as fh:
        for line in fh:
            texts.append(document_text(json.loads(line)))
            if len(texts) == n:
                break
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--dataset", type=Path, required=True, help="a BEIR-format folder (its corpus.jsonl)")
    ap.add_argument("--n", type=int, default=1000, help="documents to build over")
    ap.add_argument("--coarse", help="coarse view (default: a third of the layers, 64 dims)")
    ap.add_argument("--fit-sizes", type=int, nargs="+", default=[1000, 3000, CHUNK_SIZE])
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = ap.parse_args()

    encoder = Encoder.from_pretrained(args.model)
    coarse = View.parse(args.coarse) if args.coarse else View(max(1, encoder.n_layers // 3), 64)
    texts = corpus_texts(args.dataset, args.n)
    encoder.encode(texts[:32], show_progress=False)  # warm-up
    t0 = time.perf_counter()
    Retriever.build(texts, coarse=coarse, model=encoder, adapt=False, show_progress=False, hybrid=False)
    plain_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    adapted = Retriever.build(
        texts, coarse=coarse, model=encoder, adapt=True, show_progress=False, hybrid=False
    )
    adapted_s = time.perf_counter() - t0
    record = adapted.adaptation
    per_doc = plain_s / len(texts)
    print(f"{machine()}\nmodel {args.model}, coarse {coarse}, {len(texts)} documents of {args.dataset.name}")
    print(f"build adapt=False: {plain_s:.1f} s ({len(texts) / plain_s:.1f} docs/s)")
    print(
        f"build adapt=True:  {adapted_s:.1f} s, of which the fit {record.seconds:.2f} s = "
        f"{record.seconds / plain_s:.1%} of the plain build ({record.chosen}; pseudo-query fidelity "
        f"{record.fidelity_before:.3f} -> {record.fidelity_after or record.fidelity_before:.3f})"
    )
    growth = []
    rng = np.random.default_rng(0)
    print(
        "\n| documents fitted | fit s | encoding s (at the rate above) | fit / encoding |\n|---|---|---|---|"
    )
    for n in args.fit_sizes:
        student = rng.normal(size=(n, coarse.layer * encoder.hidden_size)).astype(np.float32)  # stacked
        teacher = rng.normal(size=(n, encoder.hidden_size)).astype(np.float32)
        teacher /= np.linalg.norm(teacher, axis=1, keepdims=True)
        t0 = time.perf_counter()
        adapt_head(student, teacher, layer=coarse.layer, dim=coarse.dim)
        fit_s = time.perf_counter() - t0
        growth.append(
            {"documents": n, "fit_s": fit_s, "encode_s": n * per_doc, "ratio": fit_s / (n * per_doc)}
        )
        print(f"| {n} | {fit_s:.2f} | {n * per_doc:.0f} | {fit_s / (n * per_doc):.2%} |")
    if args.out:
        write_json(
            args.out,
            settings(
                labels=f"none: the fit and its fidelity use pseudo-queries (no qrels); {args.model}'s own "
                "provenance says what its weights saw",
                model=args.model,
                coarse=str(coarse),
                documents=len(texts),
                dataset=args.dataset.name,
                build_plain_s=plain_s,
                build_adapted_s=adapted_s,
                fit_s=record.seconds,
                adaptation=record.as_dict(),
                growth=growth,
            ),
        )


if __name__ == "__main__":
    main()
