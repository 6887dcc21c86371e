"""The one map between document ids and rows, shared by the retriever and its engine.

Every store of an index numbers its documents by *row*: ``0..n-1`` in the order they were added. The
retriever, the document store and every engine read the same :class:`IdMap`. An engine that stores
documents by a key of its own (Qdrant, Milvus: :func:`adaptive_retrieval.backends.keyed.point_key`)
gives the map that key function, and the map keeps the keys beside the ids, so that the engine's
answers (keys) become rows without a second map.

A row never changes its document. A deleted document's row stays, *dead* (:attr:`IdMap.alive`: the
mask searches skip), until :meth:`IdMap.compacted` renumbers the live rows ``0..``; an upsert kills the
document's old row and gives it a new one at the end.

A write stages ids (:meth:`IdMap.stage`) and deaths (:meth:`IdMap.stage_delete`), which searches do not
see, then commits them (new ids become rows ``n, n+1, ...``) or rolls them back: the id map is a
participant of the index writer's transaction (:mod:`adaptive_retrieval.writer`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence

import numpy as np

from .corpus import DocId
from .errors import CorpusError
from .passages import Passage, is_continuation


class IdMap:
    """Document ids by row, rows by document id (and, for a keyed engine, rows by engine key).

    Args:
        ids: the committed documents' ids, in row order; ``None`` marks a dead row (a deleted document
            whose row was not yet reclaimed).
        key: the engine's key of a document id (``None``: the engine addresses documents by row).
        keys: the committed rows' engine keys as the engine holds them (default: ``key`` of each id).
        renew: a new engine key for a replaced document (an upsert), so its old and new versions coexist
            until the commit (default: the key of its id).

    Raises:
        CorpusError: an id twice in ``ids``, or two ids sharing an engine key.

    Example:
        >>> ids = IdMap(["a", "b"])
        >>> ids.stage(["c"]), len(ids), ids.row("c")
        (2, 2, None)
        >>> ids.commit()
        >>> ids.row("c"), ids[2]
        (2, 'c')
        >>> ids.stage_delete(["a"]); ids.commit()
        >>> ids.count, ids.row("a"), ids.alive.tolist()
        (2, None, [False, True, True])
    """

    def __init__(
        self,
        ids: Iterable[DocId | None] = (),
        key: Callable[[DocId], Hashable] | None = None,
        *,
        keys: Sequence[Hashable] | None = None,
        renew: Callable[[DocId], Hashable] | None = None,
    ) -> None:
        self.key = key
        self.renew = renew
        self._ids: list[DocId | None] = []
        self._row: dict[DocId, int] = {}
        self._keys: list[Hashable] = []
        self._row_of_key: dict[Hashable, int] = {}
        self.alive: np.ndarray | None = None
        """``(rows,)`` bool, False at a dead row; ``None`` while every row is alive. Replaced, never
        changed in place, by a commit: a search holding it reads one state."""
        self._dead = 0
        self._continued = 0  # live rows that are a long document's second or later passage
        self._clear()
        self._first = 0  # the first row of the write in progress
        self._partial = False  # a commit began and has not finished
        self._last: dict = {}  # the last commit's changes, for a roll-back after it
        given = list(ids)
        if keys is not None:  # the engine's own keys (a reopened collection: replaced documents' are new)
            if len(keys) != len(given) or len(set(keys)) != len(keys):
                raise CorpusError(f"{len(keys)} engine keys for {len(given)} documents, or a key twice")
            self._keys = list(keys)
            self._row_of_key = {k: r for r, k in enumerate(self._keys)}
            self.key, key = None, self.key  # staged below without computing keys
        self.stage([d for d in given if d is not None])
        self.commit()
        if keys is not None:
            self.key = key
        if any(d is None for d in given):  # dead rows: renumber the live ones into place
            live = [d for d in given if d is not None]
            self._ids = list(given)
            self._row = {d: r for r, d in enumerate(given) if d is not None}
            if self.key is not None and keys is None:
                self._keys = [None if d is None else self.key(d) for d in given]
                self._row_of_key = {k: r for r, k in enumerate(self._keys) if k is not None}
            self.alive = np.array([d is not None for d in given], dtype=bool)
            self._dead = len(given) - len(live)
        self._continued = self._count_continued()
        self._last = {}

    def __len__(self) -> int:
        """Committed rows, dead ones included: the rows every store holds (:attr:`count`: documents)."""
        return len(self._ids)

    @property
    def count(self) -> int:
        """Committed live rows: what searches can return (a long document's passages are a row each)."""
        return len(self._ids) - self._dead

    @property
    def documents(self) -> int:
        """Committed documents (a document split into passages counts once)."""
        return self.count - self._continued

    def has_document(self, doc_id: object) -> bool:
        """Whether the index holds the document ``doc_id``, whole or as passages."""
        return doc_id in self._row or Passage(doc_id, 0, 0, 0) in self._row

    @property
    def dead(self) -> int:
        """Dead rows: deleted or replaced documents whose rows compaction (:meth:`compacted`) has not yet reclaimed."""
        return self._dead

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row

    def __getitem__(self, row: int) -> DocId:
        return self._ids[row]  # type: ignore[return-value]

    @property
    def ids(self) -> Sequence[DocId | None]:
        """The committed ids in row order, ``None`` at a dead row (read only: the map changes them
        through a commit)."""
        return self._ids

    def live_ids(self) -> list[DocId]:
        """The documents' ids, in row order."""
        return [d for d in self._ids if d is not None]

    def row(self, doc_id: DocId, default: int | None = None) -> int | None:
        """The row of a committed document.

        Args:
            doc_id: the document's id.
            default: what an id the index does not hold (or holds only staged) gives.
        """
        return self._row.get(doc_id, default)

    # ----------------------------------------------------------------------- keyed engines only

    def key_of(self, row: int) -> Hashable:
        """The engine key of a committed row."""
        return self._keys[row]

    def row_of_key(self, key: Hashable) -> int | None:
        """The row of a committed document by its engine key (``None``: a key this map does not know,
        e.g. a document another process added since this one opened the engine's collection)."""
        return self._row_of_key.get(key)

    def knows_key(self, key: Hashable) -> bool:
        """Whether ``key`` is a committed document's engine key."""
        return key in self._row_of_key

    # ---------------------------------------------------------------------------- transaction

    @property
    def staged(self) -> Sequence[DocId]:
        """The ids of the write in progress (rows ``len(self)..``), not yet visible."""
        return self._staged

    @property
    def staged_deaths(self) -> list[int]:
        """The rows the write in progress kills at its commit (deleted, or replaced by an upsert)."""
        return sorted(self._killing)

    def stage(self, ids: Sequence[DocId], *, replace: bool = False) -> int:
        """Stage new documents as the next rows, invisible until :meth:`commit`.

        Args:
            ids: the new documents' ids.
            replace: an id the index holds is allowed: its row dies at the commit (an upsert).

        Returns:
            The first of their rows.

        Raises:
            CorpusError: a repeated id (staged already, twice in ``ids``, or, unless ``replace``, in the
                index) or, in a keyed map, two ids sharing an engine key; nothing of ``ids`` is staged.
        """
        first = len(self._ids) + len(self._staged)
        if not self._staged and not self._killing:  # a new write: where its rows begin
            self._first = first
        seen: set[DocId] = set()
        replaced: list[int] = []
        for doc_id in ids:
            if doc_id in self._staged_set or doc_id in seen or (doc_id in self._row and not replace):
                raise CorpusError(f"document id {doc_id!r} is already in the index; nothing was added")
            seen.add(doc_id)
            if doc_id in self._row:
                replaced.append(self._row[doc_id])
        keys = self._new_keys(ids, replace)
        self._staged.extend(ids)
        self._staged_set.update(seen)
        self._staged_keys.extend(keys)
        self._staged_key_set.update(keys)
        self._killing.update(replaced)
        return first

    def stage_delete(self, ids: Sequence[DocId], *, missing: str = "raise") -> list[DocId]:
        """Stage the deletion of committed documents: their rows die at :meth:`commit`.

        Args:
            ids: the documents' ids.
            missing: ``"raise"``: an id the index does not hold is an error; ``"ignore"``: skipped.

        Returns:
            The ids whose deletion was staged (each once).

        Raises:
            CorpusError: (``missing="raise"``) an id the index does not hold; nothing is staged.
        """
        if not self._staged and not self._killing:
            self._first = len(self._ids)
        rows: dict[DocId, int] = {}
        for doc_id in ids:
            row = self._row.get(doc_id)
            if row is None:
                if missing == "raise":
                    raise CorpusError(
                        f"document id {doc_id!r} is not in the index; nothing was deleted "
                        "(missing='ignore' skips unknown ids)"
                    )
                continue
            rows[doc_id] = row
        self._killing.update(rows.values())
        return list(rows)

    def _new_keys(self, ids: Sequence[DocId], replace: bool) -> list[Hashable]:
        if self.key is None:
            return []
        # a replaced document gets a new key where the engine gives one (its old version stays until the
        # commit); else the key of its id
        keys = [self.renew(d) if replace and self.renew and d in self._row else self.key(d) for d in ids]
        seen: set[Hashable] = set()
        for doc_id, key in zip(ids, keys):
            taken = key in self._row_of_key and not (replace and self._ids[self._row_of_key[key]] == doc_id)
            if taken or key in self._staged_key_set or key in seen:
                raise CorpusError(
                    f"document id {doc_id!r} has the engine key of a document already in the index "
                    "(a hash collision): nothing was added"
                )
            seen.add(key)
        return keys

    def prepare(self) -> None:
        """Nothing to prepare: committing is a list extension."""

    def commit(self) -> None:
        """Make the staged ids rows and the staged deaths dead (searches are kept out by the caller's
        write lock). What a roll-back needs is recorded first, so that one after a commit interrupted
        half-way undoes exactly what it did."""
        first = len(self._ids)
        killed = sorted(self._killing)
        removed = {self._ids[row]: row for row in killed}  # id -> its old row, for a roll-back
        self._last = {"first": first, "ids": self._staged, "keys": self._staged_keys, "killed": removed}
        self._partial = True
        for doc_id, row in removed.items():
            self._ids[row] = None
            if self._row.get(doc_id) == row:
                del self._row[doc_id]
            if self.key is not None and self._row_of_key.get(self._keys[row]) == row:
                del self._row_of_key[self._keys[row]]
        if self.key is not None:
            self._row_of_key.update((k, first + i) for i, k in enumerate(self._staged_keys))
            self._keys.extend(self._staged_keys)
        self._row.update((d, first + i) for i, d in enumerate(self._staged))
        self._ids.extend(self._staged)
        if killed or (self.alive is not None and self._staged):
            alive = np.ones(len(self._ids), dtype=bool)
            if self.alive is not None:
                alive[: len(self.alive)] = self.alive
            alive[killed] = False
            self.alive = alive  # a new array: a search holding the old one reads one state
        self._dead += len(killed)
        self._continued += sum(map(is_continuation, self._staged)) - sum(map(is_continuation, removed))
        self._partial = False
        self._clear()

    def rollback(self, committed: bool = False) -> None:
        """Forget the staged ids and deaths; ``committed``: the last :meth:`commit` had returned (a later
        store of the transaction failed), so its rows go and its deaths are undone too. Safe after a
        commit interrupted half-way (undone from what it recorded first)."""
        if committed or self._partial:
            if self._last:
                last = self._last
                self._undo(last["first"], last["ids"], last["keys"], last["killed"])
            self._last, self._partial = {}, False
        elif self._staged:
            self._undo(self._first, self._staged, self._staged_keys, {})
        self._clear()

    def _undo(self, first: int, ids: list, keys: list, killed: dict) -> None:
        for doc_id in ids:
            if self._row.get(doc_id, -1) >= first:
                del self._row[doc_id]
        for key in keys:
            if self._row_of_key.get(key, -1) >= first:
                del self._row_of_key[key]
        del self._ids[first:], self._keys[first:]
        for doc_id, row in killed.items():
            self._ids[row] = doc_id
            self._row[doc_id] = row
            if self.key is not None:
                self._row_of_key[self._keys[row]] = row
        dead = {r for r, d in enumerate(self._ids) if d is None}
        if dead:
            alive = np.ones(len(self._ids), dtype=bool)
            alive[sorted(dead)] = False
            self.alive = alive
        else:
            self.alive = None
        self._dead = len(dead)
        self._continued = self._count_continued()

    def _count_continued(self) -> int:
        return sum(map(is_continuation, self._ids))

    def _clear(self) -> None:
        self._staged: list[DocId] = []
        self._staged_set: set[DocId] = set()
        self._staged_keys: list[Hashable] = []
        self._staged_key_set: set[Hashable] = set()
        self._killing: set[int] = set()

    def tail(self, start: int) -> list[DocId | None]:
        """The ids of rows ``start..``, committed and then staged (what a roll-back from ``start``
        removes).

        Args:
            start: the first row.
        """
        return self._ids[start:] + self._staged[max(start - len(self._ids), 0) :]

    def tail_keys(self, start: int) -> list[Hashable]:
        """The engine keys of rows ``start..`` (a keyed map), as :meth:`tail`."""
        return self._keys[start:] + self._staged_keys[max(start - len(self._keys), 0) :]

    # ---------------------------------------------------------------------------- compaction

    def live_rows(self) -> np.ndarray:
        """The live rows, ascending (int64)."""
        if self.alive is None:
            return np.arange(len(self._ids), dtype=np.int64)
        return np.flatnonzero(self.alive).astype(np.int64)

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """The map of rows ``keep`` (the live rows, ascending) renumbered ``0..``, built now; the returned
        function swaps it in (reference assignments only: for the write lock, beside the engine's
        compaction, which drops the same rows)."""
        ids = [self._ids[r] for r in keep.tolist()]
        row = {d: r for r, d in enumerate(ids)}
        keys = [self._keys[r] for r in keep.tolist()] if self.key is not None else []
        row_of_key = {k: r for r, k in enumerate(keys)}

        def swap() -> None:
            self._ids, self._row, self._keys, self._row_of_key = ids, row, keys, row_of_key
            self.alive, self._dead, self._last = None, 0, {}
            self._continued = self._count_continued()

        return swap
