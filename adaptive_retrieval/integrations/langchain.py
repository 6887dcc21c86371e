"""A LangChain retriever over an :class:`adaptive_retrieval.Retriever` (see :mod:`..integrations`)."""

from __future__ import annotations

from typing import Any

try:
    from langchain_core.callbacks import CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "the LangChain retriever needs langchain-core: pip install 'adaptive-retrieval[langchain]'"
    ) from err

from pydantic import ConfigDict, Field

from ..checks import positive_int
from . import check_texts, hit_metadata


class LangChainRetriever(BaseRetriever):
    """``retriever.as_langchain(k=4)``: ``invoke(query)`` returns the top ``k`` as ``Document``s
    (``page_content``: the text as indexed; ``metadata``: the document's fields, ``doc_id``, ``score``,
    ``rank``). ``search_kwargs`` go to :meth:`adaptive_retrieval.Retriever.search` (``filter``,
    ``candidates``, ``coarse_query``, FAISS knobs)."""

    retriever: Any
    k: int = 4
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def model_post_init(self, context: Any) -> None:
        check_texts(self.retriever)

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """The top ``k`` for ``query``; ``kwargs`` (``invoke(query, k=2, filter={"section": "libs"})``) override ``k``
        and ``search_kwargs`` for this call, and an argument :meth:`adaptive_retrieval.Retriever.search`
        does not take is refused (raised, never ignored)."""
        kwargs.pop("verbose", None)  # LangChain's own, passed through by BaseRetriever.invoke
        options = {**self.search_kwargs, **kwargs}
        k = positive_int(options.pop("k", self.k), "k")
        hits = self.retriever.search(query, k=k, **options)
        return [Document(page_content=h.text or "", metadata=hit_metadata(h)) for h in hits]
