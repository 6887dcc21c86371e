"""The lexical index's postings: an inverted index of term counts in a few numpy arrays (what
:class:`adaptive_retrieval.lexical.LexicalIndex` holds, searches, appends to and saves).

Term ``t`` holds the postings ``pointer[t]:pointer[t + 1]``, in row order, each coded as the varint (LEB128:
7 bits a byte, low bits first) of ``gap << 1 | (count > 1)``, the gap from the term's previous row (the
first: its row); the counts above 1 lie aside in ``extra``; ``last[t]`` is the term's last row, so that a
write appends without decoding. Saved as the members of an uncompressed ``.npz``, which :func:`members`
maps (one read-only mapping a file, views into it) so that an opened index reads its postings as the fine
store is read. :func:`check` and :meth:`Postings.checked` refuse a damaged file as
:class:`adaptive_retrieval.errors.IndexDamaged` rather than answer from it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from mmap import ACCESS_READ
from mmap import mmap as _FileMapping
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexDamaged

ARRAYS = ("lengths", "pointer", "offset", "codes", "extra", "extra_pointer", "last")
"""A :class:`Postings`' saved arrays, in its fields' order (``norm`` is derived at load)."""


def varints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Non-negative integers as LEB128 varints (7 bits a byte, low bits first, the high bit set on every byte
    but a value's last): ``(bytes, each value's byte count)``."""
    values = np.asarray(values, np.int64)
    sizes = np.ones(len(values), np.int64)
    for bits in range(7, 63, 7):
        sizes += values >= (1 << bits)
    out = np.empty(int(sizes.sum()), np.uint8)
    starts = np.cumsum(sizes) - sizes
    for j in range(int(sizes.max(initial=0))):
        has = sizes > j
        more = (sizes[has] > j + 1).astype(np.int64) << 7
        out[starts[has] + j] = ((values[has] >> (7 * j)) & 0x7F) | more
    return out, sizes


def unvarints(codes: np.ndarray) -> np.ndarray:
    """The integers of :func:`varints`' bytes (a byte's own 7 bits for the one-byte values, most of them;
    the few longer values folded onto their first byte, one byte deeper a pass)."""
    codes = np.asarray(codes, np.uint8)
    ends = codes < 0x80
    if ends.all():
        return codes.astype(np.int64)
    if not ends[-1]:
        raise ValueError("the codes end inside a value")
    low = (codes & 0x7F).astype(np.int64)
    first = np.empty(len(codes), bool)
    first[0] = True
    first[1:] = ends[:-1]
    longer = np.flatnonzero(first & ~ends)  # the first bytes of values of more than one byte
    depth = 1
    while len(longer):
        low[longer] |= low[longer + depth] << (7 * depth)
        longer = longer[~ends[longer + depth]]
        depth += 1
    return low[first]


