"""From a corpus to the vector batches an index takes: each chunk of documents encoded once.

:class:`CorpusEncoding` streams a corpus in chunks through the encoder and yields the
``(doc_ids, coarse_vectors, fine_vectors[, texts, metadata])`` batches that
:class:`adaptive_retrieval.writer.IndexWriter` commits. At a build with ``adapt=True`` the first chunk
also fits the coarse head to the corpus (:func:`adaptive_retrieval.adapt.adapt_encoder`); from then on
every document's coarse vector is its fine vector projected (:func:`adaptive_retrieval.adapt.project_fine`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .adapt import Adaptation, adapt_encoder, check_adaptation, project_fine
from .backends import EngineOptions, create_engine, engine_options
from .checks import positive_int
from .corpus import Corpus, DocId, chunks, iter_records
from .documents import DocumentStore
from .encoder import PROGRESS_MIN_BATCHES, Encoder
from .engine_lexical import EngineLexicalIndex
from .errors import (
    CorpusError,
    CorpusTypeError,
    InvalidArgument,
    InvalidArgumentType,
)
from .first_stage import budget_options, by_size, first_stage_chosen, within_budget
from .lexical import LexicalIndex
from .metadata import check_metadata
from .models import DEFAULT_MODEL
from .passages import budget, document_of, expand, split
from .precision import check_precision, resolve
from .removal import compact_if_due
from .views import View, ViewLike, check_pair

logger = logging.getLogger(__name__)

CHUNK_SIZE = 10_000
"""Documents encoded and added per step of a build; build-time adaptation fits on the first chunk."""


def projection_of(adaptation: Adaptation | None) -> np.ndarray | None:
    """The ``(fine_dim, coarse_dim)`` projection of a head fitted to the corpus, or ``None`` (no fitted
    head, or one without a projection)."""
    if adaptation is None or adaptation.chosen != "ridge":
        return None
    return adaptation.projection


def _merged(own: Any, given: Any) -> Any:
    if given is None or own is None:
        return given if own is None else own
    if not isinstance(given, dict):
        return given  # refused by the metadata store, naming the document
    return {**own, **given}


class CorpusEncoding:
    """The batches of one add: ``corpus`` in chunks of ``chunk_size``, encoded by ``encoder`` at the
    views ``coarse`` and ``fine``. With ``adapt``, the first chunk fits the coarse head; afterwards
    ``encoder`` and ``adaptation`` hold what the index should use from then on.

    Args:
        known: whether a document id is already in the index (refused before any encoding; ``None``:
            known ids are allowed, an upsert).
        first_id: the id a list of strings starts from (the index's size).
        store_text: whether the batches carry texts (they always carry metadata).
        bar: a tqdm bar advanced by documents encoded.
        metadata: one record (a dict or ``None``) per document, merged over the document's own fields.
        passage_tokens: split documents longer than this many tokens into passages
            (:mod:`adaptive_retrieval.passages`); ``None``: cut them to the model's max length.
        coarse_bytes: with ``adapt``, the first chunk also chooses the coarse code within this many bytes
            per document (:func:`adaptive_retrieval.first_stage.choose`): ``coarse`` and ``first_stage``
            say what it chose.
    """

    def __init__(
        self,
        corpus: Corpus,
        encoder: Encoder,
        coarse: View,
        fine: View,
        *,
        adaptation: Adaptation | None,
        adapt: bool,
        candidates: int,
        known: Callable[[DocId], bool] | None,
        first_id: int,
        store_text: bool,
        chunk_size: int,
        batch_size: int | None,
        bar: Any,
        metadata: Sequence[Any] | None = None,
        passage_tokens: int | None = None,
        coarse_bytes: int | None = None,
    ) -> None:
        self.corpus, self.encoder, self.coarse, self.fine = corpus, encoder, coarse, fine
        self.coarse_bytes, self.first_stage = coarse_bytes, None
        self.passage_tokens = passage_tokens
        self.metadata = metadata
        self.adaptation, self.adapt, self.candidates = adaptation, adapt, candidates
        self.known, self.first_id, self.store_text = known, first_id, store_text
        self.chunk_size, self.batch_size, self.bar = chunk_size, batch_size, bar
        self.documents = self.cut = 0  # documents encoded, and those longer than the model's max length
        self.split = self.passages = 0  # documents split into passages, and their passages

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        given = None if self.metadata is None else iter(self.metadata)
        for ids, texts, metadata in chunks(
            iter_records(self.corpus, first_id=self.first_id), self.chunk_size
        ):
            if given is not None:  # metadata= beside the corpus
                metadata = [_merged(own, next(given, None)) for own in metadata]
            if self.known is not None:
                self._refuse_known(ids)
            self.documents += len(texts)
            if self.passage_tokens is None:
                self.cut += self.encoder.over_length(texts)
            else:  # a long document becomes its passages' rows
                spans = split(self.encoder.tokenizer, texts, self.passage_tokens)
                ids, texts, metadata, split_docs = expand(ids, texts, metadata, spans)
                self.split += split_docs
                self.passages += sum(len(s) for s in spans if len(s) > 1)
                if self.bar.total is not None and len(ids) > len(spans):  # the bar counts what is encoded
                    self.bar.total += len(ids) - len(spans)
                    self.bar.refresh()
            coarse, fine = self._fit(texts) if self.adapt else self._encode(texts)
            yield ids, coarse, fine, texts if self.store_text else None, metadata

    def _refuse_known(self, ids: list[DocId]) -> None:
        """Before encoding: a repeated id costs no forward pass."""
        known = next((d for d in ids if self.known(d)), None)
        if known is None:
            return
        corpus = self.corpus
        positional = isinstance(corpus, Sequence) and isinstance(corpus[0], str)
        hint = (
            f" (a list of strings takes the ids {self.first_id}, {self.first_id + 1}, ... from the index's "
            "size; give a dict or (id, text) pairs to choose ids)"
            if positional
            else ""
        )
        raise CorpusError(f"corpus: document id {known!r} is already in the index{hint}; nothing was added")

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.encoder
        projection = projection_of(self.adaptation)
        if projection is not None:  # the coarse vectors come from the fine ones
            fine = enc.encode(
                enc.as_documents(texts), [self.fine], batch_size=self.batch_size, progress=self.bar
            )
            return project_fine(fine[self.fine], projection), fine[self.fine]
        vectors = enc.encode(
            enc.as_documents(texts), [self.coarse, self.fine], batch_size=self.batch_size, progress=self.bar
        )
        return vectors[self.coarse], vectors[self.fine]

    def _fit(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode the first chunk once, fit the coarse head on it, and return its coarse and fine vectors
        (with a fitted head, the coarse ones are the fine ones projected, as for every later document;
        else through the model's head: the index never holds coarse vectors of two kinds)."""
        enc, hidden = self.encoder, self.encoder.hidden_size
        layers = [View(layer, hidden) for layer in range(1, self.coarse.layer + 1)]
        plain_views = sorted({*layers, View(self.fine.layer, hidden)})
        plain = enc.encode(
            enc.as_documents(texts),
            plain_views,
            batch_size=self.batch_size,
            apply_heads=False,
            progress=self.bar,
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
            batch_size=self.batch_size,
            show_progress=False
            if self.bar.disable
            else None,  # the pseudo-queries: a bar of their own when long
        )
        self.adapt = False
        if self.coarse_bytes is not None:  # the coarse view's dimensions may change with the code chosen
            self.first_stage, self.coarse = within_budget(
                self.adaptation, self.coarse, fine, self.coarse_bytes
            )
        projection = projection_of(self.adaptation)
        if projection is not None:
            return project_fine(fine, projection), fine
        pooled = [torch.from_numpy(s).to(enc.device) for s in states]
        head_input = self.encoder.head_input(pooled, self.coarse.layer)
        return self.encoder.project(head_input, self.coarse).float().cpu().numpy(), fine


# ------------------------------------------------------------------------------------------------------
# Retriever's constructors and add, defined here with the work they orchestrate; retriever.py attaches
# them (``Retriever.build = classmethod(indexing.build)``, ...). ``cls``/``self`` are the Retriever.


def build(
    cls: Any,
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
    metadata: Sequence[Any] | None = None,
    hybrid: bool = True,
    language: str = "english",
    passages: bool = True,
    coarse_bytes: int | None = None,
    precision: str = "float32",
    batch_size: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress: bool | None = None,
    **faiss_options: Any,
) -> Any:
    """Encode ``corpus`` once and index both views, the coarse one adapted to the corpus.

    The corpus streams through in chunks of ``chunk_size`` documents; their vectors leave RAM before
    the next chunk (with ``FaissOptions(fine_path=...)`` the fine vectors go straight to disk).

    Args:
        corpus: a list of strings (ids are positions), a dict id -> text, a dict id ->
            ``{"title", "text", ...}`` (BEIR form; other fields are metadata), or ``(id, text)`` pairs.
        coarse: the recall view, e.g. ``(4, 64)`` or ``"4x64"``.
        fine: the re-ranking view; default the model's last layer at full width.
        model: a named model, a model directory, a Hugging Face id, or an
            :class:`adaptive_retrieval.Encoder`.
        candidates: how many coarse hits the fine view re-ranks (widened to ``k`` when smaller).
        backend: the engine: ``"faiss"`` (default), ``"qdrant"``, ``"milvus"``, or its options:
            ``FaissOptions(index="HNSW32")``, ``QdrantOptions(path=...)``, ``MilvusOptions(uri=...)``
            (:mod:`adaptive_retrieval.backends`).
        backend_options: an engine name's options as a dict (``{"uri": "./index.db"}``).
        adapt: fit the coarse view's head to this corpus, without labels, on the first chunk
            (:mod:`adaptive_retrieval.adapt`); kept only when it beats the model's own head.
        store_text: keep texts (:mod:`adaptive_retrieval.documents`) so hits carry them (metadata is
            kept either way, filterable: :mod:`adaptive_retrieval.metadata`).
        metadata: one dict (or ``None``) per document of ``corpus``, in order (merged over a BEIR
            document's own fields), e.g. beside a list of texts.
        hybrid: keep a BM25 index of the texts beside the vectors (:mod:`adaptive_retrieval.lexical`), whose
            evidence searches fuse with the fine view's (:mod:`adaptive_retrieval.hybrid`); ``False``: dense only.
        language: the lexical index's stemmer and stop words (:func:`adaptive_retrieval.lexical.languages`).
        passages: split a document longer than the model's max length into passages, each indexed
            (:mod:`adaptive_retrieval.passages`: searches return documents by their best passage; later adds
            split too); ``False``: cut such a document to the max length (and say how many were cut).
        coarse_bytes: a memory budget for the coarse index, in bytes per document (FAISS engine): the first
            chunk chooses, on its own pseudo-queries, the coarse dimensions and code within it whose shortlist
            for 95% of the exact top 10 is shortest (:mod:`adaptive_retrieval.first_stage`; the coarse view's
            dimensions follow the choice; ``retriever.first_stage`` records it). ``None``: the coarse view as
            given, in the engine's index (SQ8 by default: ``coarse``'s dimensions in bytes).
        precision: what the encoder runs in for the documents: ``"float32"`` (the default),
            ``"bfloat16"`` (:meth:`adaptive_retrieval.Encoder.bfloat16`: documents encode 3.1-4.4x faster on a
            processor with AMX, 1.6-1.8x with AVX-512 BF16 alone, keeping 0.988-0.996 of float32's top 10 on
            five sets), or
            ``"auto"`` (bfloat16 where the processor has it natively, else float32:
            :func:`adaptive_retrieval.precision.resolve`). Saved with the index
            (``retriever.encoder.precision``); queries follow it, or run in bfloat16 where the processor
            has it (:meth:`adaptive_retrieval.Retriever.set_query_precision`). An
            :class:`adaptive_retrieval.Encoder` given as ``model`` is copied into it.
        batch_size: encoder batch size (default: the encoder's).
        chunk_size: documents encoded and added per step.
        show_progress: progress bars while encoding (default: on for long work).
        **faiss_options: ``index=``, ``fine_dtype=``, ``fine_path=``, ``train_size=``: deprecated
            spellings of :class:`adaptive_retrieval.backends.FaissOptions`.

    Returns:
        The retriever, searchable at once.

    Raises:
        InvalidArgument: a bad view, option or engine (InvalidArgumentType: one of the wrong type).
        ModelMismatch: a view outside the model, or a coarse view deeper (or wider) than the fine one.
        ModelNotFound: a model name, directory or hub id that cannot be resolved here.
        InstallationError: a named model's parts missing (ImportError: an engine's client library).
        CorpusError: a document, id or text that cannot be indexed, or an empty corpus
            (CorpusTypeError: one of the wrong type); nothing is left behind.
        IndexConflict: an engine collection of that name exists already.
        EngineError: the engine (Qdrant, Milvus) refused or failed.
        InvalidArgument: ``coarse_bytes`` no code within it meets the target on this corpus (the message
            names the smallest budget that does), or with an engine other than FAISS or a FAISS index given.

    Example:
        >>> from adaptive_retrieval import FaissOptions, Retriever
        >>> corpus = {"d1": "Vitamin D and bone health.", "d2": "Exercise lowers blood pressure."}
        >>> options = FaissOptions(index="HNSW32")
        >>> retriever = Retriever.build(corpus, coarse="4x64", backend=options)  # doctest: +SKIP
    """
    for name, flag in (
        ("adapt", adapt),
        ("store_text", store_text),
        ("hybrid", hybrid),
        ("passages", passages),
    ):
        if not isinstance(flag, bool):
            raise InvalidArgumentType(f"{name} must be True or False, got {flag!r}")
    options = engine_options(backend, backend_options, faiss_options)
    coarse_bytes = budget_options(coarse_bytes, options)
    lexical = LexicalIndex(language) if hybrid else None  # a bad language: refused before the model loads
    check_precision(precision)
    encoder = model if isinstance(model, Encoder) else Encoder.from_pretrained(model)
    encoder = encoder.with_precision(resolve(precision, encoder.device))
    if passages and not getattr(encoder.tokenizer, "is_fast", False):
        raise InvalidArgument(
            f"passages need a fast tokenizer (character offsets); {encoder.name!r} has a slow one: build with "
            "passages=False (long documents are then cut to the model's max length)"
        )
    chosen = None
    if coarse_bytes is not None and not adapt:  # no projection to choose dimensions on: a code by size
        chosen = by_size(coarse_bytes, encoder.check_view(coarse, name="coarse").dim, 0)
        options = dataclasses.replace(options, index=chosen.index)
    retriever = empty(cls, encoder, coarse, fine, candidates, options, store_text, lexical)
    retriever.first_stage = chosen
    retriever._adapt_next = adapt
    retriever._coarse_bytes_next = coarse_bytes if adapt else None
    retriever.passages = passages
    with discarding(retriever):
        retriever.add(
            corpus,
            metadata=metadata,
            batch_size=batch_size,
            chunk_size=chunk_size,
            show_progress=show_progress,
        )
    return retriever


def from_vectors(
    cls: Any,
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
    texts: Sequence[str] | None = None,
    language: str = "english",
    **faiss_options: Any,
) -> Any:
    """A retriever over precomputed view vectors (:meth:`build`'s checks, no encoding).

    Args:
        encoder: the encoder the vectors came from (queries go through it).
        coarse, fine: the views the vectors are of.
        doc_ids, coarse_vectors, fine_vectors: the documents, as
            :meth:`adaptive_retrieval.Retriever.add_vectors` takes them.
        candidates: how many coarse hits the fine view re-ranks.
        adaptation: what :func:`adaptive_retrieval.adapt.adapt_encoder` returned with ``encoder`` when the
            coarse vectors went through the head it fitted.
        backend: an engine's name or options, as :meth:`build` takes it.
        texts: the documents' texts, in order: given, a lexical index is built of them (hybrid search,
            as :meth:`build` makes it; later adds must carry texts too).
        language: the lexical index's language (:meth:`build`).
        **faiss_options: deprecated spellings of :class:`adaptive_retrieval.backends.FaissOptions`.

    Returns:
        The retriever.

    Raises:
        InvalidArgument: a bad view, option or engine (InvalidArgumentType: one of the wrong type).
        ModelMismatch: views outside the encoder, or that do not pair (see :meth:`build`).
        CorpusError: ids or vectors :meth:`adaptive_retrieval.Retriever.add_vectors` refuses
            (CorpusTypeError: of the wrong type).
    """
    options = engine_options(backend, None, faiss_options)
    # checked before the engine exists: a refusal leaves no collection or file behind
    check_adaptation(
        adaptation, encoder.check_view(coarse, name="coarse"), encoder.check_view(fine, name="fine")
    )
    lexical = None if texts is None else LexicalIndex(language)
    retriever = empty(cls, encoder, coarse, fine, candidates, options, lexical=lexical)
    retriever.set_adaptation(adaptation)
    with discarding(retriever):
        retriever.add_vectors(doc_ids, coarse_vectors, fine_vectors, texts=texts)
    return retriever


def from_vector_batches(
    cls: Any,
    encoder: Encoder,
    coarse: ViewLike,
    fine: ViewLike,
    batches: Iterable[tuple[Any, ...]],
    *,
    candidates: int = 100,
    backend: str | EngineOptions = "faiss",
    backend_options: dict[str, Any] | None = None,
    **faiss_options: Any,
) -> Any:
    """A retriever over a stream of ``(doc_ids, coarse_vectors, fine_vectors)`` batches encoded
    elsewhere (e.g. :func:`adaptive_retrieval.distributed.vector_batches`), one batch in RAM at a time.

    Args:
        encoder: the encoder the vectors came from (queries go through it).
        coarse, fine: the views the vectors are of.
        batches: the stream, as :meth:`adaptive_retrieval.Retriever.add_vector_batches` takes it.
        candidates, backend, backend_options, **faiss_options: as :meth:`build` takes them.

    Returns:
        The retriever.

    Raises:
        InvalidArgument, ModelMismatch, CorpusError: as :meth:`from_vectors` (an empty stream: CorpusError).
    """
    options = engine_options(backend, backend_options, faiss_options)
    retriever = empty(cls, encoder, coarse, fine, candidates, options)
    with discarding(retriever):
        retriever.add_vector_batches(batches)
    return retriever


def empty(
    cls: Any, encoder: Encoder, coarse: ViewLike, fine: ViewLike | None, candidates: int, options: EngineOptions,
    store_text: bool = False, lexical: LexicalIndex | None = None,
) -> Any:  # fmt: skip
    """An empty retriever of class ``cls`` for these views, on a new engine made from ``options``; a
    lexical index's postings go to the engine where it holds them (an engine's ``lexical`` option:
    :mod:`adaptive_retrieval.engine_lexical`)."""
    coarse_view = encoder.check_view(coarse, name="coarse")
    fine_view = encoder.full_view if fine is None else encoder.check_view(fine, name="fine")
    check_pair(coarse_view, fine_view)
    positive_int(candidates, "candidates")
    if lexical is None and hasattr(options, "lexical"):  # no postings for the engine to hold
        options = dataclasses.replace(options, lexical="local")
    engine = create_engine(options, coarse_view.dim, fine_view.dim)
    if lexical is not None and engine.lexical_field:  # the engine holds the postings
        lexical = EngineLexicalIndex(engine, lexical.language, k1=lexical.k1, b=lexical.b)
    documents = DocumentStore.memory() if store_text else None
    return cls(
        encoder, coarse_view, fine_view, engine, candidates=candidates, documents=documents, lexical=lexical
    )


@contextlib.contextmanager
def discarding(retriever: Any) -> Iterator[None]:
    """A failed build removes what its engine created (a file, a collection)."""
    try:
        yield
    except BaseException:
        retriever.backend.discard()
        raise


def add(
    self: Any,
    corpus: Corpus,
    *,
    metadata: Sequence[Any] | None = None,
    batch_size: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress: bool | None = None,
) -> None:
    """Encode and add documents, ``chunk_size`` at a time, all-or-nothing: on any error (a repeated
    id, a bad text, an interrupted encode) the index is left exactly as it was.

    Args:
        corpus: as :meth:`build` takes it; a list of strings gets new int ids, past every row and int
            id the index holds.
        batch_size: encoder batch size (default: the encoder's).
        chunk_size: documents encoded and added per step.
        show_progress: a progress bar while encoding (default: on for long work).

    Raises:
        CorpusError: a document, id or text that cannot be indexed (one already in the index, too), or an
            empty corpus (CorpusTypeError: one of the wrong type).
        InvalidArgument: a bad ``chunk_size`` or ``batch_size``.
        RetrieverBusy: another write is running. RetrieverClosed: the retriever was closed.

    Example:
        >>> retriever.add({"d3": "Sleep and memory consolidation."})  # doctest: +SKIP
    """
    _encode_and_write(self, corpus, metadata, batch_size, chunk_size, show_progress, replace=False)


def upsert(
    self: Any,
    corpus: Corpus,
    *,
    metadata: Sequence[Any] | None = None,
    batch_size: int | None = None,
    chunk_size: int = CHUNK_SIZE,
    show_progress: bool | None = None,
) -> None:
    """Add documents, replacing those whose ids the index holds (text, metadata and vectors), all or
    nothing, as :meth:`add`. A replaced document's old row is dead from the commit on (searches never see
    both); :meth:`adaptive_retrieval.Retriever.compact` reclaims it.

    Args:
        corpus: as :meth:`add` takes it (give ids: a dict or ``(id, text)`` pairs).
        metadata, batch_size, chunk_size, show_progress: as :meth:`add`.

    Raises:
        CorpusError: an id twice in ``corpus``, a bad text, an empty corpus; as :meth:`add` otherwise.
        EngineError: an engine that does not replace documents yet (Qdrant, Milvus); nothing changes.

    Example:
        >>> retriever.upsert({"d3": {"text": "Sleep consolidates memory.", "section": "neuro"}})  # doctest: +SKIP
    """
    _encode_and_write(self, corpus, metadata, batch_size, chunk_size, show_progress, replace=True)
    compact_if_due(self)


def _encode_and_write(
    self: Any, corpus: Corpus, metadata: Sequence[Any] | None, batch_size: int | None, chunk_size: int,
    show_progress: bool | None, replace: bool,
) -> None:  # fmt: skip
    chunk_size = positive_int(chunk_size, "chunk_size")
    self._check_open()
    if replace and isinstance(corpus, Sequence) and len(corpus) and isinstance(corpus[0], str):
        raise CorpusTypeError(
            "upsert needs the documents' ids: give a dict {id: text} or (id, text) pairs, not a list of strings"
        )
    total = len(corpus) if isinstance(corpus, Sized) else None
    if metadata is not None:
        if total is None:
            raise CorpusTypeError("metadata= needs a corpus of known length (a list or a dict)")
        metadata = check_metadata(metadata, total)
    if show_progress is None:  # long work: many batches, or a stream of unknown length
        show_progress = total is None or total >= PROGRESS_MIN_BATCHES * self.encoder.batch_size
    bar = tqdm(
        total=total, desc="encoding documents", unit="doc", disable=not show_progress
    )  # one for the corpus
    try:
        encoding = CorpusEncoding(
            corpus, self.encoder, self.coarse, self.fine, adaptation=self.adaptation, adapt=self._adapt_next,
            candidates=self.candidates, known=None if replace else self.ids.has_document,
            first_id=next_int_id(self.ids), store_text=self.documents is not None or self.lexical is not None,
            chunk_size=chunk_size,
            batch_size=batch_size, bar=bar, metadata=metadata,
            passage_tokens=budget(self.encoder) if self.passages else None,
            coarse_bytes=self._coarse_bytes_next,
        )  # fmt: skip
        batches = encoding if encoding.coarse_bytes is None else first_stage_chosen(self, encoding)
        self.writer.add_batches(batches, replace=replace)  # the writer of the engine chosen, if it changed
    finally:
        bar.close()
    self.encoder, self._adapt_next, self._coarse_bytes_next = encoding.encoder, False, None
    self.set_adaptation(encoding.adaptation)
    if encoding.cut:  # said, never silent: the rest of such a document is not indexed
        logger.warning(
            "%d of %d documents were longer than the model's max length (%d tokens) and were cut to it: "
            "their text past it is not indexed (retriever.truncated counts them)",
            encoding.cut, encoding.documents, self.encoder.max_length,
        )  # fmt: skip
    self.truncated += encoding.cut
    if encoding.split:
        logger.info(
            "%d of %d documents were longer than the model's max length (%d tokens): split into %d passages",
            encoding.split, encoding.documents, self.encoder.max_length, encoding.passages,
        )  # fmt: skip


def next_int_id(ids: Any) -> int:
    """The first id a list of strings added gets: past every row and every int id the index holds (rows
    shrink at compaction; ids never collide)."""
    ints = [d for d in map(document_of, ids.ids) if isinstance(d, int) and not isinstance(d, bool)]
    return max(len(ids), max(ints, default=-1) + 1)
