"""BM25 alone, dense alone and hybrid (each fusion rule and weight) through the library's own retriever,
on BEIR-format sets: choose the fusion on dev queries, report it on test.

    python -m evals.hybrid_eval --datasets ../shared/data/beir/scifact runs/data/beir/stsb-para \\
        runs/data/beir/sick-para runs/data/beir/sts12-16-para runs/data/beir/manpages \\
        runs/data/beir/manpages-long --out docs/results/hybrid

Per dataset the corpus is encoded once (cached, as ``beir_eval.py`` does) and indexed as
``Retriever.build`` indexes it: long documents as passages (:func:`passage_rows`), the coarse view fitted
to the corpus on its first chunk, every coarse vector the fine one projected, a lexical index of the same
rows, through ``Retriever.from_vectors``. Rows, on the dev and test queries, each a run of ``k=10``
searches (nDCG@10, MRR@10, Recall@10) and of ``k=100`` (Recall@100) through ``Retriever.search_batch``
(passages grouped into documents as users get them): ``bm25`` (BM25 alone over whole documents, ``bm25s``'
scores), ``dense exact`` (the fine view over every row), ``dense`` (the funnel, ``hybrid=False``),
``hybrid <fusion>`` (the funnel fused with BM25 by each fusion of :data:`GRID`,
:mod:`adaptive_retrieval.hybrid`), each hybrid row with its overlap@10 against the same fusion over an
exact dense stage (its fidelity). The queries are encoded once for every row (:class:`QueryMemo`); the
dense and default hybrid rows are also searched one query at a time without it, timed (p50, and the
lexical stage's), and their answers compared (``= search``). Cost: the lexical index's build seconds
beside the corpus' encoding (timed on a sample of documents in the same run), and its bytes per row and
per document beside the vectors'.

The fusion is chosen on dev, by its margins over the sets' dev queries,
``nDCG@10(hybrid) - max(nDCG@10(bm25), nDCG@10(dense))``: of the fusions never more than :data:`NOISE`
below the better part on any set, the one with the highest mean margin; if there is none, the one whose
worst margin is highest.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder, FaissOptions, Retriever, SearchTimings
from adaptive_retrieval import retriever as retriever_module
from adaptive_retrieval.adapt import adapt_encoder, project_fine
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.encoding_cache import (
    DEFAULT_CACHE_DIR,
    cached_encoding,
    encode_beir_corpus,
    view_matrix,
)
from adaptive_retrieval.hybrid import Fusion
from adaptive_retrieval.indexing import projection_of
from adaptive_retrieval.lexical import LexicalIndex
from adaptive_retrieval.passages import Passage, budget, expand, split
from adaptive_retrieval.reporting import (
    markdown_table,
    model_info,
    percentiles_ms,
    settings,
    write_json,
    write_markdown,
)
from adaptive_retrieval.retriever import CHUNK_SIZE
from evals.beir_eval import check_dev_split, first_queries, load_split, score, top_overlap
from evals.suite import dataset_location

GRID = (
    tuple(Fusion("convex", w) for w in (0.5, 0.6, 0.7, 0.8, 0.9))
    + tuple(Fusion("rrf", w) for w in (0.5, 0.6, 0.7))
    + tuple(
        Fusion("match", 0.8, match_weight=low, ramp=ramp, confidence=None)
        for low in (0.2, 0.3)
        for ramp in ((0.3, 0.5), (0.35, 0.5), (0.4, 0.45), (0.4, 0.5))
    )
    + tuple(
        Fusion("match", 0.8, match_weight=0.3, ramp=ramp, confidence=confidence)
        for ramp in ((0.3, 0.5), (0.4, 0.5))
        for confidence in ((0.7, 0.85), (0.8, 0.9))
    )
    + tuple(
        Fusion("lead", 0.8, match_weight=0.3, ramp=ramp, confidence=None)
        for ramp in ((0.05, 0.2), (0.1, 0.3), (0.15, 0.3), (0.2, 0.4))
    )
)
NOISE = 0.005  # nDCG@10 a fusion may lose to the better part on a set and still be chosen (#31's "within")
K = 10  # the searches behind nDCG@10, MRR@10 and Recall@10 ask for this many documents, as users do
DEPTH = 100  # and Recall@100's for this many
COLUMNS = (
    ("dataset", "dataset", "s"),
    ("split", "split", "s"),
    ("row", "row", "s"),
    ("nDCG@10", "ndcg@10", ".4f"),
    ("MRR@10", "mrr@10", ".4f"),
    ("R@100", "recall@100", ".3f"),
    ("∩exact@10", "overlap@10", ".3f"),
    ("p50 ms", "p50_ms", ".1f"),
    ("lexical p50 ms", "lexical_p50_ms", ".2f"),
    ("= search", "same_as_search", ".3f"),
)


def run_of(doc_ids: list[str], qids: list[str], D: np.ndarray, I: np.ndarray) -> dict:
    """A BEIR run (qid -> {doc id: score}) of ``(D, I)`` rows."""
    return {q: {doc_ids[r]: float(d) for d, r in zip(ds, rs) if r >= 0} for q, ds, rs in zip(qids, D, I)}


def timed_run(retriever: Retriever, queries: dict[str, str], **kwargs: Any) -> tuple[dict, dict[str, float]]:
    """A run of ``k=10`` searches one query at a time, and its p50 latencies (total, and the lexical stage)."""
    run, totals, lexical = {}, [], []
    for q, text in queries.items():
        timings = SearchTimings()
        hits = retriever.search_batch([text], k=K, timings=timings, **kwargs)[0]
        run[q] = {str(h.doc_id): h.score for h in hits}
        totals.append(timings.total)
        lexical.append(timings.lexical)
    return run, {"p50_ms": percentiles_ms(totals)[0], "lexical_p50_ms": percentiles_ms(lexical)[0]}


def bm25_run(
    lexical: LexicalIndex, doc_ids: list[str], queries: dict[str, str]
) -> tuple[dict, dict[str, float]]:
    run, seconds = {}, []
    for q, text in queries.items():
        t0 = time.perf_counter()
        scores, rows = lexical.top(text, DEPTH)
        seconds.append(time.perf_counter() - t0)
        run[q] = {doc_ids[r]: float(s) for r, s in zip(rows, scores)}
    return run, {"p50_ms": percentiles_ms(seconds)[0]}


def passage_rows(encoder: Encoder, corpus: dict, cache_dir: Path | None) -> tuple[dict, list, Any, dict]:
    """The corpus as the index's rows: ``({row key: {"text"}}, row ids, (row keys, every layer's rows),
    counts)``. A document that fits keeps its encoding of the whole corpus where that is cached (``beir_eval.py``
    and the suite encode it), else only the documents that fit are encoded; the passages of split documents
    are encoded apart; every encoding is cached."""
    ids, texts = zip(*iter_documents(corpus))
    t0 = time.perf_counter()
    spans = split(encoder.tokenizer, list(texts), budget(encoder))
    row_ids, row_texts, _, n_split = expand(list(ids), list(texts), [None] * len(ids), spans)
    split_s = time.perf_counter() - t0

    def tokens(some: list[str]) -> int:  # what an encoding reads: each text up to the model's max length
        ids_ = encoder.tokenizer(some, truncation=True, max_length=encoder.max_length)["input_ids"]
        return sum(map(len, ids_))

    counts = {
        "split_s": split_s,
        "documents": len(ids),
        "split": n_split,
        "rows": len(row_ids),
        "tokens_encoded": tokens(row_texts),
        "tokens_encoded_cut": tokens(list(texts)),
    }
    keys = [json.dumps(r) for r in row_ids]
    pieces = [i for i, r in enumerate(row_ids) if isinstance(r, Passage)]
    kept = [i for i, r in enumerate(row_ids) if not isinstance(r, Passage)]
    whole_cached = (
        cache_dir is not None
        and cached_encoding(encoder, [str(d) for d in ids], list(texts), cache_dir) is not None
    )
    if whole_cached or not pieces:  # beir_eval's encoding of the whole corpus, or the corpus itself
        whole_ids, whole = encode_beir_corpus(encoder, corpus, cache_dir)
    else:  # most documents are split: encode only those that fit (cached as their own stream)
        fits = {str(row_ids[i]): corpus[row_ids[i]] for i in kept}
        whole_ids, whole = encode_beir_corpus(encoder, fits, cache_dir) if fits else ([], None)
    layers = np.empty((encoder.n_layers, len(row_ids), encoder.hidden_size), np.float32)
    if pieces:
        _, encoded = encode_beir_corpus(encoder, {keys[i]: {"text": row_texts[i]} for i in pieces}, cache_dir)
        layers[:, pieces] = encoded
    if kept:
        where = {d: i for i, d in enumerate(whole_ids)}
        layers[:, kept] = whole[:, [where[str(row_ids[i])] for i in kept]]
    return dict(zip(keys, ({"text": t} for t in row_texts))), row_ids, (keys, layers), counts


@dataclass
class Prepared:
    """A corpus' vectors as ``Retriever.build`` makes them (the coarse view fitted on its first chunk,
    every coarse vector the fine one projected), ready for ``Retriever.from_vectors``."""

    encoder: Encoder  # the encoder with the fitted head
    coarse: Any
    fine: Any
    doc_ids: list
    coarse_docs: np.ndarray
    fine_docs: np.ndarray
    texts: list[str]
    adaptation: Any


def prepared(
    encoder: Encoder, corpus: dict, cache_dir: Path | None, coarse: str = "4x64", row_ids: list | None = None,
    encoded: Any = None,
) -> Prepared:  # fmt: skip
    """The corpus' vectors as ``Retriever.build`` makes them (see :func:`index_for` for the arguments)."""
    doc_ids, all_layers = encode_beir_corpus(encoder, corpus, cache_dir) if encoded is None else encoded
    doc_ids = doc_ids if row_ids is None else list(row_ids)
    fine = encoder.full_view
    coarse = encoder.check_view(coarse, name="coarse")
    fine_docs = view_matrix(encoder, all_layers, fine)
    texts = [text for _, text in iter_documents(corpus)]
    first = slice(0, CHUNK_SIZE)
    adapted, record = adapt_encoder(
        encoder, coarse, fine, [all_layers[i][first] for i in range(coarse.layer)], fine_docs[first],
        texts=texts[:CHUNK_SIZE], candidates=100,
    )  # fmt: skip
    projection = projection_of(record)  # as build: the fine vectors projected, or the model's own head
    coarse_docs = (
        view_matrix(adapted, all_layers, coarse)
        if projection is None
        else project_fine(fine_docs, projection)
    )
    return Prepared(adapted, coarse, fine, doc_ids, coarse_docs, fine_docs, texts, record)


