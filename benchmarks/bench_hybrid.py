"""What the lexical index costs at scale: build seconds, bytes per document, an add's rebuild, and the
latency a hybrid search adds to the dense funnel, side by side in one run.

    python -m benchmarks.bench_hybrid --data-dir ../shared/data --sizes 10000 100000 --out docs/results/bench-hybrid

Documents: ``--sizes`` synthetic texts whose words are drawn from SciFact's own word frequencies and
whose lengths from its documents' lengths (so BM25's posting lists are as long as a real corpus of that
size would make them); their coarse and fine vectors are random unit vectors (the dense funnel's cost
does not depend on what they mean). Queries: SciFact's test queries, through the default model (every
layer once, as every search). Each query is searched one at a time with ``hybrid=False`` and with the
default fusion, alternately, so both see the same machine; the rows give the p50 of the whole search and
of its lexical stage (:attr:`adaptive_retrieval.SearchTimings.lexical`: BM25 scores, the lexical
candidates' fine scores, the fusion). The lexical index's build is timed on its own, and an add of
``--add`` documents to the built index (appended to its postings). Bytes per document: the lexical index as
built (in RAM), as an opened index holds it in RAM (the arrays read into memory and the vocabulary's
Python objects; its postings, memory-mapped from the saved file, are not counted), the earlier layout's
(``bm25s``' score matrix and each row's term ids, built here over the same terms), and its saved file. No
labels anywhere.
"""

from __future__ import annotations

import argparse
import re
import time
from collections import Counter
from pathlib import Path

import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder, FaissOptions, Retriever, SearchTimings, datasets
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.lexical import LexicalIndex
from adaptive_retrieval.reporting import markdown_table, percentiles_ms, settings, write_json, write_markdown
from benchmarks.bench_common import unit_rows

COLUMNS = (
    ("docs", "docs", "d"),
    ("lexical build s", "lexical_build_s", ".1f"),
    ("lexical B/doc, built", "lexical_built_bytes_per_doc", ".0f"),
    ("lexical RAM B/doc, opened", "lexical_ram_bytes_per_doc", ".0f"),
    ("bm25s matrix + term ids B/doc", "bm25s_bytes_per_doc", ".0f"),
    ("vectors B/doc", "vector_bytes_per_doc", ".0f"),
    ("saved lexical B/doc", "saved_lexical_bytes_per_doc", ".0f"),
    ("add s", "add_s", ".2f"),
    ("dense p50 ms", "dense_p50_ms", ".1f"),
    ("hybrid p50 ms", "hybrid_p50_ms", ".1f"),
    ("lexical stage p50 ms", "lexical_p50_ms", ".2f"),
    ("BM25 scores p50 ms: ours / bm25s'", "scores_p50_ms", "s"),
    ("hybrid - dense p50 ms", "added_p50_ms", ".2f"),
)


def synthetic_texts(corpus: dict, n: int, seed: int) -> list[str]:
    """``n`` texts of SciFact's word frequencies and document lengths."""
    words = [re.findall(r"\w+", text.lower()) for _, text in iter_documents(corpus)]
    counts = Counter(w for doc in words for w in doc)
    vocab = np.array(list(counts))
    p = np.array([counts[w] for w in vocab], np.float64)
    rng = np.random.default_rng(seed)
    lengths = rng.choice([len(d) for d in words], n)
    drawn = rng.choice(len(vocab), int(lengths.sum()), p=p / p.sum())
    ends = np.cumsum(lengths)
    return [" ".join(vocab[drawn[e - m : e]]) for e, m in zip(ends, lengths)]


def earlier_layout(
    lexical: LexicalIndex, texts: list[str], queries: list[str]
) -> tuple[int, list[float], list[float]]:
    """The earlier layout beside this one, over the same terms: the bytes it held in RAM (``bm25s``' matrix
    of float32 scores and int32 rows, its term pointers, and each row's term ids, 2 bytes each, with their
    row pointers, kept to rebuild the matrix after a write; no vocabulary counted), and the seconds per
    query of its scoring (``bm25s``' ``get_scores_from_ids``) and of this index's (:meth:`LexicalIndex.scores`,
    from the query's text), alternated query by query."""
    import bm25s

    rows = [[lexical.vocabulary[t] for t in lexical.terms(text)] for text in texts]
    matrix = bm25s.BM25()
    matrix.index(
        (rows, {i: i for i in range(len(lexical.vocabulary))}), create_empty_token=False, show_progress=False
    )
    held = sum(matrix.scores[n].nbytes for n in ("data", "indices", "indptr"))
    theirs, ours = [], []
    for query in queries:
        t0 = time.perf_counter()
        ids = lexical.query_terms(query)
        if len(ids):
            matrix.get_scores_from_ids(ids.tolist())
        t1 = time.perf_counter()
        lexical.scores(query)
        theirs.append(t1 - t0)
        ours.append(time.perf_counter() - t1)
    return held + 2 * sum(len(r) for r in rows) + 8 * (len(rows) + 1), theirs, ours


