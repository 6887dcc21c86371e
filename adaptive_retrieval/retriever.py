"""The adaptive funnel's front door: :class:`Retriever` builds, searches, calibrates, saves and loads.

Query path (one forward pass, never repeated)::

    tokens -> layers 1..Lc -> (early coarse vector) -> resume layers Lc+1..Lf -> fine vector
           -> (projected coarse vector) -> engine: coarse shortlist -> fine re-rank -> top k

The work lives elsewhere: encoding a corpus in :mod:`~adaptive_retrieval.indexing`, writing in
:mod:`~adaptive_retrieval.writer`, the ids in :mod:`~adaptive_retrieval.ids`, the engines in
:mod:`~adaptive_retrieval.backends`, queries in :mod:`~adaptive_retrieval.querying`, calibration in
:mod:`~adaptive_retrieval.calibration`, persistence in :mod:`~adaptive_retrieval.manifest`.
"""

from __future__ import annotations

import contextlib
import logging
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence, Sized
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .adapt import Adaptation, project_fine
from .backends import Backend, EngineOptions, create_engine, engine_options
from .calibration import sample_queries, shortlist_evidence
from .checks import check_queries, check_query, positive_int
from .corpus import Corpus, DocId
from .documents import DocumentStore
from .encoder import PROGRESS_MIN_BATCHES, Encoder
from .errors import InvalidArgument, InvalidArgumentType, RetrieverClosed
from .ids import IdMap
from .indexing import CorpusEncoding, projection_of
from .locks import ReadWriteLock
from .manifest import Manifest, guards_directory, model_record, open_index, save_index
from .models import DEFAULT_MODEL
from .querying import QueryPrecision, encode_queries, resolve_coarse_query, shortlist_plan
from .results import Hit, SearchTimings
from .shortlist import MAX_CANDIDATES, Calibration, calibrate_shortlist, check_calibration
from .views import View, ViewLike, check_pair
from .writer import IndexWriter

logger = logging.getLogger(__name__)

#: Documents encoded and added per step of a build; build-time adaptation fits on the first chunk.
CHUNK_SIZE = 10_000


