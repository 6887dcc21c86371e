"""Filtered search on a real corpus: the funnel's fidelity under metadata filters on SciFact.

    python -m evals.filtered_eval --data-dir ../shared/data --out docs/results/filtered-scifact

SciFact's 5,183 abstracts get two derived metadata fields: ``bucket`` (0..99 from a hash of the document
id: a filter independent of the content) and ``mentions`` (the words of a list of frequent topic words the
abstract contains, one field per word as a boolean, ``cell``, ``patients``, ``risk``...: filters
correlated with the content, the case where a filtered graph search loses most). Queries: the 300 test
queries. For each coarse index (Flat, SQ8: the default, HNSW32) and filter, ``overlap@10``: the share of the exact fine view's
top 10 among the matching documents that a filtered search returns, with the library's policy (the path
each ran is reported). The model saw SciFact train pairs only if the model named was trained on them
(``minilm-l6``, the default here, is all-MiniLM-L6-v2 as released: no SciFact labels); no qrels are used:
the reference is the exact fine view.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, FaissOptions, Retriever, SearchTimings
from adaptive_retrieval.reporting import markdown_table, settings, write_json, write_markdown

TOPICS = ("cell", "patients", "risk", "mice", "cancer", "protein", "infection")


def corpus_with_fields(data_dir: Path) -> dict:
    corpus = {}
    with open(data_dir / "beir" / "scifact" / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            words = set((doc.get("title", "") + " " + doc["text"]).lower().split())
            fields = {f"mentions_{t}": t in words for t in TOPICS}
            bucket = int(hashlib.sha256(doc["_id"].encode()).hexdigest(), 16) % 100
            corpus[doc["_id"]] = {
                "title": doc.get("title", ""),
                "text": doc["text"],
                "bucket": bucket,
                **fields,
            }
    return corpus


def test_queries(data_dir: Path) -> list[str]:
    folder = data_dir / "beir" / "scifact"
    wanted = {line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    with open(folder / "queries.jsonl", encoding="utf-8") as fh:
        return [q["text"] for q in map(json.loads, fh) if q["_id"] in wanted]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True)
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--indexes", default="Flat,SQ8,HNSW32")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    encoder = Encoder.from_pretrained(args.model)
    corpus = corpus_with_fields(args.data_dir)
    queries = test_queries(args.data_dir)
    filters = {
        "none": None,
        "bucket < 50 (50%)": {"bucket": {"$lt": 50}},
        "bucket < 10 (10%)": {"bucket": {"$lt": 10}},
        "bucket < 1 (1%)": {"bucket": {"$lt": 1}},
    }
    for t in TOPICS:
        share = np.mean([doc[f"mentions_{t}"] for doc in corpus.values()])
        filters[f"mentions {t} ({share:.0%})"] = {f"mentions_{t}": True}
    filters["mentions cell or mice, bucket < 50"] = {
        "$and": [{"$or": [{"mentions_cell": True}, {"mentions_mice": True}]}, {"bucket": {"$lt": 50}}]
    }
    rows = []
    built = Retriever.build(
        corpus, coarse=args.coarse, model=encoder, hybrid=False, backend=FaissOptions(index="Flat")
    )  # Flat, dense: exact at full depth
    # the reference: every matching document re-ranked by the fine view (the whole index as shortlist)
    reference = {
        name: built.search_batch(queries, k=10, filter=flt, candidates=len(built))
        for name, flt in filters.items()
    }
    n = len(built)
    batch = (
        list(built.doc_ids), built.backend.vectors("coarse", 0, n), built.backend.vectors("fine", 0, n), None,
        [built.metadata.get(row) for row in range(n)],
    )  # fmt: skip
    for index in args.indexes.split(","):
        if index == "Flat":
            r = built
        else:  # the same vectors and metadata in another coarse index: no second encoding
            r = Retriever.from_vector_batches(
                built.encoder, built.coarse, built.fine, [batch], backend=FaissOptions(index=index)
            )
            r.set_adaptation(built.adaptation)  # the same projected coarse queries
        for name, flt in filters.items():
            timings = SearchTimings()
            got = r.search_batch(queries, k=10, filter=flt, timings=timings)
            overlaps = [
                len({h.doc_id for h in a} & {h.doc_id for h in b}) / max(len(b), 1)
                for a, b in zip(got, reference[name])
            ]
            row = {
                "index": index,
                "filter": name,
                "matched": timings.matched[0] if timings.matched else len(r),
                "paths": timings.paths,
                "overlap@10": float(np.mean(overlaps)),
                "ms_per_query": 1000 * timings.total / timings.queries,
            }
            rows.append(row)
            print(row, flush=True)
    header = settings(
        benchmark="filtered_eval", model=args.model, coarse=args.coarse, queries=len(queries),
        labels="none used (the reference is the exact fine view among the matching documents); minilm-l6 "
        "saw no SciFact labels",
    )  # fmt: skip
    write_json(args.out / "results.json", {**header, "rows": rows})
    table = markdown_table(
        [{**r, "path": ", ".join(r["paths"])} for r in rows],
        [
            ("coarse index", "index", ""),
            ("filter", "filter", ""),
            ("matched", "matched", ","),
            ("path", "path", ""),
            ("overlap@10", "overlap@10", ".3f"),
            ("ms/query", "ms_per_query", ".1f"),
        ],
    )
    write_markdown(args.out / "results.md", "Filtered search on SciFact", header, table)
    print(table)


if __name__ == "__main__":
    main()
