"""Churn: the coarse view's fidelity after half of a corpus is replaced by documents of another kind,
before and after ``Retriever.refit()``, beside a fresh build of the final corpus.

    python -m benchmarks.bench_churn --data-dir ../shared/data --out docs/results/churn

The index is built on ``--docs`` SciFact abstracts (its coarse view adapted to them); then half of its
documents are replaced, through ``upsert``, by STS Benchmark sentences (short captions and news lines, a
corpus unlike SciFact). Queries: SciFact test queries and the STS partner sentences of the sentences
indexed (``sentence2`` of each pair), ``--queries`` of each. Fidelity is ``overlap@10``: the share of the
exact fine view's top 10 that the funnel returns at a fixed shortlist (``--candidates``), with the
projected coarse query (the default). Three states, side by side in one run: after the churn, after
``refit()``, and a fresh ``Retriever.build`` of the final corpus (adapted to it). ``drift()``'s ratio is
reported for each. No labels are used: the reference is the exact fine view.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.reporting import markdown_table, settings, write_json, write_markdown


def sts_pairs(data_dir: Path, n: int) -> list[tuple[str, str]]:
    """The first ``n`` STS Benchmark train pairs with distinct first sentences (tab-separated, no quoting)."""
    pairs, seen = [], set()
    with open(data_dir / "sts" / "stsbenchmark" / "sts-train.csv", encoding="utf-8") as fh:
        for line in fh:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 7 and fields[5] not in seen:
                seen.add(fields[5])
                pairs.append((fields[5], fields[6]))
            if len(pairs) == n:
                break
    return pairs


def scifact(data_dir: Path, docs: int, queries: int) -> tuple[dict, list[str]]:
    folder = data_dir / "beir" / "scifact"
    corpus = {}
    with open(folder / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            corpus[doc["_id"]] = {"title": doc.get("title", ""), "text": doc["text"]}
            if len(corpus) == docs:
                break
    test = {line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    texts = []
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        for line in fh:
            q = json.loads(line)
            if q["_id"] in test:
                texts.append(q["text"])
    return corpus, texts[:queries]


def overlap(r: Retriever, queries: list[str], candidates: int) -> float:
    got = r.search_batch(queries, k=10, candidates=candidates)
    exact = r.search_batch(queries, k=10, candidates=len(r))  # the whole index re-ranked: exact
    return float(
        np.mean([len({h.doc_id for h in a} & {h.doc_id for h in b}) / 10 for a, b in zip(got, exact)])
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--coarse", default="4x32")
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=150)
    ap.add_argument("--candidates", type=int, nargs="+", default=[10, 20, 50])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    encoder = Encoder.from_pretrained(args.model)
    corpus, sci_queries = scifact(args.data_dir, args.docs, args.queries)
    half = args.docs // 2
    pairs = sts_pairs(args.data_dir, half)
    queries = sci_queries + [b for _, b in pairs[: args.queries]]
    ids = list(corpus)
    header = settings(
        benchmark="bench_churn", model=args.model, coarse=args.coarse, docs=args.docs, replaced=half,
        queries=len(queries), labels="none: the reference is the exact fine view",
    )  # fmt: skip
    t0 = time.perf_counter()
    r = Retriever.build(corpus, coarse=args.coarse, model=encoder, hybrid=False)
    build_s = time.perf_counter() - t0
    r.compact_at = None  # compaction is refit's first step, measured with it
    replaced = {doc_id: {"title": "", "text": text} for doc_id, (text, _) in zip(ids[:half], pairs)}
    r.upsert(replaced)
    final = {doc_id: corpus[doc_id] for doc_id in ids[half:]} | replaced
    rows = []

    def measure(state: str, index: Retriever, seconds: float | None) -> None:
        ratio = index.drift().ratio if index.projection is not None else None  # None: the model's own head
        row = {
            "state": state,
            "coarse_head": "fitted" if index.fitted_head else "model",
            "drift_ratio": ratio,
        }
        row["seconds"] = seconds
        for c in args.candidates:
            row[f"overlap@{c}"] = overlap(index, queries, c)
        rows.append(row)
        print(row, flush=True)

    measure("after replacing half (no refit)", r, None)
    t0 = time.perf_counter()
    r.refit()
    measure("after refit()", r, time.perf_counter() - t0)
    t0 = time.perf_counter()
    fresh = Retriever.build(final, coarse=args.coarse, model=encoder, hybrid=False)
    measure("fresh build of the final corpus", fresh, time.perf_counter() - t0)
    write_json(args.out / "results.json", {**header, "first_build_s": build_s, "rows": rows})
    columns = [
        ("state", "state", ""),
        ("coarse head", "coarse_head", ""),
        ("drift ratio", "drift_ratio", ".4f"),
    ]
    columns += [("seconds", "seconds", ".1f")]
    columns += [(f"overlap@10, shortlist {c}", f"overlap@{c}", ".3f") for c in args.candidates]
    table = markdown_table(rows, columns)
    write_markdown(args.out / "results.md", "Churn", header, table)
    print(table)


if __name__ == "__main__":
    main()
