"""How many coarse candidates each query's re-rank reads, and the calibration that decides it.

The funnel re-ranks a query's coarse candidates in coarse order. A *fixed* shortlist reads the same
number for every query. A *patient* shortlist reads them ``step`` at a time and stops once the last
``patience`` candidates it read brought nothing into the fine top ``k`` (the deepest member of the
current top ``k`` sits at least ``patience`` places above the end of what was read), or at ``cap``. Easy
queries, whose top ``k`` is found early, stop early; hard ones read on.

:func:`calibrate_shortlist` picks both kinds for a fidelity target: the share of the exact fine top
``k`` a search returns (``overlap@k``, label-free), measured on sample queries against exact search.
It fits on one half of the queries and reports what the choice measured on the other half.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .errors import InvalidArgument

STEP = 10
"""Candidates read per step of a patient shortlist (and the granularity of calibrated sizes)."""
MIN_QUERIES = 20
"""The fewest queries :func:`calibrate_shortlist` accepts (half fit, half check)."""
MAX_CANDIDATES = 1000
"""The deepest shortlist a calibration considers, unless the corpus is smaller."""


def top_positions(scores: np.ndarray, k: int) -> np.ndarray:
    """For ``(n, m)`` fine scores in coarse order (``-inf``: no candidate), the positions of each row's
    best ``k``, ties to the earlier position, as ``(n, min(k, m))``."""
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def settled(scores: np.ndarray, k: int, patience: int) -> np.ndarray:
    """Whether each row's top ``k`` is settled after reading its ``m = scores.shape[1]`` candidates: the
    deepest of its best ``k`` (counting only real candidates) is at least ``patience`` places above
    ``m``. A row with fewer than ``k`` real candidates is never settled by this rule."""
    m = scores.shape[1]
    top = top_positions(scores, k)
    real = np.isfinite(np.take_along_axis(scores, top, axis=1))
    deepest = np.where(real, top, -1).max(axis=1) + 1
    return (real.sum(axis=1) >= min(k, m)) & (m - deepest >= patience)


def patient_sizes(
    scores: np.ndarray, k: int, patience: int, *, step: int = STEP, cap: int | None = None
) -> np.ndarray:
    """How many candidates a patient shortlist reads for each row of ``(n, M)`` fine scores in coarse
    order (all known: a simulation of :func:`patient_rerank`, which reads them as it goes)."""
    n, total = scores.shape
    cap = total if cap is None else min(cap, total)
    sizes = np.full(n, cap)
    active = np.arange(n)
    m = min(max(k, step), cap)
    while active.size and m < cap:
        done = settled(scores[active, :m], k, patience)
        sizes[active[done]] = m
        active = active[~done]
        m = min(m + step, cap)
    return sizes


def patient_rerank(
    score: Callable[[np.ndarray, np.ndarray], np.ndarray],
    candidates: np.ndarray,
    k: int,
    patience: int,
    *,
    step: int = STEP,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-rank each row of ``candidates`` (``(n, cap)`` ids in coarse order, ``-1``: none) ``step`` at a
    time until :func:`settled`; ``score(rows, ids)`` gives the fine scores of ``ids`` (``(r, s)``) for
    queries ``rows``. Returns ``(D, I)`` of the best ``k`` read (``(n, k)``, padded with ``-inf``/``-1``,
    ties to the lower id) and how many candidates each query read."""
    n, cap = candidates.shape
    scores = np.full((n, cap), -np.inf, dtype=np.float32)
    read = np.zeros(n, dtype=np.int64)
    active = np.arange(n)
    m = min(max(k, step), cap)
    while active.size:
        start = read[active[0]]  # every active row has read the same count
        ids = candidates[active, start:m]
        valid = ids >= 0
        block = score(active, np.where(valid, ids, 0))
        scores[active, start:m] = np.where(valid, block, -np.inf)
        read[active] = m
        if m >= cap:
            break
        active = active[~settled(scores[active, :m], k, patience)]
        m = min(m + step, cap)
    D = np.full((n, k), -np.inf, dtype=np.float32)
    I = np.full((n, k), -1, dtype=np.int64)
    for q in range(n):
        ids, s = candidates[q, : read[q]], scores[q, : read[q]]
        keep = np.isfinite(s) & (ids >= 0)
        ids, s = ids[keep], s[keep]
        order = np.lexsort((ids, -s))[:k]
        D[q, : len(order)], I[q, : len(order)] = s[order], ids[order]
    return D, I, read


def overlap_at(members: np.ndarray, sizes: np.ndarray, k: int) -> np.ndarray:
    """Per query, the share of its exact top ``k`` inside the first ``sizes[q]`` candidates, from
    ``members`` (``(n, M)`` booleans: candidate ``j`` in coarse order is one of the exact top ``k``)."""
    counts = np.cumsum(members, axis=1)
    return counts[np.arange(len(sizes)), np.asarray(sizes) - 1] / k