def run(
    encoder: Encoder,
    coarse: str,
    corpus: dict,
    queries: list[str],
    size: int,
    add: int,
    seed: int,
    workdir: Path,
) -> dict:
    texts = synthetic_texts(corpus, size + add, seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    lexical = LexicalIndex()
    lexical.stage(texts[:size])
    lexical.commit()
    build_s = time.perf_counter() - t0
    coarse, fine = encoder.check_view(coarse, name="coarse"), encoder.full_view
    ids = [f"d{i}" for i in range(size)]
    r = Retriever.from_vectors(
        encoder, coarse, fine, ids, unit_rows(size, coarse.dim, rng), unit_rows(size, fine.dim, rng),
        backend=FaissOptions(), texts=texts[:size],
    )  # fmt: skip
    coarse_bytes, fine_bytes = r.backend.nbytes()
    folder = workdir / f"bench-hybrid-{size}"
    r.save(folder)
    (saved_file,) = folder.glob("lexical-*")
    opened = LexicalIndex.load(saved_file, ids).stats  # as an opened index holds it: postings mapped
    reference, theirs_s, ours_s = earlier_layout(lexical, texts[:size], queries)
    t0 = time.perf_counter()
    r.add_vectors(
        [f"a{i}" for i in range(add)],
        unit_rows(add, coarse.dim, rng),
        unit_rows(add, fine.dim, rng),
        texts=texts[size:],
    )
    add_s = time.perf_counter() - t0
    dense, hybrid, lexical_s = [], [], []
    for q in queries:
        for on in (False, True):
            timings = SearchTimings()
            r.search_batch([q], k=10, hybrid=on, timings=timings)
            (hybrid if on else dense).append(timings.total)
            if on:
                lexical_s.append(timings.lexical)
    row = {
        "docs": size,
        "lexical_build_s": build_s,
        "lexical_built_bytes_per_doc": (lexical.stats["bytes"] + lexical.stats["vocabulary_bytes"]) / size,
        "lexical_ram_bytes_per_doc": (opened["bytes"] - opened["mapped"] + opened["vocabulary_bytes"]) / size,
        "lexical_mapped_bytes_per_doc": opened["mapped"] / size,
        "bm25s_bytes_per_doc": reference / size,
        "bm25s_scores_p50_ms": percentiles_ms(theirs_s)[0],
        "lexical_scores_p50_ms": percentiles_ms(ours_s)[0],
        "vector_bytes_per_doc": (coarse_bytes + fine_bytes) / size,
        "saved_lexical_bytes_per_doc": saved_file.stat().st_size / size,
        "add_documents": add,
        "add_s": add_s,
        "dense_p50_ms": percentiles_ms(dense)[0],
        "hybrid_p50_ms": percentiles_ms(hybrid)[0],
        "lexical_p50_ms": percentiles_ms(lexical_s)[0],
        "lexical_p95_ms": percentiles_ms(lexical_s)[1],
        "added_p50_ms": float(np.median(np.array(hybrid) - np.array(dense)) * 1000),
        "scores_p50_ms": f"{percentiles_ms(ours_s)[0]:.2f} / {percentiles_ms(theirs_s)[0]:.2f}",
    }
    print(row, flush=True)
    r.close()
    return row


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="the folder holding beir/scifact")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--add", type=int, default=1_000, help="documents added to the built index (timed)")
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--coarse", default="4x64", help="the coarse view, LAYERxDIM")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, default=Path("runs"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    corpus, queries, _ = datasets.load_beir(args.data_dir, "scifact", "test")
    encoder = Encoder.from_pretrained(args.model)
    texts = list(queries.values())[: args.queries]
    rows = [
        run(encoder, args.coarse, corpus, texts, n, args.add, args.seed, args.workdir) for n in args.sizes
    ]
    table = markdown_table(rows, COLUMNS)
    print(table)
    if args.out:
        header = settings(labels="none: synthetic documents, SciFact test queries' text only (no qrels)")
        write_json(args.out / "results.json", {**header, "rows": rows})
        write_markdown(args.out / "results.md", "What the lexical index costs", header, table)


if __name__ == "__main__":
    main()
