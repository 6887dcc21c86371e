"""Writing to an index: one all-or-nothing transaction over every store it holds.

An index is several stores numbered by the same rows: the engine (coarse and fine vectors), the
document store (texts and metadata, when kept) and the :class:`adaptive_retrieval.ids.IdMap`. A write
goes through :class:`Transaction`, the same protocol for each of them:

1. *stage*: each store takes its part, invisible to searches (the engine's new rows, the texts, the ids);
2. *prepare*: each store does what can run beside searches (e.g. a new HNSW graph holding the rows);
3. *commit*, under the retriever's write lock: each store makes its part visible, the engine last;
4. *rollback* on any error before the last commit returns: each store undoes its part, committed or not,
   so that the index is exactly as it was.

A search holds the read lock, so it sees the index before or after a write, never a part of one.
:class:`IndexWriter` runs adds, upserts (an add whose known ids replace their documents) and deletes
through it; a delete kills rows (:mod:`adaptive_retrieval.ids`), which :meth:`IndexWriter.compact` reclaims.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from .backends.base import Backend
from .corpus import DocId, check_id, check_text
from .documents import DocumentStore
from .engine_lexical import EngineLexicalIndex
from .errors import CorpusError, CorpusTypeError, InvalidArgument, RetrieverBusy
from .ids import IdMap
from .lexical import LexicalIndex
from .locks import ReadWriteLock
from .metadata import MetadataStore
from .passages import document_of, document_rows
from .views import View


class Participant(Protocol):
    """A store that takes part in a :class:`Transaction`."""

    def prepare(self) -> None:
        """Do what can run while searches go on (before the write lock)."""

    def commit(self) -> None:
        """Make the staged part visible (under the write lock)."""

    def rollback(self, committed: bool) -> None:
        """Undo the staged part; ``committed``: this participant's :meth:`commit` already returned."""


@dataclass
class EngineWrite:
    """The engine's part of a write: its rows from ``start`` on."""

    engine: Backend
    start: int

    def prepare(self) -> None:
        self.engine.prepare()

    def commit(self) -> None:
        self.engine.commit()

    def rollback(self, committed: bool) -> None:
        self.engine.rollback(self.start, committed)


@dataclass
class DocumentWrite:
    """The document store's part of a write: the texts and metadata it staged."""

    store: DocumentStore

    def prepare(self) -> None:
        return None

    def commit(self) -> None:
        self.store.commit()

    def rollback(self, committed: bool) -> None:
        (self.store.undo_commit if committed else self.store.rollback)()


@dataclass
class MetadataWrite:
    """The metadata store's part of a write: one record per new row."""

    store: MetadataStore

    def prepare(self) -> None:
        return None

    def commit(self) -> None:
        self.store.commit()

    def rollback(self, committed: bool) -> None:
        self.store.rollback(committed)


@dataclass
class LexicalWrite:
    """The lexical index's part of a write: the new rows' terms (appended to its postings, or counted, in
    prepare)."""

    index: LexicalIndex | EngineLexicalIndex

    def prepare(self) -> None:
        self.index.prepare()

    def commit(self) -> None:
        self.index.commit()

    def rollback(self, committed: bool) -> None:
        self.index.rollback(committed)


@dataclass
class IdWrite:
    """The id map's part of a write: the ids it staged."""

    ids: IdMap

    def prepare(self) -> None:
        return None

    def commit(self) -> None:
        self.ids.commit()

    def rollback(self, committed: bool) -> None:
        self.ids.rollback(committed)


