"""What the engines that store documents by key share (Qdrant, Milvus): :class:`KeyedBackend`.

Such an engine addresses a document by a key made from its id (:func:`point_key`), the same in every
process, so a reopened collection knows every id. The retriever's :class:`adaptive_retrieval.ids.IdMap`
keeps the keys beside the ids (the engine's :attr:`KeyedBackend.key`), and turns the engine's answers
into rows.

These engines write an add's documents before it commits, where other processes can see them. Each add
therefore tags its documents with a token, and its commit records the token in a companion collection
(``<collection>_commits``) in one write: a reopened collection adopts only documents of committed adds,
so a writer killed in the middle of an add leaves nothing a reader takes for part of the index
(:meth:`KeyedBackend.adopt`; such leftovers are deleted on request).

A delete is recorded the same way: one write of a record per deleted key (``del:<key>``) before the
commit, so that a reopened collection never adopts a deleted document, whatever became of its point; the
points themselves are deleted after the commit (best effort: a failure leaves them to the next
compaction, or to a reopen with ``drop_uncommitted``), then their records. An upsert writes a document's
new version under a new key (:attr:`KeyedBackend.renew`), beside the old one until the commit, and records
the add and the old versions' deletes in one write.

Each document's metadata rides with its vectors (a Qdrant payload, a Milvus JSON field), so that a
filter the engine can answer as the retriever would (:func:`adaptive_retrieval.filters.native`) runs in
the engine's own search (:meth:`KeyedBackend.native_filter`), asked as deep as an unfiltered search;
the others are applied to the engine's answers, asked deeper as the share of documents matched falls.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from ..corpus import DocId
from ..errors import CorpusError, EngineError, InvalidArgument, InvalidArgumentType
from .base import Backend, EngineOptions

logger = logging.getLogger(__name__)

COMMITS_SUFFIX = "_commits"
"""The companion collection of a keyed engine's collection that records its committed adds."""
DELETED = "del:"
"""The prefix of a delete record's token: ``del:<key>``"""


@dataclass(frozen=True)
class Asked:
    """A keyed engine's per-call search parameters with a filter it runs itself."""

    engine: Any
    """The engine's own search parameters (``None``: its defaults)"""
    where: Any
    """The filter in the engine's language"""


