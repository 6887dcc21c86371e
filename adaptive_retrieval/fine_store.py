"""The fine store: every document's fine view vector, a ``(n, dim)`` matrix in RAM or a memory-mapped
``.npy`` file that grows in place, read a few scattered rows at a time by the funnel's re-rank.

Scores are inner products of L2-normalised vectors (cosine similarity); exact searches return FAISS's
``(D, I)`` arrays, ties to the lower row, missing results ``-1``.
"""

from __future__ import annotations

import logging
import mmap
import os
import shutil
import weakref
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import IndexDamaged, InvalidArgument
from .scratch import scratch_path

logger = logging.getLogger(__name__)

FINE_DTYPES = ("float16", "float32")


def map_rows(path: Path, dtype: np.dtype, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """A read-only ``(rows, dim)`` array over ``path`` from byte ``offset``, through a memory map advised
    for random access (``MADV_RANDOM`` where the OS has it).

    The funnel reads a few scattered rows per query. Under the default advice each page fault also
    reads ahead neighbours it will not use, so with a cold page cache a re-rank reads far more from disk
    than its rows (``python -m benchmarks.bench_fine_io`` measures both maps; the figures, with their
    results file, are in docs/measurements.md and docs/scaling.md). Sequential scans ask for their block
    explicitly (:func:`prefetch`).
    """
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):  # not on Windows
        mapped.madvise(mmap.MADV_RANDOM)
    count = shape[0] * shape[1]
    return np.frombuffer(mapped, dtype=dtype, count=count, offset=offset).reshape(shape)


def mapping_of(rows: np.ndarray) -> mmap.mmap | None:
    """The memory map behind a :func:`map_rows` array (or a view of one); ``None`` for arrays in RAM."""
    base = rows.base
    while isinstance(base, (np.ndarray, memoryview)):  # slice -> frombuffer array -> memoryview -> map
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return base if isinstance(base, mmap.mmap) else None


def prefetch(rows: np.ndarray) -> None:
    """Ask the OS to read a contiguous block of a :func:`map_rows` array ahead (``MADV_WILLNEED``): an
    exact scan would otherwise fault it in one page at a time under random advice. A no-op for arrays
    in RAM."""
    mapped = mapping_of(rows)
    if mapped is None or not hasattr(mmap, "MADV_WILLNEED") or rows.size == 0:
        return
    start = rows.ctypes.data - np.frombuffer(mapped, np.uint8, count=1).ctypes.data
    aligned = start - start % mmap.PAGESIZE
    mapped.madvise(mmap.MADV_WILLNEED, aligned, start - aligned + rows.nbytes)


