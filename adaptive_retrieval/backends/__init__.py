"""The engines a retriever's vectors live in, behind one small interface (:class:`Backend`).

- ``faiss`` (:mod:`.faiss`): a FAISS index over the coarse vectors and a fine store (in RAM or a
  memory-mapped ``.npy``) in this process; saved as files of the index directory.
- ``qdrant`` (:mod:`.qdrant`): both views per document in a Qdrant collection (local mode or a server);
  the funnel runs server-side in one query.
- ``milvus`` (:mod:`.milvus`): both views per document in a Milvus collection (Milvus Lite, a file path,
  or a server/cluster, a URI); coarse search, then the shortlist re-ranked (fetched by default, or server-side).

A backend stores rows ``0..len-1`` (the retriever's internal ids; the retriever keeps the map to document
ids, and the engines store each document's id too, so that a collection can be reopened). Adding is
two-phase, so that the retriever can keep ``add`` all-or-nothing and searches from other threads never
see part of one: :meth:`Backend.add` writes rows that searches do not see yet, :meth:`Backend.commit`
makes them visible (called under the retriever's write lock), :meth:`Backend.rollback` removes every row
from a given one on (the failure path).

The engines that store documents by key (Qdrant, Milvus) write an add's documents before it commits, where
other processes can see them. Each add therefore tags its documents with a token, and its commit records
the token in a companion collection (``<collection>_commits``) in one write: a reopened collection adopts
only documents of committed adds, so a writer killed in the middle of an add leaves nothing a reader
takes for part of the index (:meth:`KeyedBackend._adopt`; such leftovers are deleted on request).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..corpus import DocId

logger = logging.getLogger(__name__)

#: The engines by name, as ``Retriever.build(..., backend=)`` takes them.
BACKENDS = ("faiss", "qdrant", "milvus")
#: The companion collection of a keyed engine's collection that records its committed adds.
COMMITS_SUFFIX = "_commits"

#: Writes one file of an index directory: ``(file name suffix, writer(path))``.
FileWriter = tuple[str, Callable[[Path], None]]


class Backend(ABC):
    """What the retriever needs of an engine. Scores are inner products of L2-normalised vectors;
    results are FAISS's ``(D, I)``: ``(n_queries, k)``, best first, ties to the lower row, padded with
    ``-inf`` / ``-1``."""

    #: the name ``Retriever.build(backend=...)`` takes and the manifest records
    name: str = ""

    @abstractmethod
    def __len__(self) -> int:
        """Committed rows: what searches see."""

    @abstractmethod
    def add(self, first_row: int, doc_ids: list[DocId], coarse: np.ndarray, fine: np.ndarray) -> None:
        """Write documents as rows ``first_row, first_row + 1, ...``, not yet visible to searches."""

    def prepare(self) -> None:
        """The part of committing staged rows that can run while searches go on (called before the
        retriever's write lock; :meth:`commit` follows under it). Nothing, unless the engine says."""
        return None

    @abstractmethod
    def commit(self) -> None:
        """Make every row written since the last commit visible (the retriever holds its write lock)."""

    @abstractmethod
    def rollback(self, start: int) -> None:
        """Remove every row from ``start`` on, written or committed: the failure path of an add."""

    @abstractmethod
    def coarse_search(
        self, coarse_q: np.ndarray, depth: int, params: Any = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``depth`` best rows for each coarse query vector, in coarse order."""

    @abstractmethod
    def fine_scores(self, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Fine scores ``(n, c)`` of each query with its ``rows`` (``(n, c)``, all valid), float32."""

    @abstractmethod
    def exact_search(self, fine_q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search of the fine view over every row: the funnel's reference and its fallback."""

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
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """The funnel: the coarse view shortlists ``shortlist`` rows per query, the fine view re-ranks
        them (all of them, or with ``patience`` a step at a time until the top ``k`` settles:
        :func:`~adaptive_retrieval.shortlist.patient_rerank`). A query whose coarse stage found fewer
        than ``min(k, len(self))`` rows is ranked exactly instead. Returns ``(D, I, fallbacks, read)``:
        the number of such queries, and the candidates each query's fine stage read. ``seconds``, if
        given, receives the seconds spent in ``coarse_search`` and in ``rerank``.

        This generic form fetches fine scores for the shortlist (:meth:`fine_scores`); an engine that
        re-ranks where its vectors live overrides the fixed-shortlist case."""
        from ..shortlist import patient_rerank

        t0 = time.perf_counter()
        _, cand = self.coarse_search(coarse_q, shortlist, params)
        t1 = time.perf_counter()
        if patience is None:
            patience = shortlist  # never settles early: reads the whole shortlist, in one step
            step = max(shortlist, 1)
        else:
            from ..shortlist import STEP as step
        D, I, read = patient_rerank(
            lambda rows, ids: self.fine_scores(fine_q[rows], ids), cand, k, patience, step=step
        )
        D, I, fallbacks = self._fallback(fine_q, k, D, I)
        _clock(seconds, t0, t1)
        return D, I, fallbacks, read

    def _fallback(
        self, fine_q: np.ndarray, k: int, D: np.ndarray, I: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, int]:
        short = (I >= 0).sum(axis=1) < min(k, len(self))
        if short.any():
            D[short], I[short] = self.exact_search(fine_q[short], k)
        return D, I, int(short.sum())

    def search_parameters(self, depth: int | None = None, **knobs: Any) -> Any:
        """Per-call search parameters for ``knobs``, checked (``None`` without any). Nothing is set
        on the engine: a search with knobs leaves the next one as it was. ``depth``: the shortlist
        depth a calibration measured at; an engine whose coarse index explores only as deep as it is
        asked (HNSW) explores at least that deep, so that a shorter calibrated shortlist holds the
        calibration's first candidates (the others ignore it)."""
        if knobs:
            raise ValueError(f"backend {self.name!r} takes no search parameters, got {sorted(knobs)}")
        return None

    def set_knobs(self, **knobs: Any) -> None:
        """Default search parameters of later searches (a configuration step, never done by a search)."""
        if knobs:
            raise ValueError(f"backend {self.name!r} takes no search parameters, got {sorted(knobs)}")

    def files(self, doc_ids: list[DocId]) -> dict[str, FileWriter]:
        """The index directory's data files this engine writes on ``Retriever.save`` (none for an
        engine that keeps its own data, the document ids included)."""
        return {}

    def manifest(self) -> dict[str, Any]:
        """What the manifest records to reopen this engine's data (``name`` and where it lives)."""
        return {"name": self.name}

    def nbytes(self) -> tuple[int, int]:
        """Bytes of the coarse and the fine vectors as stored (``(0, 0)`` where the engine does not say)."""
        return 0, 0

    def discard(self) -> None:  # noqa: B027 - optional: most engines have nothing to remove
        """Remove what a failed build created (a file, a collection); called before the error goes up."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release files and clients this backend opened."""

    def describe(self) -> str:
        """A short description for ``repr``."""
        return self.name


def _clock(seconds: dict[str, float] | None, t0: float, t1: float) -> None:
    """Record a funnel's stages: ``coarse_search`` from ``t0`` to ``t1``, ``rerank`` from ``t1`` to now."""
    if seconds is not None:
        seconds["coarse_search"] = seconds.get("coarse_search", 0.0) + t1 - t0
        seconds["rerank"] = seconds.get("rerank", 0.0) + time.perf_counter() - t1


def point_key(doc_id: DocId) -> int:
    """A document's key in an engine: 63 bits of the sha256 of its id (as JSON, so ``1`` and ``"1"``
    differ). The same document gets the same key in every process, so a reopened collection knows
    every id, and an add refuses a key the engine already holds (:meth:`KeyedBackend._refuse_present`):
    writers never overwrite each other's documents. Two ids sharing a key (odds about 1 in 10^12 at 10M
    documents) are refused when they meet."""
    digest = hashlib.sha256(json.dumps(doc_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def point_uuid(doc_id: DocId) -> str:
    """:func:`point_key` as a UUID string (Qdrant's point ids are unsigned ints or UUIDs)."""
    return str(uuid.UUID(int=point_key(doc_id)))


class KeyedRows:
    """The map between an engine's document keys and the retriever's rows, for engines that store
    documents by key (:func:`point_key`): rows ``0..len-1`` committed, then rows written by an add in
    progress. A key the map does not know (a document another process added since this one opened
    the collection) is not a row here: reopen to see it."""

    def __init__(self) -> None:
        self.keys: list[Any] = []  # committed rows' keys
        self.staged: list[Any] = []  # rows written since the last commit
        self.row_of: dict[Any, int] = {}

    def __len__(self) -> int:
        return len(self.keys)

    def stage(self, first_row: int, keys: list[Any], doc_ids: list[DocId]) -> None:
        if first_row != len(self.keys) + len(self.staged):
            raise ValueError(
                f"rows must be added in order: expected row {len(self.keys) + len(self.staged)}, got {first_row}"
            )
        staged = set(self.staged)
        for key, doc_id in zip(keys, doc_ids):
            if key in self.row_of or key in staged:
                raise ValueError(
                    f"document id {doc_id!r} has the engine key of a document already in the index "
                    "(a repeated id, or a hash collision): nothing was added"
                )
            staged.add(key)
        self.staged.extend(keys)

    def commit(self) -> None:
        first = len(self.keys)
        self.row_of.update((key, first + i) for i, key in enumerate(self.staged))
        self.keys.extend(self.staged)
        self.staged = []

    def rollback(self, start: int) -> list[Any]:
        """Forget rows ``start..``; returns their keys, for the engine to delete."""
        gone = self.keys[start:] + self.staged[max(start - len(self.keys), 0) :]
        for key in self.keys[start:]:
            del self.row_of[key]
        del self.keys[start:]
        self.staged = []
        return gone

    def rows(self, keys: list[list[Any]], scores: list[list[float]], k: int) -> tuple[np.ndarray, np.ndarray]:
        """Per query, engine ``(key, score)`` results as ``(D, I)`` rows, unknown keys left out, equal
        scores ordered by the lower row (as the FAISS funnel orders them), padded to ``k``."""
        D = np.full((len(keys), k), -np.inf, dtype=np.float32)
        I = np.full((len(keys), k), -1, dtype=np.int64)
        for q, (ks, ss) in enumerate(zip(keys, scores)):
            hits = sorted(((-float(s), self.row_of[key]) for key, s in zip(ks, ss) if key in self.row_of))[:k]
            D[q, : len(hits)] = [-s for s, _ in hits]
            I[q, : len(hits)] = [r for _, r in hits]
        return D, I


class KeyedBackend(Backend):
    """What the engines that store documents by key (Qdrant, Milvus) share: the :class:`KeyedRows` map
    (``self.rows``), committing and counting rows, rolling back by deleting keys, scoring a shortlist
    with fetched fine vectors, and adopting the documents found on reopening."""

    rows: KeyedRows
    #: the token every document of the add in progress carries (``None`` between adds)
    _add_token: str | None = None
    #: whether the collection records its commits (one this library created since it began to); an
    #: older one has no tokens, and reopening it adopts every document
    _records_commits: bool = True
    #: whether each document written carries its add's token (a field the collection may require)
    _tags_adds: bool = True

    def __len__(self) -> int:
        return len(self.rows)

    def _token(self) -> str | None:
        """The add token for the documents :meth:`add` writes now (``None``: the collection keeps none)."""
        if not self._tags_adds:
            return None
        if self._add_token is None:
            self._add_token = uuid.uuid4().hex
        return self._add_token

    #: the token :meth:`prepare` recorded as committed (``None`` until it has)
    _recorded: str | None = None

    def prepare(self) -> None:
        """Record the add as committed in the engine: one write, before the retriever's write lock (it
        is a round trip to the engine, which searches need not wait for); from it on, a reopened
        collection adopts the add whole. Should anything fail after it, :meth:`rollback` removes the
        record before the documents."""
        token = self._add_token
        if self.rows.staged and token is not None and self._records_commits and self._recorded != token:
            self._record_commit(token)
            self._recorded = token

    def commit(self) -> None:
        self.prepare()  # nothing when prepare() already ran
        self.rows.commit()
        self._add_token = self._recorded = None

    def rollback(self, start: int) -> None:
        gone = self.rows.rollback(start)
        recorded = self._recorded
        self._add_token = self._recorded = None
        if recorded is not None:  # first: documents partly deleted must not be adopted as an add
            self._unrecord_commit(recorded)
        if gone:
            self._delete(gone)

    @abstractmethod
    def _record_commit(self, token: str) -> None:
        """Record in the engine (the companion collection) that the add ``token`` committed."""

    @abstractmethod
    def _unrecord_commit(self, token: str) -> None:
        """Remove the record of ``token`` (a rolled-back add whose record was written)."""

    @abstractmethod
    def _committed_tokens(self) -> set[str]:
        """The tokens of every committed add (read from the companion collection)."""

    @abstractmethod
    def _delete(self, keys: list[Any]) -> None:
        """Delete these documents from the engine."""

    @abstractmethod
    def _fetch_fine(self, keys: list[Any]) -> dict[Any, np.ndarray]:
        """The fine vectors of these documents, by key."""

    @abstractmethod
    def _count(self) -> int:
        """How many documents the engine holds (every writer's, staged ones included)."""

    def _foreign(self) -> bool:
        """Whether the engine holds documents this retriever does not know (another writer's, or an
        add of this one in progress): searches then take the path that skips them without losing
        slots (:meth:`_known`), not a server-side shortlist that cannot."""
        return self._count() > len(self.rows.keys)

    @abstractmethod
    def _present(self, keys: list[Any]) -> set[Any]:
        """Which of these keys the engine already holds."""

    def _refuse_present(self, keys: list[Any], doc_ids: list[DocId]) -> None:
        """Refuse documents the engine already holds though this process does not know them (another
        writer added them since this retriever opened the collection): an upsert would overwrite them.
        Checked before anything is written or staged, so the failure removes nothing of theirs."""
        present = self._present(keys)
        if present:
            doc_id = next(d for d, key in zip(doc_ids, keys) if key in present)
            raise ValueError(
                f"document id {doc_id!r} is already in the collection (another writer added it since this "
                "retriever opened it, or an add that never committed left it); nothing was added. Reopen it "
                "with Retriever.load to see its documents (backend_options={'drop_uncommitted': True} "
                "deletes uncommitted adds' documents, when no writer is adding)"
            )

    def fine_scores(self, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        keys = [self.rows.keys[r] for r in rows.ravel()]
        vector = self._fetch_fine(sorted(set(keys)))
        stacked = np.stack([vector[key] for key in keys]).reshape(*rows.shape, -1)
        return np.einsum("qcd,qd->qc", stacked, np.asarray(fine_q, np.float32))

    #: how many times a query whose answer held unknown keys is asked again, for more
    _REASKS = 4
    #: the largest answer the engine gives one query (``None``: no limit of its own)
    _MAX_LIMIT: int | None = None

    def _known(
        self,
        ask: Callable[[np.ndarray, int], tuple[list[list[Any]], list[list[float]]]],
        vectors: np.ndarray,
        limit: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``ask(vectors, limit)``'s engine answers (keys and scores per query) as ``(D, I)`` rows of
        this retriever's documents. Keys it does not know (another writer's documents, added since this
        retriever opened the collection) would take result slots, so a query whose full answer held
        some is asked again for that many more, until its answer holds ``limit`` known keys or the
        engine has no more to give."""
        keys, scores = ask(vectors, limit)
        asked = [limit] * len(keys)
        known = self.rows.row_of
        for _ in range(self._REASKS):
            again = {}
            for q, ks in enumerate(keys):
                unknown = sum(key not in known for key in ks)
                if unknown and len(ks) >= asked[q]:  # full, with slots taken: there may be more
                    again[q] = asked[q] + unknown
            if not again:
                break
            rows = sorted(again)
            wider = max(again.values())
            if self._MAX_LIMIT is not None:
                wider = min(wider, self._MAX_LIMIT)
            if wider <= min(asked[q] for q in rows):
                break  # the engine gives no more
            more_keys, more_scores = ask(np.asarray(vectors)[rows], wider)
            for q, ks, ss in zip(rows, more_keys, more_scores):
                keys[q], scores[q], asked[q] = ks, ss, wider
        short = sum(
            any(key not in known for key in ks) and sum(key in known for key in ks) < min(limit, len(self))
            for ks in keys
        )
        if short:
            logger.warning(
                "%d queries got fewer than %d of this retriever's documents: other writers' documents, "
                "unknown here, filled their answers; reopen the collection (Retriever.load) to see them",
                short,
                limit,
            )
        return self.rows.rows(keys, scores, limit)

    def _adopt(
        self,
        keys: list[Any],
        doc_ids: list[DocId],
        uncommitted: list[str | None] | None = None,
        drop_uncommitted: bool = False,
    ) -> list[DocId]:
        """Take the documents found in a reopened collection as rows ``0..``; returns their ids.

        ``uncommitted`` gives, per document, the token of its add where that add had not committed when
        the collection was read (``None`` for the others, and for documents written before adds had
        tokens): those are left out, a writer still adding, or one that died before its commit.
        ``drop_uncommitted`` deletes them (for when no writer is adding; an add that committed since the
        read is spared); otherwise they stay, unseen, and a warning says how many."""
        if uncommitted is not None:
            keep = [token is None for token in uncommitted]
            left = [(key, token) for key, token in zip(keys, uncommitted) if token is not None]
            keys = [key for key, ok in zip(keys, keep) if ok]
            doc_ids = [d for d, ok in zip(doc_ids, keep) if ok]
            if left and drop_uncommitted:
                since = self._committed_tokens()  # read again: an add may have committed meanwhile
                doomed = [key for key, token in left if token not in since]
                if doomed:
                    self._delete(doomed)
                logger.info("deleted %d documents of uncommitted adds from %s", len(doomed), self.describe())
            elif left:
                logger.warning(
                    "%s holds %d documents of adds that did not commit (a writer still adding, or one that "
                    "stopped before its commit): they are not part of this retriever. When no writer is "
                    "adding, reopen with backend_options={'drop_uncommitted': True} to delete them",
                    self.describe(),
                    len(left),
                )
        self.rows.stage(0, keys, doc_ids)
        self.rows.commit()
        return doc_ids


def make_backend(name: str, coarse_dim: int, fine_dim: int, options: dict[str, Any]) -> Backend:
    """A new, empty engine ``name`` for views of these dimensions; ``options`` are its constructor's."""
    if name == "faiss":
        from .faiss import FaissBackend

        return FaissBackend.create(coarse_dim, fine_dim, **options)
    if name == "qdrant":
        from .qdrant import QdrantBackend

        return QdrantBackend(coarse_dim, fine_dim, **options)
    if name == "milvus":
        from .milvus import MilvusBackend

        return MilvusBackend(coarse_dim, fine_dim, **options)
    raise ValueError(f"backend={name!r} is not known; choose one of {', '.join(BACKENDS)}")


def open_backend(
    entry: dict[str, Any], path: Path, manifest: dict[str, Any], options: dict[str, Any]
) -> tuple[Backend, list[DocId]]:
    """Reattach to the engine a manifest's ``backend`` entry describes (the index directory ``path``
    for FAISS's files); ``options`` override where it lives (e.g. a ``client``). Returns the backend
    and the document ids of its rows, in row order."""
    name = entry.get("name")
    if name == "faiss":
        from .faiss import FaissBackend

        return FaissBackend.open(path, manifest, **options)
    if name == "qdrant":
        from .qdrant import QdrantBackend

        return QdrantBackend.open(entry, manifest, **options)
    if name == "milvus":
        from .milvus import MilvusBackend

        return MilvusBackend.open(entry, manifest, **options)
    raise ValueError(f"the index's manifest names backend {name!r}, which this library does not know")


__all__ = [
    "BACKENDS",
    "COMMITS_SUFFIX",
    "Backend",
    "KeyedRows",
    "make_backend",
    "open_backend",
    "point_key",
    "point_uuid",
]
