"""A LangChain ``VectorStore`` over a :class:`adaptive_retrieval.Retriever` (texts stored): documents added
with their metadata and ids (an id the store holds is replaced), deleted by id, fetched by id, and searched
with ``k`` and a metadata ``filter`` (:mod:`adaptive_retrieval.filters`). The store embeds with its own
model: it takes no LangChain ``Embeddings``. ``pip install 'adaptive-retrieval[langchain]'``.

Example:
    >>> store = AdaptiveRetrievalVectorStore(model="minilm-l6")  # doctest: +SKIP
    >>> store.add_texts(["ls lists files"], metadatas=[{"section": "1"}], ids=["ls.1"])  # doctest: +SKIP
    >>> store.similarity_search("list a directory", k=1, filter={"section": "1"})  # doctest: +SKIP
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore

from ..backends import engine_options
from ..encoder import Encoder
from ..errors import InvalidArgument
from ..indexing import empty
from ..models import DEFAULT_MODEL
from ..precision import check_precision, resolve
from ..retriever import Retriever
from . import check_texts


class AdaptiveRetrievalVectorStore(VectorStore):
    """A LangChain vector store (see the module docstring).

    Args:
        retriever: an index that stores texts (``Retriever.build(..., store_text=True)`` or loaded); default
            a new, empty one made from the arguments below.
        model: the model a new index encodes with (a named model, a directory, a hub id, an ``Encoder``).
        coarse, fine: its views (default ``(4, 64)`` and the model's last layer). A new index has no coarse
            head fitted to a corpus (it starts empty): its coarse view is the model's own.
        backend: its engine (a name or options, as :meth:`adaptive_retrieval.Retriever.build` takes it).
        candidates: its shortlist.
        precision: what its encoder runs in (as :meth:`adaptive_retrieval.Retriever.build` takes it: ``"auto"``,
            bfloat16 where the processor has it natively, else float32).

    Raises:
        InvalidArgument: a retriever that stores no texts, or a bad view or option.
    """

    def __init__(
        self,
        retriever: Retriever | None = None,
        *,
        model: str | Encoder = DEFAULT_MODEL,
        coarse: Any = (4, 64),
        fine: Any = None,
        backend: Any = "faiss",
        candidates: int = 100,
        precision: str = "auto",
    ) -> None:
        if retriever is None:
            check_precision(precision)
            encoder = model if isinstance(model, Encoder) else Encoder.from_pretrained(model)
            encoder = encoder.with_precision(resolve(precision, encoder.device))
            options = engine_options(backend, None, {})
            retriever = empty(Retriever, encoder, coarse, fine, candidates, options, store_text=True)
        check_texts(retriever)
        self.retriever = retriever

    @property
    def embeddings(self) -> Embeddings | None:
        """``None``: the store embeds with its retriever's model."""
        return None

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict] | None = None,
        *,
        ids: list[str | None] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Add texts, all or none; an id the store holds is replaced (text, metadata and vectors).

        Args:
            texts: the texts.
            metadatas: one dict per text (filterable), or ``None``.
            ids: one id per text (``None`` entries get a new UUID), or ``None``: new UUIDs.
            **kwargs: refused (nothing is silently ignored).

        Returns:
            The ids, in order.

        Raises:
            InvalidArgument: ``ids`` or ``metadatas`` of another length, or an unknown keyword.
            CorpusError: a bad text or id (nothing added).
        """
        _no_options(kwargs, "add_texts")
        texts = list(texts)
        given = [None] * len(texts) if ids is None else list(ids)
        if len(given) != len(texts):
            raise InvalidArgument(f"ids has {len(given)} entries for {len(texts)} texts: give one per text")
        doc_ids = [str(uuid.uuid4()) if d is None else d for d in given]
        if texts:
            self.retriever.upsert(list(zip(doc_ids, texts)), metadata=metadatas, show_progress=False)
        return doc_ids

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents of ``ids`` (ids the store does not hold are skipped).

        Raises:
            InvalidArgument: no ``ids`` (this store does not delete everything at once), or a keyword."""
        _no_options(kwargs, "delete")
        if ids is None:
            raise InvalidArgument("delete() needs the ids to delete")
        self.retriever.delete(list(ids), missing="ignore")
        return True

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """The documents of ``ids`` the store holds, in that order (the others left out)."""
        held = [d for d in ids if d in self.retriever]
        found = self.retriever.documents.get(held)
        out = []
        for doc_id in held:
            stored = self.retriever.documents.lookup(found, doc_id)
            if stored:
                out.append(Document(id=str(doc_id), page_content=stored[0], metadata=stored[1] or {}))
        return out

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """The top ``k`` documents for ``query`` (matching ``filter``) with their cosine scores; ``kwargs``
        go to :meth:`adaptive_retrieval.Retriever.search` (``candidates``, FAISS knobs), unknown ones refused."""
        hits = self.retriever.search(query, k=k, filter=filter, **kwargs)
        return [
            (Document(id=str(h.doc_id), page_content=h.text or "", metadata=h.metadata or {}), h.score)
            for h in hits
        ]

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        """:meth:`similarity_search_with_score` without the scores."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return lambda score: (1.0 + score) / 2.0  # cosine similarity in [-1, 1] -> relevance in [0, 1]

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings | None = None,
        metadatas: list[dict] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> AdaptiveRetrievalVectorStore:
        """A new store holding ``texts`` (``kwargs``: the constructor's, e.g. ``model=``).

        Raises:
            InvalidArgument: an ``embedding`` (the store embeds with its own model)."""
        if embedding is not None:
            raise InvalidArgument(
                "AdaptiveRetrievalVectorStore embeds with its own model: give model=... (not embedding=)"
            )
        store = cls(**kwargs)
        store.add_texts(texts, metadatas, ids=ids)
        return store


def _no_options(kwargs: dict[str, Any], where: str) -> None:
    if kwargs:
        raise InvalidArgument(f"{where}() takes no option {sorted(kwargs)[0]!r}")
