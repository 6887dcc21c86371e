"""A LlamaIndex retriever over an :class:`adaptive_retrieval.Retriever` (see :mod:`..integrations`)."""

from __future__ import annotations

from typing import Any

try:
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the LlamaIndex retriever needs llama-index-core: pip install 'adaptive-retrieval[llama-index]'"
    ) from err

from . import check_texts, hit_metadata


class LlamaIndexRetriever(BaseRetriever):
    """``retriever.as_llama_index(k=4)``: ``retrieve(query)`` returns the top ``k`` as ``NodeWithScore``s
    (a ``TextNode`` with the text as indexed, the document id as ``id_``, and metadata: the document's
    fields, ``doc_id``, ``score``, ``rank``). ``search_kwargs`` go to
    :meth:`adaptive_retrieval.Retriever.search`."""

    def __init__(
        self, retriever: Any, k: int = 4, search_kwargs: dict[str, Any] | None = None, **kwargs: Any
    ):
        check_texts(retriever)
        self.retriever, self.k, self.search_kwargs = retriever, k, dict(search_kwargs or {})
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        hits = self.retriever.search(query_bundle.query_str, k=self.k, **self.search_kwargs)
        return [
            NodeWithScore(
                node=TextNode(text=h.text or "", id_=str(h.doc_id), metadata=hit_metadata(h)), score=h.score
            )
            for h in hits
        ]
