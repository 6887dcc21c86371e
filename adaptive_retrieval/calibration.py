"""Calibrating a retriever's shortlist to a fidelity target: the sample queries and what they measure.

:func:`sample_queries` draws the queries (the users' own, or pseudo-queries: first sentences of
documents); :func:`shortlist_evidence` measures, for each, the fine scores of its coarse candidates in
coarse order and which of them belong to its exact fine top ``k``; the rules that turn this evidence
into a shortlist, and the :class:`adaptive_retrieval.shortlist.Calibration` record, are in
:mod:`adaptive_retrieval.shortlist`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from .adapt import pseudo_query
from .backends.base import Backend
from .checks import check_queries, positive_int
from .corpus import Corpus, DocId, iter_documents
from .errors import InvalidArgument
from .shortlist import MAX_CANDIDATES, Calibration, calibrate_shortlist, check_calibration

logger = logging.getLogger(__name__)


def sample_queries(
    queries: Sequence[str] | None,
    documents: Corpus | None,
    *,
    max_queries: int,
    seed: int,
) -> tuple[list[str], list[DocId] | None, str]:
    """The calibration's queries, the id of the document each pseudo-query came from (``None`` for given
    queries; the caller finds their rows under its read lock) and a description of their source."""
    if queries is not None and documents is not None:
        raise InvalidArgument("calibrate() takes queries=[...] or documents=<corpus>, not both")
    if queries is not None:
        queries = check_queries(queries)[:max_queries]
        return queries, None, f"{len(queries)} given queries"
    if documents is None:
        raise InvalidArgument(
            "calibrate() needs sample queries: queries=[...] (the users' own) or documents=<corpus> "
            "to draw pseudo-queries from"
        )
    docs = list(iter_documents(documents))
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(docs), size=min(max_queries, len(docs)), replace=False))
    pairs = [(docs[i][0], pseudo_query(docs[i][1])) for i in picked]
    pairs = [(d, q) for d, q in pairs if q.strip()]
    queries = [q for _, q in pairs]
    return queries, [d for d, _ in pairs], f"pseudo-queries: first sentences of {len(queries)} documents"


def shortlist_evidence(
    engine: Backend, fine_q: np.ndarray, coarse_q: np.ndarray, k: int, cap: int, own: np.ndarray | None,
    allowed: np.ndarray | None = None, params: Any = None, exact: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each query, the fine scores of its first ``cap`` coarse candidates in coarse order (``-inf``:
    none) and whether each is one of its exact fine top ``k``; a pseudo-query's own document (``own``)
    is left out of both; ``allowed``: only those rows (the live ones); ``params``: the coarse search's
    (:meth:`adaptive_retrieval.backends.Backend.search_parameters`); ``exact``: the rows of the exact
    fine top ``k`` (+1 with ``own``), when already searched. The caller holds the retriever's read lock."""
    spare = 0 if own is None else 1
    if exact is None:
        _, exact = engine.exact_search(fine_q, k + spare, allowed=allowed)
    _, cand = engine.coarse_search(coarse_q, cap + spare, params=params, allowed=allowed)
    n = len(fine_q)
    scores = np.full((n, cap), -np.inf, dtype=np.float32)
    members = np.zeros((n, cap), dtype=bool)
    for q in range(n):
        skip = -2 if own is None else own[q]
        want = [d for d in exact[q] if d != skip and d >= 0][:k]
        got = np.array([d for d in cand[q] if d != skip][:cap], dtype=np.int64)
        valid = got >= 0
        if valid.any():
            scores[q, : len(got)][valid] = engine.fine_scores(fine_q[q : q + 1], got[valid][None])[0]
        members[q, : len(got)] = np.isin(got, want) & valid
    return scores, members


FILTER_SHARES = (0.5, 0.2)
"""The shares of documents the random filters of a calibration match (smaller ones go exact)"""


