"""What a search returns: :class:`Hit` per document found, and :class:`SearchTimings` of the stages."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .corpus import DocId
from .documents import DocumentStore
from .passages import Passage, document_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its score (the fine view's cosine; in a hybrid search the
    fused score, in [0, 1] relative to the query's candidates: :mod:`adaptive_retrieval.hybrid`), its
    1-based rank, the document's metadata, and, in an index that stores texts (``store_text=True``), the
    text as indexed. For a long document split into passages (:mod:`adaptive_retrieval.passages`),
    ``passage`` is the one that matched (its number and character span in the document's text), ``score``
    its score, and ``text`` that passage's text; else ``passage`` is ``None``.

    Example:
        >>> hit = retriever.search("does vitamin D reduce fracture risk?", k=1)[0]  # doctest: +SKIP
        >>> hit.doc_id, hit.rank, hit.score, hit.text, hit.passage  # doctest: +SKIP
    """

    doc_id: DocId
    score: float
    rank: int
    text: str | None = None
    metadata: dict[str, Any] | None = None
    passage: Passage | None = None


@dataclass
class SearchTimings:
    """Seconds spent in each stage of the funnel, summed over the searches it is passed to.

    Example:
        >>> timings = SearchTimings()
        >>> hits = retriever.search_batch(queries, timings=timings)  # doctest: +SKIP
        >>> timings.total / timings.queries, timings.reranked / timings.queries  # doctest: +SKIP
    """

    encode_coarse: float = 0.0
    """Encoding the queries up to the coarse layer (and their coarse views)."""
    coarse_search: float = 0.0
    """The engine's coarse search."""
    resume_fine: float = 0.0
    """Resuming the queries' forward pass to the fine layer (and the fine views)."""
    rerank: float = 0.0
    """The fine re-rank of the shortlists (and any exact fallback)."""
    lexical: float = 0.0
    """A hybrid search's lexical stage: BM25 scores, the lexical candidates' fine scores, the fusion."""
    queries: int = 0
    """Queries searched."""
    fallbacks: int = 0
    """Queries whose approximate coarse stage returned fewer than k ids, ranked exactly instead"""
    layers: int = 0
    """Encoder layers run, summed over the queries (``fine.layer`` each while every query runs them all)"""
    shortlists: list[int] = field(default_factory=list)
    """For each query, the candidates whose fine vectors were read and scored"""
    coarse_queries: dict[str, int] = field(default_factory=dict)
    """Queries by the vector that searched the coarse index: ``{"early": n, "projected": n}``"""
    paths: dict[str, int] = field(default_factory=dict)
    """Queries by the path that ran: ``"funnel"``; under a filter ``"filtered funnel"`` (the coarse
    search limited to the matching documents) or ``"filtered exact"`` (few matched: each scored by the fine view)"""
    matched: list[int] = field(default_factory=list)
    """For each filtered query, how many documents matched its filter"""

    @property
    def total(self) -> float:
        """Seconds of every stage."""
        return self.encode_coarse + self.coarse_search + self.resume_fine + self.rerank + self.lexical

    @property
    def reranked(self) -> int:
        """Candidates re-ranked, summed over the queries."""
        return int(sum(self.shortlists))

    def count(self, queries: int, layers: int, coarse_query: str, read: list[int]) -> None:
        """Record searches.

        Args:
            queries: how many searches.
            layers: encoder layers each ran.
            coarse_query: the vectors that searched the coarse index (``"early"`` or ``"projected"``).
            read: the candidates each read, one entry per query.
        """
        self.queries += queries
        self.layers += queries * layers
        self.shortlists += read
        self.coarse_queries[coarse_query] = self.coarse_queries.get(coarse_query, 0) + queries

    def record(
        self, seconds: dict[str, float], fallbacks: int, layers: int, coarse_query: str, read: list[int],
        path: str, matched: int | None,
    ) -> None:  # fmt: skip
        """Record one batch of searches: the seconds of each stage, the queries ranked exactly, what
        :meth:`count` and :meth:`count_path` record (one entry of ``read`` per query)."""
        if fallbacks:
            logger.debug("coarse stage returned fewer than k ids for %d queries; ranked exactly", fallbacks)
        for stage in ("encode_coarse", "resume_fine", "coarse_search", "rerank", "lexical"):
            setattr(self, stage, getattr(self, stage) + seconds.get(stage, 0.0))
        self.fallbacks += fallbacks
        self.count(len(read), layers, coarse_query, read)
        self.count_path(path, len(read), matched)

    def count_path(self, path: str, queries: int, matched: int | None) -> None:
        """Record the path ``queries`` searches ran (:attr:`paths`) and, filtered, how many documents
        matched (:attr:`matched`)."""
        self.paths[path] = self.paths.get(path, 0) + queries
        if matched is not None:
            self.matched += [matched] * queries


def found_documents(
    ids: Sequence[Any], metadata: Any, documents: DocumentStore | None, I: np.ndarray
) -> list[list[tuple[DocId, str | None, dict[str, Any] | None]]]:
    """Each query's documents ``(id, text, metadata)``, best first, from the funnel's rows ``I`` (``-1``
    left out): read under the search's read lock, so that a write committing after it changes nothing
    of these answers. Texts and metadata come from ``documents`` when it holds them (one query for the
    batch), else the metadata from ``metadata`` (:class:`adaptive_retrieval.metadata.MetadataStore`)."""
    rows = [[r for r in row if r >= 0] for row in I.tolist()]
    stored = {} if documents is None else documents.get([ids[r] for row in rows for r in row])
    out = []
    for row in rows:
        docs = []
        for r in row:
            kept = DocumentStore.lookup(stored, ids[r]) if documents is not None else ()
            docs.append((ids[r], *kept) if kept else (ids[r], None, metadata.get(r)))
        out.append(docs)
    return out


def hits_of(found: list[list[tuple[DocId, str | None, Any]]], D: np.ndarray) -> list[list[Hit]]:
    """The funnel's answers as :class:`Hit` lists, one per query: ``found`` (:func:`found_documents`)
    and their scores ``D``."""
    return [
        [
            Hit(document_of(d), float(s), rank, text, meta, d if isinstance(d, Passage) else None)
            for rank, (s, (d, text, meta)) in enumerate(zip(ds, docs), start=1)
        ]
        for ds, docs in zip(D, found)
    ]
