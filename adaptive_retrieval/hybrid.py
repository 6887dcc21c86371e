"""Dense and lexical evidence in one ranking: the lexical index's candidates join the funnel's, the fine
view scores the union, and a :class:`Fusion` rule combines the two scores.

For each query: the funnel's fine-ranked candidates (its top ``depth``, within its shortlist) and the
lexical index's top ``depth`` (:meth:`adaptive_retrieval.lexical.LexicalIndex.top`, among the rows the
search may return) form the union; the lexical candidates the funnel did not score get their fine
scores (:meth:`adaptive_retrieval.backends.Backend.fine_scores`), the funnel's candidates their BM25
scores, so every document of the union is judged on both. The rule then ranks the union:

- ``"convex"``: ``weight * minmax(fine) + (1 - weight) * minmax(bm25)``, each score min-max scaled over
  the query's union (a query with no known term is ranked by the fine view alone);
- ``"match"`` (the default): ``convex``, with the fine view's weight set per query by how much of the query
  its best lexical row holds: ``match = top BM25 score / the query's bound``
  (:meth:`adaptive_retrieval.lexical.LexicalIndex.bound`: what a row holding every query term without
  limit would score, a term no row holds included), and the weight falls linearly from ``weight``
  (``match`` at or under ``ramp[0]``) to ``match_weight`` (at or over ``ramp[1]``). A query most of whose
  rare terms one row holds (a phrase copied from it, a name, an error message) leans on BM25; a paraphrase
  on the fine view. With ``confidence`` (on by default), the weight climbs back to ``weight`` as the fine
  view's best score over the union rises from ``confidence[0]`` to ``confidence[1]``: a query the fine view
  finds a near-paraphrase for (a short sentence whose words many sentences share) stays with it;
- ``"lead"``: ``convex``, with the fine view's weight set per query by how far the best lexical document
  stands ahead of the next one: ``lead = (top BM25 score - the best score of another document) / the
  query's bound`` (a document's passages count as one document), the weight falling along ``ramp`` as
  for ``"match"``. A query that one document answers lexically (a phrase copied from it, a name) leans on
  BM25; a query whose words many documents hold alike (short sentences on one topic, a paraphrase) on
  the fine view, however fully those documents hold its words;
- ``"rrf"``: reciprocal rank fusion, ``weight / (60 + dense rank) + (1 - weight) / (60 + lexical rank)``
  (a document absent from one list gets nothing from it).

The default, ``match`` from 0.8 to 0.3 as ``match`` rises from 0.3 to 0.5, back to 0.8 as the fine view's
best score rises from 0.7 to 0.85, was chosen on dev queries by ``python -m evals.hybrid_eval`` over six
sets, long man pages queried deep inside among them: of the fusions never more than 0.005 below the better
of BM25 alone and dense alone on any set, the best mean margin (its worst +0.0015 nDCG@10, mean +0.026; on
test it is above the better part on all six; docs/results/hybrid, docs/measurements.md). No fixed
``convex`` weight serves both kinds of set: 0.8 loses 0.135 to BM25 on the long pages' dev queries, 0.5
loses 0.024 to dense alone on paraphrases; without ``confidence``, ``match`` leans on BM25 for short
sentences whose words many sentences share and loses 0.003 to dense alone on SICK's dev queries.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends.base import Backend
from .engine_lexical import EngineLexicalIndex
from .errors import InvalidArgument
from .lexical import LexicalIndex
from .passages import document_of

RULES = ("match", "lead", "convex", "rrf")
STEERED = ("match", "lead")
"""The rules whose fine-view weight moves along ``ramp`` with a per-query strength of the lexical evidence."""
RRF_K = 60
"""Reciprocal rank fusion's constant (Cormack et al., 2009)."""


