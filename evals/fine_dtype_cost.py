"""What a float16 fine store costs in retrieval quality, against float32, on SciFact test.

Same corpus vectors (the evaluation cache), same queries, scored by BEIR's evaluator: the fine view
ranking the whole corpus from the fine store ("exact via store": a funnel whose shortlist is the whole
corpus), and the funnel coarse -> fine with 100 candidates, each with float32 and float16 fine vectors.

    python -m evals.fine_dtype_cost --model mpnet-base-2dmse --coarse 4x64 --data-dir ../shared/data --out docs/results/fine-dtype
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive_retrieval import DEFAULT_MODEL, Encoder
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus
from adaptive_retrieval.reporting import machine_line as machine
from adaptive_retrieval.reporting import settings, write_json
from evals.beir_eval import load_beir, run_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--data-dir", type=Path, default=default_data_dir())
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument(
        "--out", type=Path, help="write the rows as results.json (with machine and versions) here"
    )
    args = ap.parse_args()

    encoder = Encoder.from_pretrained(args.model)
    coarse, fine = encoder.check_view(args.coarse, name="--coarse"), encoder.full_view
    corpus, queries, qrels = load_beir(args.data_dir, "scifact", "test")
    doc_ids, layers = encode_beir_corpus(encoder, corpus, args.cache_dir)
    print(f"machine: {machine()}\nmodel {args.model}, SciFact test, {len(queries)} queries\n")
    print("| search | fine dtype | nDCG@10 | Recall@100 | fine bytes/doc |\n|---|---|---|---|---|")
    configs = (
        (f"fine {fine} over the whole corpus", fine, len(doc_ids)),
        (f"funnel {coarse} -> {fine} @ {args.candidates}", coarse, args.candidates),
    )
    rows = []
    for label, first, candidates in configs:
        for dtype in ("float32", "float16"):
            row, _ = run_config(
                encoder, layers, doc_ids, corpus, queries, qrels, first, fine, candidates, dtype
            )
            rows.append({"search": label, "fine_dtype": dtype, **row})
            print(
                f"| {label} | {dtype} | {row['ndcg@10']:.4f} | {row['recall@100']:.4f} | "
                f"{row['fine_bytes_per_doc']:.0f} |",
                flush=True,
            )
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        labels = (
            f"{args.model} as shipped, its own provenance says what it saw (the default mpnet-base-2dmse: "
            "SciFact train pairs, its heads the train queries' qrels; no test query); test qrels only score"
        )
        header = settings(model=args.model, coarse=args.coarse, dataset="scifact test", labels=labels)
        write_json(args.out / "results.json", {**header, "rows": rows})


if __name__ == "__main__":
    main()
