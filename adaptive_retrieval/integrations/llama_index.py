"""A LlamaIndex retriever over an :class:`adaptive_retrieval.Retriever` (see :mod:`..integrations`)."""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
    from llama_index.core.vector_stores.types import MetadataFilters
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the LlamaIndex retriever needs llama-index-core: pip install 'adaptive-retrieval[llama-index]'"
    ) from err

from ..errors import InvalidArgument, InvalidArgumentType
from . import check_texts, hit_metadata

_OPERATORS = {
    "==": "$eq",
    "!=": "$ne",
    ">": "$gt",
    ">=": "$gte",
    "<": "$lt",
    "<=": "$lte",
    "in": "$in",
    "nin": "$nin",
}


def filter_of(filters: MetadataFilters | None) -> dict[str, Any] | None:
    """LlamaIndex ``MetadataFilters`` (nested, ``and``/``or``) as this library's filter
    (:mod:`adaptive_retrieval.filters`); ``None`` stays ``None``.

    Raises:
        InvalidArgument: an operator or condition the library does not filter by (``contains``,
            ``text_match``, ``not``...), named. InvalidArgumentType: not ``MetadataFilters``."""
    if filters is None:
        return None
    if not isinstance(filters, MetadataFilters):
        raise InvalidArgumentType(
            f"filters must be llama_index MetadataFilters, got {type(filters).__name__}"
        )
    condition = str(getattr(filters.condition, "value", filters.condition) or "and")
    if condition not in ("and", "or"):
        raise InvalidArgument(f"filters: condition {condition!r} is not supported (and, or)")
    parts = []
    for part in filters.filters:
        if isinstance(part, MetadataFilters):
            parts.append(filter_of(part))
            continue
        op = str(getattr(part.operator, "value", part.operator))
        if op not in _OPERATORS:
            raise InvalidArgument(
                f"filters: operator {op!r} on {part.key!r} is not supported; supported: {', '.join(_OPERATORS)}"
            )
        parts.append({part.key: {_OPERATORS[op]: part.value}})
    if not parts:
        raise InvalidArgument("filters holds no filter")
    return parts[0] if len(parts) == 1 else {f"${condition}": parts}


class LlamaIndexRetriever(BaseRetriever):
    """``retriever.as_llama_index(k=4)``: ``retrieve(query)`` returns the top ``k`` as ``NodeWithScore``s
    (a ``TextNode`` with the text as indexed, the document id as ``id_``, and metadata: the document's
    fields, ``doc_id``, ``score``, ``rank``). ``search_kwargs`` go to
    :meth:`adaptive_retrieval.Retriever.search`; ``filters`` (LlamaIndex ``MetadataFilters``) become its
    ``filter`` (:func:`filter_of`)."""

    def __init__(
        self,
        retriever: Any,
        k: int = 4,
        search_kwargs: dict[str, Any] | None = None,
        filters: MetadataFilters | None = None,
        **kwargs: Any,
    ):
        check_texts(retriever)
        self.retriever, self.k, self.search_kwargs = retriever, k, dict(search_kwargs or {})
        if filters is not None:
            if "filter" in self.search_kwargs:
                raise InvalidArgument("give filters= or search_kwargs={'filter': ...}, not both")
            self.search_kwargs["filter"] = filter_of(filters)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.retriever.search(query_bundle.query_str, k=self.k, **self.search_kwargs)
        return [
            NodeWithScore(
                node=TextNode(text=h.text or "", id_=str(h.doc_id), metadata=hit_metadata(h)), score=h.score
            )
            for h in hits
        ]