class Transaction:
    """Prepare, commit or roll back ``participants`` together (see the module docstring). Roll-back runs
    in the participants' order too. The engine commits last: a participant committed before it is
    rolled back with ``committed=True`` if the engine's commit fails.

    Args:
        lock: the retriever's read-write lock; commits run under its write side.
        participants: the stores, each with its part staged, the engine last.
        after: run under the write lock once every participant has committed.
    """

    def __init__(
        self, lock: ReadWriteLock, participants: list[Participant], after: Callable[[], None] | None = None
    ) -> None:
        self.lock = lock
        self.participants = participants
        self.after = after  # run under the write lock once every participant has committed

    def rollback(self, committed: int = 0) -> None:
        """Undo every participant; every one is tried, the first error raised after.

        Args:
            committed: how many participants (the first ones) had committed.

        Raises:
            BaseException: the first error a participant's roll-back raised, once all were tried.
        """
        error: BaseException | None = None
        for i, p in enumerate(self.participants):
            try:
                p.rollback(i < committed)
            except BaseException as err:  # the others must still be undone
                error = error or err
        if error is not None:
            raise error

    def commit(self) -> None:
        """Prepare every participant, then commit them under the write lock.

        Raises:
            BaseException: whatever a participant raised (a library error, ``KeyboardInterrupt``...),
                after every participant was rolled back.
        """
        done = 0
        try:
            for p in self.participants:
                p.prepare()
            with self.lock.write():  # no search sees a part of the write, nor a roll-back's middle
                try:
                    for p in self.participants:
                        p.commit()
                        done += 1
                except BaseException:
                    self.rollback(done)
                    done = -1  # rolled back here, under the lock
                    raise
                if self.after is not None:
                    self.after()
        except BaseException:
            if done == 0:  # failed in prepare, or interrupted while waiting for the lock
                self.rollback()
            raise


def row_norms(vectors: np.ndarray, rows: int = 4096) -> np.ndarray:
    """The L2 norm of each row, in float32, a slice of ``rows`` at a time (no temporary as large as the
    batch, as ``np.linalg.norm``'s squares would be)."""
    out = np.empty(len(vectors), np.float32)
    for start in range(0, len(vectors), rows):
        part = np.asarray(vectors[start : start + rows], dtype=np.float32)
        out[start : start + rows] = np.sqrt(np.einsum("ij,ij->i", part, part))
    return out