def client_library(name: str, hint: str) -> ModuleType:
    """An engine's client library (``"pymilvus"``, ``"qdrant_client"``), imported when the engine is first
    used rather than with its module: together they took 1.5 s to import here (a scratch timing), which a
    FAISS retriever need not pay.

    Raises:
        ImportError: the library is not installed, with ``hint`` (what to install); an installed library
            that fails to import raises its own error."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != name.split(".")[0]:
            raise  # the library is there but one of its own imports failed: that error says more
        raise ImportError(hint) from err


def asked(params: Any) -> tuple[Any, Any]:
    """``params`` as (the engine's own parameters, its filter or ``None``)."""
    return (params.engine, params.where) if isinstance(params, Asked) else (params, None)


def lexical_in_engine(lexical: Any, server: bool) -> bool:
    """Whether an engine holds a hybrid index's BM25 postings (:mod:`adaptive_retrieval.engine_lexical`), by
    its ``lexical=`` option: ``"engine"``, ``"local"``, or ``None`` (the default): in the engine where it is
    a server (``server``), where the postings serve every process that opens the collection, each writer's
    documents included; here for an embedded engine (Qdrant's local mode, Milvus Lite), whose sparse search
    costs 3 to 28 times the local index's in one process (docs/measurements.md, "BM25 in the engine").

    Raises:
        InvalidArgument: another value."""
    if lexical not in (None, "engine", "local"):
        raise InvalidArgument(
            f"lexical={lexical!r}: choose 'engine', 'local' or None (the default: by engine)"
        )
    return lexical == "engine" or (lexical is None and server)


def point_key(doc_id: DocId) -> int:
    """A document's key in an engine: 63 bits of the sha256 of its id (as JSON, so ``1`` and ``"1"``
    differ). The same document gets the same key in every process, so a reopened collection knows
    every id, and an add refuses a key the engine already holds (``KeyedBackend._refuse_present``):
    writers never overwrite each other's documents. Two ids sharing a key (odds about 1 in 10^12 at 10M
    documents) are refused when they meet."""
    digest = hashlib.sha256(json.dumps(doc_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def point_uuid(doc_id: DocId) -> str:
    """:func:`point_key` as a UUID string (Qdrant's point ids are unsigned ints or UUIDs)."""
    return str(uuid.UUID(int=point_key(doc_id)))


def new_point_key(doc_id: DocId) -> int:
    """A fresh key for a new version of a document (an upsert): :func:`point_key` of the id and a random
    token, so that it never meets the key of the id or of another version."""
    return point_key([doc_id, uuid.uuid4().hex])


def new_point_uuid(doc_id: DocId) -> str:
    """:func:`new_point_key` as a UUID string."""
    return str(uuid.UUID(int=new_point_key(doc_id)))


def adopted_token(key: Any, token: str | None, committed: set[str]) -> str | None:
    """What :meth:`KeyedBackend.stored_documents` reports for a stored document: ``None`` (adopted) when
    its add committed (or it has no token) and no delete record names it; else the token that keeps it
    out (its uncommitted add's, or its delete record's)."""
    if f"{DELETED}{key}" in committed:
        return f"{DELETED}{key}"
    return None if token is None or token in committed else token


class KeyedBackend(Backend):
    """What the engines that store documents by key (Qdrant, Milvus) share: rows counted by the id map,
    adds recorded as committed, roll-back by deleting keys, a shortlist scored with fetched fine vectors,
    engine answers turned into rows, and the documents found on reopening adopted."""

    key: Callable[[DocId], Hashable]
    #: the token every document of the add in progress carries (``None`` between adds)
    _add_token: str | None = None
    #: whether the collection records its commits (one this library created since it began to); an
    #: older one has no tokens, and reopening it adopts every document
    _records_commits: bool = True
    #: whether each document written carries its add's token (a field the collection may require)
    _tags_adds: bool = True
    #: whether every document written carries its metadata (so filters can run in the engine)
    native_filters: bool = True

    @classmethod
    def create(cls, coarse_dim: int, fine_dim: int, options: EngineOptions) -> KeyedBackend:
        """A new collection for views of these dimensions, made as the engine's options say."""
        return cls(coarse_dim, fine_dim, options)

    #: the ``Retriever.load(backend_options=...)`` keys that say where a saved collection lives now
    WHERE: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def open(
        cls, directory: Path, manifest: dict[str, Any], *, drop_uncommitted: bool = False, **where: Any
    ) -> tuple[KeyedBackend, list[DocId]]:
        """Reattach to the collection a saved manifest names, where it was saved or where ``where`` says
        (the engine's :attr:`WHERE` keys: a ``client``, a server address). Every document of a committed
        add becomes a row; ``drop_uncommitted`` deletes the others (see :meth:`adopt`).

        Raises:
            InvalidArgumentType: a key that is not one of :attr:`WHERE` (a ``TypeError``, as an unknown
                keyword argument is).
            IndexDamaged: the collection does not exist (any more) there.
        """
        unknown = sorted(set(where) - set(cls.WHERE))
        if unknown:
            raise InvalidArgumentType(
                f"backend_options to reopen a {cls.name} collection take {', '.join(cls.WHERE)} and "
                f"drop_uncommitted, not {unknown[0]!r}"
            )
        options = cls.saved_options(manifest["backend"], where)
        backend = cls(manifest["coarse"][1], manifest["fine"][1], options, existing=True)
        try:
            keys, doc_ids, tokens = backend.stored_documents()
            return backend, backend.adopt(keys, doc_ids, tokens, drop_uncommitted)
        except BaseException:
            backend.close()
            raise

    @classmethod
    @abstractmethod
    def saved_options(cls, entry: dict[str, Any], where: dict[str, Any]) -> EngineOptions:
        """The options that reach a saved collection: the manifest's ``backend`` entry, overridden by
        ``where``."""

    @abstractmethod
    def stored_documents(self) -> tuple[list[Any], list[DocId], list[str | None] | None]:
        """Every document the reopened collection holds: keys, ids and, per document, the token of its
        add when that add has not committed (``None`` for the others); the token list is ``None`` for a
        collection made before adds were recorded (every document is adopted). Raises
        :class:`adaptive_retrieval.errors.IndexDamaged` when the collection does not exist."""

    def __len__(self) -> int:
        return len(self.ids)

    #: the keys the write in progress deletes (their delete records written by prepare())
    _deleting: list[Any] = []  # noqa: RUF012 - replaced per instance
    _deletes_recorded: list[str] = []  # noqa: RUF012 - replaced per instance

    def delete(self, rows: list[int], replacing: bool = False) -> None:
        """Stage the deletion of these rows' documents (recorded at :meth:`prepare`, their points deleted
        after the commit; ``replacing``: an upsert's old versions). Raises EngineError in a collection that
        records no commits (made by an older version); nothing changes."""
        if not rows:
            return
        if not self._records_commits:
            raise EngineError(
                f"{self.describe()} records no commits (made by an older version): it cannot record deletes "
                "either; nothing was changed"
            )
        self._deleting = [*self._deleting, *(self.ids.key_of(r) for r in rows)]

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
        adds = self._written and token is not None and self._records_commits and self._recorded != token
        records = [f"{DELETED}{key}" for key in self._deleting] if not self._deletes_recorded else []
        if adds or records:  # one record: a reopen sees the whole write (an upsert's both halves) or none
            head = token if adds else uuid.uuid4().hex  # the record's own token (a delete alone: a new one)
            self._record_tokens([head, *records])
            if adds:
                self._recorded = token
            if records:
                self._deletes_recorded = [head, *records]

    def commit(self) -> None:
        self.prepare()  # nothing when prepare() already ran (the id map commits the rows after)
        self._undo = (self._recorded, self._written)  # until the transaction is over: see rollback()
        self._written = []
        self._add_token = self._recorded = None
        deleting, records = self._deleting, self._deletes_recorded
        self._deleting, self._deletes_recorded = [], []
        if deleting:  # committed (the engine commits last): the points go, then their records
            self._purge(deleting, records)

    def _purge(self, keys: list[Any], records: list[str]) -> None:
        """Delete deleted documents' points, then their records (``records``: the record's own token,
        then ``del:<key>`` each); never raises (the records keep a reopen from adopting the documents)."""
        try:
            self._delete(keys)
            self._forget_deletes(records[0], records[1:])
        except Exception as err:
            logger.warning(
                "%s: deleted documents' points not yet removed (%s); retried later", self.describe(), err
            )
            self._unpurged = [*self._unpurged, (keys, records)]

    _unpurged: list[tuple[list[Any], list[str]]] = []  # noqa: RUF012 - replaced per instance

    def _forget_deletes(self, head: str, records: list[str]) -> None:
        """Remove the delete records written with the record ``head`` (default: rows of their own)."""
        self._unrecord_tokens(records)

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """Nothing to rebuild: deleted documents' points are gone (those a failed purge left are deleted
        now); the id map renumbers its rows."""
        left, self._unpurged = self._unpurged, []
        for keys, records in left:
            self._purge(keys, records)
        return lambda: None

    def rollback(self, start: int, committed: bool = False) -> None:
        """Delete the add's documents (those it wrote; never another writer's that it refused) and,
        first, its commit record; ``committed``: this engine's :meth:`commit` of the add had returned."""
        recorded, written = self._undo if committed else (self._recorded, self._written)
        gone = self.ids.tail_keys(start)[: max(len(self.ids) - start, 0)] + written
        self._add_token = self._recorded = None
        self._written, self._undo = [], (None, [])
        deletes, self._deleting, self._deletes_recorded = self._deletes_recorded, [], []
        if deletes:  # a delete that did not commit: its records go (its points were never touched)
            self._unrecord_tokens(deletes)
        if recorded is not None:  # first: documents partly deleted must not be adopted as an add
            self._unrecord_tokens([recorded])
        if gone:
            self._delete(gone)

    @abstractmethod
    def _record_tokens(self, tokens: list[str]) -> None:
        """Record these tokens in the companion collection at once: a reopen sees all or none (the first
        is the record's own token, the others ``del:<key>`` records written with it)."""

    @abstractmethod
    def _unrecord_tokens(self, tokens: list[str]) -> None:
        """Remove these tokens' records, in one request."""

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
        slots (:meth:`known_rows`), not a server-side shortlist that cannot."""
        return self._count() > len(self.ids)

    @abstractmethod
    def _present(self, keys: list[Any]) -> set[Any]:
        """Which of these keys the engine already holds."""

    #: the keys the add in progress has written (or begun to): what a roll-back deletes, and nothing more
    _written: list[Any] = []  # noqa: RUF012 - replaced per instance on first write
    #: the last commit's token and written keys, for a roll-back of a transaction that failed after it
    _undo: tuple[str | None, list[Any]] = (None, [])

    def staged_keys(self, first_row: int, doc_ids: list[DocId]) -> list[Any]:
        """The keys the id map gave the documents staged as rows ``first_row..`` (an upserted document's
        a new one), or, for documents it has not staged, their ids' keys."""
        keys = list(self.ids.tail_keys(first_row)[: len(doc_ids)])
        return keys if len(keys) == len(doc_ids) else [self.key(d) for d in doc_ids]

    def _stage(self, keys: list[Any], doc_ids: list[DocId]) -> str | None:
        """Before an add writes ``keys``: refuse those the engine already holds, note the rest as written
        by this add, and return the add's token."""
        if self._add_token is None:  # a new add: the last one's transaction is over
            self._undo = (None, [])
        self._refuse_present(keys, doc_ids)
        self._written = [*self._written, *keys]
        return self._token()

    def _refuse_present(self, keys: list[Any], doc_ids: list[DocId]) -> None:
        """Refuse documents the engine already holds though this process does not know them (another
        writer added them since this retriever opened the collection): an upsert would overwrite them.
        Checked before anything is written or staged, so the failure removes nothing of theirs."""
        present = self._present(keys)
        if present:
            doc_id = next(d for d, key in zip(doc_ids, keys) if key in present)
            raise CorpusError(
                f"document id {doc_id!r} is already in the collection (another writer added it since this "
                "retriever opened it, or an add that never committed left it); nothing was added. Reopen it "
                "with Retriever.load to see its documents (backend_options={'drop_uncommitted': True} "
                "deletes uncommitted adds' documents, when no writer is adding)"
            )

    @abstractmethod
    def _ask(
        self, field: str, params: Any = None, where: Any = None
    ) -> Callable[[np.ndarray, int], tuple[list[list[Any]], list[list[float]]]]:
        """``ask(vectors, limit)``: the engine's nearest documents by the ``"coarse"`` or ``"fine"`` vectors
        (keys and scores per query), one batched request, with these search parameters and this filter
        (``_compile``)."""

    def _exact_params(self) -> Any:
        """The search parameters that make a fine search exact (``None``: it always is)."""
        return None

    #: a filter matching at most this many rows is ranked by their fetched fine vectors (exact)
    FETCH_EXACT = 20_000

    def coarse_search(
        self, coarse_q: np.ndarray, depth: int, params: Any = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The engine's coarse answers as rows; ``allowed``: the rows a filter (or the live rows) allows,
        others skipped as unknown keys are (asked again for more: :meth:`known_rows`), or the filter run
        by the engine where :meth:`in_engine` says it pays."""
        own, where = asked(params)
        share = 1.0 if allowed is None else float(np.count_nonzero(allowed)) / max(len(allowed), 1)
        native = where is not None and self.in_engine(depth, share)
        ask = self._ask("coarse", own, where if native else None)
        return self.known_rows(ask, coarse_q, depth, allowed, native=native)

    def in_engine(self, depth: int, share: float) -> bool:
        """Whether a filter the engine can run (:meth:`native_filter`) goes with a search ``depth`` deep
        matching ``share`` of the documents, rather than the answers being filtered: always, here."""
        return True

    def native_filter(self, params: Any, node: Any) -> Any:
        """``params`` with ``node`` in the engine's language (``_compile``) where documents carry metadata."""
        where = None if node is None or not self.native_filters else self._compile(node)
        return params if where is None else Asked(asked(params)[0], where)

    @abstractmethod
    def _compile(self, node: Any) -> Any:
        """A parsed filter in the engine's language, or ``None`` where it cannot say it."""

    def exact_search(
        self, fine_q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact fine search in the engine; under a filter matching at most :attr:`FETCH_EXACT` rows,
        their fine vectors fetched and scored here."""
        if allowed is not None and int(np.count_nonzero(allowed)) <= self.FETCH_EXACT:
            rows = np.flatnonzero(allowed[: len(self.ids)])
            if len(rows) == 0:
                n = len(fine_q)
                return np.full((n, k), -np.inf, np.float32), np.full((n, k), -1, np.int64)
            scores = self.fine_scores(fine_q, np.broadcast_to(rows, (len(fine_q), len(rows))))
            keys = [[self.ids.key_of(int(r)) for r in rows]] * len(fine_q)
            return self.rows_of(keys, scores.tolist(), k)
        return self.known_rows(self._ask("fine", self._exact_params()), fine_q, k, allowed)

    def filtered_cost(self, share: float, depth: int, params: Any = None) -> float | None:
        """A filtered search asks the engine for ``depth / share`` answers (skipping the others): exact
        by fetched vectors when that is more than the rows matched, up to :attr:`FETCH_EXACT`; with a
        filter the engine runs itself (:meth:`native_filter`, :meth:`in_engine`), for ``depth``."""
        native = asked(params)[1] is not None and self.in_engine(depth, share)
        return float(depth) if native else min(depth / max(share, 1e-9), self.FETCH_EXACT)

    def fine_scores(self, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        keys = [self.ids.key_of(r) for r in rows.ravel()]
        vector = self._fetch_fine(sorted(set(keys)))
        stacked = np.stack([vector[key] for key in keys]).reshape(*rows.shape, -1)
        return np.einsum("qcd,qd->qc", stacked, np.asarray(fine_q, np.float32))

    #: how many times a query whose answer held unknown keys is asked again, for more
    _REASKS = 4
    #: the largest answer the engine gives one query (``None``: no limit of its own)
    _MAX_LIMIT: int | None = None

    def known_rows(
        self,
        ask: Callable[[np.ndarray, int], tuple[list[list[Any]], list[list[float]]]],
        vectors: np.ndarray,
        limit: int,
        allowed: np.ndarray | None = None,
        native: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``ask(vectors, limit)``'s engine answers (keys and scores per query) as ``(D, I)`` rows of
        this retriever's documents. Keys it does not know (another writer's documents, added since this
        retriever opened the collection) would take result slots, so a query whose full answer held
        some is asked again for that many more, until its answer holds ``limit`` known keys or the
        engine has no more to give. ``allowed`` rows only: asked ``limit / share`` deep at first, or
        ``limit`` deep where the engine filters itself (``native``)."""
        row_of_key = self.ids.row_of_key
        if allowed is None:
            known = self.ids.knows_key
        else:  # a filter: its other rows count as unknown keys, and a first ask goes as deep as it needs
            share = max(float(np.count_nonzero(allowed)) / max(len(allowed), 1), 1e-9)
            limit_first = int(min(np.ceil(limit / share), self._MAX_LIMIT or np.inf))

            def known(key: Any) -> bool:
                row = row_of_key(key)
                return row is not None and bool(allowed[row])

        first = limit if allowed is None or native else max(limit, limit_first)
        keys, scores = asked_until_known(ask, vectors, first, limit, known, self._REASKS, self._MAX_LIMIT)
        short = sum(
            any(not known(key) for key in ks) and sum(map(known, ks)) < min(limit, len(self)) for ks in keys
        )
        if short and allowed is None:
            logger.warning(
                "%d queries got fewer than %d of this retriever's documents: other writers' documents, "
                "unknown here, filled their answers; reopen the collection (Retriever.load) to see them",
                short,
                limit,
            )
        return self.rows_of(keys, scores, limit, allowed)

    def rows_of(
        self, keys: list[list[Any]], scores: list[list[float]], k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per query, engine ``(key, score)`` results as ``(D, I)`` rows, keys the id map does not know
        left out, equal scores ordered by the lower row (as the FAISS funnel orders them), padded to ``k``."""
        D = np.full((len(keys), k), -np.inf, dtype=np.float32)
        I = np.full((len(keys), k), -1, dtype=np.int64)
        row_of_key = self.ids.row_of_key
        for q, (ks, ss) in enumerate(zip(keys, scores)):
            found = ((-float(s), row_of_key(key)) for key, s in zip(ks, ss))
            hits = sorted((s, r) for s, r in found if r is not None and (allowed is None or allowed[r]))[:k]
            D[q, : len(hits)] = [-s for s, _ in hits]
            I[q, : len(hits)] = [r for _, r in hits]
        return D, I

    def adopt(
        self,
        keys: list[Any],
        doc_ids: list[DocId],
        uncommitted: list[str | None] | None = None,
        drop_uncommitted: bool = False,
    ) -> list[DocId]:
        """The ids of the documents found in a reopened collection that become its rows ``0..``.

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
        self.opened_keys = list(keys)  # the rows' keys as stored (an upserted document's is not its id's)
        if uncommitted is not None:
            if left and drop_uncommitted:
                since = self._committed_tokens()  # read again: an add may have committed meanwhile
                doomed = [key for key, token in left if token not in since or token.startswith(DELETED)]
                if doomed:
                    self._delete(doomed)
                    records = [token for _, token in left if token.startswith(DELETED)]
                    if records:
                        self._unrecord_tokens(records)
                logger.info("deleted %d documents of uncommitted adds from %s", len(doomed), self.describe())
            elif left:
                logger.warning(
                    "%s holds %d documents of adds that did not commit (a writer still adding, or one that "
                    "stopped before its commit): they are not part of this retriever. When no writer is "
                    "adding, reopen with backend_options={'drop_uncommitted': True} to delete them",
                    self.describe(),
                    len(left),
                )
        return doc_ids


def asked_until_known(
    ask: Callable[[np.ndarray, int], tuple[list[list[Any]], list[list[float]]]], vectors: np.ndarray,
    first: int, limit: int, known: Callable[[Any], bool], reasks: int, most: int | None,
) -> tuple[list[list[Any]], list[list[float]]]:  # fmt: skip
    """``ask(vectors, first)``, and each query whose full answer held fewer than ``limit`` ``known`` keys
    asked again for as many more as it held others (at most ``reasks`` times, each ask at most ``most``
    deep), until its answer holds ``limit`` known keys or the engine has no more to give."""
    keys, scores = ask(vectors, first)
    depth = [first] * len(keys)
    for _ in range(reasks):
        again = {}
        for q, ks in enumerate(keys):
            unknown = sum(not known(key) for key in ks)
            if unknown and len(ks) - unknown < limit and len(ks) >= depth[q]:  # full, too few: more?
                again[q] = depth[q] + unknown
        if not again:
            break
        rows = sorted(again)
        wider = max(again.values()) if most is None else min(max(again.values()), most)
        if wider <= min(depth[q] for q in rows):
            break  # the engine gives no more
        more_keys, more_scores = ask(np.asarray(vectors)[rows], wider)
        for q, ks, ss in zip(rows, more_keys, more_scores):
            keys[q], scores[q], depth[q] = ks, ss, wider
    return keys, scores