@dataclass(frozen=True)
class Postings:
    """What a search reads: the committed rows' postings (see the module docstring).

    Term ``t`` holds the postings ``pointer[t]:pointer[t + 1]`` (its document frequency is their number),
    coded as the varints ``codes[offset[t]:offset[t + 1]]``, one a posting: ``gap << 1 | (count > 1)``, the
    gap from the previous row of the term (the first: its row); the counts above 1 are
    ``extra[extra_pointer[t]:extra_pointer[t + 1]]``, in order; ``last[t]`` is its last row (-1: none).
    ``norm`` (derived, not saved): each row's ``k1 * (1 - b + b * length / mean length)``."""

    lengths: np.ndarray  # (rows,) uint32: terms per row
    pointer: np.ndarray  # (vocabulary + 1,) int64
    offset: np.ndarray  # (vocabulary + 1,) int64
    codes: np.ndarray  # (bytes,) uint8
    extra: np.ndarray  # (postings counted more than once,) uint8, uint16 or uint32
    extra_pointer: np.ndarray  # (vocabulary + 1,) int64
    last: np.ndarray  # (vocabulary,) int64
    norm: np.ndarray  # (rows,) float32

    @property
    def rows(self) -> int:
        return len(self.lengths)

    @property
    def vocabulary(self) -> int:
        return len(self.last)

    def checked(self, term: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``term``'s postings: ``(rows, flagged, counts)`` (the rows in order, the positions of those
        counted more than once, and their counts).

        Raises:
            IndexDamaged: codes that disagree with the term's pointers (a damaged file)."""
        values = unvarints(self.codes[self.offset[term] : self.offset[term + 1]])
        rows = np.cumsum(values >> 1)
        flagged = np.flatnonzero(values & 1)
        counts = self.extra[self.extra_pointer[term] : self.extra_pointer[term + 1]]
        if (
            len(values) != self.pointer[term + 1] - self.pointer[term]
            or len(flagged) != len(counts)
            or (len(rows) and (rows[-1] != self.last[term] or rows[-1] >= self.rows))
        ):
            raise IndexDamaged(f"the lexical index's postings of term {term} disagree with its pointers")
        return rows, flagged, counts

    def _counts(self, values: np.ndarray, first: int, stop: int) -> np.ndarray:
        flags = values & 1
        counts = flags + 1
        start, end = self.extra_pointer[first], self.extra_pointer[stop]
        if end > start:
            counts[np.flatnonzero(flags)] = self.extra[start:end]
        return counts

    def decoded(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every posting as ``(terms, rows, counts)``, by term then row."""
        values = unvarints(self.codes)
        totals = np.cumsum(values >> 1)
        per_term = np.diff(self.pointer)
        before = np.concatenate([[0], totals])[self.pointer[:-1]]  # the running sum where each term begins
        rows = totals - np.repeat(before, per_term)
        terms = np.repeat(np.arange(self.vocabulary, dtype=np.int64), per_term)
        held = per_term > 0
        if (
            len(values) != self.pointer[-1]
            or np.count_nonzero(values & 1) != len(self.extra)
            or (len(rows) and rows.max() >= self.rows)
            or np.any(rows[self.pointer[1:][held] - 1] != self.last[held])
        ):
            raise IndexDamaged("the lexical index's postings disagree with its pointers")
        return terms, rows, self._counts(values, 0, self.vocabulary)


def norms(lengths: np.ndarray, k1: float, b: float) -> np.ndarray:
    """Each row's BM25 length normalisation, ``k1 * (1 - b + b * length / mean length)`` (float32)."""
    mean = float(lengths.mean()) if len(lengths) else 1.0
    return (k1 * (1 - b + b * lengths.astype(np.float64) / (mean or 1.0))).astype(np.float32)


def count_dtype(counts: np.ndarray) -> np.dtype:
    """The narrowest unsigned dtype that holds every count (uint8, uint16 or uint32)."""
    top = int(counts.max(initial=0))
    return np.dtype(np.uint8 if top <= 0xFF else np.uint16 if top <= 0xFFFF else np.uint32)


def pointer_of(terms: np.ndarray, vocabulary: int, weights: np.ndarray | None = None) -> np.ndarray:
    """Where each term's entries start (and the last ends), for entries sorted by term."""
    per_term = np.bincount(terms, weights, minlength=vocabulary).astype(np.int64)
    return np.concatenate([[0], np.cumsum(per_term)]).astype(np.int64)


def encoded(
    terms: np.ndarray, rows: np.ndarray, counts: np.ndarray, lengths: np.ndarray, vocabulary: int,
    k1: float, b: float,
) -> Postings:  # fmt: skip
    """Postings from ``(terms, rows, counts)`` (any order; a ``(term, row)`` pair at most once)."""
    order = np.lexsort((rows, terms))
    terms, rows, counts = terms[order], rows[order], counts[order]
    first = np.ones(len(terms), bool)
    first[1:] = terms[1:] != terms[:-1]
    gaps = np.where(first, rows, np.diff(rows, prepend=0))
    codes, sizes = varints(gaps << 1 | (counts > 1))
    pointer = pointer_of(terms, vocabulary)
    held = np.diff(pointer) > 0
    last = np.full(vocabulary, -1, np.int64)
    last[held] = rows[pointer[1:][held] - 1]
    more = counts > 1
    lengths = lengths.astype(np.uint32)
    return Postings(
        lengths, pointer, pointer_of(terms, vocabulary, sizes), codes,
        counts[more].astype(count_dtype(counts[more])), pointer_of(terms[more], vocabulary), last,
        norms(lengths, k1, b),
    )  # fmt: skip


def counted(parts: Sequence[np.ndarray], first_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows' term ids (``parts[i]``: row ``first_row + i``'s, repeated as they occur) as postings
    ``(terms, rows, counts)``, by term then row."""
    lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
    if not lengths.sum():
        empty = np.empty(0, np.int64)
        return empty, empty, empty
    rows = np.repeat(np.arange(len(parts), dtype=np.int64), lengths)
    keys = np.concatenate(parts).astype(np.int64) * len(parts) + rows
    keys, counts = np.unique(keys, return_counts=True)
    return keys // len(parts), keys % len(parts) + first_row, counts.astype(np.int64)


def check(state: Postings, vocabulary: int, rows: int) -> None:
    """Raise ``ValueError`` where a loaded state's arrays disagree: their dtypes, shapes and bounds, and
    the codes' shape (every term's codes end a value; one value a posting; a count aside for each posting
    flagged for one). A posting's row is checked at search (:meth:`Postings.checked`)."""
    pointers = (state.pointer, state.offset, state.extra_pointer)
    if not (
        all(np.issubdtype(a.dtype, np.integer) for a in (*pointers, state.last, state.lengths))
        and state.rows == rows and len(state.last) == vocabulary
        and all(len(p) == vocabulary + 1 and p[0] == 0 and np.all(np.diff(p) >= 0) for p in pointers)
        and state.offset[-1] == len(state.codes) and state.extra_pointer[-1] == len(state.extra)
        and (not len(state.last) or int(state.last.max()) < rows)
        and state.codes.dtype == np.uint8 and np.issubdtype(state.extra.dtype, np.unsignedinteger)
    ):  # fmt: skip
        raise ValueError("its arrays disagree")
    ends = state.offset[1:][np.diff(state.offset) > 0] - 1  # each term's last byte
    if len(ends) and np.any(state.codes[ends] >= 0x80):
        raise ValueError("a term's codes end inside a value")
    if int(np.count_nonzero(state.codes < 0x80)) != int(state.pointer[-1]):
        raise ValueError("its codes do not hold one value a posting")