def as_matrix(x: np.ndarray, dim: int, name: str) -> np.ndarray:
    """``x`` as a C-contiguous float32 ``(n, dim)`` matrix, refused (naming it ``name``) otherwise."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise InvalidArgument(f"{name} must have shape (n, {dim}), got {x.shape}")
    return x


class FineStore:
    """The fine view of every document: a ``(n_docs, dim)`` matrix, float16 by default.

    Row ``i`` belongs to the document with internal id ``i``. Two forms:

    - in memory (:meth:`empty`): a numpy array;
    - on disk (:meth:`on_disk`): a ``.npy`` file that grows as documents are added, read through a
      memory map, so RAM holds only the pages of recently re-ranked candidates, never the matrix.
      The file is a valid ``.npy`` at every commit (its header is rewritten in place), so
      ``np.load(path, mmap_mode="r")`` opens it.

    Loaded stores are memory-mapped too. :meth:`extend` and :meth:`truncate` grow and roll back either
    form, which is how the retriever keeps ``add`` all-or-nothing.

    Args:
        vectors: the ``(n_docs, dim)`` float16 or float32 rows (use :meth:`empty`, :meth:`on_disk` or
            :meth:`load` rather than this constructor).
        path: the ``.npy`` file of an on-disk store that this object grows.

    Raises:
        InvalidArgument: vectors that are not a 2-D float16/float32 matrix.

    Example:
        >>> import numpy as np
        >>> store = FineStore.empty(3)
        >>> store.extend(np.eye(3, dtype=np.float32))
        >>> store.search_exact(np.array([[0.0, 1.0, 0.0]]), 1)[1]
        array([[1]])
    """

    def __init__(self, vectors: np.ndarray, *, path: Path | None = None) -> None:
        if vectors.ndim != 2 or vectors.dtype.name not in FINE_DTYPES:
            raise InvalidArgument(
                f"fine vectors must be a 2-D float16/float32 matrix, got {vectors.shape} {vectors.dtype}"
            )
        self.vectors = vectors
        self.path = path  # set for an on-disk store that this object grows
        # a loaded, memory-mapped store: its file, its offset, and the file held open, so that it can be
        # copied to grow even after another writer's save has replaced that generation
        self._source: tuple[Path, int, BinaryIO] | None = None
        self._grown: weakref.finalize | None = None  # deletes the grow-*.npy copy of such a store

    @staticmethod
    def _check_dtype(dtype: str) -> np.dtype:
        if dtype not in FINE_DTYPES:
            raise InvalidArgument(f"fine_dtype={dtype!r} is not supported; choose one of {FINE_DTYPES}")
        return np.dtype(dtype)

    @classmethod
    def empty(cls, dim: int, dtype: str = "float16") -> FineStore:
        """An empty in-memory store of ``dim`` columns (``dtype``: ``"float16"`` or ``"float32"``).

        Raises:
            InvalidArgument: another dtype."""
        return cls(np.empty((0, dim), dtype=cls._check_dtype(dtype)))

    @classmethod
    def on_disk(cls, path: str | Path, dim: int, dtype: str = "float16") -> FineStore:
        """An empty store of ``dim`` columns backed by the new file ``path`` (``dtype``: as :meth:`empty`).

        Raises:
            InvalidArgument: ``path`` exists (it is never overwritten), its folder does not, or another dtype."""
        path = Path(path)
        np_dtype = cls._check_dtype(dtype)
        if path.exists():
            raise InvalidArgument(f"fine_path={str(path)!r} already exists; give a new file name")
        if not path.parent.is_dir():
            raise InvalidArgument(f"fine_path={str(path)!r}: directory {str(path.parent)!r} does not exist")
        with open(path, "xb") as fh:
            fh.write(_npy_header(np_dtype, 0, dim))
        return cls(np.empty((0, dim), dtype=np_dtype), path=path)

    def close(self) -> None:
        """Drop the rows (a memory map is unmapped once nothing else refers to it) and delete a
        ``grow-*.npy`` scratch copy; an ``on_disk`` store's file, which the caller named, stays."""
        self.vectors = np.empty((0, self.dim), dtype=self.vectors.dtype)
        self._buffer = None
        if self._source is not None:
            self._source[2].close()
            self._source = None
        if self._grown is not None:
            self._grown()  # the weakref finalizer: runs once
            self.path = None

    @property
    def dim(self) -> int:
        """The fine view's dimension (the matrix's columns)."""
        return int(self.vectors.shape[1])

    @property
    def dtype(self) -> str:
        """``"float16"`` or ``"float32"``: how the rows are stored."""
        return self.vectors.dtype.name

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def nbytes(self) -> int:
        """Bytes of the rows as stored."""
        return int(self.vectors.nbytes)

    def extend(self, vectors: np.ndarray) -> None:
        """Append rows ``(n, dim)`` (cast to the store's dtype). On disk: written at the file's end, then
        the header is updated, so the file holds a complete matrix after every call.

        Raises:
            InvalidArgument: vectors of another width."""
        vectors = as_matrix(vectors, self.dim, "vectors")
        if self.path is None and self._source is not None:
            self._grow_on_disk()  # a loaded index grows on disk, never copied into RAM
        if self.path is None:  # in RAM: a buffer that doubles, so n rows added in chunks cost O(n) copies
            n, end = len(self), len(self) + len(vectors)
            buffer = getattr(self, "_buffer", None)
            if buffer is None or buffer.shape[0] < end or not np.may_share_memory(buffer, self.vectors):
                buffer = np.empty((max(end, 2 * n, 1024), self.dim), dtype=self.vectors.dtype)
                buffer[:n] = self.vectors
                self._buffer = buffer
            buffer[n:end] = vectors
            self.vectors = buffer[:end]
            return
        n = len(self) + len(vectors)
        with open(self.path, "r+b") as fh:
            fh.seek(_HEADER_BYTES + len(self) * self.dim * self.vectors.itemsize)
            for start in range(0, len(vectors), _CAST_ROWS):  # cast a slice at a time: no copy of all
                fh.write(vectors[start : start + _CAST_ROWS].astype(self.vectors.dtype, copy=False).data)
            fh.seek(0)
            fh.write(_npy_header(self.vectors.dtype, n, self.dim))
        self._remap(n)

    def truncate(self, n: int) -> None:
        """Keep the first ``n`` rows: the roll-back of a failed :meth:`extend`.

        Raises:
            InvalidArgument: ``n`` outside ``0 .. len(self)``."""
        if not 0 <= n <= len(self):
            raise InvalidArgument(f"cannot truncate a store of {len(self)} rows to {n}")
        if self.path is None:
            self.vectors = self.vectors[:n]
            return
        with open(self.path, "r+b") as fh:
            fh.write(_npy_header(self.vectors.dtype, n, self.dim))
            fh.truncate(_HEADER_BYTES + n * self.dim * self.vectors.itemsize)
        self._remap(n)

    def _remap(self, n: int) -> None:
        if n == 0:
            self.vectors = np.empty((0, self.dim), dtype=self.vectors.dtype)
        else:
            self.vectors = map_rows(self.path, self.vectors.dtype, _HEADER_BYTES, (n, self.dim))

    def scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Fine scores ``(n, c)`` of each query with its ``ids`` (``(n, c)``, all valid rows), float32."""
        rows = np.asarray(self.vectors[np.asarray(ids, dtype=np.int64).ravel()], dtype=np.float32)
        return np.einsum("qcd,qd->qc", rows.reshape(*ids.shape, self.dim), queries)

    def search_exact(
        self,
        queries: np.ndarray,
        k: int,
        *,
        block: int = 65_536,
        rows: int | None = None,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over every stored vector, ``block`` rows at a time: the reference the funnel is
        measured against, and the fallback when a coarse stage comes up short. Each block is read and
        widened to float32 once for all queries (memory: one block, and one score per query and row of
        it); ties are broken by the lower id, as the funnel's re-rank does
        (:meth:`adaptive_retrieval.backends.Backend.rerank`).

        Args:
            queries: ``(n_queries, dim)`` query vectors.
            k: rows per query.
            block: rows read (and widened to float32) at a time.
            rows: only the first ``rows`` (default: all).
            allowed: ``(rows,)`` bool: only the rows it marks (a filter, the live rows); the others are
                never read.

        Returns:
            ``(D, I)``, each ``(n_queries, k)``, best first, padded with ``-inf`` / ``-1``.

        Raises:
            InvalidArgument: queries of another width.
        """
        queries = as_matrix(queries, self.dim, "queries")
        vectors = self.vectors  # one matrix for the whole scan, whatever an add does meanwhile
        n = len(vectors) if rows is None else min(rows, len(vectors))
        n_q = len(queries)
        best_d = [np.empty(0, dtype=np.float32) for _ in range(n_q)]
        best_i = [np.empty(0, dtype=np.int64) for _ in range(n_q)]
        chosen = None if allowed is None else np.flatnonzero(np.asarray(allowed[:n], dtype=bool))
        for start in range(0, n if chosen is None else len(chosen), block):
            if chosen is None:
                ids = np.arange(start, min(start + block, n))
                prefetch(vectors[start : min(start + block, n)])
                part = np.asarray(vectors[start : min(start + block, n)], dtype=np.float32)
            else:
                ids = chosen[start : start + block]
                part = np.asarray(vectors[ids], dtype=np.float32)
            # einsum, as scores(): the same arithmetic per row, so equal rows score equal and the exact
            # scores are bit for bit the funnel's
            scores = np.einsum("rd,qd->qr", part, queries)
            keep = min(k, part.shape[0])
            kth = np.partition(scores, part.shape[0] - keep, axis=1)[:, part.shape[0] - keep]
            for q in range(n_q):
                hit = np.flatnonzero(scores[q] >= kth[q])  # the block's top k, and every tie with it
                d = np.concatenate([best_d[q], scores[q, hit]])
                i = np.concatenate([best_i[q], ids[hit]])
                order = np.lexsort((i, -d))[:k]
                best_d[q], best_i[q] = d[order], i[order]
        D = np.full((n_q, k), -np.inf, dtype=np.float32)
        I = np.full((n_q, k), -1, dtype=np.int64)
        for q in range(n_q):
            D[q, : len(best_d[q])], I[q, : len(best_i[q])] = best_d[q], best_i[q]
        return D, I

    def compacted(self, keep: np.ndarray, block: int = 65_536) -> FineStore:
        """A new store of rows ``keep`` (ascending), this one left as it is: in RAM for a store in RAM,
        else in a new file beside this one's, written ``block`` rows at a time (RAM: one block).

        Args:
            keep: the rows to keep, ascending.
            block: rows copied at a time."""
        vectors = self.vectors
        if self.path is None and self._source is None:
            return FineStore(np.ascontiguousarray(vectors[keep]))
        beside = self.path if self.path is not None else self._source[0]
        target = scratch_path(beside, ".npy")
        # the old rows are read with plain reads, a span of rows at a time, not through the memory map,
        # whose pages would count in this process's RSS until unmapped (RAM: one span)
        # (a loaded store: from the file held open since load, whatever its path holds now)
        own = open(self.path, "rb") if self.path is not None else None  # noqa: SIM115 (closed below)
        fd, offset = (
            (own.fileno(), _HEADER_BYTES) if own is not None else (self._source[2].fileno(), self._source[1])
        )
        width = self.dim * vectors.itemsize
        try:
            with open(target, "xb") as fh:
                fh.write(_npy_header(vectors.dtype, len(keep), self.dim))
                for start in range(0, len(keep), block):
                    part = keep[start : start + block]
                    lo, hi = int(part[0]), int(part[-1]) + 1
                    raw = os.pread(fd, (hi - lo) * width, offset + lo * width)
                    span = np.frombuffer(raw, dtype=vectors.dtype).reshape(hi - lo, self.dim)
                    fh.write(np.ascontiguousarray(span[part - lo]).tobytes())
                    del raw, span
        except BaseException:  # a disk full, an interrupt: no half file left
            target.unlink(missing_ok=True)
            raise
        finally:
            if own is not None:
                own.close()
        store = FineStore(np.empty((0, self.dim), vectors.dtype), path=target)
        store._remap(len(keep))
        store._grown = weakref.finalize(store, target.unlink, missing_ok=True)
        return store

    def adopt(self, other: FineStore) -> None:
        """Take ``other``'s rows (:meth:`compacted`) as this store's: an on-disk store's file is replaced
        by ``other``'s (renamed over it, so a reader's memory map keeps the old rows); a loaded or in-RAM
        store takes ``other``'s file or array. ``other`` is not used afterwards."""
        if self.path is not None and self._grown is None and other.path is not None:  # the user's fine_path
            other._grown.detach()
            os.replace(other.path, self.path)
            self._remap(len(other))
            return
        if self._source is not None:
            self._source[2].close()
        if self._grown is not None:
            self._grown()  # this store's old scratch copy
        self.vectors, self.path, self._source, self._grown = other.vectors, other.path, None, None
        if other._grown is not None:  # the scratch file now lives as long as this store
            other._grown.detach()
            self._grown = weakref.finalize(self, other.path.unlink, missing_ok=True)
        self.__dict__.pop("_buffer", None)

    def save(self, path: Path, rows: int | None = None) -> None:
        """Write a ``.npy`` file of the first ``rows`` rows (default: all) in pieces of 65,536 rows (a
        memory-mapped store is never read into RAM whole; an on-disk store's whole file is copied by
        the kernel)."""
        vectors = self.vectors
        n = len(vectors) if rows is None else min(rows, len(vectors))
        if self.path is not None and n == len(vectors):
            shutil.copyfile(self.path, path)  # the backing file is already a complete .npy
            return
        with open(path, "wb") as fh:
            fh.write(_npy_header(vectors.dtype, n, self.dim))
            for start in range(0, n, _SAVE_ROWS):
                end = min(start + _SAVE_ROWS, n)
                prefetch(vectors[start:end])
                fh.write(np.ascontiguousarray(vectors[start:end]).tobytes())

    @classmethod
    def load(cls, path: Path, *, mmap: bool = True) -> FineStore:
        """Read a ``.npy`` file written by :meth:`save`; ``mmap``: memory-mapped for random access (it grows
        into a scratch copy, never into its file), else read into RAM.

        Raises:
            IndexDamaged: a file numpy cannot read as a matrix (InvalidArgument: not 2-D float16/float32)."""
        try:
            vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise IndexDamaged(f"{path} is not a readable fine-vector file: {err}") from None
        source = None
        if mmap and isinstance(vectors, np.memmap) and vectors.ndim == 2 and vectors.flags.c_contiguous:
            source = (Path(path), vectors.offset)
            vectors = map_rows(path, vectors.dtype, vectors.offset, vectors.shape)  # random-access advice
        store = cls(vectors)
        if source is not None:  # a memory-mapped store grows on disk: see extend
            store._source = (*source, open(path, "rb"))  # noqa: SIM115 (closed by close() or the growth)
        return store

    def _grow_on_disk(self) -> None:
        """Turn a loaded, memory-mapped store into an on-disk one that can grow, without reading it into
        RAM: its file is copied (by the kernel, in blocks) to a new scratch ``grow-*.npy`` beside it (:mod:`.scratch`), which
        is removed when this store is; the loaded file, part of a saved index, is never written."""
        source, offset, src = self._source
        target = scratch_path(source, ".npy")
        n, size = len(self), len(self) * self.dim * self.vectors.itemsize
        with open(target, "xb") as dst:
            dst.write(_npy_header(self.vectors.dtype, n, self.dim))
            dst.flush()
            _copy_file(src, dst, offset)  # from the file held open since load, whatever its path holds now
            copied = dst.tell() - _HEADER_BYTES
        if copied != size:
            target.unlink(missing_ok=True)
            raise IndexDamaged(f"{source} holds {copied} bytes of vectors, expected {size}")
        src.close()
        self.path, self._source = target, None
        self._grown = weakref.finalize(self, target.unlink, missing_ok=True)
        self._remap(n)


