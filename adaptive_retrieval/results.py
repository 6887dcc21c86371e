"""What a search returns: :class:`Hit` per document found, and :class:`SearchTimings` of the stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .corpus import DocId


@dataclass(frozen=True)
class Hit:
    """One search result: the document's id, its fine-view cosine score, its 1-based rank, and, in an
    index that stores texts (``store_text=True``), the text as indexed and the document's metadata."""

    doc_id: DocId
    score: float
    rank: int
    text: str | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class SearchTimings:
    """Seconds spent in each stage of the funnel, summed over the searches it is passed to."""

    encode_coarse: float = 0.0
    coarse_search: float = 0.0
    resume_fine: float = 0.0
    rerank: float = 0.0
    queries: int = 0
    #: queries whose approximate coarse stage returned fewer than k ids, ranked exactly instead
    fallbacks: int = 0
    #: encoder layers run, summed over the queries (``fine.layer`` each while every query runs them all)
    layers: int = 0
    #: for each query, the candidates whose fine vectors were read and scored
    shortlists: list[int] = field(default_factory=list)
    #: queries by the vector that searched the coarse index: ``{"early": n, "projected": n}``
    coarse_queries: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return self.encode_coarse + self.coarse_search + self.resume_fine + self.rerank

    @property
    def reranked(self) -> int:
        """Candidates re-ranked, summed over the queries."""
        return int(sum(self.shortlists))

    def count(self, queries: int, layers: int, coarse_query: str, read: list[int]) -> None:
        """Record ``queries`` searches that ran ``layers`` encoder layers each, searched the coarse
        index with ``coarse_query`` vectors and read ``read`` candidates each."""
        self.queries += queries
        self.layers += queries * layers
        self.shortlists += read
        self.coarse_queries[coarse_query] = self.coarse_queries.get(coarse_query, 0) + queries
