"""The texts and metadata of an index's documents, so that a ``Hit`` can carry them (``store_text=True``).

One SQLite table, ``documents(doc_id TEXT PRIMARY KEY, text TEXT, metadata TEXT)``: the document id as
JSON (so ``1`` and ``"1"`` stay apart), the text as it was indexed, and the document's other fields as
JSON (no pickle). Keyed by the document id, not by a row, so the store serves an engine that numbers its
rows differently when a collection is reopened. Saved with the index as ``texts-<gen>.sqlite``
(SQLite's online backup), opened read-only on load; a loaded store that grows is first copied (through
its open connection) to a scratch file beside it, removed when the store is closed: the saved file
belongs to its generation and is never written.

Adding is two-phase like the engines': :meth:`DocumentStore.add` holds the rows in memory,
:meth:`DocumentStore.commit` writes them in one transaction, :meth:`DocumentStore.rollback` forgets
them, :meth:`DocumentStore.undo_commit` deletes the last
commit's (when the add it belonged to fails after it). No write transaction is ever left open, so a save never waits on an add; reads and
writes are serialised by a lock, so searches from many threads may fetch texts while an add commits.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .corpus import DocId, check_encodable
from .errors import CorpusTypeError, IndexDamaged
from .scratch import scratch_path

_SCHEMA = "CREATE TABLE IF NOT EXISTS documents (doc_id TEXT PRIMARY KEY, text TEXT NOT NULL, metadata TEXT)"


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    return sqlite3.connect(target, uri=uri, check_same_thread=False)


def _key(doc_id: DocId) -> str:
    return json.dumps(doc_id)


class DocumentStore:
    """Texts and metadata by document id; see the module docstring. Make one with :meth:`memory` or
    :meth:`load`."""

    def __init__(self, conn: sqlite3.Connection, *, source: Path | None = None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._source = source  # a loaded, read-only file: copied before the first write
        self._scratch: weakref.finalize | None = None
        self._staged: list[tuple[str, str, str | None]] = []
        self._deleting: list[str] = []
        self._partial = False  # a commit began and has not finished
        # the last commit's keys and the rows they replaced or deleted, for a rollback after it
        self._committed: tuple[list[str], list[tuple[str, str, str | None]]] = ([], [])

    @classmethod
    def memory(cls) -> DocumentStore:
        """An empty store in RAM."""
        conn = _connect(":memory:")
        conn.execute(_SCHEMA)
        conn.commit()
        return cls(conn)

    @classmethod
    def load(cls, path: Path) -> DocumentStore:
        """Open a saved store read-only (a file that is not such a store is a ``ValueError``)."""
        conn = _connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT doc_id, text, metadata FROM documents LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise IndexDamaged(f"{path} is not a readable document store: {err}") from None
        return cls(conn, source=Path(path))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def _writable(self) -> None:
        """Move a loaded store to a scratch copy that can grow (copied through the open connection, so
        the saved file may already be gone: a save over its own folder replaces it)."""
        if self._source is None:
            return
        scratch = scratch_path(self._source, ".sqlite", kind="texts")
        target = _connect(str(scratch))
        self._conn.backup(target)
        self._conn.close()
        self._conn, self._source = target, None
        self._scratch = weakref.finalize(self, scratch.unlink, missing_ok=True)

    def add(
        self,
        doc_ids: Sequence[DocId],
        texts: Sequence[str],
        metadata: Sequence[Any] | None,
        *,
        replace: bool = False,
    ) -> None:
        """Hold documents for the next :meth:`commit` (checked here: texts are strings, metadata JSON);
        ``replace``: documents of the same ids are replaced (an upsert)."""
        metadata = [None] * len(texts) if metadata is None else metadata
        rows = []
        for doc_id, text, meta in zip(doc_ids, texts, metadata):
            if not isinstance(text, str):
                raise CorpusTypeError(
                    f"the text of document {doc_id!r} must be a str, got {type(text).__name__}"
                )
            check_encodable(text, f"the text of document {doc_id!r}")
            if meta is not None and not isinstance(meta, dict):
                raise CorpusTypeError(
                    f"the metadata of document {doc_id!r} must be a dict, got {type(meta).__name__}"
                )
            try:
                encoded = None if meta is None else json.dumps(meta, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise CorpusTypeError(f"the metadata of document {doc_id!r} must be JSON: {err}") from None
            rows.append((_key(doc_id), text, encoded))
        self._staged.extend(rows)
        if replace:
            self._deleting.extend(key for key, _, _ in rows)

    def stage_delete(self, doc_ids: Sequence[DocId]) -> None:
        """Hold the deletion of documents for the next :meth:`commit`."""
        self._deleting.extend(_key(d) for d in doc_ids)

    def commit(self) -> None:
        """Write the held documents (replacing those of the same ids) and deletions in one transaction."""
        staged, self._staged = self._staged, []
        deleting, self._deleting = self._deleting, []
        keys = sorted(set(deleting))  # deleted or replaced: kept aside for a roll-back
        with self._lock:
            self._writable()
            old = self._rows(keys)
            # recorded first: an undo after a commit interrupted half-way restores the same rows
            self._committed = (sorted(set(keys) | {key for key, _, _ in staged}), old)
            self._partial = True
            with self._conn:  # one transaction: committed whole, or rolled back
                self._conn.executemany("DELETE FROM documents WHERE doc_id = ?", [(k,) for k in keys])
                self._conn.executemany("INSERT INTO documents VALUES (?, ?, ?)", staged)
            self._partial = False

    def _rows(self, keys: list[str]) -> list[tuple[str, str, str | None]]:
        out = []
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            part = keys[i : i + 900]
            marks = ",".join("?" * len(part))
            out += self._conn.execute(
                f"SELECT doc_id, text, metadata FROM documents WHERE doc_id IN ({marks})", part
            ).fetchall()
        return out

    def rollback(self) -> None:
        """Forget the held documents and deletions (a write failed before its commit; a commit interrupted
        half-way is undone)."""
        self._staged, self._deleting = [], []
        if self._partial:
            self.undo_commit()

    def undo_commit(self) -> None:
        """Undo the last :meth:`commit` (its write failed after it): its documents go, those it replaced
        or deleted come back."""
        self._staged, self._deleting, self._partial = [], [], False
        (keys, old), self._committed = self._committed, ([], [])
        if keys:
            with self._lock, self._conn:
                self._conn.executemany("DELETE FROM documents WHERE doc_id = ?", [(k,) for k in keys])
                self._conn.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?)", old)

    def get(self, doc_ids: Sequence[DocId]) -> dict[str, tuple[str, Any]]:
        """``{json id: (text, metadata)}`` for the documents asked for (see :meth:`lookup`)."""
        wanted = sorted({_key(d) for d in doc_ids})
        out: dict[str, tuple[str, Any]] = {}
        with self._lock:
            for i in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
                part = wanted[i : i + 900]
                marks = ",".join("?" * len(part))
                for key, text, meta in self._conn.execute(
                    f"SELECT doc_id, text, metadata FROM documents WHERE doc_id IN ({marks})", part
                ):
                    out[key] = (text, None if meta is None else json.loads(meta))
        return out

    @staticmethod
    def lookup(found: dict[str, tuple[str, Any]], doc_id: DocId) -> tuple[str, Any] | tuple[()]:
        """One document's ``(text, metadata)`` from :meth:`get`'s answer (``()`` if it has none)."""
        return found.get(_key(doc_id), ())

    def save(self, path: Path) -> None:
        """Write a copy to ``path`` (SQLite's online backup of the committed documents)."""
        target = sqlite3.connect(str(path))
        try:
            with self._lock:
                self._conn.backup(target)
        finally:
            target.close()

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        if self._scratch is not None:
            self._scratch()
