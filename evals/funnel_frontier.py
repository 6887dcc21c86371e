"""What a calibrated shortlist and early exit buy, measured through the library's own search path.

    python -m evals.funnel_frontier --datasets ../shared/data/beir/scifact runs/data/beir/manpages \\
        --out results/funnel-frontier

For each BEIR-format set, the index is built as ``Retriever.build`` builds it (from the encoding cache of
``beir_eval.py``; the coarse head fitted to the corpus, label-free), then, for each coarse query
(``projected``: the query's fine vector projected; ``early``: its early layer's head):

1. **Calibrated shortlists.** ``Retriever.calibrate(target=...)`` on the dev queries, or on pseudo-queries
   drawn from the corpus (label-free); the test queries are then searched with both rules it fitted
   (fixed and patient; ``*``: the one it chose) and their overlap@10 with exact fine search and mean
   shortlist are measured, beside the smallest fixed shortlist that reaches the same overlap on the same
   test queries (the ratio the adaptive-funnel issue targets).
2. **Early exit.** A query that stops at its coarse layer returns the coarse index's top 10 (no fine
   vector); the others run to the fine layer and search as calibrated. Queries exit by the gap between
   their 1st and 11th coarse scores (a confident coarse ranking has a wide gap), at thresholds taken from
   the dev queries' gaps; the frontier is mean layers per query against overlap@10 on test.

3. **Shortlist rules and what any rule could reach** (projected queries; ``--only-rules`` runs this part
   alone): on the test queries, the fixed and patient shortlists chosen on the dev queries for the target,
   a *learned depth* (a ridge regression of each query's log depth needed on label-free features of its
   coarse scores and its first 20 fine scores, fitted on the dev queries), and an *oracle bound*: the
   least mean shortlist a rule knowing each test query's exact top 10 could spend for the same overlap
   (a linear relaxation, so a lower bound), each beside the smallest fixed shortlist reaching that overlap
   in steps of 10 and of 1. Two rules read in another order than the coarse one: a *feedback order* (after
   the first 20, a per-query ridge fit of the fine scores read on the documents' coarse vectors orders the
   rest; a fixed number read, or a learned depth) and a *graph walk* (the first candidates, then a
   best-first walk on the fine view's exact nearest-neighbour graph, built here); the oracle's bound is
   that of the coarse order.

No qrels are used anywhere: overlap is against the exact fine view's top 10.
"""

from __future__ import annotations

import argparse
import sys
from itertools import islice, pairwise, product
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_retrieval import DEFAULT_MODEL, Encoder, Retriever, SearchTimings, View, datasets
from adaptive_retrieval.adapt import adapt_encoder, project_fine
from adaptive_retrieval.corpus import iter_documents
from adaptive_retrieval.encoding_cache import DEFAULT_CACHE_DIR, encode_beir_corpus, view_matrix
from adaptive_retrieval.reporting import markdown_table, settings, write_json
from adaptive_retrieval.retriever import CHUNK_SIZE
from adaptive_retrieval.shortlist import overlap_at, patient_sizes
from evals.beir_eval import labels_seen

K = 10
EXIT_SHARES = (0.0, 0.1, 0.25, 0.5, 1.0)


def build(encoder: Encoder, corpus: dict, coarse: View, cache_dir: Path) -> Retriever:
    """The index ``Retriever.build`` makes of ``corpus`` (adapted on the first chunk), from cached states."""
    doc_ids, all_layers = encode_beir_corpus(encoder, corpus, cache_dir)
    fine = encoder.full_view
    fine_docs = view_matrix(encoder, all_layers, fine)
    first = slice(0, CHUNK_SIZE)
    texts = [text for _, text in islice(iter_documents(corpus), CHUNK_SIZE)]
    states = [all_layers[i][first] for i in range(coarse.layer)]
    adapted, record = adapt_encoder(encoder, coarse, fine, states, fine_docs[first], texts=texts)
    if record.projection is None:
        raise SystemExit(f"the adaptation kept the model's head ({record.chosen}); nothing to measure")
    coarse_docs = project_fine(fine_docs, record.projection)
    return Retriever.from_vectors(adapted, coarse, fine, doc_ids, coarse_docs, fine_docs, adaptation=record)


