"""The engine interface: what a retriever needs of the store that holds its vectors.

An engine stores rows ``0..len-1`` of two views per document (a coarse vector and a fine vector),
numbered by the retriever's :class:`adaptive_retrieval.ids.IdMap` (given to :meth:`Backend.attach`).
Scores are inner products of L2-normalised vectors; results are FAISS's ``(D, I)``: ``(n_queries, k)``,
best first, ties to the lower row, padded with ``-inf`` / ``-1``.

Writing is two-phase, so that the index writer (:mod:`adaptive_retrieval.writer`) keeps every write
all-or-nothing and searches never see part of one: :meth:`Backend.add` writes rows that searches do not
see yet; :meth:`Backend.prepare` does what can run beside searches; :meth:`Backend.commit` (under the
retriever's write lock) makes them visible; :meth:`Backend.rollback` removes every row from a given one
on. The funnel (:meth:`Backend.search`: coarse shortlist, fine re-rank, exact fallback) is written once
here; an engine that re-ranks where its vectors live overrides :meth:`Backend.search` for that case and
ends with :meth:`Backend.fallback`.

Engine options are dataclasses (:class:`EngineOptions` subclasses, one per engine, in the engine's
module), the engines are found by name in :data:`adaptive_retrieval.backends.ENGINES`.
"""

from __future__ import annotations

import dataclasses
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..corpus import DocId
from ..errors import EngineError, InvalidArgument, InvalidArgumentType
from ..ids import IdMap
from ..shortlist import STEP, patient_rerank

FileWriter = tuple[str, Callable[[Path], None]]
"""Writes one file of an index directory: ``(file name suffix, writer(path))``."""


@dataclasses.dataclass
class EngineOptions:
    """What an engine is built with; each engine's module defines its own (``FaissOptions``,
    ``QdrantOptions``, ``MilvusOptions``) with every default written there once."""

    engine: ClassVar[str] = ""
    """The engine's name in :data:`adaptive_retrieval.backends.ENGINES`"""

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> EngineOptions:
        """These options from a dict (``backend_options=``).

        Args:
            options: the options by field name; ``None``: every default.

        Returns:
            The options object.

        Raises:
            InvalidArgument: an unknown key, refused by name (InvalidArgumentType: not a dict).
        """
        if options is None:
            return cls()
        if not isinstance(options, dict):
            raise InvalidArgumentType(f"backend_options must be a dict, got {type(options).__name__}")
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(options) - set(known))
        if unknown:
            raise InvalidArgument(
                f"backend {cls.engine!r} takes no option {unknown[0]!r}; known: {', '.join(known)}"
            )
        return cls(**options)