def choose_width(
    engine: Backend, fine_q: np.ndarray, coarse_q: np.ndarray, k: int, cap: int, own: np.ndarray | None,
    alive: np.ndarray | None, target: float, seed: int,
) -> tuple[dict[str, Any], dict[str, float], dict[str, int]]:  # fmt: skip
    """The shortlist (:func:`adaptive_retrieval.shortlist.calibrate_shortlist`) and the search width
    (:meth:`adaptive_retrieval.backends.Backend.calibration_widths`, e.g. an IVF index's ``nprobe``) that
    reach ``target`` at the least cost (the width's coarse cost plus the rows the rule re-ranks, in fine
    rows scored): each width is measured from the narrowest until its coarse cost alone exceeds the best
    total; none reaching the target: the widest measured. Returns the shortlist's choice, what it
    measured (with ``needed@<knob>=<value>``: the fixed shortlist each width needed) and the width's
    knobs (empty where the engine offers none). Called under the read lock."""
    widths = engine.calibration_widths() or [({}, 0.0)]
    _, exact = engine.exact_search(fine_q, k + (0 if own is None else 1), allowed=alive)
    best: tuple[float, dict[str, Any], dict[str, float], dict[str, int]] | None = None
    tried: dict[str, float] = {}
    for knobs, coarse_cost in widths:
        if best is not None and best[0] < np.inf and coarse_cost >= best[0]:
            break
        params = engine.search_parameters(calibrated=knobs) if knobs else None
        scores, members = shortlist_evidence(engine, fine_q, coarse_q, k, cap, own, alive, params, exact)
        choice, measured = calibrate_shortlist(scores, members, k, target, seed=seed)
        reread = min(choice["candidates"], measured["patient_mean_shortlist"])
        cost = coarse_cost + reread if measured["fit_overlap"] >= target else np.inf
        tried |= {f"needed@{name}={value}": float(choice["candidates"]) for name, value in knobs.items()}
        if best is None or cost < best[0] or (best[0] == np.inf and cost == np.inf):
            best = (cost, choice, measured, knobs)
    assert best is not None
    _, choice, measured, knobs = best
    return choice, {**measured, **(tried if len(widths) > 1 else {})}, dict(knobs)


def filter_evidence(
    engine: Backend, ids: Any, fine_q: np.ndarray, coarse_q: np.ndarray, k: int, cap: int,
    own: np.ndarray | None, target: float, base: int, seed: int, params: Any = None,
) -> dict[str, float]:  # fmt: skip
    """Under random filters matching :data:`FILTER_SHARES` of the documents, the smallest fixed
    shortlist reaching ``target``, and the exponent ``a`` a filtered search widens its shortlist by
    (``shortlist / share ** a``, :func:`adaptive_retrieval.querying.filtered_shortlist`): the least that
    covers what every share needed, against ``base`` unfiltered, in ``[0, 1]``. Empty when no share
    leaves enough documents to measure (the filtered search then keeps its default); ``ids``: the
    index's :class:`adaptive_retrieval.ids.IdMap`, ``params``: the searches' (the calibrated width).
    Called under the read lock."""
    out: dict[str, float] = {}
    spare = 0 if own is None else 1
    exponents = []
    rng = np.random.default_rng([seed, 7])
    for share in FILTER_SHARES:
        allowed = rng.random(len(ids)) < share
        if ids.alive is not None:
            allowed &= ids.alive
        depth = min(4 * cap, int(allowed.sum()) - spare)
        if depth <= max(4 * k, base):  # too few documents: such a filter is ranked exactly anyway
            continue
        _, members = shortlist_evidence(engine, fine_q, coarse_q, k, depth, own, allowed, params)
        found = np.cumsum(members, axis=1).mean(axis=0) / k  # mean overlap@k at each shortlist size
        reached = np.flatnonzero(found >= target)
        needed = int(reached[0]) + 1 if len(reached) else depth
        out[f"filtered_needed@{share:g}"] = float(needed)
        exponents.append(np.log(max(needed, 1) / max(base, 1)) / np.log(1 / share))
    if exponents:
        out["filter_exponent"] = float(np.clip(max(exponents), 0.0, 1.0))
    return out


