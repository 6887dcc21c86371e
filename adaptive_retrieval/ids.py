"""The one map between document ids and rows, shared by the retriever and its engine.

Every store of an index numbers its documents by *row*: ``0..n-1`` in the order they were added. The
retriever, the document store and every engine read the same :class:`IdMap`. An engine that stores
documents by a key of its own (Qdrant, Milvus: :func:`adaptive_retrieval.backends.keyed.point_key`)
gives the map that key function, and the map keeps the keys beside the ids, so that the engine's
answers (keys) become rows without a second map.

A write stages ids (:meth:`IdMap.stage`), which searches do not see, then commits them (they become
rows ``n, n+1, ...``) or rolls them back: the id map is a participant of the index writer's transaction
(:mod:`adaptive_retrieval.writer`), and commits last.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence

from .corpus import DocId
from .errors import CorpusError


class IdMap:
    """Document ids by row, rows by document id (and, for a keyed engine, rows by engine key).

    Args:
        ids: the committed documents' ids, in row order.
        key: the engine's key of a document id (``None``: the engine addresses documents by row).

    Raises:
        CorpusError: an id twice in ``ids``, or two ids sharing an engine key.

    Example:
        >>> ids = IdMap(["a", "b"])
        >>> ids.stage(["c"]), len(ids), ids.row("c")
        (2, 2, None)
        >>> ids.commit()
        >>> ids.row("c"), ids[2]
        (2, 'c')
    """

    def __init__(self, ids: Iterable[DocId] = (), key: Callable[[DocId], Hashable] | None = None) -> None:
        self.key = key
        self._ids: list[DocId] = []
        self._row: dict[DocId, int] = {}
        self._keys: list[Hashable] = []
        self._row_of_key: dict[Hashable, int] = {}
        self._staged: list[DocId] = []
        self._staged_set: set[DocId] = set()
        self._staged_keys: list[Hashable] = []
        self._staged_key_set: set[Hashable] = set()
        self._first = 0  # the first row of the write in progress
        self._last: tuple[int, list[DocId], list[Hashable]] = (0, [], [])  # the last commit's rows
        self.stage(list(ids))
        self.commit()

    def __len__(self) -> int:
        """Committed documents: what searches see."""
        return len(self._ids)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._row

    def __getitem__(self, row: int) -> DocId:
        return self._ids[row]

    @property
    def ids(self) -> Sequence[DocId]:
        """The committed ids in row order (read only: the map changes them through a commit)."""
        return self._ids

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

    def stage(self, ids: Sequence[DocId]) -> int:
        """Stage new documents as the next rows, invisible until :meth:`commit`.

        Args:
            ids: the new documents' ids.

        Returns:
            The first of their rows.

        Raises:
            CorpusError: a repeated id (in the index, staged already, or twice in ``ids``) or, in a keyed
                map, two ids sharing an engine key; nothing of ``ids`` is staged.
        """
        first = len(self._ids) + len(self._staged)
        if not self._staged:  # a new write: where its rows begin
            self._first, self._last = first, (first, [], [])
        seen: set[DocId] = set()
        for doc_id in ids:
            if doc_id in self._row or doc_id in self._staged_set or doc_id in seen:
                raise CorpusError(f"document id {doc_id!r} is already in the index; nothing was added")
            seen.add(doc_id)
        keys = self._new_keys(ids)
        self._staged.extend(ids)
        self._staged_set.update(seen)
        self._staged_keys.extend(keys)
        self._staged_key_set.update(keys)
        return first

    def _new_keys(self, ids: Sequence[DocId]) -> list[Hashable]:
        if self.key is None:
            return []
        keys = [self.key(d) for d in ids]
        seen: set[Hashable] = set()
        for doc_id, key in zip(ids, keys):
            if key in self._row_of_key or key in self._staged_key_set or key in seen:
                raise CorpusError(
                    f"document id {doc_id!r} has the engine key of a document already in the index "
                    "(a hash collision): nothing was added"
                )
            seen.add(key)
        return keys

    def prepare(self) -> None:
        """Nothing to prepare: committing is a list extension."""

    def commit(self) -> None:
        """Make the staged ids rows (searches are kept out by the caller's write lock)."""
        first = len(self._ids)
        if self.key is not None:
            self._row_of_key.update((k, first + i) for i, k in enumerate(self._staged_keys))
            self._keys.extend(self._staged_keys)
        self._row.update((d, first + i) for i, d in enumerate(self._staged))
        self._ids.extend(self._staged)
        self._last = (first, self._staged, self._staged_keys)  # what a roll-back after this commit removes
        self._clear()

    def rollback(self, committed: bool = False) -> None:
        """Forget the staged ids; ``committed``: the last :meth:`commit` had returned (a later store of the
        transaction failed), so its rows go too. Safe after a commit interrupted half-way."""
        if not committed and not self._staged:  # nothing staged: nothing to undo
            self._clear()
            return
        first, ids, keys = self._last if committed else (self._first, self._staged, self._staged_keys)
        for doc_id in ids:
            if self._row.get(doc_id, -1) >= first:
                del self._row[doc_id]
        for key in keys:
            if self._row_of_key.get(key, -1) >= first:
                del self._row_of_key[key]
        del self._ids[first:], self._keys[first:]
        self._last = (len(self._ids), [], [])
        self._clear()

    def _clear(self) -> None:
        self._staged = []
        self._staged_set = set()
        self._staged_keys = []
        self._staged_key_set = set()

    def tail(self, start: int) -> list[DocId]:
        """The ids of rows ``start..``, committed and then staged (what a roll-back from ``start``
        removes).

        Args:
            start: the first row.
        """
        return self._ids[start:] + self._staged[max(start - len(self._ids), 0) :]

    def tail_keys(self, start: int) -> list[Hashable]:
        """The engine keys of rows ``start..`` (a keyed map), as :meth:`tail`."""
        return self._keys[start:] + self._staged_keys[max(start - len(self._keys), 0) :]