def overlaps(got: np.ndarray, exact: np.ndarray) -> np.ndarray:
    return np.array([len(set(g) & set(e)) / K for g, e in zip(got, exact)])


def smallest_fixed(inside: np.ndarray, want: float) -> int:
    """The smallest fixed shortlist (in steps of 10) whose overlap@10 reaches ``want``; ``inside`` is the
    running count of exact top-10 members among each query's first candidates."""
    depth = inside.shape[1]
    for size in range(K, depth + 1, 10):
        if (inside[:, size - 1] / K).mean() >= want - 1e-9:
            return size
    return depth


def run(
    name: str, r: Retriever, dev: list[str], test: list[str], corpus: dict, target: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The test queries are encoded once; each configuration then runs the search path after encoding
    (the engine's ``coarse_search`` and ``rerank``: what ``Retriever.search_arrays`` runs,
    checked against it once per coarse query)."""
    vectors = r.encoder.encode(test, [r.coarse, r.fine], show_progress=False)
    fine_q = vectors[r.fine]
    _, exact = r.backend.exact_search(fine_q, K)
    depth = min(len(r), 2000)
    rows, exits = [], []
    for coarse_query in ("projected", "early"):
        coarse_q = r.project(fine_q) if coarse_query == "projected" else vectors[r.coarse]
        _, cand = r.backend.coarse_search(coarse_q, depth)
        inside = np.stack([np.isin(c, e) for c, e in zip(cand, exact)]).cumsum(axis=1)
        for source in ("dev queries", "pseudo-queries"):
            if source == "dev queries":
                cal = r.calibrate(dev, target=target, coarse_query=coarse_query)
            else:
                cal = r.calibrate(documents=corpus, target=target, coarse_query=coarse_query, max_queries=500)
            for rule in ("fixed", "patient"):
                if rule == "fixed":
                    _, got, _, read = r.backend.rerank(fine_q, cand[:, : cal.candidates], K)
                else:
                    _, got, _, read = r.backend.rerank(fine_q, cand[:, : cal.cap], K, patience=cal.patience)
                searched_overlap = None
                if source == "dev queries" and rule == cal.rule:  # the same through the whole search path
                    timings = SearchTimings()
                    _, searched = r.search_arrays(test, K, coarse_query=coarse_query, timings=timings)
                    # equal up to float noise: search_arrays encodes in its own batches (other padding)
                    searched_overlap = float(overlaps(searched, exact).mean())
                    same = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(searched, got)]))
                    print(
                        f"  search path: overlap {searched_overlap:.3f}, agrees with this run on {same:.3f} of the top 10",
                        file=sys.stderr,
                    )
                measured = float(overlaps(got, exact).mean())
                mean = float(read.mean())
                fixed = smallest_fixed(inside, measured)
                rows.append(
                    {
                        "dataset": name,
                        "coarse_query": coarse_query,
                        "calibrated_on": source,
                        "calibration_queries": cal.queries,
                        "target": target,
                        "rule": rule,
                        "chosen": "yes" if rule == cal.rule else "",
                        "candidates": cal.candidates,
                        "patience": cal.patience,
                        "test_overlap@10": measured,
                        "mean_shortlist": mean,
                        "p95_shortlist": float(np.percentile(read, 95)),
                        "fixed_for_same_overlap": fixed,
                        "ratio": mean / fixed,
                        "calibration_measured": cal.measured,
                        "calibration_seconds": cal.seconds,
                        "search_path_overlap@10": searched_overlap,
                    }
                )
                print(
                    f"{name:14s} {coarse_query:9s} {source:14s} {rule:7s}{'*' if rule == cal.rule else ' '}: "
                    f"test overlap {measured:.3f}, mean shortlist {mean:6.1f} (fixed for the same: {fixed}, "
                    f"ratio {mean / fixed:.2f})",
                    file=sys.stderr,
                    flush=True,
                )
    # early exit: the coarse top 10 for the most confident queries, the calibrated projected funnel for the rest
    r.calibrate(dev, target=target, coarse_query="projected")
    _, full = r.search_arrays(test, K, coarse_query="projected")
    full_overlap = overlaps(full, exact)
    dev_scores, _ = r.backend.coarse_index.search(
        r.encoder.encode(dev, [r.coarse], show_progress=False)[r.coarse], K + 1
    )
    test_scores, test_ids = r.backend.coarse_index.search(vectors[r.coarse], K + 1)
    dev_gap, test_gap = dev_scores[:, 0] - dev_scores[:, K], test_scores[:, 0] - test_scores[:, K]
    early_overlap = overlaps(test_ids[:, :K], exact)
    for share in EXIT_SHARES:
        threshold = np.quantile(dev_gap, 1 - share) if 0 < share < 1 else (np.inf if share == 0 else -np.inf)
        out = test_gap >= threshold
        layers = np.where(out, r.coarse.layer, r.fine.layer)
        exits.append(
            {
                "dataset": name,
                "dev_exit_share": share,
                "test_exit_share": float(out.mean()),
                "mean_layers": float(layers.mean()),
                "test_overlap@10": float(np.where(out, early_overlap, full_overlap).mean()),
                "exited_overlap@10": float(early_overlap[out].mean()) if out.any() else None,
            }
        )
        print(
            f"{name:14s} exit {share:.2f} of dev: test exits {out.mean():.2f}, mean layers {layers.mean():.1f}, "
            f"overlap {exits[-1]['test_overlap@10']:.3f}",
            file=sys.stderr,
            flush=True,
        )
    return rows, exits


DEPTH_PROBE = 20  # candidates a learned-depth query reads before its depth is predicted


def depth_features(coarse: np.ndarray, fine: np.ndarray, probe: int = DEPTH_PROBE) -> np.ndarray:
    """Label-free features of how deep a query's fine top 10 lies among its coarse candidates: the gaps
    of its coarse scores (``(n, M)``, coarse order) and what the fine scores of its first ``probe``
    candidates say (their 10th best, how far down its top 10 reaches, how many came from below the
    coarse top 10, their spread against the coarse scores)."""
    m, last = probe, coarse.shape[1] - 1
    probe_scores = fine[:, :m]
    tenth = -np.partition(-probe_scores, K - 1, axis=1)[:, K - 1]
    top = np.argsort(-probe_scores, axis=1)[:, :K]
    offset = np.median(probe_scores - coarse[:, :m], axis=1)

    def c(i: int) -> np.ndarray:
        return coarse[:, min(i, last)]

    return np.column_stack(
        [
            c(0) - c(9), c(9) - c(49), c(9) - c(99), c(9) - c(299),
            tenth - c(m) - offset, tenth - c(100) - offset,
            top.max(axis=1), (top >= K).sum(axis=1), (probe_scores - coarse[:, :m]).std(axis=1),
            probe_scores.max(axis=1) - tenth, c(0), tenth,
        ]
    )  # fmt: skip


def depth_needed(members: np.ndarray) -> np.ndarray:
    """Per query, the shortlist that holds 9 of its exact top 10 (all it has within the depth, if fewer)."""
    counts = members.cumsum(axis=1)
    want = np.minimum(K - 1, counts[:, -1])
    return np.argmax(counts >= want[:, None], axis=1) + 1


def learned_depths(
    dev: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    target: float,
    probe: int = DEPTH_PROBE,
    step: int = 10,
) -> tuple[np.ndarray, dict[str, Any]]:
    """A shortlist per test query from a ridge regression of log(depth needed) on :func:`depth_features`
    (of its first ``probe`` candidates), fitted on the dev queries, rounded up to a multiple of ``step``;
    the margin added to its prediction is the smallest that meets ``target`` on the dev queries'
    out-of-fold predictions (5 folds), so no dev query is judged by a fit it was in."""
    dev_coarse, dev_fine, dev_members = dev
    X, y = depth_features(dev_coarse, dev_fine, probe), np.log(depth_needed(dev_members))
    cap = dev_members.shape[1]

    def fit(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        mean, scale = X[rows].mean(axis=0), X[rows].std(axis=0) + 1e-9
        A = np.column_stack([np.ones(len(rows)), (X[rows] - mean) / scale])
        w = np.linalg.solve(A.T @ A + 1e-2 * np.eye(A.shape[1]), A.T @ y[rows])
        return w, mean, scale

    def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray], features: np.ndarray) -> np.ndarray:
        w, mean, scale = model
        return np.column_stack([np.ones(len(features)), (features - mean) / scale]) @ w

    def sizes(predicted: np.ndarray, margin: float) -> np.ndarray:
        return np.clip(np.ceil(np.exp(predicted + margin) / step) * step, probe, cap).astype(int)

    folds = np.arange(len(X)) % 5
    out_of_fold = np.empty(len(X))
    for f in range(5):
        out_of_fold[folds == f] = predict(fit(np.flatnonzero(folds != f)), X[folds == f])
    margins = np.arange(-1.0, 4.0, 0.05)
    margin = next(
        (m for m in margins if overlap_at(dev_members, sizes(out_of_fold, m), K).mean() >= target),
        margins[-1],
    )
    test_coarse, test_fine = test
    features = depth_features(test_coarse, test_fine, probe)
    return sizes(predict(fit(np.arange(len(X))), features), margin), {
        "margin": float(margin),
        "probe": probe,
        "step": step,
    }


# the feedback order reads its first DEPTH_PROBE in coarse order: a learned depth's features are the same
FEEDBACK_FIRST = DEPTH_PROBE
FEEDBACK_RIDGE, FEEDBACK_POOL = 0.3, 400  # chosen on stsb-para's dev queries
WALK_DEGREES = (2, 4, 8)
WALKS = list(product((10, 15, 20, 30, 40), WALK_DEGREES, (2, 3, 4, 6)))  # (first, degree, beam)


def feedback_orders(
    docs: np.ndarray, cand: np.ndarray, coarse_q: np.ndarray, coarse: np.ndarray, fine: np.ndarray
) -> np.ndarray:
    """Per query, the order a *feedback* re-rank reads its first ``FEEDBACK_POOL`` coarse candidates in
    (as columns of ``cand``): the first ``FEEDBACK_FIRST`` in coarse order; then, every 10 candidates,
    a ridge fit of the fine scores read so far on those documents' coarse vectors (``docs``), shrunk
    towards the coarse query scaled to the fine scores, orders the unread ones by predicted fine score.
    ``coarse``/``fine``: each query's coarse and fine scores of its candidates, in coarse order."""
    pool = min(FEEDBACK_POOL, cand.shape[1])
    orders = np.empty((len(cand), pool), dtype=np.int64)
    eye = FEEDBACK_RIDGE * np.eye(docs.shape[1])
    for q in range(len(cand)):
        x, c, f = docs[cand[q, :pool]], coarse[q, :pool], fine[q, :pool]
        read, rest = list(range(min(FEEDBACK_FIRST, pool))), np.arange(min(FEEDBACK_FIRST, pool), pool)
        while rest.size:
            r = np.array(read)
            xc, cc, fc = x[r] - x[r].mean(axis=0), c[r] - c[r].mean(), f[r] - f[r].mean()
            prior = (cc @ fc) / (cc @ cc + 1e-9) * coarse_q[q]  # the coarse query, scaled
            w = np.linalg.solve(xc.T @ xc + eye, xc.T @ fc + FEEDBACK_RIDGE * prior)
            take = rest[np.argsort(-(x[rest] @ w), kind="stable")[:10]]
            read += take.tolist()
            rest = np.setdiff1d(rest, take)
        orders[q] = read
    return orders


def fine_graph(vectors: np.ndarray, degree: int, block: int = 2048) -> np.ndarray:
    """Each document's ``degree`` nearest documents by fine score (exact; itself left out)."""
    graph = np.empty((len(vectors), degree), dtype=np.int64)
    for lo in range(0, len(vectors), block):
        s = vectors[lo : lo + block] @ vectors.T
        s[np.arange(len(s)), np.arange(lo, lo + len(s))] = -np.inf
        part = np.argpartition(-s, degree, axis=1)[:, :degree]
        graph[lo : lo + block] = np.take_along_axis(
            part, np.argsort(-np.take_along_axis(s, part, axis=1), axis=1), axis=1
        )
    return graph


def graph_walk(
    vectors: np.ndarray,
    graph: np.ndarray,
    query: np.ndarray,
    cand: np.ndarray,
    first: int,
    degree: int,
    beam: int,
) -> list[int]:
    """The documents a *graph walk* re-rank reads, in order: the first ``first`` coarse candidates, then
    best-first on the fine view's nearest-neighbour ``graph``: the best read document not yet expanded
    among the best ``beam`` read has its ``degree`` nearest neighbours read, until the best ``beam`` are
    all expanded (the search HNSW runs on its bottom layer, seeded by the coarse stage)."""
    score = {int(j): float(vectors[j] @ query) for j in cand[:first]}
    order, expanded = list(score), set()
    while True:
        best = sorted(score, key=score.__getitem__, reverse=True)[:beam]
        node = next((j for j in best if j not in expanded), None)
        if node is None:
            return order
        expanded.add(node)
        for j in graph[node, :degree].tolist():
            if j not in score:
                score[j] = float(vectors[j] @ query)
                order.append(j)


def oracle_bound(members: np.ndarray, target: float) -> float:
    """The least mean shortlist any per-query rule could have for mean overlap@10 ``target``, knowing each
    query's exact top 10 (a lower bound: the linear relaxation, each query's (depth, members found) curve
    replaced by its convex hull, the cheapest depth per member bought first)."""
    n = len(members)
    segments, have = [], 0
    for row in members:
        positions = np.flatnonzero(row) + 1
        first = int((positions <= K).sum())
        have += first
        hull = [(K, first)]
        for point in [(int(p), j + 1) for j, p in enumerate(positions) if p > K]:
            while len(hull) >= 2:  # keep the hull convex: members per candidate falling
                (x1, y1), (x2, y2) = hull[-2], hull[-1]
                if (x2 - x1) * (point[1] - y1) >= (point[0] - x1) * (y2 - y1):
                    hull.pop()
                else:
                    break
            hull.append(point)
        segments += [((x2 - x1) / (y2 - y1), x2 - x1, y2 - y1) for (x1, y1), (x2, y2) in pairwise(hull)]
    need, cost = target * n * K - have, float(K * n)
    for _, dx, dy in sorted(segments):
        if need <= 0:
            break
        take = min(1.0, need / dy)
        cost, need = cost + take * dx, need - take * dy
    return cost / n


def rules(name: str, r: Retriever, dev: list[str], test: list[str], target: float) -> list[dict[str, Any]]:
    """Shortlist rules side by side on the test queries (each chosen on the dev queries for ``target``):
    fixed, patient, a learned depth per query, a feedback order, a graph walk, and the oracle's lower
    bound (for the coarse order) at the overlap each reached; beside each, the smallest fixed shortlist
    (in steps of 10, and of 1) reaching the same overlap. A shortlist is the fine vectors a query scores."""
    depth = min(len(r), 1000)
    found, queried = {}, {}
    for split, queries in (("dev", dev), ("test", test)):
        fine_q = r.encoder.encode(queries, [r.fine], show_progress=False)[r.fine]
        _, exact = r.backend.exact_search(fine_q, K)
        coarse_q = r.project(fine_q)
        coarse, cand = r.backend.coarse_search(coarse_q, depth)
        fine = np.stack(
            [r.backend.fine_scores(fine_q[q : q + 1], cand[q : q + 1])[0] for q in range(len(cand))]
        )
        found[split] = (coarse, fine, np.stack([np.isin(c, e) for c, e in zip(cand, exact)]))
        queried[split] = (fine_q, coarse_q, cand, exact)
    (_, dev_fine, dev_members), (test_coarse, test_fine, test_members) = found["dev"], found["test"]
    inside = test_members.cumsum(axis=1)

    def fixed(want: float, grain: int) -> int:
        return next(
            (s for s in range(K, depth + 1, grain) if (inside[:, s - 1] / K).mean() >= want - 1e-9), depth
        )

    fixed_dev = next(
        s
        for s in [*range(K, depth, 10), depth]
        if overlap_at(dev_members, np.full(len(dev_members), s), K).mean() >= target
    )
    patience = next(
        (
            p
            for p in range(10, depth, 10)
            if overlap_at(dev_members, patient_sizes(dev_fine, K, p), K).mean() >= target
        ),
        depth,
    )
    chosen = {
        "fixed": (np.full(len(test_members), fixed_dev), {"candidates": fixed_dev}),
        "patient": (patient_sizes(test_fine, K, patience), {"patience": patience}),
        "learned depth": learned_depths(found["dev"], (test_coarse, test_fine), target),
        # the same read after the top 10 only, any depth (no floor of 20, no steps of 10)
        "learned depth, probe 10, steps of 1": learned_depths(
            found["dev"], (test_coarse, test_fine), target, probe=K, step=1
        ),
    }  # fmt: skip
    members = dict.fromkeys(chosen, test_members)
    # read orders other than the coarse one: feedback (a fixed number read, chosen on dev), graph walk
    docs = r.backend.vectors("coarse", 0, len(r))
    reordered = {}
    for split in ("dev", "test"):
        (coarse, fine, member), (_, coarse_q, cand, _) = found[split], queried[split]
        reordered[split] = np.take_along_axis(
            member, feedback_orders(docs, cand, coarse_q, coarse, fine), axis=1
        )
    budget = next(
        (s for s in range(K, FEEDBACK_POOL + 1, 10)
         if overlap_at(reordered["dev"], np.full(len(dev_members), s), K).mean() >= target),
        FEEDBACK_POOL,
    )  # fmt: skip
    chosen["feedback order"] = (np.full(len(test_members), budget), {"candidates": budget})
    # the learned depth on the feedback order (its features read the first 20, in coarse order either way)
    chosen["feedback order, learned depth"] = learned_depths(
        (*found["dev"][:2], reordered["dev"]), (test_coarse, test_fine), target
    )
    members["feedback order"] = members["feedback order, learned depth"] = reordered["test"]
    vectors = r.backend.vectors("fine", 0, len(r))
    graph = fine_graph(vectors, max(WALK_DEGREES))
    walked = {split: {} for split in ("dev", "test")}
    for split, (first, degree, beam) in product(("dev", "test"), WALKS):
        fine_q, _, cand, exact = queried[split]
        orders = [graph_walk(vectors, graph, q, c, first, degree, beam) for q, c in zip(fine_q, cand)]
        width = max(map(len, orders))
        walked[split][first, degree, beam] = (
            np.array([len(o) for o in orders]),
            np.stack([np.isin(np.pad(o, (0, width - len(o)), constant_values=-1), e) for o, e in zip(orders, exact)]),
        )  # fmt: skip
    met = [w for w, (read, mem) in walked["dev"].items() if overlap_at(mem, read, K).mean() >= target]
    walk = (
        min(met, key=lambda w: walked["dev"][w][0].mean())
        if met
        else max(walked["dev"], key=lambda w: overlap_at(walked["dev"][w][1], walked["dev"][w][0], K).mean())
    )
    chosen["graph walk"] = (walked["test"][walk][0], dict(zip(("first", "degree", "beam"), walk)))
    members["graph walk"] = walked["test"][walk][1]
    rows = []
    for rule, (sizes, params) in chosen.items():
        got = float(overlap_at(members[rule], sizes, K).mean())
        f10, f1 = fixed(got, 10), fixed(got, 1)
        bound = oracle_bound(test_members, got)
        rows.append(
            {
                "dataset": name, "rule": rule, "params": params, "test_overlap@10": got,
                "mean_shortlist": float(sizes.mean()), "p95_shortlist": float(np.percentile(sizes, 95)),
                "fixed_for_same_overlap": f10, "ratio": float(sizes.mean() / f10),
                "fixed_for_same_overlap_step_1": f1, "ratio_step_1": float(sizes.mean() / f1),
                "oracle_bound": bound, "oracle_ratio": bound / f10, "oracle_ratio_step_1": bound / f1,
            }
        )  # fmt: skip
        print(
            f"{name:14s} {rule:13s}: test overlap {got:.3f}, mean shortlist {sizes.mean():6.1f} (fixed for the "
            f"same: {f10} / {f1} in steps of 1; ratio {sizes.mean() / f10:.2f} / {sizes.mean() / f1:.2f}); "
            f"oracle bound {bound:.1f} (ratio {bound / f10:.2f} / {bound / f1:.2f})",
            file=sys.stderr,
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--datasets", type=Path, nargs="+", required=True, help="BEIR-format folders with dev and test"
    )
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--coarse", default="4x64")
    ap.add_argument("--target", type=float, default=0.95, help="the overlap@10 calibrated for")
    ap.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--only-rules", action="store_true", help="only part 3 (shortlist rules beside the oracle's bound)"
    )
    args = ap.parse_args(argv)
    encoder = Encoder.from_pretrained(args.model)
    coarse = encoder.check_view(View.parse(args.coarse, name="--coarse"), name="--coarse")
    rows, exits, rule_rows, info = [], [], [], {}
    for folder in args.datasets:
        root, name = folder.parent.parent, folder.name
        corpus, dev_q, _ = datasets.load_split(root, name, "dev")
        _, test_q, _ = datasets.load_split(root, name, "test")
        info[name] = {"documents": len(corpus), "dev_queries": len(dev_q), "test_queries": len(test_q)}
        print(
            f"{name}: {len(corpus)} documents, {len(dev_q)} dev / {len(test_q)} test queries", file=sys.stderr
        )
        r = build(encoder, corpus, coarse, args.cache_dir)
        rule_rows += rules(name, r, list(dev_q.values()), list(test_q.values()), args.target)
        if not args.only_rules:
            mine, exit_rows = run(name, r, list(dev_q.values()), list(test_q.values()), corpus, args.target)
            rows += mine
            exits += exit_rows
    columns = [
        ("dataset", "dataset", "s"),
        ("coarse query", "coarse_query", "s"),
        ("calibrated on", "calibrated_on", "s"),
        ("rule", "rule", "s"),
        ("chosen", "chosen", "s"),
        ("test ∩fine@10", "test_overlap@10", ".3f"),
        ("mean shortlist", "mean_shortlist", ".1f"),
        ("p95", "p95_shortlist", ".0f"),
        ("fixed for same ∩", "fixed_for_same_overlap", "d"),
        ("ratio", "ratio", ".2f"),
    ]
    exit_columns = [
        ("dataset", "dataset", "s"),
        ("exit share (dev threshold)", "dev_exit_share", ".2f"),
        ("test exits", "test_exit_share", ".2f"),
        ("mean layers", "mean_layers", ".2f"),
        ("test ∩fine@10", "test_overlap@10", ".3f"),
        ("∩fine@10 of exited", "exited_overlap@10", ".3f"),
    ]
    rule_columns = [
        ("dataset", "dataset", "s"),
        ("rule (chosen on dev)", "rule", "s"),
        ("test ∩fine@10", "test_overlap@10", ".3f"),
        ("mean shortlist", "mean_shortlist", ".1f"),
        ("p95", "p95_shortlist", ".0f"),
        ("fixed for same ∩", "fixed_for_same_overlap", "d"),
        ("ratio", "ratio", ".2f"),
        ("fixed, steps of 1", "fixed_for_same_overlap_step_1", "d"),
        ("ratio (steps of 1)", "ratio_step_1", ".2f"),
        ("oracle bound", "oracle_bound", ".1f"),
        ("oracle ratio", "oracle_ratio", ".2f"),
        ("oracle ratio (steps of 1)", "oracle_ratio_step_1", ".2f"),
    ]
    table = markdown_table(rule_rows, rule_columns)
    if not args.only_rules:
        table = markdown_table(rows, columns) + "\n\n" + markdown_table(exits, exit_columns) + "\n\n" + table
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table + "\n")
    write_json(
        args.out / "results.json",
        {
            **settings(
                model=args.model, coarse=args.coarse, k=K, datasets=info, labels=labels_seen([args.model])
            ),
            "rows": rows,
            "early_exit": exits,
            "rules": rule_rows,
        },
    )


if __name__ == "__main__":
    main()