class IndexWriter:
    """Adds documents to an index's stores (:meth:`add_batches`), one add at a time.

    Args:
        ids: the index's id map.
        engine: the engine holding the vectors.
        documents: the document store, or ``None`` when texts are not kept.
        metadata: the metadata store (one record per row).
        coarse, fine: the index's views (the vectors' shapes are checked against them).
        lock: the retriever's read-write lock (searches read; commits write).
        after_commit: called under the write lock after each add commits (e.g. to drop a calibration
            the index outgrew).
        lexical: the lexical index, or ``None`` (then texts are needed only where documents are kept).
    """

    @classmethod
    def of(cls, retriever: Any) -> IndexWriter:
        """The writer of an :class:`adaptive_retrieval.Retriever`'s stores and engine; a commit drops its stale
        calibration through a weak reference (no cycle: a dropped retriever is freed at once)."""
        drop = weakref.WeakMethod(retriever._drop_stale_calibration)
        r = retriever
        return cls(
            r.ids, r.backend, r.documents, r.metadata, r.coarse, r.fine, r._lock, lambda: drop()(), r.lexical
        )

    def __init__(
        self,
        ids: IdMap,
        engine: Backend,
        documents: DocumentStore | None,
        metadata: MetadataStore,
        coarse: View,
        fine: View,
        lock: ReadWriteLock,
        after_commit: Callable[[], None] | None = None,
        lexical: LexicalIndex | EngineLexicalIndex | None = None,
    ) -> None:
        self.ids, self.engine, self.documents, self.metadata = ids, engine, documents, metadata
        self.lexical = lexical
        self.coarse, self.fine, self.lock = coarse, fine, lock
        self.after_commit = after_commit
        self._adding = threading.Lock()  # held by the add in progress: a second one is refused

    def add_batches(self, batches: Iterable[tuple[Any, ...]], *, replace: bool = False) -> int:
        """Stage every batch, then commit them all, or nothing.

        Args:
            batches: ``(doc_ids, coarse_vectors, fine_vectors[, texts[, metadata]])`` tuples (see
                :meth:`adaptive_retrieval.Retriever.add_vector_batches`), consumed one at a time.
            replace: a known id is an update (an upsert): its old row dies as the new one commits.

        Returns:
            The number of documents added.

        Raises:
            RetrieverBusy: another add is running on this writer.
            CorpusError: an empty stream, a known or repeated id, vectors of the wrong shape, not
                normalised or not finite, missing texts (CorpusTypeError: a batch, id or vectors of the
                wrong type). Nothing is added.
        """
        with self.exclusive():
            return self._add(batches, replace)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold this writer for one write (searches go on beside it).

        Raises:
            RetrieverBusy: another write is running."""
        if not self._adding.acquire(blocking=False):
            raise RetrieverBusy(
                "another write (add, upsert, delete, compact) is running on this retriever: one at a time "
                "(searches may run beside it)"
            )
        try:
            yield
        finally:
            self._adding.release()

    def _transaction(self) -> Transaction:
        participants: list[Participant] = [] if self.documents is None else [DocumentWrite(self.documents)]
        participants += [MetadataWrite(self.metadata)]
        participants += [] if self.lexical is None else [LexicalWrite(self.lexical)]
        participants.append(IdWrite(self.ids))
        participants.append(EngineWrite(self.engine, len(self.ids)))  # the engine last
        return Transaction(self.lock, participants, self.after_commit)

    def delete(self, doc_ids: Iterable[DocId], missing: str = "raise") -> int:
        """Delete documents, all or none: their rows die (searches skip them at once; :meth:`compact`
        reclaims them).

        Args:
            doc_ids: the documents' ids.
            missing: ``"raise"`` (an unknown id is an error, nothing deleted) or ``"ignore"``.

        Returns:
            How many documents were deleted.

        Raises:
            CorpusError: an unknown id (``missing="raise"``). InvalidArgument: another ``missing``.
            RetrieverBusy: another write is running.
        """
        if missing not in ("raise", "ignore"):
            raise InvalidArgument(f"missing must be 'raise' or 'ignore', got {missing!r}")
        if isinstance(doc_ids, (str, bytes, int)):
            raise CorpusTypeError(f"ids must be a list of document ids, got the single id {doc_ids!r}")
        checked = [check_id(d, f"ids[{i}]") for i, d in enumerate(doc_ids)]
        with self.exclusive():
            transaction = self._transaction()
            try:
                rows = {d: document_rows(self.ids, d) for d in checked}  # a split document: its passages
                unknown = next((d for d, r in rows.items() if not r), None)
                if unknown is not None and missing == "raise":
                    raise CorpusError(
                        f"document id {unknown!r} is not in the index; nothing was deleted "
                        "(missing='ignore' skips unknown ids)"
                    )
                gone = self.ids.stage_delete([r for d in rows.values() for r in d])
                if self.documents is not None:
                    self.documents.stage_delete(gone)
                self.engine.delete(self.ids.staged_deaths)
                if self.lexical is not None:  # before the commit: an engine's postings are read here
                    self.lexical.stage_delete(self.ids.staged_deaths)
            except BaseException:
                transaction.rollback()
                raise
            if gone:
                transaction.commit()
            else:
                transaction.rollback()
            return sum(1 for r in rows.values() if r)

    def compact(self) -> int:
        """Reclaim the dead rows: every store keeps only the live ones, renumbered ``0..`` in order
        (the new engine parts built beside searches, swapped in under the write lock).

        Returns:
            How many rows were reclaimed.

        Raises:
            RetrieverBusy: another write is running."""
        with self.exclusive():
            dead = self.ids.dead
            if not dead:
                return 0
            keep = self.ids.live_rows()
            # everything built beside searches (no other write runs: this one holds the writer); under
            # the lock only references change, the engine's first (the one step that can fail: a rename)
            swaps = [self.engine.compacted(keep), self.metadata.compacted(keep)]
            swaps += [] if self.lexical is None else [self.lexical.compacted(keep)]
            swaps.append(self.ids.compacted(keep))
            with self.lock.write():
                for swap in swaps:
                    swap()
            return dead

    def _add(self, batches: Iterable[tuple[Any, ...]], replace: bool) -> int:
        transaction = self._transaction()
        try:
            position = 0
            for batch in batches:  # not enumerate(), whose reused tuple keeps the last batch alive
                self._stage(position, batch, replace)
                del batch  # before the next one is made: RAM holds one batch at a time
                position += 1  # noqa: SIM113 (see the loop)
            if not self.ids.staged:
                raise CorpusError("corpus is empty: give at least one document")
        except BaseException:  # nothing is visible yet
            transaction.rollback()
            raise
        added = len(self.ids.staged)
        transaction.commit()
        return added

    def _stage(self, position: int, batch: Any, replace: bool) -> None:
        """One batch, checked, into every store's staged part."""
        if not isinstance(batch, tuple) or not 3 <= len(batch) <= 5:
            raise CorpusTypeError(
                f"batch {position} must be a tuple (doc_ids, coarse_vectors, fine_vectors[, texts[, "
                f"metadata]]), got {type(batch).__name__}"
            )
        doc_ids = [check_id(d, f"doc_ids[{i}]") for i, d in enumerate(batch[0])]
        coarse_vectors, fine_vectors = self.check_vectors(doc_ids, batch[1], batch[2])
        texts = list(batch[3]) if len(batch) > 3 and batch[3] is not None else None
        if texts is not None and len(texts) == len(doc_ids):  # a count that differs is refused below
            texts = [check_text(t, d) for t, d in zip(texts, doc_ids)]
        metadata = list(batch[4]) if len(batch) > 4 and batch[4] is not None else None
        if metadata is not None and len(metadata) != len(doc_ids):
            raise CorpusError(f"batch {position} has {len(metadata)} metadata records for {len(doc_ids)} ids")
        if (self.documents is not None or self.lexical is not None) and (
            texts is None or len(texts) != len(doc_ids)
        ):
            raise CorpusError(
                f"this index {'stores texts' if self.documents is not None else 'has a lexical index'}: batch "
                f"{position} needs one text per document: (doc_ids, coarse_vectors, fine_vectors, texts[, metadata])"
            )
        if replace:  # an upsert's replaced rows (a split document's every passage), before the new ones
            self._stage_replaced(doc_ids)
        first_row = self.ids.stage(doc_ids, replace=replace)
        self.metadata.stage([None] * len(doc_ids) if metadata is None else metadata, doc_ids)
        if self.documents is not None:
            self.documents.add(doc_ids, texts, metadata, replace=replace)
        terms = None if self.lexical is None else self.lexical.stage(texts)
        self.engine.add(first_row, doc_ids, coarse_vectors, fine_vectors, metadata, terms=terms)

    def _stage_replaced(self, row_ids: list[DocId]) -> None:
        """The rows an upsert of ``row_ids`` replaces: every committed row of their documents. A row whose
        id comes again (the same document whole, or the same passage number) dies as its id is staged; the
        others (passages the new version has not, a whole document now split, or the reverse) die here."""
        new = set(row_ids)
        old = [r for d in dict.fromkeys(map(document_of, row_ids)) for r in document_rows(self.ids, d)]
        rows = [self.ids.row(r) for r in old]
        self.engine.delete(rows, replacing=True)
        if self.lexical is not None:
            self.lexical.stage_delete(rows)
        extra = [r for r in old if r not in new]
        if extra:
            self.ids.stage_delete(extra)
        if self.documents is not None:  # texts are kept under the full row id (a passage's span too)
            self.documents.stage_delete(old)

    def check_vectors(
        self, doc_ids: list[DocId], coarse_vectors: Any, fine_vectors: Any
    ) -> tuple[np.ndarray, np.ndarray]:
        """The batch's vectors as arrays, refused unless they have this index's shapes and are
        L2-normalised and finite.

        Args:
            doc_ids: the batch's ids (one vector each).
            coarse_vectors, fine_vectors: array-likes ``(n, coarse.dim)`` and ``(n, fine.dim)``.

        Returns:
            ``(coarse_vectors, fine_vectors)``: float32, and the fine ones in their own float dtype.

        Raises:
            CorpusError: no ids, a wrong shape, or a vector not normalised or not finite.
            CorpusTypeError: vectors that are not floats.
        """
        if not doc_ids:
            raise CorpusError("doc_ids is empty: give at least one document")
        coarse_vectors = np.asarray(coarse_vectors, dtype=np.float32)
        fine_vectors = np.asarray(fine_vectors)
        n = len(doc_ids)
        if coarse_vectors.shape != (n, self.coarse.dim) or fine_vectors.shape != (n, self.fine.dim):
            raise CorpusError(
                f"{n} ids need coarse vectors of shape {(n, self.coarse.dim)} and fine vectors "
                f"of shape {(n, self.fine.dim)}; got {coarse_vectors.shape} and {fine_vectors.shape}"
            )
        for name, vectors, tolerance in (("coarse", coarse_vectors, 1e-3), ("fine", fine_vectors, 1e-2)):
            if not np.issubdtype(vectors.dtype, np.floating):
                raise CorpusTypeError(f"{name} vectors must be floats, got {vectors.dtype}")
            norms = row_norms(vectors)
            bad = np.flatnonzero(~np.isfinite(norms) | (np.abs(norms - 1) > tolerance))
            if len(bad):
                raise CorpusError(
                    f"{name} vector of document {doc_ids[bad[0]]!r} has norm {norms[bad[0]]:.4g}: view vectors "
                    "are L2-normalised and finite (e.g. from encoder.encode(texts, [coarse, fine]))"
                )
        return coarse_vectors, fine_vectors
