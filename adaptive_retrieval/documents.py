"""The texts and metadata of an index's documents, so that a ``Hit`` can carry them (``store_text=True``).

One SQLite table, ``documents(row INTEGER PRIMARY KEY, text TEXT, metadata TEXT)``: the retriever's
row, the text as it was indexed, and the document's other fields as JSON (no pickle). Saved with the
index as ``texts-<gen>.sqlite`` (SQLite's online backup), opened read-only on load; a loaded store that
grows is first copied to a scratch file beside it (the saved file belongs to its generation and is
never written), removed when the store is closed. Adding is two-phase like the engines' (rows written
in an open transaction, committed or rolled back with the add), and reads are serialised by a lock, so
searches from many threads may fetch texts while an add writes.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .corpus import DocId

_SCHEMA = "CREATE TABLE IF NOT EXISTS documents (row INTEGER PRIMARY KEY, text TEXT NOT NULL, metadata TEXT)"


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    conn = sqlite3.connect(target, uri=uri, check_same_thread=False, isolation_level="DEFERRED")
    return conn


class DocumentStore:
    """Texts and metadata by row; see the module docstring. Make one with :meth:`memory` or :meth:`load`."""

    def __init__(self, conn: sqlite3.Connection, *, source: Path | None = None) -> None:
        self._conn = conn
        self._lock = threading.Lock()
        self._source = source  # a loaded, read-only file: copied before the first write
        self._scratch: weakref.finalize | None = None

    @classmethod
    def memory(cls) -> DocumentStore:
        """An empty store in RAM."""
        conn = _connect(":memory:")
        conn.execute(_SCHEMA)
        conn.commit()
        return cls(conn)

    @classmethod
    def load(cls, path: Path) -> DocumentStore:
        """Open a saved store read-only (checked: a file that is not such a store is a ``ValueError``)."""
        conn = _connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.execute("SELECT row, text, metadata FROM documents LIMIT 1").fetchall()
        except sqlite3.DatabaseError as err:
            conn.close()
            raise ValueError(f"{path} is not a readable document store: {err}") from None
        return cls(conn, source=Path(path))

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def _writable(self) -> None:
        if self._source is None:
            return
        scratch = self._source.with_name(f"grow-texts-{uuid.uuid4().hex[:12]}.sqlite")
        shutil.copyfile(self._source, scratch)
        old, self._conn = self._conn, _connect(str(scratch))
        old.close()
        self._source = None
        self._scratch = weakref.finalize(self, scratch.unlink, missing_ok=True)

    def add(
        self, first_row: int, doc_ids: Sequence[DocId], texts: Sequence[str], metadata: Sequence[Any] | None
    ) -> None:
        """Write rows ``first_row..`` in the open transaction (not committed until :meth:`commit`)."""
        metadata = [None] * len(texts) if metadata is None else metadata
        rows = []
        for i, (doc_id, text, meta) in enumerate(zip(doc_ids, texts, metadata)):
            if not isinstance(text, str):
                raise TypeError(f"the text of document {doc_id!r} must be a str, got {type(text).__name__}")
            try:
                encoded = None if meta is None else json.dumps(meta, allow_nan=False)
            except (TypeError, ValueError) as err:
                raise TypeError(f"the metadata of document {doc_id!r} must be JSON: {err}") from None
            rows.append((first_row + i, text, encoded))
        with self._lock:
            self._writable()
            self._conn.executemany("INSERT INTO documents VALUES (?, ?, ?)", rows)

    def commit(self) -> None:
        with self._lock:
            self._conn.commit()

    def rollback(self, start: int) -> None:
        """Drop every row from ``start`` on, written or committed."""
        with self._lock:
            self._conn.rollback()
            if self._source is None:
                self._conn.execute("DELETE FROM documents WHERE row >= ?", (start,))
                self._conn.commit()

    def get(self, rows: Sequence[int]) -> dict[int, tuple[str, Any]]:
        """``{row: (text, metadata)}`` for the rows asked for."""
        wanted = sorted({int(r) for r in rows})
        out: dict[int, tuple[str, Any]] = {}
        with self._lock:
            for i in range(0, len(wanted), 900):  # SQLite's bound-parameter limit
                part = wanted[i : i + 900]
                marks = ",".join("?" * len(part))
                for row, text, meta in self._conn.execute(
                    f"SELECT row, text, metadata FROM documents WHERE row IN ({marks})", part
                ):
                    out[row] = (text, None if meta is None else json.loads(meta))
        return out

    def save(self, path: Path) -> None:
        """Write a copy to ``path`` (SQLite's online backup: consistent, committed rows only)."""
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
