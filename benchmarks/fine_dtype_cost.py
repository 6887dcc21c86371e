"""What a float16 fine store costs in retrieval quality, against float32, on SciFact test.

Loads an index saved by bench_latency.py (built with a float32 fine store), then scores the 300 test
queries with BEIR's evaluator twice, once with the fine vectors as float32 and once rounded to
float16: exact fine-view search and the funnel.

    python benchmarks/fine_dtype_cost.py --index-dir runs/scifact-mpnet
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from beir.datasets.data_loader import GenericDataLoader
from beir.retrieval.evaluation import EvaluateRetrieval
from bench_common import DEFAULT_DATA_DIR, machine

from adaptive_retrieval import FineStore, Retriever


def run(r: Retriever, queries: dict[str, str], corpus_ids: list[str], k: int, exact: bool) -> dict:
    qids = list(queries)
    candidates = len(r) if exact else None
    D, I = r.search_arrays([queries[q] for q in qids], k, candidates=candidates)
    return {q: {corpus_ids[i]: float(s) for s, i in zip(D[n], I[n]) if i >= 0} for n, q in enumerate(qids)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", type=Path, required=True)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    args = ap.parse_args()

    corpus, queries, qrels = GenericDataLoader(data_folder=str(args.data_dir / "beir" / "scifact")).load(
        split="test"
    )
    corpus_ids = list(corpus)  # file order: the order bench_latency.py indexed them in
    r = Retriever.load(args.index_dir)
    if r.fine_store.dtype != "float32" or len(r) != len(corpus_ids):
        raise SystemExit("this needs a full-corpus index built with a float32 fine store (bench_latency.py)")
    fp32 = r.fine_store
    fp16 = FineStore(np.asarray(fp32.vectors, dtype=np.float16))
    print(
        f"machine: {machine()}\nmodel {r.encoder.name}, coarse {r.coarse}, fine {r.fine}, {r.candidates} candidates\n"
    )
    print("| search | fine dtype | nDCG@10 | Recall@100 | fine bytes/doc |\n|---|---|---|---|---|")
    for label, exact in (("exact fine view", True), ("funnel", False)):
        for store in (fp32, fp16):
            r.fine_store = store
            ndcg, _, recall, _ = EvaluateRetrieval.evaluate(
                qrels, run(r, queries, corpus_ids, 100, exact), [10, 100]
            )
            print(
                f"| {label} | {store.dtype} | {ndcg['NDCG@10']:.4f} | {recall['Recall@100']:.4f} | "
                f"{store.nbytes() // len(store)} |"
            )


if __name__ == "__main__":
    main()
