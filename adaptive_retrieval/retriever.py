"""The adaptive funnel's front door: :class:`Retriever` builds, searches, calibrates, saves and loads.

Query path (one forward pass, never repeated)::

    tokens -> layers 1..Lc -> (early coarse vector) -> resume layers Lc+1..Lf -> fine vector
           -> (projected coarse vector) -> engine: coarse shortlist -> fine re-rank -> top k

The work lives elsewhere: encoding a corpus in :mod:`adaptive_retrieval.indexing`, writing in
:mod:`adaptive_retrieval.writer`, the ids in :mod:`adaptive_retrieval.ids`, the engines in
:mod:`adaptive_retrieval.backends`, queries in :mod:`adaptive_retrieval.querying`, calibration in
:mod:`adaptive_retrieval.calibration`, persistence in :mod:`adaptive_retrieval.manifest`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import calibration, indexing, manifest, querying, removal
from . import refit as refitting
from .adapt import Adaptation, check_adaptation, project_fine
from .backends import Backend
from .checks import check_queries, check_query, positive_int
from .corpus import DocId
from .documents import DocumentStore
from .encoder import Encoder
from .engine_lexical import EngineLexicalIndex
from .errors import InvalidArgument, RetrieverClosed
from .filters import native as native_filter
from .filters import parse as parse_filter
from .first_stage import FirstStage
from .hybrid import Fusion
from .ids import IdMap
from .indexing import CHUNK_SIZE, projection_of
from .integrations import front
from .lexical import LexicalIndex
from .locks import ReadWriteLock
from .metadata import MetadataStore
from .querying import (
    QueryPrecision,
    allowed_rows,
    encode_queries,
    filtered_shortlist,
    resolve_coarse_query,
    shortlist_plan,
)
from .results import Hit, SearchTimings, found_documents, hits_of
from .shortlist import Calibration
from .views import View
from .writer import IndexWriter

__all__ = ["CHUNK_SIZE", "Hit", "Retriever", "SearchTimings"]


class Retriever:
    """A two-stage dense retriever over one encoder's coarse and fine views.

    Build one with :meth:`build` (or :meth:`from_vectors`), or :meth:`load` a saved one; then :meth:`search`.
    The constructor keeps its parts as attributes: ``encoder``, the views ``coarse`` and ``fine``, the
    engine (:attr:`backend`) and its rows' ids (:attr:`ids`), ``candidates``, ``adaptation``
    (:meth:`set_adaptation`), ``calibration`` and ``documents``.

    Example:
        >>> retriever = Retriever.build(corpus, coarse=(4, 64))  # doctest: +SKIP
        >>> retriever.search("does vitamin D reduce fracture risk?", k=10)  # doctest: +SKIP
    """

    def __init__(
        self,
        encoder: Encoder,
        coarse: View,
        fine: View,
        backend: Backend,
        doc_ids: Iterable[DocId] = (),
        *,
        candidates: int = 100,
        adaptation: Adaptation | None = None,
        calibration: Calibration | None = None,
        documents: DocumentStore | None = None,
        metadata: MetadataStore | None = None,
        lexical: LexicalIndex | EngineLexicalIndex | None = None,
        fusion: Fusion | None = None,
        first_stage: FirstStage | None = None,
    ) -> None:
        self.encoder, self.coarse, self.fine = encoder, coarse, fine
        self.backend = backend
        """The engine holding both views of every document: FAISS in this process, Qdrant or Milvus"""
        self.ids = IdMap(doc_ids, key=backend.key, keys=backend.opened_keys, renew=backend.renew)
        """The one map of document ids to rows (:class:`adaptive_retrieval.ids.IdMap`)"""
        backend.attach(self.ids)
        self.first_stage = first_stage
        """What ``build(coarse_bytes=...)`` chose for the coarse index and measured
        (:class:`adaptive_retrieval.first_stage.FirstStage`), or ``None``"""
        self.documents = documents
        """The documents' texts and metadata (``store_text=True``), or ``None``"""
        self.metadata = MetadataStore.load(None, self.ids.ids) if metadata is None else metadata
        """Every row's metadata, filterable (:class:`adaptive_retrieval.metadata.MetadataStore`)"""
        self.lexical = lexical
        """BM25 over every row's text (:class:`adaptive_retrieval.lexical.LexicalIndex`), or ``None``"""
        self.fusion = Fusion() if fusion is None else fusion
        """How searches with a lexical index fuse it with the fine view (:class:`adaptive_retrieval.hybrid.Fusion`)"""
        self.truncated = 0
        """Documents indexed longer than the model's max length, cut to it (counted at every add; saved)"""
        self.passages = False
        """Whether adds split a document longer than the model's max length into passages (:mod:`adaptive_retrieval.passages`)"""
        self.compact_at = 0.25
        """Dead rows' share at which a delete or upsert runs :meth:`compact` (``None``: only when called)"""
        self.exact_below = 1_000
        """A filter matching at most this many documents (the shortlist, or the engine's estimate of a
        filtered funnel's cost, if more) ranks them exactly"""
        self.candidates = positive_int(candidates, "candidates")
        """How many coarse hits the fine view re-ranks when no calibration applies (widened to ``k``)."""
        self.set_adaptation(adaptation)
        self.calibration = calibration
        """The shortlist rule :meth:`calibrate` chose for a fidelity target; ``None``: ``candidates`` fixed"""
        self._lock = ReadWriteLock()  # searches read; the commit of a write writes
        self._closed = False
        self._adapt_next = False  # set by build(adapt=True): the first chunk added fits the coarse head
        self._coarse_bytes_next: int | None = None  # set by build(coarse_bytes=...): ... and chooses its code
        self._manifests: dict[Path, str] = {}  # index directories loaded or saved: their manifest's digest
        self._precision = QueryPrecision()
        self.writer = IndexWriter.of(self)
        """The index writer every add goes through (:class:`adaptive_retrieval.writer.IndexWriter`)"""

    @property
    def doc_ids(self) -> Sequence[DocId | None]:
        """The ids by row, as :meth:`search_arrays` returns rows (``None``: deleted, until :meth:`compact`)."""
        return self.ids.ids

    def __len__(self) -> int:
        """The documents in the index (a document split into passages counts once)."""
        return self.ids.documents

    def __contains__(self, doc_id: object) -> bool:
        return self.ids.has_document(doc_id)

    # written beside the work they orchestrate, attached here: the methods of one class
    build = classmethod(indexing.build)
    from_vectors = classmethod(indexing.from_vectors)
    from_vector_batches = classmethod(indexing.from_vector_batches)
    add = indexing.add
    upsert = indexing.upsert
    delete = removal.delete
    compact = removal.compact
    refit = refitting.refit
    drift = refitting.drift
    calibrate = calibration.calibrate
    _drop_stale_calibration = calibration.drop_stale_calibration
    set_query_precision = querying.set_query_precision
    query_precision = property(querying.query_precision, querying.set_query_precision)
    query_encoder = property(querying.query_encoder)
    as_langchain = front.as_langchain
    as_llama_index = front.as_llama_index
    save = manifest.save
    load = classmethod(manifest.load)

    def add_vectors(
        self, doc_ids: Sequence[DocId], coarse_vectors: np.ndarray, fine_vectors: np.ndarray,
        texts: Sequence[str] | None = None, metadata: Sequence[Any] | None = None,
    ) -> None:  # fmt: skip
        """Add documents whose view vectors are already computed (by this encoder, at these views; in an
        index with a :attr:`projection`, coarse vectors made by :meth:`project`), all-or-nothing.

        Args:
            doc_ids: the new documents' ids (strings or ints; none in the index already, none twice).
            coarse_vectors, fine_vectors: ``(n, coarse.dim)`` and ``(n, fine.dim)``, L2-normalised.
            texts, metadata: one text (required where the index stores texts) and one JSON record per document.

        Raises:
            CorpusError: a known or repeated id, a wrong shape, a vector not normalised or not finite, or
                missing texts (CorpusTypeError: an id or vectors of the wrong type).
            RetrieverBusy: another add is running. RetrieverClosed: the retriever was closed.
        """
        self.add_vector_batches([(doc_ids, coarse_vectors, fine_vectors, texts, metadata)])

    def add_vector_batches(self, batches: Iterable[tuple[Any, ...]]) -> None:
        """Add a stream of ``(doc_ids, coarse_vectors, fine_vectors[, texts[, metadata]])`` batches, all-or-
        nothing over the stream: the one way documents enter an index. One add at a time (searches run beside).

        Args:
            batches: such tuples (as :meth:`add_vectors` takes them), consumed one at a time.

        Raises:
            CorpusError: an empty stream, or a batch :meth:`add_vectors` refuses (CorpusTypeError: not such
                a tuple); nothing is added. RetrieverBusy, RetrieverClosed: as :meth:`add_vectors`.
        """
        self._check_open()
        self.writer.add_batches(batches)

    # --------------------------------------------------------------------------------------- search

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        candidates: int | None = None,
        coarse_query: str | None = None,
        filter: dict[str, Any] | None = None,
        hybrid: bool | None = None,
        by: str = "document",
        **knobs: Any,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first (``min(k, len(self))`` hits).

        Args:
            query: a non-empty string.
            k: how many hits.
            candidates: the shortlist for this call (default: the calibrated rule, else :attr:`candidates`).
            coarse_query: ``"projected"`` (default with a fitted head: the fine vector projected into the
                coarse space finds the shortlist) or ``"early"`` (the early layer's view); one pass either way.
            filter: only documents whose metadata matches (:mod:`adaptive_retrieval.filters`:
                ``{"section": "libs", "size": {"$gt": 1000}}``); the hits are the exact fine view's top
                ``k`` among them at the fidelity of an unfiltered search (few matches: each scored exactly).
            hybrid: fuse the lexical index's evidence (:mod:`adaptive_retrieval.hybrid`; default: whenever
                the index has one, :attr:`lexical`); ``False``: the fine view alone.
            by: ``"document"``: a long document split into passages ranks by its best one (the hit names
                it); ``"passage"``: the ``k`` best passages, several of a document possibly.
            **knobs: engine search parameters for this call only (FAISS ``nprobe``, ``efSearch``;
                Qdrant ``hnsw_ef``, ``exact``; Milvus ``ef``, ``nprobe``): a search changes no shared state.

        Returns:
            The hits (:class:`adaptive_retrieval.results.Hit`: id, score (fused, in a hybrid search), rank;
            metadata; stored text).

        Raises:
            QueryError: an empty query (QueryTypeError: not a string).
            InvalidArgument: a bad ``k``, ``candidates``, ``coarse_query``, ``filter`` or knob, or invalid
                Unicode (InvalidArgumentType: a filter of the wrong type).
            RetrieverClosed: the retriever was closed.
        """
        check_query(query)
        D, _, found = self._search(
            [query], k, candidates, coarse_query, None, None, knobs, filter, hybrid, by
        )
        return hits_of(found, D)[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 10, *, candidates: int | None = None, coarse_query: str | None = None,
        batch_size: int | None = None, timings: SearchTimings | None = None, filter: dict[str, Any] | None = None,
        hybrid: bool | None = None, by: str = "document", **knobs: Any,
    ) -> list[list[Hit]]:  # fmt: skip
        """:meth:`search` for a non-empty list of queries, encoded ``batch_size`` at a time (default the
        encoder's); one list of hits per query, in order. ``timings``, if given, accumulates the seconds
        of each stage and what the searches ran. Raises as :meth:`search` does (QueryError: no queries)."""
        queries = check_queries(queries)
        D, _, found = self._search(
            queries, k, candidates, coarse_query, batch_size, timings, knobs, filter, hybrid, by
        )
        return hits_of(found, D)

    def search_arrays(
        self, queries: Sequence[str], k: int = 10, *, candidates: int | None = None, coarse_query: str | None = None,
        batch_size: int | None = None, timings: SearchTimings | None = None, filter: dict[str, Any] | None = None,
        hybrid: bool | None = None, by: str = "document", **knobs: Any,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The funnel in FAISS's form, without building hits: :meth:`search_batch`'s arguments and errors.

        Returns:
            ``(D, I)`` of shape ``(n_queries, min(k, len(self)))``: fine scores and rows of
            :attr:`doc_ids` (rows change at :meth:`compact`), best first, padded with ``-1`` where a search
            found fewer.
        """
        queries = check_queries(queries)
        return self._search(
            queries, k, candidates, coarse_query, batch_size, timings, knobs, filter, hybrid, by
        )[:2]

    def _search(
        self, queries: list[str], k: int, candidates: int | None, coarse_query: str | None,
        batch_size: int | None, timings: SearchTimings | None, knobs: dict[str, Any], filter: Any = None,
        hybrid: bool | None = None, by: str = "document",
    ) -> tuple[np.ndarray, np.ndarray, list[list[tuple[DocId, Any]]]]:  # fmt: skip
        self._check_open()
        node = parse_filter(filter)
        lexical, by = querying.lexical_for(self.lexical, hybrid), querying.check_by(by)
        most = len(self) if by == "document" else self.ids.count  # no index has more to return
        k = min(positive_int(k, "k"), max(most, 1))
        coarse_query = self.resolve_coarse_query(coarse_query)
        shortlist, patience, depth = shortlist_plan(
            k, candidates, self.candidates, self.calibration, coarse_query
        )
        batch_size = self.encoder.batch_size if batch_size is None else positive_int(batch_size, "batch_size")
        # checked before any query is encoded; per call: nothing is left set on the index
        calibrated = querying.calibrated_width(self.calibration, coarse_query)
        params = self.backend.search_parameters(depth=depth, calibrated=calibrated, **knobs)
        if len(self) == 0:  # e.g. every document deleted
            empty = [[] for _ in queries]
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64), empty
        timings = timings if timings is not None else SearchTimings()
        parts = []
        for i in range(0, len(queries), batch_size):
            with self._lock.read():  # many searches at once; a write's commit waits for them, and they for it
                D, I = self._funnel(
                    queries[i : i + batch_size], k, shortlist, timings, params, coarse_query, patience, node,
                    lexical, by,
                )  # fmt: skip
                parts.append((D, I, found_documents(self.ids, self.metadata, self.documents, I)))
        return (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            [docs for p in parts for docs in p[2]],
        )

    def _funnel(
        self, queries: list[str], k: int, shortlist: int, timings: SearchTimings, params: Any, coarse_query: str,
        patience: int | None, node: Any = None, lexical: LexicalIndex | EngineLexicalIndex | None = None, by: str = "document",
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        seconds: dict[str, float] = {}
        enc = self.query_encoder
        coarse_q, fine_q = encode_queries(
            enc, queries, self.coarse, self.fine, coarse_query, self.projection, seconds
        )
        if len(self) == 0:  # every document deleted since the search began
            return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
        shortlist = min(shortlist, self.ids.count)
        params = self.backend.native_filter(params, native_filter(node, self.metadata))  # run by the engine
        allowed, exact, path = allowed_rows(
            self.ids, self.metadata, node, max(shortlist, self.exact_below),
            lambda share: self.backend.filtered_cost(share, shortlist, params),
        )  # fmt: skip
        if allowed is not None and not exact:  # a filtered coarse stage returns its shortlist whole, wider
            patience, shortlist = None, filtered_shortlist(shortlist, allowed, self.calibration, node)
        D, I, fallbacks, read = querying.ranked(
            self.backend, self.ids, self.fusion, lexical, queries, coarse_q, fine_q, k, shortlist, by=by,
            exact=exact, patience=patience, params=params, seconds=seconds, allowed=allowed,
        )  # fmt: skip
        matched = None if node is None else int(np.count_nonzero(allowed))
        timings.record(seconds, fallbacks, self.fine.layer, coarse_query, read.tolist(), path, matched)
        return D, I

    # ------------------------------------------------------------------------------ query settings

    def set_adaptation(self, adaptation: Adaptation | None) -> None:
        """Set what was fitted to this corpus (``adaptation``: what :func:`adaptive_retrieval.adapt.adapt_encoder`
        returned, or ``None``), refused as :func:`adaptive_retrieval.adapt.check_adaptation` refuses it."""
        #: what the build fitted to its corpus (:mod:`adaptive_retrieval.adapt`); ``None``: not adapted
        self.adaptation = check_adaptation(adaptation, self.coarse, self.fine)

    @property
    def fitted_head(self) -> bool:
        """Whether the coarse view goes through a head fitted to this corpus at build time."""
        return self.adaptation is not None and self.adaptation.chosen == "ridge"

    @property
    def projection(self) -> np.ndarray | None:
        """``(fine_dim, coarse_dim)``: maps a fine vector into the coarse view's space (the ``"projected"``
        coarse query, and every document's coarse vector), from the build's fitted head; else ``None``."""
        return projection_of(self.adaptation)

    def project(self, fine_vectors: np.ndarray) -> np.ndarray:
        """Fine view vectors ``(n, fine_dim)`` as this index's coarse vectors, ``(n, coarse_dim)`` float32
        (:attr:`projection`, then L2-normalised): how its documents' coarse vectors and its
        ``"projected"`` queries are made.

        Raises:
            InvalidArgument: the index has no projection (no coarse head was fitted to its corpus).
        """
        if self.projection is None:
            raise InvalidArgument(
                "this index has no projection (no coarse head was fitted to its corpus at build)"
            )
        return project_fine(fine_vectors, self.projection)

    def resolve_coarse_query(self, coarse_query: str | None = None) -> str:
        """The coarse query (``"projected"`` or ``"early"``) a search with ``coarse_query=`` runs: ``None``
        gives ``"projected"`` in an index with a :attr:`projection`, else ``"early"``.

        Raises:
            InvalidArgument: another value, or ``"projected"`` in an index without a projection.
        """
        return resolve_coarse_query(coarse_query, self.projection)

    # ------------------------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release what this retriever holds open (the fine store's memory map and scratch copies, an
        engine client it created, the document store). Using it afterwards raises
        :class:`adaptive_retrieval.errors.RetrieverClosed`; closing twice is harmless; also the end of
        a ``with`` block."""
        if self._closed:
            return
        with self._lock.write():  # after any search in flight
            self._closed = True
            self.backend.close()
            if self.documents is not None:
                self.documents.close()

    def __enter__(self) -> Retriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RetrieverClosed("this retriever is closed; load the index again to use it")

    def __repr__(self) -> str:
        return (
            f"Retriever(model={self.encoder.name!r}, coarse={self.coarse}, fine={self.fine}, docs={len(self)}, "
            f"index={self.backend.describe()!r}, candidates={self.candidates}, "
            f"coarse_head={'fitted' if self.fitted_head else 'model'!r})"
        )
