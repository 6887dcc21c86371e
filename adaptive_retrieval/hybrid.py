"""Dense and lexical evidence in one ranking: the lexical index's candidates join the funnel's, the fine
view scores the union, and a :class:`Fusion` rule combines the two scores.

For each query: the funnel's fine-ranked candidates (its top ``depth``, within its shortlist) and the
lexical index's top ``depth`` (:meth:`adaptive_retrieval.lexical.LexicalIndex.top`, among the rows the
search may return) form the union; the lexical candidates the funnel did not score get their fine
scores (:meth:`adaptive_retrieval.backends.Backend.fine_scores`), the funnel's candidates their BM25
scores, so every document of the union is judged on both. The rule then ranks the union:

- ``"convex"``: ``weight * minmax(fine) + (1 - weight) * minmax(bm25)``, each score min-max scaled over
  the query's union (a query with no known term is ranked by the fine view alone);
- ``"rrf"``: reciprocal rank fusion, ``weight / (60 + dense rank) + (1 - weight) / (60 + lexical rank)``
  (a document absent from one list gets nothing from it).

The default, ``convex`` with the fine view weighted 0.8, was chosen on dev queries by ``python -m
evals.hybrid_eval`` over five sets (the best worst-case margin over the better of BM25 alone and dense
alone; docs/results/hybrid, docs/measurements.md).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends.base import Backend
from .errors import InvalidArgument
from .lexical import LexicalIndex, top_rows

RULES = ("convex", "rrf")
RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al., 2009)."""


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search combines the fine view's and BM25's evidence (see the module docstring).

    Args:
        rule: ``"convex"`` or ``"rrf"``.
        weight: the fine view's share, in ``[0, 1]`` (1: dense alone, over the union of candidates).
        depth: the lexical candidates per query, and the funnel's fine-ranked candidates fused with them.
    """

    rule: str = "convex"
    weight: float = 0.8
    depth: int = 100

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InvalidArgument(f"fusion rule {self.rule!r}: choose one of {', '.join(RULES)}")
        if not isinstance(self.weight, (int, float)) or not 0 <= self.weight <= 1:
            raise InvalidArgument(f"fusion weight must be in [0, 1], got {self.weight!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise InvalidArgument(f"fusion depth must be a positive int, got {self.depth!r}")

    def funnel_depth(self, k: int, shortlist: int, exact_rows: int | None, patience: int | None) -> int:
        """How many fine-ranked candidates a funnel hands to the fusion: its top ``depth`` within its
        shortlist (within the rows matched, for an exact search: ``exact_rows``); ``k`` under a patient
        shortlist, which settles only its top ``k``."""
        if patience is not None:
            return k
        return max(k, min(self.depth, shortlist if exact_rows is None else exact_rows))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> Fusion:
        return cls() if saved is None else cls(**saved)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def fuse(
    fusion: Fusion, fine: np.ndarray, bm25: np.ndarray, dense_rank: np.ndarray, lexical_rank: np.ndarray
) -> np.ndarray:
    """The fused scores of a query's union of candidates.

    Args:
        fusion: the rule.
        fine, bm25: each candidate's fine score and BM25 score.
        dense_rank, lexical_rank: each candidate's 0-based rank in the funnel's list and the lexical list
            (``-1``: not in that list).
    """
    if fusion.rule == "convex":
        return (fusion.weight * _minmax(fine) + (1 - fusion.weight) * _minmax(bm25)).astype(np.float32)
    dense = np.where(dense_rank >= 0, fusion.weight / (RRF_K + 1 + dense_rank), 0.0)
    lexical = np.where(lexical_rank >= 0, (1 - fusion.weight) / (RRF_K + 1 + lexical_rank), 0.0)
    return (dense + lexical).astype(np.float32)


def fused_search(
    engine: Backend,
    lexical: LexicalIndex,
    fusion: Fusion,
    queries: Sequence[str],
    fine_q: np.ndarray,
    D: np.ndarray,
    I: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    read: np.ndarray,
    seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The top ``k`` of each query's union of candidates by the fused score (see the module docstring).

    Args:
        engine: the engine (fine scores of the lexical candidates the funnel did not score).
        lexical: the lexical index (its rows are the engine's).
        fusion: the rule.
        queries: the query texts.
        fine_q: ``(n, fine_dim)`` their fine vectors.
        D, I: the funnel's fine scores and rows, best first (``-1``: none).
        k: hits per query.
        allowed: the rows a hit may be (a filter, the live rows), or ``None``: every row.
        read: ``(n,)`` the fine vectors each query's funnel read.
        seconds: if given, receives the seconds spent here under ``"lexical"``.

    Returns:
        ``(D, I, read)``: fused scores and rows ``(n, k)``, padded with ``-inf`` / ``-1``, and ``read``
        plus the fine vectors of the lexical candidates.
    """
    t0 = time.perf_counter()
    read = np.asarray(read).copy()
    outD = np.full((len(queries), k), -np.inf, np.float32)
    outI = np.full((len(queries), k), -1, np.int64)
    for j, query in enumerate(queries):
        keep = I[j] >= 0
        dense_rows, dense_scores = I[j][keep], D[j][keep]
        bm25 = lexical.scores(query)
        _, lexical_rows = top_rows(bm25, fusion.depth, allowed)
        extra = lexical_rows[~np.isin(lexical_rows, dense_rows)]
        extra_scores = engine.fine_scores(fine_q[j : j + 1], extra[None, :])[0] if len(extra) else extra[:0]
        read[j] += len(extra)
        union = np.concatenate([dense_rows, extra])
        fine = np.concatenate([dense_scores, np.asarray(extra_scores, np.float32)])
        dense_rank = np.concatenate([np.arange(len(dense_rows)), np.full(len(extra), -1)])
        position = {int(r): i for i, r in enumerate(lexical_rows)}
        lexical_rank = np.array([position.get(int(r), -1) for r in union], np.int64)
        fused = fuse(fusion, fine, bm25[union], dense_rank, lexical_rank)
        order = np.argsort(-fused, kind="stable")[:k]
        outD[j, : len(order)], outI[j, : len(order)] = fused[order], union[order]
    if seconds is not None:
        seconds["lexical"] = seconds.get("lexical", 0.0) + time.perf_counter() - t0
    return outD, outI, read
