"""Retrievers for the RAG frameworks, over a :class:`adaptive_retrieval.Retriever` built with
``store_text=True`` (the frameworks pass texts on to the model):

- :class:`.langchain.LangChainRetriever` (``retriever.as_langchain()``): a LangChain ``BaseRetriever``
  returning ``Document`` objects; ``pip install 'adaptive-retrieval[langchain]'``;
- :class:`.llama_index.LlamaIndexRetriever` (``retriever.as_llama_index()``): a LlamaIndex
  ``BaseRetriever`` returning ``NodeWithScore`` objects; ``pip install 'adaptive-retrieval[llama-index]'``.

Each hit's metadata carries ``doc_id``, ``score`` and ``rank`` beside the document's own fields (and
``passage``, its span, for a passage of a long document).
"""

from __future__ import annotations

from typing import Any

from ..errors import InvalidArgument, InvalidArgumentType


def check_texts(retriever: Any) -> None:
    """Refuse a retriever whose hits carry no text: a framework needs the texts to hand on."""
    # checked by what it offers, not by class: importing Retriever here would make a circle with
    # Retriever.as_langchain(), which imports this package
    if not (callable(getattr(retriever, "search", None)) and hasattr(retriever, "documents")):
        raise InvalidArgumentType(
            f"retriever must be an adaptive_retrieval.Retriever, got {type(retriever).__name__}"
        )
    if retriever.documents is None:
        raise InvalidArgument(
            "this index stores no texts, so its hits carry none to hand on: build it with "
            "Retriever.build(..., store_text=True)"
        )


def hit_metadata(hit: Any) -> dict[str, Any]:
    """A hit's metadata for a framework: the document's own fields, then ``doc_id``, ``score``, ``rank``, and
    for a passage of a long document ``passage``: ``{"n", "start", "end"}`` (its span in the document's text)."""
    out = {**(hit.metadata or {}), "doc_id": hit.doc_id, "score": hit.score, "rank": hit.rank}
    if hit.passage is not None:
        out["passage"] = {"n": hit.passage.n, "start": hit.passage.start, "end": hit.passage.end}
    return out
