"""``Retriever.as_langchain`` and ``Retriever.as_llama_index`` (attached in :mod:`adaptive_retrieval.retriever`):
the framework adapters of :mod:`adaptive_retrieval.integrations`, imported when asked for."""

from __future__ import annotations

from typing import Any

from ..checks import positive_int
from . import check_texts


def as_langchain(self: Any, k: int = 4, **search_kwargs: Any) -> Any:
    """This retriever as a LangChain ``BaseRetriever`` returning ``k`` hits, ``search_kwargs`` passed to
    :meth:`adaptive_retrieval.Retriever.search`: :class:`adaptive_retrieval.integrations.langchain.LangChainRetriever`.

    Raises:
        InvalidArgument: ``k`` not a positive int, or no texts stored (build with ``store_text=True``).
        ImportError: langchain-core is not installed.
    """
    from .langchain import LangChainRetriever

    check_texts(self)  # here, not inside pydantic's validation, which would wrap the error
    return LangChainRetriever(retriever=self, k=positive_int(k, "k"), search_kwargs=search_kwargs)


def as_llama_index(self: Any, k: int = 4, **search_kwargs: Any) -> Any:
    """This retriever as a LlamaIndex ``BaseRetriever``: as :meth:`adaptive_retrieval.Retriever.as_langchain`, for llama-index-core
    (:class:`adaptive_retrieval.integrations.llama_index.LlamaIndexRetriever`); ``filters=`` takes
    LlamaIndex ``MetadataFilters``."""
    from .llama_index import LlamaIndexRetriever

    filters = search_kwargs.pop("filters", None)  # LlamaIndex MetadataFilters
    return LlamaIndexRetriever(self, k=positive_int(k, "k"), search_kwargs=search_kwargs, filters=filters)
