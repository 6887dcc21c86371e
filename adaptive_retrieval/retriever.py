"""The adaptive funnel: a coarse view recalls candidates, the fine view re-ranks them.

Query path (one forward pass, never repeated)::

    tokens -> layers 1..Lc -> coarse vector -> CoarseIndex.search(candidates)
                    \\-> resume layers Lc+1..Lf -> fine vector -> FineStore.rerank(candidates) -> top k
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence, Sized
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapt import Adaptation, adapt_encoder, project_fine, pseudo_query
from .backends import BACKENDS, Backend, make_backend, open_backend
from .corpus import Corpus, DocId, check_encodable, check_id, chunks, iter_documents, iter_records
from .documents import DocumentStore
from .encoder import PROGRESS_MIN_BATCHES, Encoder
from .index import FINE_DTYPES
from .locks import ReadWriteLock
from .models import DEFAULT_MODEL
from .scratch import sweep
from .shortlist import MAX_CANDIDATES, Calibration, calibrate_shortlist, check_calibration
from .storage import (
    check_verify,
    extra_writers,
    manifest_digest,
    read_extras,
    read_manifest,
    verify_files,
    write_index,
)
from .views import View, ViewLike, check_pair

logger = logging.getLogger(__name__)

#: Documents encoded and added per step of a build; build-time adaptation fits on the first chunk.
CHUNK_SIZE = 10_000

#: What searches the coarse index for a query (see :meth:`Retriever.search`).
COARSE_QUERIES = ("projected", "early")
#: How queries may be encoded (see :meth:`Retriever.set_query_precision`).
QUERY_PRECISIONS = ("float32", "int8")


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


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _check_queries(queries: Any) -> list[str]:
    if isinstance(queries, str):
        raise TypeError("queries must be a list of strings; use search() for a single query")
    try:
        queries = list(queries)
    except TypeError:
        raise TypeError(f"queries must be a list of strings, got {type(queries).__name__}") from None
    if not queries:
        raise ValueError("queries is empty: give at least one query")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise TypeError(f"queries[{i}] must be a str, got {type(q).__name__}: {q!r:.80}")
        check_encodable(q, f"queries[{i}]")
        if not q.strip():
            raise ValueError(
                f"queries[{i}] is empty or whitespace only; an empty query has no meaning to rank by"
            )
    return queries


def _row_norms(vectors: np.ndarray, rows: int = 4096) -> np.ndarray:
    """The L2 norm of each row, in float32, a slice of ``rows`` at a time (no temporary as large as the
    batch, as ``np.linalg.norm``'s squares would be)."""
    out = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), rows):
        part = np.asarray(vectors[start : start + rows], dtype=np.float32)
        out[start : start + rows] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return out