@dataclass(frozen=True)
class Fusion:
    """How a hybrid search combines the fine view's and BM25's evidence (see the module docstring).

    Args:
        rule: ``"match"``, ``"lead"``, ``"convex"`` or ``"rrf"``.
        weight: the fine view's share, in ``[0, 1]`` (1: dense alone, over the union of candidates); under
            ``"match"`` and ``"lead"``, its share for a query whose lexical evidence is weak.
        depth: the lexical candidates per query, and the funnel's fine-ranked candidates fused with them.
        match_weight: under ``"match"`` and ``"lead"``, the fine view's share for a query whose lexical
            evidence is strong (one document matches it fully; one document leads the rest).
        ramp: under ``"match"`` and ``"lead"``, the strengths ``(low, high)`` between which the share moves
            from ``weight`` to ``match_weight``.
        confidence: under ``"match"`` and ``"lead"``, the fine view's best score over the query's candidates
            (an inner product: a cosine, the encoders' vectors being normalised) ``(low, high)`` between
            which the share climbs back from ``match_weight`` to ``weight``: a query the fine view finds a
            near-paraphrase for stays with it, however fully some row holds its words. ``None``: off. The
            default's scale is the default model's; a model whose cosines run lower or higher wants its own.
    """

    rule: str = "match"
    weight: float = 0.8
    depth: int = 100
    match_weight: float = 0.3
    ramp: tuple[float, float] = (0.3, 0.5)
    confidence: tuple[float, float] | None = (0.7, 0.85)

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise InvalidArgument(f"fusion rule {self.rule!r}: choose one of {', '.join(RULES)}")
        for name in ("weight", "match_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise InvalidArgument(f"fusion {name} must be in [0, 1], got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 1:
            raise InvalidArgument(f"fusion depth must be a positive int, got {self.depth!r}")
        object.__setattr__(self, "ramp", _span("ramp", self.ramp, floor=0))
        if self.confidence is not None:
            object.__setattr__(
                self, "confidence", _span("confidence", self.confidence, floor=-1, optional=True)
            )

    def weight_at(self, strength: float, best_fine: float | None = None) -> float:
        """The fine view's share for a query whose lexical evidence has ``strength`` (``[0, 1]``: its
        ``match`` or ``lead``, see the module docstring): ``weight`` but under ``"match"`` and ``"lead"``,
        where it falls from ``weight`` to ``match_weight`` along ``ramp``, and climbs back to ``weight``
        along ``confidence`` as ``best_fine`` (the fine view's best score for the query) rises."""
        if self.rule not in STEERED:
            return self.weight
        steered = self.weight + (self.match_weight - self.weight) * _along(strength, self.ramp)
        if self.confidence is None or best_fine is None:
            return steered
        confident = self.match_weight + (self.weight - self.match_weight) * _along(best_fine, self.confidence)
        return max(steered, confident) if self.weight >= self.match_weight else min(steered, confident)

    def funnel_depth(self, k: int, shortlist: int, exact_rows: int | None, patience: int | None) -> int:
        """How many fine-ranked candidates a funnel hands to the fusion: its top ``depth`` within its
        shortlist (within the rows matched, for an exact search: ``exact_rows``); ``k`` under a patient
        shortlist, which settles only its top ``k``."""
        if patience is not None:
            return k
        return max(k, min(self.depth, shortlist if exact_rows is None else exact_rows))

    def as_dict(self) -> dict[str, Any]:
        confidence = None if self.confidence is None else list(self.confidence)
        return {**asdict(self), "ramp": list(self.ramp), "confidence": confidence}

    def label(self) -> str:
        """A short name: ``"convex 0.8"``, ``"rrf 0.6"``, ``"match 0.8-0.3 @0.4-0.5"``,
        ``"match 0.8-0.3 @0.3-0.5 cos@0.7-0.85"`` (with ``confidence``), ``"lead 0.8-0.3 @0.15-0.3"``."""
        if self.rule not in STEERED:
            return f"{self.rule} {self.weight:g}"
        label = f"{self.rule} {self.weight:g}-{self.match_weight:g} @{self.ramp[0]:g}-{self.ramp[1]:g}"
        return (
            label if self.confidence is None else f"{label} cos@{self.confidence[0]:g}-{self.confidence[1]:g}"
        )

    @classmethod
    def from_dict(cls, saved: dict[str, Any] | None) -> Fusion:
        """The fusion an index saved (:meth:`as_dict`); one saved before ``confidence`` existed had none."""
        return cls() if saved is None else cls(**{"confidence": None, **saved})


def _span(name: str, value: Any, floor: float, optional: bool = False) -> tuple[float, float]:
    """``value`` as a ``(low, high)`` pair of floats with ``floor <= low < high <= 1``, or a clear error
    naming the fusion setting ``name`` (``optional``: the message says ``None`` is allowed too)."""
    if not (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in value)
        and floor <= value[0] < value[1] <= 1
    ):
        allowed = "None or " if optional else ""
        raise InvalidArgument(
            f"fusion {name} must be {allowed}(low, high) with {floor:g} <= low < high <= 1, got {value!r}"
        )
    return float(value[0]), float(value[1])