def _copy_file(src, dst, offset: int) -> None:
    """Copy ``src`` from byte ``offset`` to its end onto the end of ``dst`` (both open, ``dst`` flushed):
    in the kernel where the OS can (``copy_file_range``; no buffer in this process, whose RSS would keep
    it), else through a 1 MB buffer."""
    src.seek(offset)
    left = os.fstat(src.fileno()).st_size - offset
    if hasattr(os, "copy_file_range"):
        try:
            while left > 0:
                done = os.copy_file_range(src.fileno(), dst.fileno(), min(left, 1 << 30))
                if done == 0:  # some file systems copy nothing this way: the rest by reads
                    break
                left -= done
        except OSError:  # e.g. across file systems on an old kernel: the rest by reads
            pass
        src.seek(os.fstat(src.fileno()).st_size - left)
        dst.seek(0, os.SEEK_END)
        if left == 0:
            return
    shutil.copyfileobj(src, dst, 1 << 20)


_HEADER_BYTES = 128  # fixed, so the header can be rewritten in place as the matrix grows
_SAVE_ROWS = 65_536
# Rows cast to the store's dtype at a time when appended: a small temporary (1.5 MB at 768 float32 dims),
# which the allocator reuses rather than keeping freed pages of a large one in the process's RSS.
_CAST_ROWS = 1024


def _npy_header(dtype: np.dtype, n: int, dim: int) -> bytes:
    """A ``.npy`` version 1.0 header padded to ``_HEADER_BYTES`` (the format allows space padding)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n, dim)}
    )
    body = text.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise InvalidArgument(f"a {n} x {dim} matrix does not fit the fixed .npy header")
    return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"
