"""8 threads x 1,000 queries against one retriever while another thread adds documents beside them.

    python -m benchmarks.stress_threads --threads 8 --queries 1000 --out docs/results/stress-threads

The rule (``adaptive_retrieval.locks``): searches run at once; an ``add`` commits under the write lock,
so every search sees the index before or after each add, never a part of one. The index (``minilm-l6``'s
2x64 and 6x384 views over synthetic document vectors; real query encoding) starts with ``--docs``
documents; a writer thread adds ``--adds`` batches of ``--batch`` documents while the threads search.
Beforehand, the same queries are searched serially on each state the index will pass through (start,
after add 1, ...). Each thread's answers are then checked: every one must equal the serial answer of
some state, and the states must follow the adds' order within a thread (a search never sees an add
undone). Prints the count of answers checked and of violations; writes ``results.json``.

``--churn``: after each add, the writer also upserts ``--batch // 5`` documents (new vectors for known
ids) and deletes as many, each its own write and its own state (compaction runs when due).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.reporting import settings
from benchmarks.bench_common import unit_rows

COARSE, FINE = (2, 64), (6, 384)
WORDS = [
    "protein",
    "cell",
    "gene",
    "vitamin",
    "fracture",
    "risk",
    "trial",
    "dose",
    "cancer",
    "brain",
    "sleep",
    "memory",
    "heart",
    "blood",
    "pressure",
    "insulin",
    "muscle",
    "virus",
    "vaccine",
    "bone",
    "immune",
    "signal",
    "receptor",
    "enzyme",
    "tumour",
    "growth",
    "mouse",
    "patient",
    "therapy",
    "drug",
    "effect",
    "study",
]


def answers(r: Retriever, queries: list[str]) -> list[tuple]:
    return [tuple(h.doc_id for h in r.search(q, k=10)) for q in queries]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=5000)
    ap.add_argument("--adds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--churn", action="store_true", help="upserts and deletes between the adds")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    words = random.Random(args.seed)
    queries = [" ".join(words.choices(WORDS, k=words.randint(3, 12))) for _ in range(args.queries)]
    n = args.docs + args.adds * args.batch
    coarse, fine = unit_rows(n, COARSE[1], rng), unit_rows(n, FINE[1], rng)
    encoder = Encoder.from_pretrained("minilm-l6")

    def batch(b: int) -> tuple[list[int], np.ndarray, np.ndarray]:
        lo = args.docs + b * args.batch
        return list(range(lo, lo + args.batch)), coarse[lo : lo + args.batch], fine[lo : lo + args.batch]

    def fresh() -> Retriever:
        d = args.docs
        return Retriever.from_vectors(
            encoder, COARSE, FINE, list(range(d)), coarse[:d], fine[:d], candidates=50
        )

    churned = max(args.batch // 5, 1)
    new_coarse, new_fine = (
        unit_rows(args.adds * churned, COARSE[1], rng),
        unit_rows(args.adds * churned, FINE[1], rng),
    )

    def writes() -> list:
        """The writes, in order: each a function of the retriever (one state after each)."""
        out = []
        for b in range(args.adds):
            out.append(lambda r, b=b: r.add_vectors(*batch(b)))
            if args.churn:
                ids = list(range(b * 2 * churned, b * 2 * churned + churned))  # of the first documents
                part = slice(b * churned, (b + 1) * churned)
                out.append(
                    lambda r, ids=ids, p=part: r.writer.add_batches(
                        [(ids, new_coarse[p], new_fine[p])], replace=True
                    )
                )
                gone = list(range(b * 2 * churned + churned, (b + 1) * 2 * churned))
                out.append(lambda r, gone=gone: r.delete(gone))
        return out

    t0 = time.perf_counter()
    serial = fresh()  # the states the index passes through, searched one query at a time
    serial.compact_at = 0.05  # compaction too, as it comes due
    states = [answers(serial, queries)]
    for write in writes():
        write(serial)
        states.append(answers(serial, queries))
    serial_s = time.perf_counter() - t0
    changed = sum(states[0][i] != states[-1][i] for i in range(len(queries)))
    print(
        f"serial: {len(states)} states x {len(queries)} queries in {serial_s:.0f} s; the writes change {changed} answers",
        flush=True,
    )

    shared = fresh()
    shared.compact_at = 0.05
    start = threading.Barrier(args.threads + 1)

    def searcher(_: int) -> list[tuple]:
        start.wait()
        return answers(shared, queries)

    def writer() -> None:
        start.wait()
        for write in writes():
            time.sleep(0.5 if not args.churn else 0.2)
            write(shared)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.threads + 1) as pool:
        adding = pool.submit(writer)
        found = list(pool.map(searcher, range(args.threads)))
        adding.result()
    threaded_s = time.perf_counter() - t0

    violations, seen_states = 0, set()
    for thread in found:
        current = 0
        for i, answer in enumerate(thread):
            possible = [s for s in range(current, len(states)) if states[s][i] == answer]
            if not possible:
                violations += 1
                continue
            current = possible[0]
            seen_states.add(current)
    checked = sum(len(t) for t in found)
    final_ok = answers(shared, queries) == states[-1] and len(shared) == len(serial)
    result = {
        **settings(benchmark="stress_threads" + (" --churn" if args.churn else "")),
        "model": "minilm-l6 (queries encoded for real; document vectors synthetic)",
        "labels": "none",
        "threads": args.threads,
        "queries_per_thread": args.queries,
        "answers_checked": checked,
        "violations": violations,
        "answers_changed_by_the_writes": changed,
        "writes": len(states) - 1,
        "states_seen_by_searches": sorted(seen_states),
        "final_index_equals_serial": final_ok,
        "serial_s": round(serial_s, 1),
        "threaded_s": round(threaded_s, 1),
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