class Retriever:
    """A two-stage dense retriever over one encoder's coarse and fine views.

    Build one with :meth:`build` (or :meth:`from_vectors`), or :meth:`load` a saved one; then
    :meth:`search`. The engine that holds the vectors is :attr:`backend`; the ids are :attr:`ids`.

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
    ) -> None:
        self.encoder, self.coarse, self.fine = encoder, coarse, fine
        #: the engine holding both views of every document: FAISS in this process, Qdrant or Milvus
        self.backend = backend
        #: the one map of document ids to rows (:class:`~adaptive_retrieval.ids.IdMap`)
        self.ids = IdMap(doc_ids, key=backend.key)
        backend.attach(self.ids)
        #: the documents' texts and metadata (``store_text=True``), or ``None``
        self.documents = documents
        self.candidates = positive_int(candidates, "candidates")
        self.set_adaptation(adaptation)
        #: the shortlist rule :meth:`calibrate` chose for a fidelity target; ``None``: ``candidates`` fixed
        self.calibration = calibration
        self._lock = ReadWriteLock()  # searches read; the commit of a write writes
        self._closed = False
        self._adapt_next = False  # set by build(adapt=True): the first chunk added fits the coarse head
        self._manifests: dict[Path, str] = {}  # index directories loaded or saved: their manifest's digest
        self._precision = QueryPrecision()
        #: the index writer every add goes through (:class:`~adaptive_retrieval.writer.IndexWriter`)
        drop = weakref.WeakMethod(
            self._drop_stale_calibration
        )  # no cycle: a dropped retriever is freed at once
        self.writer = IndexWriter(self.ids, backend, documents, coarse, fine, self._lock, lambda: drop()())

    @property
    def doc_ids(self) -> Sequence[DocId]:
        """The documents' ids in row order (read only)."""
        return self.ids.ids

    def __len__(self) -> int:
        return len(self.ids)

    # ---------------------------------------------------------------------------------------- build

    @classmethod
    def build(
        cls,
        corpus: Corpus,
        coarse: ViewLike = (4, 64),
        fine: ViewLike | None = None,
        *,
        model: str | Encoder = DEFAULT_MODEL,
        candidates: int = 100,
        backend: str | EngineOptions = "faiss",
        backend_options: dict[str, Any] | None = None,
        adapt: bool = True,
        store_text: bool = False,
        batch_size: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        show_progress: bool | None = None,
        **faiss_options: Any,
    ) -> Retriever:
        """Encode ``corpus`` once and index both views, the coarse one adapted to the corpus.

        The corpus streams through in chunks of ``chunk_size`` documents; their vectors leave RAM before
        the next chunk (with ``FaissOptions(fine_path=...)`` the fine vectors go straight to disk).

        Args:
            corpus: a list of strings (ids are positions), a dict id -> text, a dict id ->
                ``{"title", "text", ...}`` (BEIR form; other fields are metadata), or ``(id, text)`` pairs.
            coarse: the recall view, e.g. ``(4, 64)`` or ``"4x64"``.
            fine: the re-ranking view; default the model's last layer at full width.
            model: a named model, a model directory, a Hugging Face id, or an :class:`Encoder`.
            candidates: how many coarse hits the fine view re-ranks (widened to ``k`` when smaller).
            backend: the engine: ``"faiss"`` (default), ``"qdrant"``, ``"milvus"``, or its options:
                ``FaissOptions(index="HNSW32")``, ``QdrantOptions(path=...)``, ``MilvusOptions(uri=...)``
                (:mod:`adaptive_retrieval.backends`).
            backend_options: an engine name's options as a dict (``{"uri": "./index.db"}``).
            adapt: fit the coarse view's head to this corpus, without labels, on the first chunk
                (:mod:`adaptive_retrieval.adapt`); kept only when it beats the model's own head.
            store_text: keep texts and metadata (:mod:`adaptive_retrieval.documents`) so hits carry them.
            batch_size: encoder batch size (default: the encoder's).
            chunk_size: documents encoded and added per step.
            show_progress: progress bars while encoding (default: on for long work).
            **faiss_options: ``index=``, ``fine_dtype=``, ``fine_path=``, ``train_size=``: deprecated
                spellings of :class:`~adaptive_retrieval.backends.FaissOptions`.

        Returns:
            The retriever, searchable at once.

        Raises:
            InvalidArgument: a bad view, option or engine; CorpusError: a document that cannot be indexed.
        """
        for name, flag in (("adapt", adapt), ("store_text", store_text)):
            if not isinstance(flag, bool):
                raise InvalidArgumentType(f"{name} must be True or False, got {flag!r}")
        options = engine_options(backend, backend_options, faiss_options)
        encoder = model if isinstance(model, Encoder) else Encoder.from_pretrained(model)
        retriever = cls._empty(encoder, coarse, fine, candidates, options, store_text)
        retriever._adapt_next = adapt
        with retriever._discard_on_error():
            retriever.add(corpus, batch_size=batch_size, chunk_size=chunk_size, show_progress=show_progress)
        return retriever

    @classmethod
    def from_vectors(
        cls,
        encoder: Encoder,
        coarse: ViewLike,
        fine: ViewLike,
        doc_ids: Sequence[DocId],
        coarse_vectors: np.ndarray,
        fine_vectors: np.ndarray,
        *,
        candidates: int = 100,
        adaptation: Adaptation | None = None,
        backend: str | EngineOptions = "faiss",
        **faiss_options: Any,
    ) -> Retriever:
        """A retriever over precomputed view vectors (:meth:`build`'s checks, no encoding).
        ``adaptation``: what :func:`~adaptive_retrieval.adapt.adapt_encoder` returned with ``encoder``
        when the coarse vectors went through the head it fitted."""
        options = engine_options(backend, None, faiss_options)
        retriever = cls._empty(encoder, coarse, fine, candidates, options)
        retriever.set_adaptation(adaptation)
        with retriever._discard_on_error():
            retriever.add_vectors(doc_ids, coarse_vectors, fine_vectors)
        return retriever

    @classmethod
    def from_vector_batches(
        cls,
        encoder: Encoder,
        coarse: ViewLike,
        fine: ViewLike,
        batches: Iterable[tuple[Any, ...]],
        *,
        candidates: int = 100,
        backend: str | EngineOptions = "faiss",
        backend_options: dict[str, Any] | None = None,
        **faiss_options: Any,
    ) -> Retriever:
        """A retriever over a stream of ``(doc_ids, coarse_vectors, fine_vectors)`` batches encoded
        elsewhere (e.g. :func:`adaptive_retrieval.distributed.vector_batches`)."""
        options = engine_options(backend, backend_options, faiss_options)
        retriever = cls._empty(encoder, coarse, fine, candidates, options)
        with retriever._discard_on_error():
            retriever.add_vector_batches(batches)
        return retriever

    @classmethod
    def _empty(
        cls, encoder: Encoder, coarse: ViewLike, fine: ViewLike | None, candidates: int, options: EngineOptions,
        store_text: bool = False,
    ) -> Retriever:  # fmt: skip
        coarse_view = encoder.check_view(coarse, name="coarse")
        fine_view = encoder.full_view if fine is None else encoder.check_view(fine, name="fine")
        check_pair(coarse_view, fine_view)
        positive_int(candidates, "candidates")
        engine = create_engine(options, coarse_view.dim, fine_view.dim)
        documents = DocumentStore.memory() if store_text else None
        return cls(encoder, coarse_view, fine_view, engine, candidates=candidates, documents=documents)

    @contextlib.contextmanager
    def _discard_on_error(self) -> Iterator[None]:
        """A failed build removes what its engine created (a file, a collection)."""
        try:
            yield
        except BaseException:
            self.backend.discard()
            raise

    # ----------------------------------------------------------------------------------------- add

    def add(
        self,
        corpus: Corpus,
        *,
        batch_size: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        show_progress: bool | None = None,
    ) -> None:
        """Encode and add documents, ``chunk_size`` at a time, all-or-nothing: on any error (a repeated
        id, a bad text, an interrupted encode) the index is left exactly as it was. A list of strings
        gets the ids ``len(self)``, ``len(self) + 1``, ..."""
        chunk_size = positive_int(chunk_size, "chunk_size")
        total = len(corpus) if isinstance(corpus, Sized) else None
        if show_progress is None:  # long work: many batches, or a stream of unknown length
            show_progress = total is None or total >= PROGRESS_MIN_BATCHES * self.encoder.batch_size
        with tqdm(total=total, desc="index", unit="doc", disable=not show_progress) as bar:
            encoding = CorpusEncoding(
                corpus, self.encoder, self.coarse, self.fine, adaptation=self.adaptation, adapt=self._adapt_next,
                candidates=self.candidates, known=self.ids.__contains__, first_id=len(self),
                store_text=self.documents is not None, chunk_size=chunk_size, batch_size=batch_size, bar=bar,
            )  # fmt: skip
            self.add_vector_batches(encoding)
        self.encoder, self._adapt_next = encoding.encoder, False
        self.set_adaptation(encoding.adaptation)

    def add_vectors(
        self,
        doc_ids: Sequence[DocId],
        coarse_vectors: np.ndarray,
        fine_vectors: np.ndarray,
        texts: Sequence[str] | None = None,
        metadata: Sequence[Any] | None = None,
    ) -> None:
        """Add documents whose view vectors are already computed (by this encoder, at these views; in an
        index with a :attr:`projection`, coarse vectors made by :meth:`project`), all-or-nothing."""
        self.add_vector_batches([(doc_ids, coarse_vectors, fine_vectors, texts, metadata)])

    def add_vector_batches(self, batches: Iterable[tuple[Any, ...]]) -> None:
        """Add a stream of ``(doc_ids, coarse_vectors, fine_vectors[, texts[, metadata]])`` batches,
        all-or-nothing over the whole stream: the one way documents enter an index. An index that
        stores texts needs them. One add at a time (searches may run beside it)."""
        self._check_open()
        self.writer.add_batches(batches)

    def _drop_stale_calibration(self) -> None:
        """Drop, with a warning, a calibration this index has outgrown (:meth:`Calibration.stale_after`)."""
        if self.calibration is not None and self.calibration.stale_after(len(self)):
            logger.warning(
                "the index has grown from %d to %d documents since calibrate(): its shortlist no longer "
                "holds; calibration dropped (searches read candidates=%d until you calibrate again)",
                self.calibration.documents, len(self), self.candidates,
            )  # fmt: skip
            self.calibration = None

    # ---------------------------------------------------------------------------------- calibration

    def calibrate(
        self,
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

        Args:
            queries: sample queries (the users' own, best); or
            documents: a corpus whose documents' first sentences serve as pseudo-queries.
            target: the overlap@k to reach; k: its depth; coarse_query: the coarse query calibrated.
            max_queries, cap, seed, batch_size: how many queries, the deepest shortlist, the split's seed,
                the encoder batch.

        Returns:
            The :class:`Calibration` (also :attr:`calibration`, saved with the index).

        Raises:
            InvalidArgument: fewer than 20 usable queries, or both or neither of queries and documents.
        """
        self._check_open()
        t0 = time.perf_counter()
        coarse_query = self.resolve_coarse_query(coarse_query)
        k, cap, max_queries = (
            positive_int(x, n) for x, n in ((k, "k"), (cap, "cap"), (max_queries, "max_queries"))
        )
        queries, own, source = sample_queries(
            queries, documents, max_queries=max_queries, seed=seed, row_of=self.ids.row
        )
        check_calibration(len(queries), target)  # before any query is encoded
        spare = 0 if own is None else 1
        k, cap = min(k, len(self) - spare), min(cap, len(self) - spare)
        if k < 1:
            raise InvalidArgument(f"the index holds {len(self)} documents: too few to calibrate")
        enc = self.query_encoder
        vectors = enc.encode(enc.as_queries(queries), [self.coarse, self.fine], batch_size=batch_size)
        fine_q = vectors[self.fine]
        coarse_q = self.project(fine_q) if coarse_query == "projected" else vectors[self.coarse]
        with self._lock.read():
            scores, members = shortlist_evidence(self.backend, fine_q, coarse_q, k, cap, own)
        choice, measured = calibrate_shortlist(scores, members, k, target, seed=seed)
        self.calibration = Calibration(
            target=float(target), k=k, coarse_query=coarse_query, queries=source, measured=measured,
            seconds=time.perf_counter() - t0, documents=len(self), **choice,
        )  # fmt: skip
        return self.calibration

    # --------------------------------------------------------------------------------------- search

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        candidates: int | None = None,
        coarse_query: str | None = None,
        **knobs: Any,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first (``min(k, len(self))`` hits).

        Args:
            query: a non-empty string.
            k: how many hits.
            candidates: the shortlist for this call (default: the calibrated rule, else :attr:`candidates`).
            coarse_query: ``"projected"`` (default with a fitted head: the query's fine vector projected
                into the coarse space finds the shortlist) or ``"early"`` (its early layer's view does).
                Either way every layer of the query runs once.
            **knobs: engine search parameters for this call only (FAISS ``nprobe``, ``efSearch``;
                Qdrant ``hnsw_ef``, ``exact``; Milvus ``ef``, ``nprobe``): a search changes no shared state.

        Returns:
            :class:`Hit` s with id, score, rank (and text and metadata when stored).

        Raises:
            QueryError: an empty query (QueryTypeError: not a string); InvalidArgument: a bad option.
        """
        check_query(query)
        return self._hits(self._search([query], k, candidates, coarse_query, None, None, knobs))[0]

    def search_batch(
        self, queries: Sequence[str], k: int = 10, *, candidates: int | None = None, coarse_query: str | None = None,
        batch_size: int | None = None, timings: SearchTimings | None = None, **knobs: Any,
    ) -> list[list[Hit]]:  # fmt: skip
        """:meth:`search` for many queries, encoded ``batch_size`` at a time; ``timings``, if given,
        accumulates the seconds of each stage and what the searches ran."""
        queries = check_queries(queries)
        return self._hits(self._search(queries, k, candidates, coarse_query, batch_size, timings, knobs))

    def search_arrays(
        self, queries: Sequence[str], k: int = 10, *, candidates: int | None = None, coarse_query: str | None = None,
        batch_size: int | None = None, timings: SearchTimings | None = None, **knobs: Any,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """The funnel in FAISS's form: ``(D, I)`` of shape ``(n_queries, min(k, len(self)))`` with
        rows of :attr:`doc_ids`, padded with ``-1`` where a search found fewer."""
        queries = check_queries(queries)
        return self._search(queries, k, candidates, coarse_query, batch_size, timings, knobs)

    def _search(
        self, queries: list[str], k: int, candidates: int | None, coarse_query: str | None,
        batch_size: int | None, timings: SearchTimings | None, knobs: dict[str, Any],
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        self._check_open()
        k = min(positive_int(k, "k"), max(len(self), 1))  # no index has more to return
        coarse_query = self.resolve_coarse_query(coarse_query)
        shortlist, patience, depth = shortlist_plan(
            k, candidates, self.candidates, self.calibration, coarse_query
        )
        batch_size = self.encoder.batch_size if batch_size is None else positive_int(batch_size, "batch_size")
        # checked before any query is encoded; per call: nothing is left set on the index
        params = self.backend.search_parameters(depth=depth, **knobs)
        if len(self) == 0:  # e.g. a reopened collection whose documents were all deleted
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        timings = timings if timings is not None else SearchTimings()
        parts = []
        for i in range(0, len(queries), batch_size):
            with self._lock.read():  # many searches at once; a write's commit waits for them, and they for it
                parts.append(
                    self._funnel(
                        queries[i : i + batch_size], k, shortlist, timings, params, coarse_query, patience
                    )
                )
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _funnel(
        self, queries: list[str], k: int, shortlist: int, timings: SearchTimings, params: Any, coarse_query: str,
        patience: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        seconds: dict[str, float] = {}
        enc = self.query_encoder
        coarse_q, fine_q = encode_queries(
            enc, queries, self.coarse, self.fine, coarse_query, self.projection, seconds
        )
        shortlist = min(shortlist, len(self))
        D, I, fallbacks, read = self.backend.search(
            coarse_q, fine_q, k, shortlist, params=params, patience=patience, seconds=seconds
        )
        if fallbacks:
            logger.debug("coarse stage returned fewer than k ids for %d queries; ranked exactly", fallbacks)
        for stage in ("encode_coarse", "resume_fine", "coarse_search", "rerank"):
            setattr(timings, stage, getattr(timings, stage) + seconds.get(stage, 0.0))
        timings.fallbacks += fallbacks
        timings.count(len(queries), self.fine.layer, coarse_query, read.tolist())
        return D, I

    def _hits(self, found: tuple[np.ndarray, np.ndarray]) -> list[list[Hit]]:
        D, I = found
        ids = self.ids
        stored = {} if self.documents is None else self.documents.get([ids[i] for i in I[I >= 0].tolist()])
        return [
            [
                Hit(ids[i], float(s), rank, *DocumentStore.lookup(stored, ids[i]))
                for rank, (s, i) in enumerate(zip(ds, rows), start=1)
                if i >= 0
            ]
            for ds, rows in zip(D, I)
        ]

    # ------------------------------------------------------------------------------ query settings

    def set_query_precision(self, precision: str) -> None:
        """Encode queries in ``"float32"`` (the default: as the documents were) or ``"int8"`` (the encoder's
        linear layers in int8, :meth:`Encoder.quantized`; torch >= 2.6; ``benchmarks.bench_int8``
        measures both on your CPU). Documents are always encoded in float32."""
        self._precision.set(precision)

    @property
    def query_precision(self) -> str:
        """``"float32"`` or ``"int8"`` (:meth:`set_query_precision`)."""
        return self._precision.precision

    @property
    def query_encoder(self) -> Encoder:
        """The encoder queries go through: :attr:`encoder`, or its int8 copy."""
        return self._precision.encoder(self.encoder)

    def set_adaptation(self, adaptation: Adaptation | None) -> None:
        """Set what was fitted to this corpus (:attr:`adaptation`), checked against the views."""
        if adaptation is not None:
            if not isinstance(adaptation, Adaptation):
                raise InvalidArgumentType(
                    f"adaptation must be an Adaptation, got {type(adaptation).__name__}"
                )
            if (adaptation.layer, adaptation.dim) != self.coarse.as_tuple():
                raise InvalidArgument(
                    f"adaptation was fitted for the coarse view ({adaptation.layer}, {adaptation.dim}), not {self.coarse}"
                )
            p = adaptation.projection
            if p is not None and p.shape != (self.fine.dim, self.coarse.dim):
                raise InvalidArgument(
                    f"adaptation.projection is {p.shape}, the views need {(self.fine.dim, self.coarse.dim)}"
                )
        #: what the build fitted to its corpus (:mod:`adaptive_retrieval.adapt`); ``None``: not adapted
        self.adaptation = adaptation

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
        """Fine view vectors ``(n, fine_dim)`` as this index's coarse vectors (:attr:`projection`, then
        normalised): how its documents' coarse vectors and its ``"projected"`` queries are made."""
        if self.projection is None:
            raise InvalidArgument(
                "this index has no projection (no coarse head was fitted to its corpus at build)"
            )
        return project_fine(fine_vectors, self.projection)

    def resolve_coarse_query(self, coarse_query: str | None = None) -> str:
        """The coarse query a search with ``coarse_query=`` runs (``None``: this index's default)."""
        return resolve_coarse_query(coarse_query, self.projection)

    # ---------------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Save to directory ``path`` atomically: an interrupted save leaves the previous index whole.

        Raises:
            IndexConflict: another writer saved there since this retriever loaded or saved it.
        """
        self._check_open()
        entry = self.backend.manifest()  # an engine that cannot be reopened refuses here, before any write
        heads = {self.coarse.layer: self.encoder.heads[self.coarse.layer]} if self.fitted_head else None
        with self._lock.read():  # a write commits before or after this save, never during it
            manifest = Manifest(
                model=model_record(self.encoder), coarse=self.coarse, fine=self.fine, backend=entry,
                index=self.backend.describe(), count=len(self), candidates=self.candidates,
                adaptation=None if self.adaptation is None else self.adaptation.as_dict(),
                calibration=None if self.calibration is None else self.calibration.as_dict(),
            )  # fmt: skip
            where = Path(path).resolve()
            expect = self._manifests.get(where) if guards_directory(manifest, self.documents) else None
            self._manifests[where] = save_index(
                Path(path), manifest, self.backend, heads=heads, projection=self.projection,
                documents=self.documents, expect=expect,
            )  # fmt: skip

    @classmethod
    def load(
        cls,
        path: str | Path,
        model: str | Encoder | None = None,
        *,
        verify: bool | str = True,
        mmap: bool = True,
        backend_options: dict[str, Any] | None = None,
    ) -> Retriever:
        """Load a saved index.

        Args:
            path: the index directory.
            model: default the one the manifest names; a model whose weights, pooling, max length or
                prompts differ from the index's is refused.
            verify: ``True`` checks every file's size and sha256 (files over 64 MB: their first and last
                4 MB), ``"full"`` hashes every byte, ``False`` checks sizes only.
            mmap: memory-map the fine matrix.
            backend_options: where a Qdrant or Milvus collection lives now, if not where it was saved
                (``location``/``path``/``client``; ``uri``/``token``/``client``; ``drop_uncommitted``).

        Raises:
            IndexDamaged: missing, altered or inconsistent files; ModelMismatch: the wrong model.
        """
        opened = open_index(Path(path), model, verify=verify, mmap=mmap, backend_options=backend_options)
        retriever = cls(
            opened.encoder, opened.coarse, opened.fine, opened.engine, opened.doc_ids,
            candidates=opened.candidates, adaptation=opened.adaptation, calibration=opened.calibration,
            documents=opened.documents,
        )  # fmt: skip
        if opened.digest is not None:
            retriever._manifests[Path(path).resolve()] = opened.digest
        retriever._drop_stale_calibration()  # e.g. an engine's collection that other processes grew
        return retriever

    # ------------------------------------------------------------------------------------ lifecycle

    def as_langchain(self, k: int = 4, **search_kwargs: Any) -> Any:
        """This retriever as a LangChain ``BaseRetriever`` (needs ``store_text=True`` and langchain-core):
        see :class:`~adaptive_retrieval.integrations.langchain.LangChainRetriever`."""
        from .integrations.langchain import LangChainRetriever

        return LangChainRetriever(retriever=self, k=positive_int(k, "k"), search_kwargs=search_kwargs)

    def as_llama_index(self, k: int = 4, **search_kwargs: Any) -> Any:
        """This retriever as a LlamaIndex ``BaseRetriever`` (needs ``store_text=True`` and
        llama-index-core): see :class:`~adaptive_retrieval.integrations.llama_index.LlamaIndexRetriever`."""
        from .integrations.llama_index import LlamaIndexRetriever

        return LlamaIndexRetriever(self, k=positive_int(k, "k"), search_kwargs=search_kwargs)

    def close(self) -> None:
        """Release what this retriever holds open (the fine store's memory map and scratch copies, an
        engine client it created, the document store). Using it afterwards raises
        :class:`~adaptive_retrieval.errors.RetrieverClosed`; closing twice is harmless; also the end of
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