# Retriever.calibrate, defined here with the work it orchestrates (retriever.py attaches it).
def calibrate(
    self: Any,
    queries: Sequence[str] | None = None,
    *,
    documents: Corpus | None = None,
    target: float = 0.95,
    k: int = 10,
    coarse_query: str | None = None,
    max_queries: int = 1000,
    cap: int = MAX_CANDIDATES,
    seed: int = 0,
    batch_size: int | None = None,
) -> Calibration:
    """Choose the shortlist that returns ``target`` of the exact fine top ``k`` (overlap@k,
    label-free) and use it from now on (:mod:`adaptive_retrieval.shortlist`).

    Half of the queries choose the shortlist, the other half measure it (``Calibration.measured``); where
    the engine offers search widths (an IVF index's ``nprobe``), the cheapest width and shortlist that
    reach the target are chosen together (:func:`adaptive_retrieval.calibration.choose_width`). Random
    filters matching half and a fifth of the documents measure how much a filtered search must widen its
    shortlist (``measured["filter_exponent"]``; :func:`adaptive_retrieval.calibration.filter_evidence`).

    Args:
        queries: sample queries (the users' own, best); give these or ``documents``.
        documents: a corpus whose documents' first sentences serve as pseudo-queries.
        target: the overlap@k to reach, in ``(0, 1]``.
        k: the depth of the overlap (at most the index's size).
        coarse_query: the coarse query calibrated (default: the index's,
            :meth:`adaptive_retrieval.Retriever.resolve_coarse_query`).
        max_queries: at most this many queries are used.
        cap: the deepest shortlist considered.
        seed: the seed of the draw of pseudo-queries and of the fit/check split.
        batch_size: encoder batch size (default: the encoder's).

    Returns:
        The :class:`adaptive_retrieval.shortlist.Calibration` (also
        :attr:`adaptive_retrieval.Retriever.calibration`, saved with the index).

    Raises:
        InvalidArgument: fewer than 20 usable queries, both or neither of ``queries`` and ``documents``,
            a ``target`` outside ``(0, 1]``, a bad ``k``/``cap``/``max_queries``/``coarse_query``, or an
            index too small to calibrate.
        QueryError: an empty query (QueryTypeError: not a string).
        RetrieverClosed: the retriever was closed.

    Example:
        >>> cal = retriever.calibrate(documents=corpus, target=0.95)  # doctest: +SKIP
        >>> cal.rule, cal.candidates, cal.measured  # doctest: +SKIP
    """
    self._check_open()
    t0 = time.perf_counter()
    coarse_query = self.resolve_coarse_query(coarse_query)
    k, cap, max_queries = (
        positive_int(x, n) for x, n in ((k, "k"), (cap, "cap"), (max_queries, "max_queries"))
    )
    queries, sources, source = sample_queries(queries, documents, max_queries=max_queries, seed=seed)
    check_calibration(len(queries), target)  # before any query is encoded
    spare = 0 if sources is None else 1
    k, cap = min(k, len(self) - spare), min(cap, len(self) - spare)
    if k < 1:
        raise InvalidArgument(f"the index holds {len(self)} documents: too few to calibrate")
    enc = self.query_encoder
    vectors = enc.encode(
        enc.as_queries(queries),
        [self.coarse, self.fine],
        batch_size=batch_size,
        desc="calibrating (sample queries)",
    )
    fine_q = vectors[self.fine]
    coarse_q = self.project(fine_q) if coarse_query == "projected" else vectors[self.coarse]
    with self._lock.read():  # rows as they are now: a compaction since the sampling renumbered them
        own = None
        if sources is not None:  # each pseudo-query's own document (-1: not indexed)
            own = np.array([-1 if (r := self.ids.row(d)) is None else r for d in sources], dtype=np.int64)
        engine = self.backend
        choice, measured, knobs = choose_width(
            engine, fine_q, coarse_q, k, cap, own, self.ids.alive, target, seed
        )
        params = engine.search_parameters(calibrated=knobs) if knobs else None
        measured |= filter_evidence(
            engine, self.ids, fine_q, coarse_q, k, cap, own, target, choice["candidates"], seed, params
        )
    self.calibration = Calibration(
        target=float(target), k=k, coarse_query=coarse_query, queries=source, measured=measured,
        seconds=time.perf_counter() - t0, documents=len(self), knobs=knobs, **choice,
    )  # fmt: skip
    return self.calibration


__all__ = [
    "FILTER_SHARES",
    "calibrate",
    "choose_width",
    "filter_evidence",
    "sample_queries",
    "shortlist_evidence",
]


def drop_stale_calibration(self: Any) -> None:
    """Drop, with a warning, a calibration the index has outgrown (``Calibration.stale_after``); attached
    to :class:`adaptive_retrieval.Retriever`, called after every write and at load."""
    if self.calibration is not None and self.calibration.stale_after(len(self)):
        logger.warning(
            "the index has grown from %d to %d documents since calibrate(): its shortlist no longer "
            "holds; calibration dropped (searches read candidates=%d until you calibrate again)",
            self.calibration.documents, len(self), self.candidates,
        )  # fmt: skip
        self.calibration = None