class Backend(ABC):
    """What the retriever needs of an engine (see the module docstring)."""

    name: ClassVar[str] = ""
    """The name ``Retriever.build(backend=...)`` takes and the manifest records"""
    Options: ClassVar[type[EngineOptions]] = EngineOptions
    """The dataclass of this engine's build options"""
    lexical_field: bool = False
    """Whether the engine holds and searches BM25 sparse vectors (:mod:`adaptive_retrieval.engine_lexical`)"""
    key: ClassVar[Callable[[DocId], Hashable] | None] = None
    """The engine's key of a document id, for an engine that addresses documents by key (else ``None``)"""
    renew: ClassVar[Callable[[DocId], Hashable] | None] = None
    """A new key for a replaced document (an upsert's new version beside its old one until the commit)"""
    opened_keys: list[Hashable] | None = None
    """The keys of the rows :meth:`open` returned, as the engine holds them (``None``: :attr:`key` of each id)"""
    ids: IdMap
    """The id map this engine's rows are numbered by (set by :meth:`attach`)"""

    # ------------------------------------------------------------------------------- lifecycle

    @classmethod
    @abstractmethod
    def create(cls, coarse_dim: int, fine_dim: int, options: EngineOptions) -> Backend:
        """A new, empty engine for views of these dimensions. Must refuse bad options before creating
        anything (a file, a collection) that would outlive the error.

        Args:
            coarse_dim: the coarse view's dimension.
            fine_dim: the fine view's dimension.
            options: this engine's :attr:`Options`.

        Returns:
            The engine, holding no rows.

        Raises:
            InvalidArgument: options this engine refuses. IndexConflict: its collection exists already.
            EngineError: the engine refused or failed.
        """

    @classmethod
    @abstractmethod
    def open(cls, directory: Path, manifest: dict[str, Any], **options: Any) -> tuple[Backend, list[DocId]]:
        """Reattach to the engine that a saved manifest's ``backend`` entry describes.

        Args:
            directory: the index directory.
            manifest: the index's manifest.
            **options: override where it lives (``Retriever.load(backend_options=)``).

        Returns:
            The engine and the document ids of its rows, in row order.

        Raises:
            IndexDamaged: the engine's data is missing or does not match the manifest.
            EngineError: the engine refused or failed.
        """

    def attach(self, ids: IdMap) -> None:
        """Number this engine's rows by ``ids`` (the retriever's map; the engine never changes it)."""
        self.ids = ids

    def close(self) -> None:  # noqa: B027 - optional
        """Release files and clients this engine opened; an engine given a client keeps it open."""

    def discard(self) -> None:  # noqa: B027 - optional
        """Remove what a failed build created (a file, a collection); called before the error goes up."""

    # ---------------------------------------------------------------------------------- writing

    @abstractmethod
    def __len__(self) -> int:
        """Committed rows: what searches see."""

    @abstractmethod
    def add(
        self, first_row: int, doc_ids: list[DocId], coarse: np.ndarray, fine: np.ndarray,
        metadata: list[dict[str, Any] | None] | None = None, terms: list[Any] | None = None,
    ) -> None:  # fmt: skip
        """Write documents as rows ``first_row, first_row + 1, ...``, not yet visible to searches.

        Args:
            first_row: the row of the first document.
            doc_ids: their ids (already staged in :attr:`ids`).
            coarse: ``(n, coarse_dim)`` coarse vectors, L2-normalised.
            fine: ``(n, fine_dim)`` fine vectors, L2-normalised.
            metadata: each row's metadata record (or ``None``), for an engine that filters natively
                (:meth:`native_filter`); the others ignore it.
            terms: each row's BM25 sparse vector ``(term ids, weights)``, for :attr:`lexical_field`.

        Raises:
            CorpusError: a document the engine cannot hold (an id too long for Milvus), or one another
                writer has added meanwhile (a keyed engine). EngineError: the engine failed.
        """

    def filtered_cost(self, share: float, depth: int, params: Any = None) -> float | None:
        """The cost of a filtered coarse search matching ``share`` of the rows and its re-rank of ``depth``,
        in fine rows scored (what the exact path pays per matching row), with the search's ``params``
        (:meth:`search_parameters`); ``None``: no estimate (the retriever then goes exact only below its
        ``exact_below``)."""
        return None

    def native_filter(self, params: Any, node: Any) -> Any:
        """``params`` (:meth:`search_parameters`) with a filter the engine runs itself: ``node``, a parsed
        filter that :func:`adaptive_retrieval.filters.native` found the engine's stored metadata can
        answer as :func:`adaptive_retrieval.filters.evaluate` does (``None``: none). The retriever keeps
        its own allowed rows either way. The default (and FAISS, whose per-call selector of the allowed
        rows is its native filter): ``params`` unchanged."""
        return params

    def calibration_widths(self) -> list[tuple[dict[str, int], float]]:
        """The search widths a calibration chooses among (:func:`adaptive_retrieval.calibration.choose_width`),
        narrowest first, each with its coarse search's cost per query in fine rows scored (the units of
        :meth:`filtered_cost`); empty (the default) where the width follows the shortlist alone."""
        return []

    def delete(self, rows: list[int], replacing: bool = False) -> None:  # noqa: B027 - optional
        """Stage the death of committed rows (a delete, or with ``replacing`` the old rows of an upsert).
        The engine keeps them (searches skip the rows :attr:`ids` marks dead) until :meth:`compacted`; an
        engine that cannot do this refuses here, before anything changes.

        Raises:
            EngineError: this engine does not delete (or replace)."""

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """Build, beside searches, this engine's rows ``keep`` (ascending) renumbered ``0..``; return the
        function that swaps them in (called under the write lock, with the id map's compaction).

        Raises:
            EngineError: this engine does not compact."""
        raise EngineError(f"backend {self.name!r} does not reclaim deleted rows")

    def recoarsened(self, blocks: Any, count: int, train: np.ndarray) -> Callable[[], None]:
        """Build, beside searches, a coarse index of the same kind over ``count`` new coarse vectors
        (``blocks`` in row order; ``train``: a training sample); return the function that swaps it in
        (``Retriever.refit``).

        Raises:
            EngineError: this engine does not rebuild its coarse side."""
        raise EngineError(f"backend {self.name!r} does not rebuild its coarse vectors (refit)")

    def prepare(self) -> None:  # noqa: B027 - optional
        """The part of committing staged rows that can run while searches go on (called before the
        write lock; :meth:`commit` follows under it). Nothing, unless the engine says."""

    @abstractmethod
    def commit(self) -> None:
        """Make every row written since the last commit visible (the retriever holds its write lock)."""

    @abstractmethod
    def rollback(self, start: int, committed: bool = False) -> None:
        """Remove every row from ``start`` on, written or committed: the failure path of a write. Must
        leave the engine as it was before the write, whatever step failed.

        Args:
            start: the first row of the write.
            committed: this engine's :meth:`commit` of the write had returned (a later store of the
                transaction failed).
        """

    # -------------------------------------------------------------------------------- searching

    @abstractmethod
    def coarse_search(
        self, coarse_q: np.ndarray, depth: int, params: Any = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best committed rows for each coarse query vector, in coarse order.

        Args:
            coarse_q: ``(n, coarse_dim)`` query vectors.
            depth: rows per query.
            params: per-call parameters from :meth:`search_parameters`.
            allowed: ``(len(self),)`` bool: only these rows (an engine without row filters refuses it).

        Returns:
            ``(D, I)``, each ``(n, depth)``: coarse scores and rows, padded with ``-inf`` / ``-1``.
        """

    @abstractmethod
    def fine_scores(self, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """The fine scores of each query with its rows.

        Args:
            fine_q: ``(n, fine_dim)`` query vectors.
            rows: ``(n, c)`` committed rows (no ``-1``).

        Returns:
            ``(n, c)`` float32 inner products.
        """

    @abstractmethod
    def exact_search(
        self, fine_q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of the fine view over every committed row: the funnel's reference and its
        fallback.

        Args:
            fine_q: ``(n, fine_dim)`` query vectors.
            k: rows per query.
            allowed: ``(len(self),)`` bool: only these rows.

        Returns:
            ``(D, I)``, each ``(n, k)``, best first, padded with ``-inf`` / ``-1``.
        """

    def search_parameters(
        self, depth: int | None = None, calibrated: dict[str, int] | None = None, **knobs: Any
    ) -> Any:
        """Per-call search parameters for ``knobs``, checked. Nothing is set on the engine: a search with
        knobs leaves the next one as it was.

        Args:
            depth: the shortlist depth a calibration measured at; an engine whose coarse index explores
                only as deep as it is asked (HNSW) explores at least that deep (the others ignore it).
            calibrated: the search width a calibration chose (one of :meth:`calibration_widths`), under
                ``knobs`` given for the call.
            **knobs: the engine's search parameters (FAISS ``nprobe``, ``efSearch``; Qdrant ``hnsw_ef``,
                ``exact``; Milvus ``ef``, ``nprobe``).

        Returns:
            What :meth:`search` takes as ``params`` (``None`` without any).

        Raises:
            InvalidArgument: a knob this engine does not take, or a bad value.
        """
        if knobs:
            raise InvalidArgument(f"backend {self.name!r} takes no search parameters, got {sorted(knobs)}")
        return None

    def set_knobs(self, **knobs: Any) -> None:
        """Default search parameters of later searches (a configuration step, never done by a search).

        Raises:
            InvalidArgument: a knob this engine does not take, or a bad value.
        """
        if knobs:
            raise InvalidArgument(f"backend {self.name!r} takes no search parameters, got {sorted(knobs)}")

    def search(
        self,
        coarse_q: np.ndarray,
        fine_q: np.ndarray,
        k: int,
        shortlist: int,
        *,
        params: Any = None,
        patience: int | None = None,
        seconds: dict[str, float] | None = None,
        allowed: np.ndarray | None = None,
        exact: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """The funnel: the coarse view shortlists ``shortlist`` rows per query, :meth:`rerank` re-ranks
        them.

        Args:
            coarse_q, fine_q: ``(n, coarse_dim)`` and ``(n, fine_dim)`` query vectors.
            k: hits per query.
            shortlist: coarse candidates per query.
            params: per-call parameters from :meth:`search_parameters`.
            patience: re-rank a step at a time until the top ``k`` settles (see :meth:`rerank`).
            seconds: if given, receives the seconds spent in ``coarse_search`` and in ``rerank``.
            allowed: ``(len(self),)`` bool: only these rows may be returned (a filter, the live rows).
            exact: rank the ``allowed`` rows exactly by the fine view (no coarse stage): the path of a
                filter that leaves few documents.

        Returns:
            ``(D, I, fallbacks, read)``, as :meth:`rerank` returns them.
        """
        t0 = time.perf_counter()
        if exact:
            D, I = self.exact_search(fine_q, k, allowed=allowed)
            matched = len(self) if allowed is None else int(np.count_nonzero(allowed))
            clock(seconds, t0, t0)
            return D, I, 0, np.full(len(fine_q), matched)
        served = (
            None
            if patience is not None or allowed is not None
            else self.funnel_in_engine(coarse_q, fine_q, k, shortlist, params)
        )
        if served is None:
            _, candidates = self.coarse_search(coarse_q, shortlist, params, allowed=allowed)
            t1 = time.perf_counter()
            found = self.rerank(fine_q, candidates, k, patience=patience, allowed=allowed)
            if allowed is not None:  # a graph walk the filter starved (fewer candidates than asked): exact
                D, I, fallbacks, read = found
                starved = (candidates >= 0).sum(axis=1) < min(shortlist, int(np.count_nonzero(allowed)))
                if starved.any():
                    D[starved], I[starved] = self.exact_search(fine_q[starved], k, allowed=allowed)
                found = D, I, fallbacks + int(starved.sum()), read
        else:
            D, I, read, t1 = served
            D, I, fallbacks = self.fallback(fine_q, k, D, I)
            found = D, I, fallbacks, read
        clock(seconds, t0, t1)
        return found

    def funnel_in_engine(
        self, coarse_q: np.ndarray, fine_q: np.ndarray, k: int, shortlist: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        """Optional: the fixed-shortlist funnel run where the vectors live (both stages in the engine),
        for :meth:`search`, which then applies :meth:`fallback`. Returns ``(D, I, read, t1)`` (``t1``:
        ``time.perf_counter()`` when the coarse stage ended), or ``None`` to take the generic path
        (:meth:`coarse_search`, then :meth:`rerank` over :meth:`fine_scores`), as the base does."""
        return None

    def rerank(
        self,
        fine_q: np.ndarray,
        candidates: np.ndarray,
        k: int,
        *,
        patience: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """The funnel's second stage: every candidate scored by the fine view (:meth:`fine_scores`), or
        with ``patience`` a step at a time until the top ``k`` settles
        (:func:`adaptive_retrieval.shortlist.patient_rerank`); then :meth:`fallback`.

        Args:
            fine_q: ``(n, fine_dim)`` query vectors.
            candidates: ``(n, c)`` rows in coarse order (``-1``: none).
            k: hits per query.
            patience: ``None``: the whole shortlist in one step.
            allowed: the rows the candidates came from (for :meth:`fallback`).

        Returns:
            ``(D, I, fallbacks, read)``: the top ``k`` per query, how many queries were ranked exactly,
            and the candidates each query's fine stage read.
        """
        fine_q = np.asarray(fine_q, dtype=np.float32)
        candidates = np.asarray(candidates, dtype=np.int64)
        width = max(candidates.shape[1], 1)
        D, I, read = patient_rerank(
            lambda rows, ids: self.fine_scores(fine_q[rows], ids),
            candidates,
            k,
            width if patience is None else patience,  # no patience: the whole shortlist in one step
            step=width if patience is None else STEP,
        )
        if patience is None:  # what was read: the real candidates
            read = (candidates >= 0).sum(axis=1)
        D, I, fallbacks = self.fallback(fine_q, k, D, I, allowed=allowed)
        return D, I, fallbacks, read

    def fallback(
        self, fine_q: np.ndarray, k: int, D: np.ndarray, I: np.ndarray, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """Rank exactly every query whose (approximate) coarse stage found fewer than ``min(k, n)`` rows
        (``n``: the rows ``allowed`` marks, else every row).

        Returns:
            ``(D, I, how many were)``: ``D`` and ``I`` with those queries' rows replaced.
        """
        n = len(self) if allowed is None else int(np.count_nonzero(allowed))
        short = (I >= 0).sum(axis=1) < min(k, n)
        if short.any():
            D[short], I[short] = self.exact_search(fine_q[short], k, allowed=allowed)
        return D, I, int(short.sum())

    def vectors(self, view: str, start: int, stop: int) -> np.ndarray:
        """The stored vectors of rows ``start..stop-1`` as float32 (for evaluations), L2-normalised as
        :meth:`adaptive_retrieval.Retriever.add_vectors` takes them (a quantized coarse index's rows are decoded
        from their codes: an SQ8 index's within 2/255 of the vectors added, per coordinate).

        Args:
            view: ``"coarse"`` or ``"fine"``.
            start, stop: the rows.

        Returns:
            ``(stop - start, dim)`` float32.

        Raises:
            InvalidArgument: an engine that cannot read its vectors back (or another ``view``).
        """
        raise InvalidArgument(f"backend {self.name!r} does not read its {view} vectors back")

    # ------------------------------------------------------------------------------ persistence

    def manifest(self) -> dict[str, Any]:
        """What the manifest records to reopen this engine's data (``name`` and where it lives).

        Raises:
            InvalidArgument: an engine that cannot be reopened (an in-memory collection), before any write.
        """
        return {"name": self.name}

    def files(self) -> dict[str, FileWriter]:
        """The index directory's data files this engine writes on ``Retriever.save`` (none for an
        engine that keeps its own data, the document ids included)."""
        return {}

    # ---------------------------------------------------------------------------------- reports

    def nbytes(self) -> tuple[int, int]:
        """Bytes of the coarse and the fine vectors as stored (``(0, 0)`` where the engine does not say)."""
        return 0, 0

    def describe(self) -> str:
        """A short description for ``repr``."""
        return self.name


def clock(seconds: dict[str, float] | None, t0: float, t1: float) -> None:
    """Record a funnel's stages: ``coarse_search`` from ``t0`` to ``t1``, ``rerank`` from ``t1`` to now."""
    if seconds is not None:
        seconds["coarse_search"] = seconds.get("coarse_search", 0.0) + t1 - t0
        seconds["rerank"] = seconds.get("rerank", 0.0) + time.perf_counter() - t1