def mapped(array: Any) -> bool:
    """Whether ``array``'s memory is a file's mapping (its base, or a base of its base, is one, or the object
    of a memoryview among them)."""
    while array is not None:
        if isinstance(array, _FileMapping):
            return True
        array = array.obj if isinstance(array, memoryview) else getattr(array, "base", None)
    return False


def members(path: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; those stored uncompressed read-only views of one memory mapping of
    the file with ``mmap`` (the rest read)."""
    out: dict[str, np.ndarray] = {}
    mapping = None
    with open(path, "rb") as fh, zipfile.ZipFile(fh) as archive:
        for info in archive.infolist():
            name = info.filename.removesuffix(".npy")
            if mmap and info.compress_type == zipfile.ZIP_STORED:
                fh.seek(info.header_offset)
                local = fh.read(30)  # the member's local header: its name and extra field follow
                if local[:4] != b"PK\x03\x04":
                    raise ValueError(f"member {name} has no local header")
                skip = int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
                fh.seek(info.header_offset + 30 + skip)
                version = np.lib.format.read_magic(fh)
                header = {(1, 0): np.lib.format.read_array_header_1_0}.get(
                    version, np.lib.format.read_array_header_2_0
                )
                shape, fortran, dtype = header(fh)
                count = int(np.prod(shape))
                if not (dtype.hasobject or fortran or count == 0):
                    if mapping is None:
                        mapping = _FileMapping(fh.fileno(), 0, access=ACCESS_READ)
                    out[name] = np.frombuffer(mapping, dtype, count, fh.tell()).reshape(shape)
                    continue
            with archive.open(info) as member:
                out[name] = np.lib.format.read_array(member, allow_pickle=False)
    return out