def index_for(
    encoder: Encoder, corpus: dict, cache_dir: Path | None, coarse: str = "4x64", row_ids: list | None = None,
    encoded: Any = None,
) -> tuple[Retriever, list[str], dict[str, Any]]:  # fmt: skip
    """The corpus indexed as ``Retriever.build`` indexes it, and what its building cost. ``row_ids``: the
    index's ids of the corpus' entries, in order (e.g. :class:`adaptive_retrieval.passages.Passage` rows
    whose texts ``corpus`` holds under string keys); default the corpus' own ids. ``encoded``: the
    corpus' ``(ids, all layers)`` as :func:`adaptive_retrieval.encoding_cache.encode_beir_corpus` returns
    them, when put together elsewhere."""
    p = prepared(encoder, corpus, cache_dir, coarse, row_ids, encoded)
    doc_ids, texts, fine = p.doc_ids, p.texts, p.fine
    t0 = time.perf_counter()
    lexical = LexicalIndex()
    lexical.stage(texts)
    lexical.commit()
    lexical_seconds = time.perf_counter() - t0
    sample = texts[:: max(1, len(texts) // 64)][:64]  # the encoding's cost, timed in this run
    encoder.encode(encoder.as_documents(sample[:2]), [fine], show_progress=False)  # warm: time the work only
    t0 = time.perf_counter()
    encoder.encode(encoder.as_documents(sample), [fine], show_progress=False)
    encode_seconds = (time.perf_counter() - t0) / len(sample) * len(texts)
    retriever = Retriever.from_vectors(
        p.encoder, p.coarse, fine, doc_ids, p.coarse_docs, p.fine_docs,
        adaptation=p.adaptation, backend=FaissOptions(), texts=texts,
    )  # fmt: skip
    coarse_bytes, fine_bytes = retriever.backend.nbytes()
    with tempfile.TemporaryDirectory() as folder:
        retriever.save(folder)
        files = {f.name.split("-")[0]: f.stat().st_size for f in Path(folder).iterdir() if f.is_file()}
    n = len(doc_ids)
    cost = {
        "docs": n,
        "lexical_build_s": lexical_seconds,
        "encode_s_estimated": encode_seconds,
        "lexical_share_of_build": lexical_seconds / (encode_seconds + lexical_seconds),
        "lexical_ram_bytes_per_doc": lexical.stats["bytes"] / n,
        "vector_bytes_per_doc": (coarse_bytes + fine_bytes) / n,
        "saved_bytes_per_doc": {k: v / n for k, v in sorted(files.items())},
        "lexical_terms": lexical.stats["terms"],
        "postings_per_doc": lexical.stats["postings"] / n,
    }
    return retriever, doc_ids, cost


class QueryMemo:
    """Each batch of queries encoded once while active: the fusions of the grid then search through the
    retriever itself (its funnel, fusion and passage grouping) without re-encoding (an eval's shortcut:
    the answers are search's, the encoding is not timed)."""

    def __init__(self) -> None:
        self.seen: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        self.original = retriever_module.encode_queries

    def __enter__(self) -> QueryMemo:
        def memo(enc, queries, *args, **kwargs):  # type: ignore[no-untyped-def]
            key = (id(enc), tuple(queries), *map(repr, args))
            if key not in self.seen:
                self.seen[key] = self.original(enc, queries, *args, **kwargs)
            return self.seen[key]

        retriever_module.encode_queries = memo
        return self

    def __exit__(self, *exc: object) -> None:
        retriever_module.encode_queries = self.original


def grouped_run(retriever: Retriever, qids: list[str], texts: list[str], k: int, **kwargs: Any) -> dict:
    """A BEIR run of ``k`` documents per query through :meth:`Retriever.search_batch` (passages grouped)."""
    hits = retriever.search_batch(texts, k=k, **kwargs)
    return {q: {str(h.doc_id): h.score for h in found} for q, found in zip(qids, hits)}


def evaluate(
    folder: Path,
    encoder: Encoder,
    cache_dir: Path | None,
    splits: Sequence[str],
    grid: Sequence[Fusion],
    max_queries: int | None = None,
    coarse: str = "4x64",
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data_dir, name = dataset_location(folder)
    rows: list[dict[str, Any]] = []
    retriever = whole = cost = None
    for split_name in splits:
        corpus, queries, qrels = load_split(data_dir, name, split_name)
        if name == "scifact" and split_name == "dev":
            check_dev_split([encoder.name], list(queries))
        queries, qrels = first_queries(queries, qrels, max_queries)
        if (
            retriever is None
        ):  # as build indexes it: passages (the default), and BM25 alone over whole documents
            rows_corpus, row_ids, encoded, counts = passage_rows(encoder, corpus, cache_dir)
            retriever, _, cost = index_for(
                encoder, rows_corpus, cache_dir, coarse, row_ids=row_ids, encoded=encoded
            )
            per_document = counts["rows"] / counts["documents"]  # index_for's figures are per row
            cost = {
                **cost, **counts, "docs": counts["documents"], "rows_per_document": per_document,
                "lexical_ram_bytes_per_document": cost["lexical_ram_bytes_per_doc"] * per_document,
                "vector_bytes_per_document": cost["vector_bytes_per_doc"] * per_document,
                "saved_bytes_per_document": {k: v * per_document for k, v in cost["saved_bytes_per_doc"].items()},
            }  # fmt: skip
            whole = LexicalIndex()
            whole.stage([text for _, text in iter_documents(corpus)])
            whole.commit()
        base = {"dataset": name, "split": split_name, "queries": len(queries)}

        def add(
            row: str, run: dict, deep: dict | None = None, extra: dict | None = None, base=base, qrels=qrels,
            **fields: Any,
        ) -> None:  # fmt: skip
            got = score(qrels, run)
            got["recall@100"] = score(qrels, deep)["recall@100"] if deep is not None else got["recall@100"]
            rows.append({**base, "row": row, **fields, **got, **(extra or {})})
            print(f"{base['dataset']} {base['split']:4s} {row:26s} nDCG@10 {rows[-1]['ndcg@10']:.4f} "
                  f"R@10 {rows[-1]['recall@10']:.3f}", file=sys.stderr, flush=True)  # fmt: skip

        run, extra = bm25_run(whole, list(corpus), queries)
        add("bm25", run, run, extra)
        qids, texts = list(queries), list(queries.values())
        every = len(retriever.ids)
        default = retriever.fusion
        timed_dense, extra_dense = timed_run(retriever, queries, hybrid=False)
        timed_hybrid, extra_hybrid = timed_run(retriever, queries)
        with QueryMemo():  # every query encoded once: the rows below search the same vectors
            exact = grouped_run(retriever, qids, texts, K, candidates=every, hybrid=False)
            add(
                "dense exact",
                exact,
                grouped_run(retriever, qids, texts, DEPTH, candidates=every, hybrid=False),
            )
            dense = grouped_run(retriever, qids, texts, K, hybrid=False)
            extra_dense["same_as_search"] = top_overlap(timed_dense, dense)
            add("dense", dense, grouped_run(retriever, qids, texts, DEPTH, hybrid=False), extra_dense,
                **{"overlap@10": top_overlap(dense, exact)})  # fmt: skip
            for fusion in grid:
                retriever.fusion = fusion
                run = grouped_run(retriever, qids, texts, K)
                reference = grouped_run(retriever, qids, texts, K, candidates=every)
                extra = None
                if fusion == default:  # one query at a time, timed, without the memo: the same answers
                    extra = {**extra_hybrid, "same_as_search": top_overlap(timed_hybrid, run)}
                add(f"hybrid {fusion.label()}", run, grouped_run(retriever, qids, texts, DEPTH), extra,
                    fusion=fusion.as_dict(), **{"overlap@10": top_overlap(run, reference)})  # fmt: skip
            retriever.fusion = default
    return rows, {"dataset": name, **(cost or {})}


def choose(rows: list[dict[str, Any]], split: str = "dev") -> dict[str, Any] | None:
    """The fusion chosen on the sets' ``split`` rows: of those never more than :data:`NOISE` below the
    better part, the best mean margin; else the best worst margin (see the docstring)."""
    margins: dict[str, list[float]] = {}
    by_set: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["split"] == split:
            by_set.setdefault(row["dataset"], {})[row["row"]] = row["ndcg@10"]
    for scores in by_set.values():
        best_part = max(scores["bm25"], scores["dense"])
        for name, value in scores.items():
            if name.startswith("hybrid"):
                margins.setdefault(name, []).append(value - best_part)
    if not margins:
        return None
    within = [n for n in margins if min(margins[n]) >= -NOISE]
    if within:
        name = max(within, key=lambda n: (float(np.mean(margins[n])), min(margins[n])))
    else:
        name = max(margins, key=lambda n: (min(margins[n]), float(np.mean(margins[n]))))
    return {"row": name, "worst_margin": min(margins[name]), "mean_margin": float(np.mean(margins[name])),
            "sets": sorted(by_set)}  # fmt: skip


def arguments(description: str | None, argv: Sequence[str] | None) -> argparse.Namespace:
    """The arguments of the evaluations over BEIR-format sets (this one and ``evals.passages_eval``)."""
    ap = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders (…/beir/<name>)"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument(
        "--coarse", default="4x64", help="the coarse view, LAYERxDIM (as Retriever.build's default)"
    )
    ap.add_argument("--splits", nargs="+", default=["dev", "test"])
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--max-queries", type=int, help="only the first N queries of each split (a quick look)")
    ap.add_argument("--out", type=Path, help="write results.json and results.md here")
    args = ap.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    encoder = Encoder.from_pretrained(args.model)
    rows, costs = [], []
    for folder in args.datasets:
        got, cost = evaluate(
            folder, encoder, args.cache_dir, args.splits, GRID, args.max_queries, args.coarse
        )
        rows += got
        costs.append(cost)
        print(json.dumps(cost), file=sys.stderr, flush=True)
    chosen = choose(rows)
    print(markdown_table(rows, COLUMNS))
    print(f"chosen on dev: {chosen}")
    if args.out:
        header = settings(
            labels=(
                f"{args.model}: see its provenance (mpnet-base-2dmse's adapter was trained on SciFact train "
                "qrels, its dev split held out); BM25 saw none; the fusion was chosen on the dev queries' qrels "
                "(each set's own dev split; test queries held out)"
            ),
        )  # fmt: skip
        write_json(args.out / "results.json", {**header, "model": model_info(encoder), "rows": rows,
                                               "costs": costs, "chosen": chosen})  # fmt: skip
        table = (
            markdown_table(rows, COLUMNS)
            + f"\n\nChosen on dev: {chosen}\n\nCosts: {json.dumps(costs, indent=1)}"
        )
        write_markdown(args.out / "results.md", "BM25, dense and hybrid", header, table)


if __name__ == "__main__":
    main()