@dataclass
class Calibration:
    """What :meth:`adaptive_retrieval.Retriever.calibrate` chose for a fidelity target, and what it measured.

    ``candidates`` is the smallest fixed shortlist that met ``target`` on the fit half; ``patience``
    the smallest patience of a patient shortlist (capped at ``cap``) that did; ``rule`` the one searches
    use (the one that read fewer candidates on the fit half). ``measured`` holds both rules' overlap@k
    and mean shortlist on the check half (queries not used to choose). ``documents``: the index's size
    when calibrated (0: not recorded, an index saved before it was); an index grown past twice that
    drops its calibration (:meth:`stale_after`). ``knobs``: the search width chosen with the shortlist
    where the engine offers several (an IVF index's ``nprobe``; empty otherwise), searched with unless a
    call gives its own."""

    target: float
    k: int
    coarse_query: str
    queries: str
    fit_queries: int
    check_queries: int
    rule: str
    candidates: int
    patience: int
    cap: int
    step: int = STEP
    measured: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    documents: int = 0
    knobs: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """As saved in a manifest: ``documents`` rides in ``measured`` (as ``index_documents``), where a
        library version that predates it reads it as one more figure instead of refusing the record."""
        out = asdict(self)
        out["measured"] = {**out["measured"], "index_documents": out.pop("documents")}
        return out

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Calibration:
        """The inverse of :meth:`as_dict` (a record saved before ``documents`` was kept has 0)."""
        record = dict(record)
        measured = dict(record.get("measured") or {})
        documents = int(measured.pop("index_documents", record.pop("documents", 0)))
        return cls(**{**record, "measured": measured, "documents": documents})

    def stale_after(self, documents: int) -> bool:
        """Whether an index of ``documents`` has outgrown this calibration: more than twice the size it
        was calibrated at, or any larger when its fixed shortlist was the whole index then (a size
        chosen because no other existed, not because it sufficed)."""
        if not self.documents or documents <= self.documents:
            return False
        whole = self.rule == "fixed" and self.candidates >= self.documents - 1
        return whole or documents > 2 * self.documents


def check_calibration(queries: int, target: float) -> None:
    """Refuse a calibration that cannot work (too few queries, a target outside (0, 1]), before any
    query is encoded."""
    if queries < MIN_QUERIES:
        raise InvalidArgument(
            f"calibration needs at least {MIN_QUERIES} queries (half to fit, half to check), got {queries}"
        )
    if isinstance(target, bool) or not isinstance(target, (int, float)) or not 0 < target <= 1:
        raise InvalidArgument(f"target must be in (0, 1], got {target!r}")


def calibrate_shortlist(
    scores: np.ndarray,
    members: np.ndarray,
    k: int,
    target: float,
    *,
    seed: int = 0,
    step: int = STEP,
) -> tuple[dict[str, Any], dict[str, float]]:
    """Choose a fixed shortlist and a patience for ``target`` mean overlap@k on half the queries.

    ``scores``: ``(n, M)`` fine scores of each query's first ``M`` coarse candidates, in coarse order;
    ``members``: ``(n, M)``, whether each is one of the query's exact top ``k``. Returns the choice
    (``candidates``, ``patience``, ``rule``, ``cap``, fit/check counts) and what it measured on the
    other half."""
    n, cap = scores.shape
    check_calibration(n, target)
    order = np.random.default_rng(seed).permutation(n)
    fit, check = np.sort(order[: n // 2]), np.sort(order[n // 2 :])
    sizes = [s for s in range(step, cap, step) if s >= k] + [cap]

    def fixed_overlap(rows: np.ndarray, size: int) -> float:
        return float(overlap_at(members[rows], np.full(len(rows), size), k).mean())

    candidates = next((s for s in sizes if fixed_overlap(fit, s) >= target), cap)
    patience, patient_mean = cap, float(cap)
    for p in range(step, cap + step, step):
        got = patient_sizes(scores[fit], k, p, step=step, cap=cap)
        if overlap_at(members[fit], got, k).mean() >= target:
            patience, patient_mean = p, float(got.mean())
            break
    rule = "patient" if patient_mean < candidates else "fixed"
    checked = patient_sizes(scores[check], k, patience, step=step, cap=cap)
    measured = {
        "fit_overlap": fixed_overlap(fit, candidates),  # below target: no shortlist up to cap reached it
        "fixed_overlap": fixed_overlap(check, candidates),
        "fixed_mean_shortlist": float(candidates),
        "patient_overlap": float(overlap_at(members[check], checked, k).mean()),
        "patient_mean_shortlist": float(checked.mean()),
        "patient_p95_shortlist": float(np.percentile(checked, 95)),
    }
    # the fixed shortlist that matches the patient rule's measured overlap on the same (check) queries
    same = measured["patient_overlap"]
    measured["fixed_for_patient_overlap"] = float(
        next((s for s in sizes if fixed_overlap(check, s) >= same - 1e-9), cap)
    )
    choice = {
        "candidates": candidates,
        "patience": patience,
        "rule": rule,
        "cap": cap,
        "step": step,
        "fit_queries": len(fit),
        "check_queries": len(check),
    }
    return choice, measured
