"""Every document's metadata by row, kept whether or not texts are stored, and filterable.

A document's metadata is a JSON object: the fields beside its text (``{"title", "section", "size"}``),
``metadata=`` beside a list of texts, or a LangChain ``Document.metadata``. :class:`MetadataStore`
holds, by row (the id map's rows, dead ones included until compaction):

- the record as JSON (returned with hits when no texts are stored);
- one column per field and kind of value (:func:`adaptive_retrieval.filters.kind_of`): numbers as
  float64 (NaN: absent), strings as codes into a vocabulary, booleans as int8 (-1: absent), which
  :func:`adaptive_retrieval.filters.evaluate` compares in numpy, a few milliseconds for a million rows.

Writing is two-phase like every store of an index (:mod:`adaptive_retrieval.writer`): :meth:`MetadataStore.stage`
holds records, :meth:`MetadataStore.commit` appends them (new arrays: a search holding the old ones reads
one state), :meth:`MetadataStore.rollback` drops them. Saved as ``metadata-<gen>.jsonl``, one record per row.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import CorpusTypeError, IndexDamaged, InvalidArgument
from .filters import kind_of

_MISSING = {"number": np.nan, "string": -1, "bool": -1}
_DTYPES = {"number": np.float64, "string": np.int32, "bool": np.int8}


class Column:
    """One field's values of one kind, by row (see the module docstring)."""

    def __init__(self, kind: str, values: np.ndarray, vocabulary: list[str] | None = None) -> None:
        self.kind, self.values = kind, values
        self.vocabulary = vocabulary if vocabulary is not None else []
        self._codes = {v: i for i, v in enumerate(self.vocabulary)}

    def encode(self, value: Any) -> float | int:
        """A value as this column stores it (a string gets a code, new ones appended to the vocabulary)."""
        if self.kind == "string":
            code = self._codes.get(value)
            if code is None:
                code = self._codes[value] = len(self.vocabulary)
                self.vocabulary.append(value)
            return code
        return int(value) if self.kind == "bool" else float(value)

    def compare(self, op: str, operands: tuple[Any, ...], rows: int) -> np.ndarray:
        """The rows ``0..rows-1`` whose value of this kind satisfies ``op`` with ``operands`` (one, or the
        list of ``$in``/``$nin``)."""
        values = self.values[:rows]
        present = ~np.isnan(values) if self.kind == "number" else values >= 0
        if self.kind == "string":
            vocab = np.array(self.vocabulary, dtype=object)
            if op in ("$eq", "$ne", "$in", "$nin"):
                codes = [self._codes[v] for v in operands if v in self._codes]
                hit = np.isin(values, codes)
            else:
                x = operands[0]
                ok = (
                    np.array([_order(op, v, x) for v in vocab], dtype=bool)
                    if len(vocab)
                    else np.zeros(0, bool)
                )
                hit = np.isin(values, np.flatnonzero(ok))
        elif op in ("$eq", "$ne", "$in", "$nin"):
            hit = np.isin(values, [self.encode(v) for v in operands])
        else:
            with np.errstate(invalid="ignore"):
                hit = _order(op, values, float(operands[0]))
        if op in ("$ne", "$nin"):
            hit = present & ~hit
        out = np.zeros(rows, dtype=bool)
        out[: len(hit)] = hit
        return out


_ORDER = {"$gt": operator.gt, "$gte": operator.ge, "$lt": operator.lt, "$lte": operator.le}


def _order(op: str, a: Any, b: Any) -> Any:
    return _ORDER[op](a, b)