def _along(value: float, span: tuple[float, float]) -> float:
    """Where ``value`` lies along ``span = (low, high)``: 0 at or under ``low``, 1 at or over ``high``."""
    low, high = span
    return min(max((value - low) / (high - low), 0.0), 1.0)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = (float(x.min()), float(x.max())) if len(x) else (0.0, 0.0)
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def lexical_strength(
    fusion: Fusion, best: np.ndarray, rows: np.ndarray, bound: float, documents: Sequence[Any] | None = None
) -> float:
    """How strong a query's lexical evidence is, for ``"match"`` (the best row's BM25 score over the
    query's bound) and ``"lead"`` (the best row's lead over the best row of another document, over the
    bound); 0 for the other rules or a query without a lexical candidate.

    Args:
        fusion: the rule.
        best, rows: the query's lexical candidates, best first (:func:`adaptive_retrieval.lexical.top_rows`).
        bound: :meth:`adaptive_retrieval.lexical.LexicalIndex.bound` of the query.
        documents: each row's id (a :class:`adaptive_retrieval.passages.Passage` names its document), so
            that a document's passages count as one document; ``None``: every row its own document.
    """
    if fusion.rule not in STEERED or not len(best) or bound <= 0:
        return 0.0
    if fusion.rule == "match":
        return float(best[0]) / bound

    def doc(row: int) -> Any:
        return row if documents is None else document_of(documents[row])

    first = doc(int(rows[0]))
    runner_up = next((float(s) for s, r in zip(best[1:], rows[1:]) if doc(int(r)) != first), 0.0)
    return (float(best[0]) - runner_up) / bound


def fuse(
    fusion: Fusion, fine: np.ndarray, bm25: np.ndarray, dense_rank: np.ndarray, lexical_rank: np.ndarray,
    strength: float = 0.0,
) -> np.ndarray:  # fmt: skip
    """The fused scores of a query's union of candidates.

    Args:
        fusion: the rule.
        fine, bm25: each candidate's fine score and BM25 score.
        dense_rank, lexical_rank: each candidate's 0-based rank in the funnel's list and the lexical list
            (``-1``: not in that list).
        strength: the query's lexical evidence (``"match"`` and ``"lead"``: :func:`lexical_strength`).
    """
    weight = fusion.weight_at(strength, float(fine.max()) if len(fine) else None)
    if fusion.rule != "rrf":
        return (weight * _minmax(fine) + (1 - weight) * _minmax(bm25)).astype(np.float32)
    dense = np.where(dense_rank >= 0, weight / (RRF_K + 1 + dense_rank), 0.0)
    lexical = np.where(lexical_rank >= 0, (1 - weight) / (RRF_K + 1 + lexical_rank), 0.0)
    return (dense + lexical).astype(np.float32)


def fused_search(
    engine: Backend,
    lexical: LexicalIndex | EngineLexicalIndex,
    fusion: Fusion,
    queries: Sequence[str],
    fine_q: np.ndarray,
    D: np.ndarray,
    I: np.ndarray,
    k: int,
    allowed: np.ndarray | None,
    read: np.ndarray,
    seconds: dict[str, float] | None = None,
    documents: Sequence[Any] | None = None,
    params: Any = None,
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
        documents: each row's id (``"lead"`` counts a document's passages as one document), or ``None``.
        params: the engine's per-call search parameters (a filter it runs itself, for a lexical index
            whose postings it holds).

    Returns:
        ``(D, I, read)``: fused scores and rows ``(n, k)``, padded with ``-inf`` / ``-1``, and ``read``
        plus the fine vectors of the lexical candidates.
    """
    t0 = time.perf_counter()
    read = np.asarray(read).copy()
    outD = np.full((len(queries), k), -np.inf, np.float32)
    outI = np.full((len(queries), k), -1, np.int64)
    funnel = [row[row >= 0] for row in I]
    found = lexical.evidence(queries, fusion.depth, allowed, funnel, params)
    for j, query in enumerate(queries):
        dense_rows, dense_scores = funnel[j], D[j][I[j] >= 0]
        best, lexical_rows, dense_bm25 = found[j]
        bound = lexical.bound(query) if fusion.rule in STEERED and len(best) else 0.0
        strength = lexical_strength(fusion, best, lexical_rows, bound, documents)
        new = ~np.isin(lexical_rows, dense_rows)
        extra = lexical_rows[new]
        extra_scores = engine.fine_scores(fine_q[j : j + 1], extra[None, :])[0] if len(extra) else extra[:0]
        read[j] += len(extra)
        union = np.concatenate([dense_rows, extra])
        fine = np.concatenate([dense_scores, np.asarray(extra_scores, np.float32)])
        bm25 = np.concatenate([np.asarray(dense_bm25, np.float32), np.asarray(best, np.float32)[new]])
        dense_rank = np.concatenate([np.arange(len(dense_rows)), np.full(len(extra), -1)])
        position = {int(r): i for i, r in enumerate(lexical_rows)}
        lexical_rank = np.array([position.get(int(r), -1) for r in union], np.int64)
        fused = fuse(fusion, fine, bm25, dense_rank, lexical_rank, strength)
        order = np.argsort(-fused, kind="stable")[:k]
        outD[j, : len(order)], outI[j, : len(order)] = fused[order], union[order]
    if seconds is not None:
        seconds["lexical"] = seconds.get("lexical", 0.0) + time.perf_counter() - t0
    return outD, outI, read
