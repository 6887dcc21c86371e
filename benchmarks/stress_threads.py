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


def unit_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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

    t0 = time.perf_counter()
    serial = fresh()  # the states the index passes through, searched one query at a time
    states = [answers(serial, queries)]
    for b in range(args.adds):
        serial.add_vectors(*batch(b))
        states.append(answers(serial, queries))
    serial_s = time.perf_counter() - t0
    changed = sum(states[0][i] != states[-1][i] for i in range(len(queries)))
    print(
        f"serial: {len(states)} states x {len(queries)} queries in {serial_s:.0f} s; the adds change {changed} answers",
        flush=True,
    )

    shared = fresh()
    start = threading.Barrier(args.threads + 1)

    def searcher(_: int) -> list[tuple]:
        start.wait()
        return answers(shared, queries)

    def writer() -> None:
        start.wait()
        for b in range(args.adds):
            time.sleep(0.5)
            shared.add_vectors(*batch(b))

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
    final_ok = answers(shared, queries) == states[-1] and len(shared) == n
    result = {
        "command": (
            f"python -m benchmarks.stress_threads --threads {args.threads} --queries {args.queries} --docs "
            f"{args.docs} --adds {args.adds} --batch {args.batch} --seed {args.seed}"
        ),
        **settings(),
        "model": "minilm-l6 (queries encoded for real; document vectors synthetic)",
        "labels": "none",
        "threads": args.threads,
        "queries_per_thread": args.queries,
        "answers_checked": checked,
        "violations": violations,
        "answers_changed_by_the_adds": changed,
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