class MetadataStore:
    """The metadata of an index's rows (see the module docstring)."""

    def __init__(self) -> None:
        self._raw: list[str | None] = []
        self._columns: dict[tuple[str, str], Column] = {}
        self._staged: list[str | None] = []
        self._staged_records: list[dict[str, Any] | None] = []
        self._last: int | None = None  # the row count before the last commit, for a roll-back after it
        self._partial = False  # a commit began and has not finished
        #: fields some row holds a value of no filterable kind (a list, an object, a null, a NaN, a big
        #: int): filters skip such values, an engine filtering its own copy of them might not
        self.opaque: set[str] = set()

    def __len__(self) -> int:
        return len(self._raw)

    @property
    def empty(self) -> bool:
        """Whether no row has metadata."""
        return not self._columns and all(r is None for r in self._raw)

    def field_names(self) -> list[str]:
        """The fields some row holds a filterable value of, sorted."""
        return sorted({f for f, _ in self._columns})

    def kinds(self, field: str) -> set[str]:
        """The kinds of value ``field`` holds in some row."""
        return {k for f, k in self._columns if f == field}

    def column(self, field: str, kind: str) -> Column:
        """The column of ``field``'s values of ``kind``."""
        return self._columns[(field, kind)]

    # ---------------------------------------------------------------------------------- writing

    def stage(self, records: Sequence[Any], doc_ids: Sequence[Any]) -> None:
        """Hold one record (a JSON object or ``None``) per new row, checked.

        Raises:
            CorpusTypeError: a record that is not a dict, or not JSON."""
        for doc_id, record in zip(doc_ids, records):
            if record is not None and not isinstance(record, dict):
                raise CorpusTypeError(
                    f"the metadata of document {doc_id!r} must be a dict, got {type(record).__name__}"
                )
            if record:
                if not all(isinstance(k, str) for k in record):
                    raise CorpusTypeError(f"the metadata of document {doc_id!r} must have string keys")
                try:
                    encoded = json.dumps(record, allow_nan=False)
                except (TypeError, ValueError) as err:
                    raise CorpusTypeError(
                        f"the metadata of document {doc_id!r} must be JSON: {err}"
                    ) from None
            else:
                encoded, record = None, None
            self._staged.append(encoded)
            self._staged_records.append(record)

    def prepare(self) -> None:
        """Nothing runs beside searches."""

    def commit(self) -> None:
        """Append the held records as rows (new arrays)."""
        first, n = len(self._raw), len(self._staged)
        self._last, self._partial = first, True  # first: a roll-back of an interrupted commit truncates here
        records, self._staged_records = self._staged_records, []
        parts: dict[tuple[str, str], np.ndarray] = {}
        for i, record in enumerate(records):
            for field, value in (record or {}).items():
                kind = kind_of(value)
                if kind is None:
                    self.opaque.add(field)
                    continue
                key = (field, kind)
                if key not in self._columns:
                    self._columns[key] = Column(kind, np.full(first, _MISSING[kind], _DTYPES[kind]))
                if key not in parts:
                    parts[key] = np.full(n, _MISSING[kind], _DTYPES[kind])
                parts[key][i] = self._columns[key].encode(value)
        for key, col in self._columns.items():
            part = parts.get(key)
            if part is None:
                part = np.full(n, _MISSING[key[1]], _DTYPES[key[1]])
            col.values = np.concatenate([col.values[:first], part])
        self._raw = self._raw + self._staged  # a new list: a reader holding the old one reads one state
        self._staged, self._partial = [], False

    def rollback(self, committed: bool = False) -> None:
        """Drop the held records; ``committed`` (or a commit interrupted half-way): also the rows the last
        commit appended."""
        self._staged, self._staged_records = [], []
        if (committed or self._partial) and self._last is not None:
            self._truncate(self._last)
            self._last = None
        self._partial = False

    def _truncate(self, rows: int) -> None:
        self._raw = self._raw[:rows]
        for col in self._columns.values():
            col.values = col.values[:rows]

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """Rows ``keep`` (ascending) renumbered ``0..``, built now; the returned function swaps them in
        (reference assignments only). Columns stay, even emptied: a field once seen stays known."""
        raw = [self._raw[r] for r in keep.tolist()]
        values = {key: col.values[keep] for key, col in self._columns.items()}

        def swap() -> None:
            self._raw, self._last = raw, None
            for key, col in self._columns.items():
                col.values = values[key]

        return swap

    # ---------------------------------------------------------------------------------- reading

    def get(self, row: int) -> dict[str, Any] | None:
        """Row ``row``'s record, or ``None``."""
        raw = self._raw[row] if 0 <= row < len(self._raw) else None
        return None if raw is None else json.loads(raw)

    # ------------------------------------------------------------------------------ persistence

    def save(self, path: Path, ids: Sequence[Any]) -> None:
        """Write one line per row of ``ids`` (the rows' document ids, ``None`` at a dead row):
        ``[doc_id, record]`` (``null`` for none), so that a reload aligns records by id, whatever order
        the engine gives its rows then (a reopened Qdrant or Milvus collection numbers them anew)."""
        with open(path, "w", encoding="utf-8") as fh:
            for doc_id, record in zip(ids, self._raw):
                fh.write(f"[{json.dumps(doc_id)}, {'null' if record is None else record}]\n")

    @classmethod
    def load(cls, path: Path | None, ids: Sequence[Any]) -> MetadataStore:
        """The store saved at ``path`` for rows of document ids ``ids`` (``None``: rows without metadata):
        each row gets the record saved for its id (none for an id the file does not hold, e.g. one another
        writer added to an engine's collection).

        Raises:
            IndexDamaged: a file that is not JSON lines of ``[doc_id, record]``."""
        store = cls()
        if path is None:
            store._raw = [None] * len(ids)
            return store
        by_id: dict[str, Any] = {}
        try:
            with open(path, encoding="utf-8") as fh:
                for line in fh:
                    doc_id, record = json.loads(line)
                    if doc_id is not None:
                        by_id[json.dumps(doc_id)] = record
        except (OSError, ValueError, TypeError) as err:
            raise IndexDamaged(f"{path} is not a readable metadata file: {err}") from None
        if not all(r is None or isinstance(r, dict) for r in by_id.values()):
            raise IndexDamaged(f"{path} holds a metadata record that is not an object")
        store.stage([None if d is None else by_id.get(json.dumps(d)) for d in ids], ids)
        store.commit()
        store._last = None
        return store


def check_metadata(metadata: Any, n: int) -> list[Any] | None:
    """``metadata=`` beside ``n`` texts: a list of ``n`` dicts (or ``None``s), or ``None``.

    Raises:
        InvalidArgument: a list of another length. CorpusTypeError: not a list."""
    if metadata is None:
        return None
    if isinstance(metadata, (str, bytes, dict)) or not isinstance(metadata, Sequence):
        raise CorpusTypeError(
            f"metadata must be a list of dicts (one per document), got {type(metadata).__name__}"
        )
    if len(metadata) != n:
        raise InvalidArgument(
            f"metadata has {len(metadata)} records for {n} documents: give one per document"
        )
    return list(metadata)