class Retriever:
    """A two-stage dense retriever over one encoder's coarse and fine views.

    Build one with :meth:`build`, or :meth:`load` a saved one. The encoder is :attr:`encoder`; the
    engine that holds the vectors is :attr:`backend` (:mod:`adaptive_retrieval.backends`).
    """

    def __init__(
        self,
        encoder: Encoder,
        coarse: View,
        fine: View,
        backend: Backend,
        doc_ids: list[DocId],
        *,
        candidates: int = 100,
        adaptation: Adaptation | None = None,
        calibration: Calibration | None = None,
        documents: DocumentStore | None = None,
    ) -> None:
        self.encoder = encoder
        #: the documents' texts and metadata (``store_text=True``), or ``None``
        self.documents = documents
        #: the engine holding both views of every document: FAISS in this process, Qdrant or Milvus
        self.backend = backend
        self.coarse = coarse
        self.fine = fine
        self.doc_ids = doc_ids
        self.candidates = _positive_int(candidates, "candidates")
        self._rows = {d: i for i, d in enumerate(doc_ids)}
        self._lock = ReadWriteLock()  # searches read; the commit of an add writes
        self._closed = False
        #: what the build fitted to its corpus (see :mod:`adaptive_retrieval.adapt`); ``None``: not adapted
        self.adaptation = adaptation
        #: the shortlist rule :meth:`calibrate` chose for a fidelity target; ``None``: ``candidates`` fixed
        self.calibration = calibration
        self._adapt_next = False  # set by build(adapt=True): the first chunk added fits the coarse head
        self.query_precision = "float32"
        self._int8: tuple[Encoder, Encoder] | None = None  # (encoder, its int8 copy), made on first use
        self._int8_lock = threading.Lock()
        self._adding = threading.Lock()  # held by the add in progress: a second one is refused
        self._manifests: dict[Path, str] = {}  # index directories loaded or saved: their manifest's digest

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
        index: str = "Flat",
        fine_dtype: str = "float16",
        batch_size: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        train_size: int = 100_000,
        show_progress: bool | None = None,
        fine_path: str | Path | None = None,
        backend: str = "faiss",
        backend_options: dict[str, Any] | None = None,
        adapt: bool = True,
        store_text: bool = False,
    ) -> Retriever:
        """Encode ``corpus`` once and index both views, the coarse one adapted to the corpus.

        The corpus is streamed: ``chunk_size`` documents are encoded at a time, and their vectors leave
        RAM before the next chunk. With ``fine_path``, the fine vectors go straight to that ``.npy``
        file (memory-mapped for re-ranking), so RAM is bounded by the chunk and the coarse index, not
        by the corpus: the way to index more documents than fit in memory.

        Args:
            corpus: a list of strings (ids are positions), a dict id -> text, a dict id ->
                ``{"title", "text"}`` (BEIR form), or an iterable of ``(id, text)`` pairs.
            coarse: the recall view, e.g. ``(4, 64)`` or ``"4x64"``.
            fine: the re-ranking view; default the model's last layer at full width.
            model: a named model (``mpnet-base``, ``minilm-l6``), a model directory, or an :class:`Encoder`.
            candidates: how many coarse hits the fine view re-ranks (a search for more than this
                many results widens the shortlist to ``k``).
            index: FAISS factory string for the coarse index (``"Flat"``, ``"HNSW32"``, ``"IVF1024,PQ16"``...);
                indexes that need training are trained on ``train_size`` documents drawn at random.
            fine_dtype: ``"float16"`` (half the memory; see README for its measured cost) or ``"float32"``.
            batch_size: encoder batch size (default: the encoder's).
            chunk_size: documents encoded and added per step.
            show_progress: progress bars while encoding (default: on for long work).
            fine_path: a new ``.npy`` file to hold the fine vectors (default: in RAM).
            backend: ``"faiss"`` (default: the coarse index and fine store in this process),
                ``"qdrant"`` (both views per document in a Qdrant collection; the funnel is one
                server-side query) or ``"milvus"`` (both views per document in a Milvus collection:
                Milvus Lite for a file path, a server for a URI); see :mod:`adaptive_retrieval.backends`.
                Every engine returns the same hits; ``save`` records where a collection lives and
                :meth:`load` reattaches to it.
            backend_options: for ``"qdrant"``: ``location`` (``":memory:"``, the default, or a server
                URL), ``path`` (local mode on disk), ``collection``, ``client`` (a ready
                ``QdrantClient``), ``hnsw``; for ``"milvus"``: ``uri`` (required: ``"./index.db"`` or
                ``"http://host:19530"``), ``token``, ``collection``, ``client``, ``coarse_index`` and
                ``coarse_index_params`` (the coarse vectors' Milvus index), ``rerank`` (``"fetch"`` or
                ``"server"``).
            adapt: fit the coarse view's head to this corpus, without labels, from the first chunk's
                documents (their coarse states and fine views come from the one forward pass the build
                makes anyway): see :mod:`adaptive_retrieval.adapt`. The fitted head is used for every
                document of this index (the first chunk included), for :meth:`add` and for every search,
                and is saved with the index; :attr:`adaptation` says what was fitted and what it gained
                on held-out documents. It is kept only when it beats the model's own head there.
            store_text: keep each document's text (and, for ``{"title", "text", ...}`` documents, its
                other fields as metadata) in a document store saved with the index
                (:mod:`adaptive_retrieval.documents`), so that every :class:`Hit` carries them: what the
                LangChain and LlamaIndex retrievers return.
        """
        for name, flag in (("adapt", adapt), ("store_text", store_text)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        encoder = model if isinstance(model, Encoder) else Encoder.from_pretrained(model)
        retriever = cls._empty(
            encoder,
            coarse,
            fine,
            candidates,
            index,
            fine_dtype,
            train_size,
            fine_path,
            backend,
            backend_options,
        )
        retriever._adapt_next = bool(adapt)
        retriever.documents = DocumentStore.memory() if store_text else None
        try:
            retriever.add(corpus, batch_size=batch_size, chunk_size=chunk_size, show_progress=show_progress)
        except BaseException:
            retriever.backend.discard()
            raise
        return retriever

    def add(
        self,
        corpus: Corpus,
        *,
        batch_size: int | None = None,
        chunk_size: int = CHUNK_SIZE,
        show_progress: bool | None = None,
    ) -> None:
        """Encode and add more documents, ``chunk_size`` at a time (any iterable streams: RAM does not
        grow with the corpus beyond its coarse vectors, which wait in a scratch file beside an
        on-disk fine store). A list of strings gets ids ``len(self)``, ``len(self) + 1``, ...

        All-or-nothing: on any error (a duplicate id, a bad text, an interrupted encode) the index is
        left exactly as it was.
        """
        chunk_size = _positive_int(chunk_size, "chunk_size")
        total = len(corpus) if isinstance(corpus, Sized) else None
        if show_progress is None:  # long work: many batches, or a stream of unknown length
            show_progress = total is None or total >= PROGRESS_MIN_BATCHES * self.encoder.batch_size
        bar = tqdm(total=total, desc="index", unit="doc", disable=not show_progress)  # one for the corpus

        def encoded():
            for ids, texts, metadata in chunks(iter_records(corpus, first_id=len(self)), chunk_size):
                stored = (texts, metadata) if self.documents is not None else ()
                known = next((d for d in ids if d in self._rows), None)
                if known is not None:  # before encoding: a repeated id costs no forward pass
                    positional = isinstance(corpus, Sequence) and isinstance(corpus[0], str)
                    hint = (
                        f" (a list of strings takes the ids {len(self)}, {len(self) + 1}, ... from the index's "
                        "size; give a dict or (id, text) pairs to choose ids)"
                        if positional
                        else ""
                    )
                    raise ValueError(
                        f"corpus: document id {known!r} is already in the index{hint}; nothing was added"
                    )
                if self._adapt_next:
                    yield ids, *self._adapt_to(texts, batch_size, bar), *stored
                    continue
                if self.projection is not None:  # the coarse vectors come from the fine ones
                    fine = self.encoder.encode(
                        self.encoder.as_documents(texts), [self.fine], batch_size=batch_size, progress=bar
                    )
                    yield ids, self.project(fine[self.fine]), fine[self.fine], *stored
                    continue
                vectors = self.encoder.encode(
                    self.encoder.as_documents(texts),
                    [self.coarse, self.fine],
                    batch_size=batch_size,
                    progress=bar,
                )
                yield ids, vectors[self.coarse], vectors[self.fine], *stored

        before = (self.encoder, self.adaptation, self._adapt_next)
        try:
            self.add_vector_batches(encoded())
        except BaseException:
            self.encoder, self.adaptation, self._adapt_next = before
            raise
        finally:
            bar.close()

    def _adapt_to(self, texts: list[str], batch_size: int | None, bar: Any) -> tuple[np.ndarray, np.ndarray]:
        """Encode the first chunk once, fit the coarse head on it, and return its coarse and fine vectors
        (with a fitted head, the coarse ones are the fine ones projected, as for every later document;
        else through the model's head: the index never holds coarse vectors of two kinds)."""
        enc, hidden = self.encoder, self.encoder.hidden_size
        layers = [View(layer, hidden) for layer in range(1, self.coarse.layer + 1)]
        plain_views = sorted({*layers, View(self.fine.layer, hidden)})
        plain = enc.encode(
            enc.as_documents(texts), plain_views, batch_size=batch_size, apply_heads=False, progress=bar
        )
        fine_states = torch.from_numpy(plain[View(self.fine.layer, hidden)]).to(enc.device)
        fine = enc.project(fine_states, self.fine).float().cpu().numpy()
        states = [plain[v] for v in layers]
        self.encoder, self.adaptation = adapt_encoder(
            enc,
            self.coarse,
            self.fine,
            states,
            fine,
            texts=texts,
            candidates=self.candidates,
            batch_size=batch_size,
            show_progress=False if bar.disable else None,  # the pseudo-queries: a bar of their own when long
        )
        self._adapt_next = False
        if self.projection is not None:
            return self.project(fine), fine
        pooled = [torch.from_numpy(s).to(enc.device) for s in states]
        head_input = self.encoder.head_input(pooled, self.coarse.layer)
        coarse = self.encoder.project(head_input, self.coarse).float().cpu().numpy()
        return coarse, fine

    def add_vectors(
        self,
        doc_ids: Sequence[DocId],
        coarse_vectors: np.ndarray,
        fine_vectors: np.ndarray,
        texts: Sequence[str] | None = None,
        metadata: Sequence[Any] | None = None,
    ) -> None:
        """Add documents whose view vectors are already computed (by this encoder, at these views).

        All-or-nothing, like :meth:`add`. In an index with a :attr:`projection`, the coarse vectors
        are :meth:`project` of the fine ones. Otherwise they must be L2-normalised view vectors, e.g. from
        ``encoder.encode(texts, [retriever.coarse, retriever.fine])``.
        """
        self.add_vector_batches([(doc_ids, coarse_vectors, fine_vectors, texts, metadata)])

    def add_vector_batches(self, batches: Iterable[tuple[Any, ...]]) -> None:
        """Add a stream of ``(doc_ids, coarse_vectors, fine_vectors)`` batches computed elsewhere (e.g. by
        :func:`adaptive_retrieval.distributed.encode_with_ray` on a cluster), all-or-nothing over the
        whole stream: this is the one way documents enter an index (:meth:`add` feeds it its encodings).
        An index that stores texts needs them: ``(doc_ids, coarse_vectors, fine_vectors, texts)``, or
        ``(..., texts, metadata)`` with a dict (or ``None``) per document. One add at a time per
        retriever: a second while one runs is a ``RuntimeError`` (searches may run beside it)."""
        self._check_open()
        if not self._adding.acquire(blocking=False):
            raise RuntimeError(
                "another add is running on this retriever: one add at a time (searches may run beside it)"
            )
        try:
            self._add_batches(batches)
        finally:
            self._adding.release()

    def _add_batches(self, batches: Iterable[tuple[Any, ...]]) -> None:
        seen: set[DocId] = set()
        new_ids: list[DocId] = []
        try:
            position = 0
            for batch in batches:  # not enumerate(), whose reused tuple keeps the last batch alive
                self._take_batch(position, batch, seen, new_ids)
                del batch  # before the next one is made: RAM holds one batch at a time
                position += 1  # noqa: SIM113 (see the loop)
            if not new_ids:
                raise ValueError("corpus is empty: give at least one document")
            del seen  # its room is reused by what follows
            self.backend.prepare()  # e.g. an HNSW copy with the new rows, built while searches go on
        except BaseException:  # nothing is visible yet
            self._rollback()
            raise
        with self._lock.write():  # no search sees the new rows without their ids, nor a rollback's middle
            texts_committed = False
            try:
                if self.documents is not None:
                    self.documents.commit()
                    texts_committed = True
                self.backend.commit()
            except BaseException:
                self._rollback(texts_committed)
                raise
            self._extend_ids(new_ids)
            self._drop_stale_calibration()

    def _drop_stale_calibration(self) -> None:
        """Drop, with a warning, a calibration this index has outgrown (:meth:`Calibration.stale_after`)."""
        if self.calibration is not None and self.calibration.stale_after(len(self)):
            logger.warning(
                "the index has grown from %d to %d documents since calibrate(): its shortlist no longer "
                "holds; calibration dropped (searches read candidates=%d until you calibrate again)",
                self.calibration.documents, len(self), self.candidates,
            )  # fmt: skip
            self.calibration = None

    def _take_batch(self, position: int, batch: Any, seen: set[DocId], new_ids: list[DocId]) -> None:
        """One batch of :meth:`add_vector_batches`, checked, into the engine's uncommitted rows."""
        if not isinstance(batch, tuple) or not 3 <= len(batch) <= 5:
            raise TypeError(
                f"batch {position} must be a tuple (doc_ids, coarse_vectors, fine_vectors[, texts[, "
                f"metadata]]), got {type(batch).__name__}"
            )
        doc_ids, coarse_vectors, fine_vectors = list(batch[0]), batch[1], batch[2]
        coarse_vectors, fine_vectors = self._check_batch(doc_ids, coarse_vectors, fine_vectors)
        self._check_new_ids(doc_ids, seen)
        first_row = len(self) + len(new_ids)
        if self.documents is not None:
            texts = list(batch[3]) if len(batch) > 3 and batch[3] is not None else None
            metadata = list(batch[4]) if len(batch) > 4 and batch[4] is not None else None
            if (
                texts is None
                or len(texts) != len(doc_ids)
                or (metadata is not None and len(metadata) != len(doc_ids))
            ):
                raise ValueError(
                    f"this index stores texts: batch {position} needs one text (and, if any, one "
                    "metadata) per document: (doc_ids, coarse_vectors, fine_vectors, texts[, metadata])"
                )
            self.documents.add(doc_ids, texts, metadata)
        self.backend.add(first_row, doc_ids, coarse_vectors, fine_vectors)
        new_ids.extend(doc_ids)

    def _rollback(self, texts_committed: bool = False) -> None:
        """Undo an add that has not reached the id map: the engine's rows, and the texts it held (or,
        when they were already committed, wrote)."""
        try:
            self.backend.rollback(len(self))
        finally:
            if self.documents is not None:
                (self.documents.undo_commit if texts_committed else self.documents.rollback)()

    def _extend_ids(self, new_ids: list[DocId]) -> None:
        first_row = len(self.doc_ids)
        self.doc_ids.extend(new_ids)
        self._rows.update((d, first_row + i) for i, d in enumerate(new_ids))

    def _check_batch(
        self, doc_ids: list[DocId], coarse_vectors: np.ndarray, fine_vectors: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if not doc_ids:
            raise ValueError("doc_ids is empty: give at least one document")
        doc_ids[:] = [check_id(d, f"doc_ids[{i}]") for i, d in enumerate(doc_ids)]
        coarse_vectors = np.asarray(coarse_vectors, dtype=np.float32)
        fine_vectors = np.asarray(fine_vectors)
        if coarse_vectors.shape != (len(doc_ids), self.coarse.dim) or fine_vectors.shape != (
            len(doc_ids),
            self.fine.dim,
        ):
            raise ValueError(
                f"{len(doc_ids)} ids need coarse vectors of shape {(len(doc_ids), self.coarse.dim)} and fine vectors "
                f"of shape {(len(doc_ids), self.fine.dim)}; got {coarse_vectors.shape} and {fine_vectors.shape}"
            )
        for name, vectors, tolerance in (("coarse", coarse_vectors, 1e-3), ("fine", fine_vectors, 1e-2)):
            if not np.issubdtype(vectors.dtype, np.floating):
                raise TypeError(f"{name} vectors must be floats, got {vectors.dtype}")
            norms = _row_norms(vectors)
            bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > tolerance))
            if len(bad):
                raise ValueError(
                    f"{name} vector of document {doc_ids[bad[0]]!r} has norm {norms[bad[0]]:.4g}: view vectors "
                    "are L2-normalised and finite (e.g. from encoder.encode(texts, [coarse, fine]))"
                )
        return coarse_vectors, fine_vectors

    def _check_new_ids(self, ids: Sequence[DocId], seen: set[DocId]) -> None:
        for doc_id in ids:
            if doc_id in self._rows or doc_id in seen:
                raise ValueError(f"document id {doc_id!r} is already in the index; nothing was added")
            seen.add(doc_id)

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
        index: str = "Flat",
        fine_dtype: str = "float16",
        train_size: int = 100_000,
        fine_path: str | Path | None = None,
        adaptation: Adaptation | None = None,
    ) -> Retriever:
        """A retriever over precomputed view vectors (same checks as :meth:`build`, no encoding).

        ``adaptation``: the record :func:`~adaptive_retrieval.adapt.adapt_encoder` returned with
        ``encoder`` when the coarse vectors went through the head it fitted (kept with the index; its
        projection serves ``coarse_query="projected"``). The evaluations use this to run many funnels
        over one encoding of a corpus."""
        retriever = cls._empty(encoder, coarse, fine, candidates, index, fine_dtype, train_size, fine_path)
        retriever._set_adaptation(adaptation)
        try:
            retriever.add_vectors(doc_ids, coarse_vectors, fine_vectors)
        except BaseException:
            retriever.backend.discard()
            raise
        return retriever

    @classmethod
    def from_vector_batches(
        cls,
        encoder: Encoder,
        coarse: ViewLike,
        fine: ViewLike,
        batches: Iterable[tuple[Sequence[DocId], np.ndarray, np.ndarray]],
        **options: Any,
    ) -> Retriever:
        """A retriever over a stream of ``(doc_ids, coarse_vectors, fine_vectors)`` batches encoded elsewhere
        (e.g. :func:`adaptive_retrieval.distributed.vector_batches`); ``options`` are :meth:`build`'s
        index options (``candidates``, ``index``, ``fine_dtype``, ``train_size``, ``fine_path``,
        ``backend``, ``backend_options``)."""
        known = {"candidates", "index", "fine_dtype", "train_size", "fine_path", "backend", "backend_options"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; known: {', '.join(sorted(known))}")
        defaults = {"candidates": 100, "index": "Flat", "fine_dtype": "float16", "train_size": 100_000}
        o = {**defaults, **options}
        retriever = cls._empty(
            encoder,
            coarse,
            fine,
            o["candidates"],
            o["index"],
            o["fine_dtype"],
            o["train_size"],
            o.get("fine_path"),
            o.get("backend", "faiss"),
            o.get("backend_options"),
        )
        try:
            retriever.add_vector_batches(batches)
        except BaseException:
            retriever.backend.discard()
            raise
        return retriever

    @classmethod
    def _empty(
        cls,
        encoder: Encoder,
        coarse: ViewLike,
        fine: ViewLike | None,
        candidates: int,
        index: str,
        fine_dtype: str,
        train_size: int,
        fine_path: str | Path | None = None,
        backend: str = "faiss",
        backend_options: dict[str, Any] | None = None,
    ) -> Retriever:
        coarse_view = encoder.check_view(coarse, name="coarse")
        fine_view = encoder.full_view if fine is None else encoder.check_view(fine, name="fine")
        check_pair(coarse_view, fine_view)
        if fine_dtype not in FINE_DTYPES:
            raise ValueError(f"fine_dtype={fine_dtype!r} is not supported; choose one of {FINE_DTYPES}")
        _positive_int(candidates, "candidates"), _positive_int(train_size, "train_size")
        if backend not in BACKENDS:
            raise ValueError(f"backend={backend!r} is not known; choose one of {', '.join(BACKENDS)}")
        if backend == "faiss":
            if backend_options is not None:
                raise ValueError(
                    "backend_options apply to backend='qdrant' or 'milvus'; the FAISS backend takes index= "
                    "and fine_path="
                )
            options = {
                "index": index,
                "fine_dtype": fine_dtype,
                "fine_path": fine_path,
                "train_size": train_size,
            }
        else:
            if fine_path is not None:
                raise ValueError(
                    f"fine_path applies to the FAISS backend; {backend} stores the fine vectors itself"
                )
            if index != "Flat":
                raise ValueError(
                    f"index={index!r} is a FAISS factory string; {backend} takes its coarse index in "
                    "backend_options (see adaptive_retrieval.backends)"
                )
            if backend_options is not None and not isinstance(backend_options, dict):
                raise TypeError(f"backend_options must be a dict, got {type(backend_options).__name__}")
            options = dict(backend_options or {})
        engine = make_backend(backend, coarse_view.dim, fine_view.dim, options)
        return cls(encoder, coarse_view, fine_view, engine, [], candidates=candidates)

    def set_query_precision(self, precision: str) -> None:
        """Encode queries in ``"float32"`` (the default: as the documents were encoded) or ``"int8"``
        (the encoder's linear layers in int8, each token quantized on its own, :meth:`Encoder.quantized`:
        measured 1.7-2.0x faster on a CPU with AVX512-VNNI, keeping 0.96 of the float32 top 10; torch
        >= 2.6; on CPUs without int8 dot-product instructions torch's fallback may be slower than float32:
        ``benchmarks/bench_int8.py`` measures both on yours). Documents are always encoded in float32;
        this changes no vector in the index."""
        if precision not in QUERY_PRECISIONS:
            raise ValueError(f"precision={precision!r}: choose one of {', '.join(QUERY_PRECISIONS)}")
        self.query_precision = precision

    @property
    def query_encoder(self) -> Encoder:
        """The encoder queries go through: :attr:`encoder`, or its int8 copy (:meth:`set_query_precision`)."""
        if self.query_precision == "float32":
            return self.encoder
        made = self._int8
        if made is None or made[0] is not self.encoder:
            with self._int8_lock:  # made once, however many searches ask for it at first
                made = self._int8
                if made is None or made[0] is not self.encoder:
                    made = self._int8 = (self.encoder, self.encoder.quantized())
        return made[1]

    def _set_adaptation(self, adaptation: Adaptation | None) -> None:
        if adaptation is not None:
            if not isinstance(adaptation, Adaptation):
                raise TypeError(f"adaptation must be an Adaptation, got {type(adaptation).__name__}")
            if (adaptation.layer, adaptation.dim) != self.coarse.as_tuple():
                raise ValueError(
                    f"adaptation was fitted for the coarse view ({adaptation.layer}, {adaptation.dim}), "
                    f"not {self.coarse}"
                )
            p = adaptation.projection
            if p is not None and p.shape != (self.fine.dim, self.coarse.dim):
                raise ValueError(
                    f"adaptation.projection is {p.shape}, the views need {(self.fine.dim, self.coarse.dim)}"
                )
        self.adaptation = adaptation

    @property
    def fitted_head(self) -> bool:
        """Whether the coarse view goes through a head fitted to this corpus at build time."""
        return self.adaptation is not None and self.adaptation.chosen == "ridge"

    @property
    def projection(self) -> np.ndarray | None:
        """``(fine_dim, coarse_dim)``: maps a query's fine vector into the coarse view's space (the
        ``"projected"`` coarse query), from the build's fitted head; ``None`` without one."""
        if not self.fitted_head or self.adaptation.projection is None:
            return None
        return self.adaptation.projection

    def project(self, fine_vectors: np.ndarray) -> np.ndarray:
        """Fine view vectors ``(n, fine_dim)`` as this index's coarse vectors: projected on the fine
        view's directions that the build's fitted head predicts (:attr:`projection`), then normalised.

        In an index with a projection, each document's coarse vector is made so (exact on the
        documents' side: only the query's side of the funnel is ever approximate), and so is a
        ``"projected"`` coarse query; the early layer's head predicts the same coordinates for
        ``"early"`` ones. Vectors given to :meth:`add_vectors` for such an index should be made so too.
        """
        if self.projection is None:
            raise ValueError(
                "this index has no projection (no coarse head was fitted to its corpus at build)"
            )
        return project_fine(fine_vectors, self.projection)

    def _shortlist(
        self, k: int, candidates: int | None, coarse_query: str
    ) -> tuple[int, int | None, int | None]:
        """The coarse candidates a search asks for, the patience of a patient re-rank (or ``None``), and
        the depth the shortlist was calibrated at (or ``None``): an index that cannot widen cheaply
        (HNSW) must search that deep for a shorter shortlist to be the calibration's first candidates."""
        if candidates is not None:
            return max(_positive_int(candidates, "candidates"), k), None, None
        cal = self.calibration
        if cal is None or cal.coarse_query != coarse_query:
            return max(self.candidates, k), None, None
        if cal.rule == "patient":
            return max(cal.cap, k), cal.patience, cal.cap
        return max(cal.candidates, k), None, cal.cap

    def _coarse_query(self, coarse_query: str | None) -> str:
        if coarse_query is None:
            return "early" if self.projection is None else "projected"
        if coarse_query not in COARSE_QUERIES:
            raise ValueError(f"coarse_query={coarse_query!r}: choose one of {', '.join(COARSE_QUERIES)}")
        if coarse_query == "projected" and self.projection is None:
            raise ValueError(
                "coarse_query='projected' needs the projection of a coarse head fitted to this corpus at "
                "build (Retriever.build(..., adapt=True), the default, when the fit was kept: see "
                "retriever.adaptation); this index has none, so its queries search with coarse_query='early'"
            )
        return coarse_query

    def __len__(self) -> int:
        return len(self.doc_ids)

    def as_langchain(self, k: int = 4, **search_kwargs: Any) -> Any:
        """This retriever as a LangChain ``BaseRetriever`` (needs ``store_text=True`` and langchain-core):
        see :class:`~adaptive_retrieval.integrations.langchain.LangChainRetriever`."""
        from .integrations.langchain import LangChainRetriever

        return LangChainRetriever(retriever=self, k=_positive_int(k, "k"), search_kwargs=search_kwargs)

    def as_llama_index(self, k: int = 4, **search_kwargs: Any) -> Any:
        """This retriever as a LlamaIndex ``BaseRetriever`` (needs ``store_text=True`` and
        llama-index-core): see :class:`~adaptive_retrieval.integrations.llama_index.LlamaIndexRetriever`."""
        from .integrations.llama_index import LlamaIndexRetriever

        return LlamaIndexRetriever(self, k=_positive_int(k, "k"), search_kwargs=search_kwargs)

    def close(self) -> None:
        """Release what this retriever holds open: the fine store's memory map (and its ``grow-*.npy``
        scratch copy, after an ``add`` to a loaded index), an engine's client it created (a Milvus Lite
        file's lock with its last user), the document store and its scratch copy. Searching,
        adding or saving afterwards raises ``RuntimeError``; closing twice is harmless. Also the end
        of a ``with`` block."""
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
            raise RuntimeError("this retriever is closed; load the index again to use it")

    def __repr__(self) -> str:
        return (
            f"Retriever(model={self.encoder.name!r}, coarse={self.coarse}, fine={self.fine}, docs={len(self)}, "
            f"index={self.backend.describe()!r}, candidates={self.candidates}, "
            f"coarse_head={'fitted' if self.fitted_head else 'model'!r})"
        )

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
        label-free), measured against exact search over the fine store, and use it from now on.

        Sample queries: ``queries`` (the users' own, best), or pseudo-queries drawn from ``documents``
        (any corpus form; each document's first sentence, as the build's adaptation draws them, with
        the document itself left out of its ranking when it is indexed). Half fit the choice, half
        check it. Two rules are fitted (:mod:`adaptive_retrieval.shortlist`): the smallest fixed
        shortlist, and the smallest patience of a shortlist widened per query (capped at ``cap``);
        searches without ``candidates=`` use the one that read fewer candidates, for the coarse query
        calibrated. The result (:attr:`calibration`, saved with the index) says what both measured on
        the check half. Calibrate again after adding many documents: an index grown past twice its size
        at calibration (or at all, if the shortlist was then the whole index) drops the calibration
        with a warning. Raises ``ValueError`` with fewer than 20 usable queries.
        """
        self._check_open()
        t0 = time.perf_counter()
        coarse_query = self._coarse_query(coarse_query)
        k, cap, max_queries = (
            _positive_int(x, n) for x, n in ((k, "k"), (cap, "cap"), (max_queries, "max_queries"))
        )
        own = None
        if queries is not None and documents is not None:
            raise ValueError("calibrate() takes queries=[...] or documents=<corpus>, not both")
        if queries is not None:
            queries = _check_queries(queries)[:max_queries]
            source = f"{len(queries)} given queries"
        elif documents is not None:
            docs = list(iter_documents(documents))
            rng = np.random.default_rng(seed)
            picked = sorted(rng.choice(len(docs), size=min(max_queries, len(docs)), replace=False))
            pairs = [(docs[i][0], pseudo_query(docs[i][1])) for i in picked]
            pairs = [(d, q) for d, q in pairs if q.strip()]
            queries = [q for _, q in pairs]
            own = np.array([self._rows.get(d, -1) for d, _ in pairs], dtype=np.int64)
            source = f"pseudo-queries: first sentences of {len(queries)} documents"
        else:
            raise ValueError(
                "calibrate() needs sample queries: queries=[...] (the users' own) or documents=<corpus> "
                "to draw pseudo-queries from"
            )
        check_calibration(len(queries), target)  # before any query is encoded
        spare = 0 if own is None else 1
        k, cap = min(k, len(self) - spare), min(cap, len(self) - spare)
        if k < 1:
            raise ValueError(f"the index holds {len(self)} documents: too few to calibrate")
        enc = self.query_encoder
        vectors = enc.encode(enc.as_queries(queries), [self.coarse, self.fine], batch_size=batch_size)
        fine_q = vectors[self.fine]
        coarse_q = self.project(fine_q) if coarse_query == "projected" else vectors[self.coarse]
        with self._lock.read():
            _, exact = self.backend.exact_search(fine_q, k + spare)
            _, cand = self.backend.coarse_search(coarse_q, cap + spare)
            n = len(queries)
            scores = np.full((n, cap), -np.inf, dtype=np.float32)
            members = np.zeros((n, cap), dtype=bool)
            for q in range(n):
                skip = -2 if own is None else own[q]
                want = [d for d in exact[q] if d != skip and d >= 0][:k]
                got = np.array([d for d in cand[q] if d != skip][:cap], dtype=np.int64)
                valid = got >= 0
                if valid.any():
                    scores[q, : len(got)][valid] = self.backend.fine_scores(
                        fine_q[q : q + 1], got[valid][None]
                    )[0]
                members[q, : len(got)] = np.isin(got, want) & valid
        choice, measured = calibrate_shortlist(scores, members, k, target, seed=seed)
        self.calibration = Calibration(
            target=float(target),
            k=k,
            coarse_query=coarse_query,
            queries=source,
            measured=measured,
            seconds=time.perf_counter() - t0,
            documents=len(self),
            **choice,
        )
        return self.calibration

    # --------------------------------------------------------------------------------------- search

    def search(
        self,
        query: str,
        k: int = 10,
        *,
        candidates: int | None = None,
        coarse_query: str | None = None,
        **knobs: float,
    ) -> list[Hit]:
        """The ``k`` best documents for ``query``, best first.

        ``candidates`` overrides the shortlist size for this call; it is widened to ``k`` when ``k`` is
        larger, so a search returns ``min(k, len(self))`` hits. ``coarse_query`` says what searches the
        coarse index: ``"projected"`` (the default when the build fitted a head: the query runs to the
        fine layer, and its fine vector, projected into the coarse view's space, finds the shortlist;
        only the documents' side of the coarse view is approximate, so the shortlist holds far more of
        the fine view's top ``k``) or ``"early"`` (the query's own coarse view, from its early layer,
        finds the shortlist, then its pass resumes to the fine layer). Both run every layer of the
        query once. ``knobs`` are FAISS search parameters such as ``nprobe`` or ``efSearch``
        (``hnsw_ef``, ``exact`` for Qdrant; ``ef``, ``nprobe`` for Milvus), for this call only: a search changes no shared state, so
        searches may run from many threads at once. An empty or whitespace-only query is a ``ValueError``.
        """
        if not isinstance(query, str):
            raise TypeError(
                f"query must be a str, got {type(query).__name__}; use search_batch() for several"
            )
        if not query.strip():
            raise ValueError("query is empty or whitespace only; an empty query has no meaning to rank by")
        check_encodable(query, "query")
        return self.search_batch([query], k, candidates=candidates, coarse_query=coarse_query, **knobs)[0]

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        candidates: int | None = None,
        coarse_query: str | None = None,
        batch_size: int | None = None,
        timings: SearchTimings | None = None,
        **knobs: float,
    ) -> list[list[Hit]]:
        """:meth:`search` for many queries, encoded ``batch_size`` at a time. ``timings``, if given,
        accumulates the seconds spent in each stage and what the searches ran."""
        queries = _check_queries(queries)
        D, I = self.search_arrays(
            queries,
            k,
            candidates=candidates,
            coarse_query=coarse_query,
            batch_size=batch_size,
            timings=timings,
            **knobs,
        )
        documents = self.documents
        found = {} if documents is None else documents.get([self.doc_ids[i] for i in I[I >= 0].tolist()])
        return [
            [
                Hit(self.doc_ids[i], float(s), rank, *DocumentStore.lookup(found, self.doc_ids[i]))
                for rank, (s, i) in enumerate(zip(ds, ids), start=1)
                if i >= 0
            ]
            for ds, ids in zip(D, I)
        ]

    def search_arrays(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        candidates: int | None = None,
        coarse_query: str | None = None,
        batch_size: int | None = None,
        timings: SearchTimings | None = None,
        **knobs: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The funnel in FAISS's form: ``(D, I)`` of shape ``(n_queries, min(k, len(self)))`` with
        internal ids (rows of :attr:`doc_ids`), padded with ``-1`` where a search found fewer."""
        self._check_open()
        queries = _check_queries(queries)
        k = min(_positive_int(k, "k"), max(len(self), 1))  # no index has more to return
        coarse_query = self._coarse_query(coarse_query)
        shortlist, patience, depth = self._shortlist(k, candidates, coarse_query)
        batch_size = (
            self.encoder.batch_size if batch_size is None else _positive_int(batch_size, "batch_size")
        )
        # checked before any query is encoded; per call: nothing is left set on the index
        params = self.backend.search_parameters(depth=depth, **knobs)
        if len(self) == 0:  # e.g. a reopened collection whose documents were all deleted
            return np.empty((len(queries), 0), np.float32), np.empty((len(queries), 0), np.int64)
        timings = timings if timings is not None else SearchTimings()
        parts = []
        for i in range(0, len(queries), batch_size):
            with self._lock.read():  # many searches at once; an add's commit waits for them, and they for it
                parts.append(
                    self._funnel(
                        queries[i : i + batch_size], k, shortlist, timings, params, coarse_query, patience
                    )
                )
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _funnel(
        self,
        queries: list[str],
        k: int,
        shortlist: int,
        timings: SearchTimings,
        params: Any = None,
        coarse_query: str = "early",
        patience: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        enc = self.query_encoder
        shortlist = min(shortlist, len(self))
        with torch.inference_mode():

            def resume(state: Any) -> np.ndarray:  # layers coarse+1 .. fine only: no layer runs twice
                return enc.view(enc.advance(state, self.fine.layer), self.fine.dim).float().cpu().numpy()

            t0 = time.perf_counter()
            state = enc.advance(enc.start(enc.as_queries(queries)), self.coarse.layer)
            if coarse_query == "early":
                coarse_q = enc.view(state, self.coarse.dim).float().cpu().numpy()
            t1 = time.perf_counter()
            timings.encode_coarse += t1 - t0
            fine_q = resume(state)
            if coarse_query == "projected":
                coarse_q = self.project(fine_q)
            timings.resume_fine += time.perf_counter() - t1
        seconds: dict[str, float] = {}
        D, I, fallbacks, read = self.backend.search(
            coarse_q, fine_q, k, shortlist, params=params, patience=patience, seconds=seconds
        )
        if fallbacks:
            logger.debug("coarse stage returned fewer than k ids for %d queries; ranked exactly", fallbacks)
        timings.coarse_search += seconds.get("coarse_search", 0.0)
        timings.rerank += seconds.get("rerank", 0.0)
        timings.fallbacks += fallbacks
        self._count(timings, len(queries), coarse_query, read.tolist())
        return D, I

    def _count(self, timings: SearchTimings, n: int, coarse_query: str, read: list[int]) -> None:
        timings.queries += n
        timings.layers += n * self.fine.layer
        timings.shortlists += read
        timings.coarse_queries[coarse_query] = timings.coarse_queries.get(coarse_query, 0) + n

    # ---------------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Save to directory ``path`` atomically; an interrupted save leaves the previous index whole."""
        self._check_open()
        entry = self.backend.manifest()  # an engine that cannot be reopened refuses here, before any write
        enc = self.encoder
        manifest = {
            "model": {
                "name": enc.name,
                "fingerprint": enc.fingerprint,
                "model_type": enc.model.config.model_type,
                "pooling": enc.pooling,
                "max_length": enc.max_length,
                "query_prompt": enc.query_prompt,
                "document_prompt": enc.document_prompt,
                "n_layers": enc.n_layers,
                "hidden_size": enc.hidden_size,
            },
            "coarse": list(self.coarse.as_tuple()),
            "fine": list(self.fine.as_tuple()),
            "metric": "inner_product",
            "backend": entry,
            "index": self.backend.describe(),
            "count": len(self),
            "candidates": self.candidates,
            "adaptation": None if self.adaptation is None else self.adaptation.as_dict(),
            "calibration": None if self.calibration is None else self.calibration.as_dict(),
            "saved_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        from . import __version__

        manifest["library_version"] = __version__
        fitted = self.fitted_head
        heads = {self.coarse.layer: enc.heads[self.coarse.layer]} if fitted else None
        with self._lock.read():  # an add commits before or after this save, never during it
            manifest["count"] = len(self)
            # read with the count: an add that committed since the dict above may have dropped it
            manifest["calibration"] = None if self.calibration is None else self.calibration.as_dict()
            writers = {
                **self.backend.files(list(self.doc_ids)),
                **extra_writers(None, heads, self.projection),
            }
            if self.documents is not None:
                writers["texts"] = ("sqlite", self.documents.save)
            # FAISS's rows (and any index's texts) live in the directory: a save over another writer's
            # would drop them; an engine's rows stay in its collection, which every writer's manifest names
            where = Path(path).resolve()
            guarded = entry["name"] == "faiss" or "texts" in writers
            expect = self._manifests.get(where) if guarded else None
            self._manifests[where] = write_index(Path(path), manifest, writers, expect)

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
        """Load a saved index. ``model`` defaults to the one named in the manifest; a model whose
        weights, pooling, max length or prompts differ from the index's is refused. ``verify`` (default ``True``)
        checks every file's size and sha256, sampling files over 64 MB (their first and last 4 MB: a
        large fine store loads in milliseconds); ``"full"`` hashes every byte; ``False``, sizes only.
        ``mmap`` memory-maps the fine matrix.

        An index whose vectors live in Qdrant or Milvus reattaches to its collection (where ``save``
        recorded it, or where ``backend_options`` say: ``location``/``path``/``client`` for Qdrant,
        ``uri``/``token``/``client`` for Milvus); every document in the collection becomes searchable,
        those other processes added included."""
        check_verify(verify)
        digest = manifest_digest(Path(path))  # before reading: a save meanwhile shows as a change
        manifest = read_manifest(Path(path))
        for stale in sweep(Path(path)):  # scratch copies of a process killed while it grew this index
            logger.info("removed %s, left by a process that no longer runs", stale)
        saved = manifest["model"]
        # how the index's texts were encoded: the model must encode queries the same way
        settings = {
            "pooling": saved["pooling"],
            "max_length": saved["max_length"],
            "query_prompt": saved.get("query_prompt", ""),
            "document_prompt": saved.get("document_prompt", ""),
        }
        if model is None:
            if not saved.get("name"):
                raise ValueError(
                    f"the index at {str(path)!r} records no model name; pass model=... to load it"
                )
            try:
                model = Encoder.from_pretrained(saved["name"], **settings)
            except ValueError as err:
                raise ValueError(
                    f"the index at {str(path)!r} was built with model {saved['name']!r}, which cannot be found "
                    f"here ({err}); pass model=... to load it"
                ) from None
        elif not isinstance(model, Encoder):
            model = Encoder.from_pretrained(model, **settings)
        verify_files(Path(path), manifest, verify)
        heads, projection = read_extras(Path(path), manifest)
        if heads:  # the head fitted to this corpus at build time
            model = model.with_heads(heads)
        if model.fingerprint != saved["fingerprint"]:
            raise ValueError(
                f"model {model.name!r} does not match the index at {str(path)!r}, which was built with "
                f"{saved['name']!r} (weights sha256 {saved['fingerprint'][:12]}..., given {model.fingerprint[:12]}...)"
            )
        for key, value in settings.items():
            if getattr(model, key) != value:
                raise ValueError(
                    f"model {key}={getattr(model, key)!r} does not match the index at {str(path)!r} ({value!r})"
                )
        coarse = model.check_view(manifest["coarse"], name="coarse")
        fine = model.check_view(manifest["fine"], name="fine")
        adaptation, calibration = manifest["adaptation"], manifest["calibration"]
        try:
            adaptation = None if adaptation is None else Adaptation(**adaptation, projection=projection)
            calibration = None if calibration is None else Calibration.from_dict(calibration)
        except TypeError as err:
            raise ValueError(
                f"the index at {str(path)!r} is damaged: its manifest's records: {err}"
            ) from None
        entry = manifest["backend"]
        options = dict(backend_options or {})
        if entry["name"] == "faiss":
            if options:
                raise ValueError("backend_options apply to indexes whose vectors live in Qdrant or Milvus")
            options = {"verify": False, "mmap": mmap}  # verified above
        documents = None
        if "texts" in manifest["files"]:
            documents = DocumentStore.load(Path(path) / manifest["files"]["texts"])
            if len(documents) > manifest["count"]:  # fewer: documents another writer added without texts
                documents.close()
                raise ValueError(
                    f"index at {str(path)!r} is inconsistent: its document store holds {len(documents)} texts, "
                    f"the manifest {manifest['count']} documents"
                )
        try:
            backend, doc_ids = open_backend(entry, Path(path), manifest, options)
        except BaseException:
            if documents is not None:
                documents.close()
            raise
        retriever = cls(
            model,
            coarse,
            fine,
            backend,
            doc_ids,
            candidates=manifest["candidates"],
            adaptation=adaptation,
            calibration=calibration,
            documents=documents,
        )
        if digest is not None:
            retriever._manifests[Path(path).resolve()] = digest
        retriever._drop_stale_calibration()  # e.g. an engine's collection that other processes grew
        return retriever
