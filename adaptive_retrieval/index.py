"""The two stores of the funnel: a FAISS index over coarse vectors, and a matrix of fine vectors.

Both speak FAISS's vocabulary: searches return ``(D, I)`` arrays of shape ``(n_queries, k)``, scores
are inner products of L2-normalised vectors (cosine similarity), and missing results are ``-1``.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
import shutil
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import faiss
import numpy as np

from .scratch import scratch_path

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger(__name__)

FINE_DTYPES = ("float16", "float32")

# Search-time knobs of FAISS indexes: per call through faiss.SearchParameters*, or set on the index.
_KNOBS = ("nprobe", "efSearch", "k_factor", "max_codes")  # (polysemous "ht" is L2-only)


def _knob_value(name: str, value: object) -> int | float:
    if name == "k_factor":
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not value >= 1:  # type: ignore[operator]
            raise ValueError(f"search parameter k_factor must be a number >= 1, got {value!r}")
        return float(value)  # type: ignore[arg-type]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < (0 if name == "ht" else 1)
    ):
        least = 0 if name == "ht" else 1
        raise ValueError(f"search parameter {name} must be an int >= {least}, got {value!r}")
    return int(value)


def search_parameters(
    index: faiss.Index, knobs: dict[str, object], factory: str = ""
) -> faiss.SearchParameters | None:
    """Per-call FAISS search parameters for ``knobs`` (``nprobe``, ``efSearch``, ``max_codes``,
    ``k_factor``) on ``index``, or ``None`` without knobs. Nothing is set on the index, so a
    search with knobs leaves the next search as it was and searches in other threads untouched.

    Raises ``ValueError`` for an unknown knob, a bad value, or a knob no part of the index has. The
    returned object keeps the nested parameter objects it points to alive (``_keep``)."""
    if not knobs:
        return None
    for name in knobs:
        if name not in _KNOBS:
            raise ValueError(f"unknown search parameter {name!r}; known: {', '.join(_KNOBS)}")
    values = {name: _knob_value(name, value) for name, value in knobs.items()}
    used: set[str] = set()
    keep: list[faiss.SearchParameters] = []

    def build(idx: faiss.Index) -> faiss.SearchParameters | None:
        idx = faiss.downcast_index(idx)
        params = None
        if isinstance(idx, faiss.IndexPreTransform):
            inner = build(idx.index)
            if inner is not None:
                params = faiss.SearchParametersPreTransform()
                params.index_params = inner
        elif isinstance(idx, faiss.IndexRefine):
            inner = build(idx.base_index)
            if inner is not None or "k_factor" in values:
                params = faiss.IndexRefineSearchParameters()
                params.k_factor = values.get("k_factor", idx.k_factor)
                used.add("k_factor")
                if inner is not None:
                    params.base_index_params = inner
        elif isinstance(idx, faiss.IndexHNSW) and "efSearch" in values:
            params = faiss.SearchParametersHNSW()
            params.efSearch = values["efSearch"]
            used.add("efSearch")
        elif isinstance(idx, faiss.IndexIVF):
            quantizer = build(idx.quantizer)  # e.g. efSearch of an HNSW coarse quantizer
            if quantizer is not None or {"nprobe", "max_codes"} & set(values):
                params = faiss.SearchParametersIVF()
                params.nprobe = values.get("nprobe", idx.nprobe)
                params.max_codes = values.get("max_codes", idx.max_codes)
                used.update({"nprobe", "max_codes"} & set(values))
                if quantizer is not None:
                    params.quantizer_params = quantizer
        if params is not None:
            keep.append(params)
        return params

    params = build(index)
    missing = [name for name in values if name not in used]
    if missing:
        raise ValueError(
            f"index={factory or type(index).__name__!r} has no search parameter {missing[0]!r}"
            + (" (Flat search is exact and takes none)" if factory == "Flat" else "")
        )
    params._keep = keep  # SWIG holds raw pointers to the nested objects
    return params


def map_rows(path: Path, dtype: np.dtype, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """A read-only ``(rows, dim)`` array over ``path`` from byte ``offset``, through a memory map advised
    for random access (``MADV_RANDOM`` where the OS has it).

    The funnel reads a few scattered rows per query. Under the default advice each page fault also
    reads ahead neighbours it will not use: measured on a 15 GB float16 store with a cold page cache,
    400 rows a query read 154 MB from disk per query by default and 2.2 MB with random advice (p95
    950 ms vs 26 ms; ``benchmarks/bench_fine_io.py``). Sequential scans ask for their block explicitly
    (:func:`prefetch`).
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


def _as_matrix(x: np.ndarray, dim: int, name: str) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}), got {x.shape}")
    return x


class CoarseIndex:
    """A FAISS index over the coarse view, built from a factory string with inner-product metric.

    ``factory`` is any FAISS factory string: ``"Flat"`` (exact, the default), ``"HNSW32"``,
    ``"IVF1024,Flat"``, ``"IVF4096,PQ16"``, ... Indexes that need training are trained with :meth:`train`
    on a sample of the vectors before the first :meth:`add`.
    """

    def __init__(
        self,
        dim: int,
        factory: str = "Flat",
        *,
        index: faiss.Index | None = None,
        more: list[faiss.Index] | tuple[faiss.Index, ...] = (),
    ) -> None:
        if not isinstance(factory, str) or not factory.strip():
            raise ValueError(
                f"index must be a FAISS factory string such as 'Flat' or 'HNSW32', got {factory!r}"
            )
        self.dim = dim
        self.factory = factory
        if index is None:
            try:
                index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[-1][:200]
                raise ValueError(
                    f"index={factory!r} is not a FAISS factory string FAISS can build for {dim} dims "
                    f"({reason}); try 'Flat', 'HNSW32' or 'IVF256,Flat'"
                ) from None
        self.index = index
        # A Flat index grows in shards (see grown): the rows after index's, in order. Never another kind.
        self._more: list[faiss.Index] = list(more)

    @property
    def shards(self) -> list[faiss.Index]:
        """The FAISS indexes holding the rows, in row order: one, unless a Flat index grew by
        :meth:`grown` (then :attr:`index` is the first and holds the first rows only)."""
        return [self.index, *self._more]

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def __len__(self) -> int:
        return int(self.index.ntotal) + sum(int(shard.ntotal) for shard in self._more)

    def is_flat(self) -> bool:
        """Whether this is an exact Flat index (float32 rows, nothing else), the kind that grows in shards."""
        return type(faiss.downcast_index(self.index)) in (faiss.IndexFlat, faiss.IndexFlatIP)

    def grown(self, blocks: Iterable[np.ndarray], count: int) -> CoarseIndex:
        """A Flat index holding this one's rows and then the ``count`` rows of ``blocks``, this one left as
        it is (searches may go on over it meanwhile).

        FAISS's ``add`` grows a Flat index's array by allocating the larger one and copying: adding to an
        index of n rows briefly holds 2n + the new rows, which at a million documents is hundreds of MB
        for a few new ones. Here the new rows go into a shard of their own, allocated once at its final
        size and filled block by block; the rows already indexed are not copied, unless the trailing
        shards are not at least twice as large as what follows them, in which case they are merged with
        the new rows into one shard (so a shard is at least twice the next: at most log2(n) shards, each
        row copied O(log n) times over any sequence of adds)."""
        if not self.is_flat():
            raise TypeError(f"index={self.factory!r} is not Flat: only a Flat index grows in shards")
        shards = [shard for shard in self.shards if shard.ntotal > 0]
        total, keep = count, len(shards)
        while keep > 0 and shards[keep - 1].ntotal < 2 * total:
            keep -= 1
            total += int(shards[keep].ntotal)
        merged = [_flat_rows(shard) for shard in shards[keep:]]
        checked = (_as_matrix(block, self.dim, "vectors") for block in blocks)
        last = _flat_of(self.dim, self.index.metric_type, total, itertools.chain(merged, checked))
        first, *more = [*shards[:keep], last]
        return CoarseIndex(self.dim, self.factory, index=first, more=more)

    def reconstruct_n(self, start: int, n: int) -> np.ndarray:
        """Rows ``start .. start + n`` as a float32 ``(n, dim)`` array, across shards."""
        if not self._more:
            return self.index.reconstruct_n(start, n)
        parts, offset = [], 0
        for shard in self.shards:
            lo, hi = max(start, offset), min(start + n, offset + shard.ntotal)
            if lo < hi:
                parts.append(shard.reconstruct_n(lo - offset, hi - lo))
            offset += shard.ntotal
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)

    def train(self, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors, self.dim, "vectors")
        try:
            self.index.train(vectors)
        except RuntimeError as err:
            raise ValueError(
                f"index={self.factory!r} could not be trained on {len(vectors)} vectors: "
                f"{str(err).strip().splitlines()[-1][:200]}. Use a smaller index (fewer IVF lists, fewer PQ "
                "bits per code) or more documents."
            ) from None

    def add(self, vectors: np.ndarray) -> None:
        """Append rows in place (to the last shard of a Flat index grown in shards)."""
        if not self.is_trained:
            raise RuntimeError(f"index={self.factory!r} must be trained before vectors are added")
        (self._more[-1] if self._more else self.index).add(_as_matrix(vectors, self.dim, "vectors"))

    def is_hnsw(self) -> bool:
        """Whether the index is an HNSW graph (which cannot remove rows), wrapped (``PCA64,HNSW32``,
        an id map, a refinement) or not; an IVF index whose coarse quantizer is HNSW is not."""
        index = faiss.downcast_index(self.index)
        for _ in range(8):  # wrappers nest a few deep at most
            if isinstance(index, faiss.IndexHNSW):
                return True
            inner = getattr(index, "base_index", None) or getattr(index, "index", None)
            if not isinstance(inner, faiss.Index):
                return False
            index = faiss.downcast_index(inner)
        return False

    def can_remove(self) -> bool:
        """Whether rows can be removed (a failed add rolled back in place); HNSW graphs cannot."""
        try:
            self.index.remove_ids(faiss.IDSelectorRange(len(self), len(self)))  # removes nothing
        except RuntimeError:
            return False
        return True

    def clone(self) -> CoarseIndex:
        """A deep copy (a staging area for an index that cannot remove rows)."""
        first, *more = [faiss.clone_index(shard) for shard in self.shards]
        return CoarseIndex(self.dim, self.factory, index=first, more=more)

    def remove_from(self, start: int) -> None:
        """Remove the vectors with ids ``start..`` (the roll-back of a failed add)."""
        if len(self) <= start:
            return
        while self._more and len(self) - self._more[-1].ntotal >= start:
            self._more.pop()  # whole shards at the end
        if self._more:
            offset = len(self) - self._more[-1].ntotal
            self._more[-1].remove_ids(faiss.IDSelectorRange(start - offset, self._more[-1].ntotal))
            return
        try:
            self.index.remove_ids(faiss.IDSelectorRange(start, len(self)))
        except RuntimeError:
            raise RuntimeError(
                f"index={self.factory!r} cannot remove vectors, so a failed add left {len(self) - start} extra "
                "coarse vectors; reload the index from its last save"
            ) from None

    def hnsw_ef(self) -> int | None:
        """The ``efSearch`` an HNSW index searches with by default; ``None`` for other indexes."""
        index = faiss.downcast_index(self.index)
        return int(index.hnsw.efSearch) if isinstance(index, faiss.IndexHNSW) else None

    def search_parameters(self, **knobs: float) -> faiss.SearchParameters | None:
        """:func:`search_parameters` for this index: per-call parameters, checked, or ``None``."""
        return search_parameters(self.index, knobs, self.factory)

    def search(
        self, queries: np.ndarray, k: int, *, params: faiss.SearchParameters | None = None, **knobs: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: ``(D, I)``, each ``(n_queries, k)``, padded with ``-1`` ids.

        ``knobs`` (or ``params`` from :meth:`search_parameters`) are search-time parameters such as
        ``nprobe`` (IVF) or ``efSearch`` (HNSW) for this call only; the index is left as it was.
        """
        if params is None and knobs:
            params = self.search_parameters(**knobs)
        x = _as_matrix(queries, self.dim, "queries")
        if self._more:  # Flat shards (which take no parameters): each searched, the answers merged
            Ds, Is, offset = [], [], 0
            for shard in self.shards:
                D, I = shard.search(x, k)
                Ds.append(D)
                Is.append(np.where(I >= 0, I + offset, -1))
                offset += shard.ntotal
            D, I = np.concatenate(Ds, axis=1), np.concatenate(Is, axis=1)
            # best first, ties to the lower id (as the fine re-rank breaks them; not by shard), -1 last
            order = np.lexsort((np.where(I >= 0, I, np.iinfo(np.int64).max), -D), axis=-1)[:, :k]
            return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
        return self.index.search(x, k) if params is None else self.index.search(x, k, params=params)

    def set_knobs(self, **knobs: float) -> None:
        """Set search-time parameters (``nprobe``, ``efSearch``, ...) on the index itself, as the defaults
        of later searches (a configuration step, never done by a search)."""
        self.search_parameters(**knobs)  # the same checks as per call
        space = faiss.ParameterSpace()
        for name, value in knobs.items():
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError:
                raise ValueError(f"index={self.factory!r} has no search parameter {name!r}") from None

    def nbytes(self) -> int:
        """Size of the serialised index (all its shards) in bytes."""
        return sum(int(faiss.serialize_index(shard).size) for shard in self.shards)

    def save(self, path: Path, shard: int = 0) -> None:
        """Write shard ``shard`` (of :attr:`shards`) to ``path``, a FAISS index file."""
        faiss.write_index(self.shards[shard], str(path))

    @classmethod
    def load(
        cls, path: Path, dim: int, factory: str, more: list[Path] | tuple[Path, ...] = ()
    ) -> CoarseIndex:
        """Read an index written by :meth:`save`; ``more``: the files of its further shards, in order."""
        shards = []
        for name in [path, *more]:
            try:
                index = faiss.read_index(str(name))
            except RuntimeError as err:
                raise ValueError(
                    f"{name} is not a readable FAISS index: {str(err).strip().splitlines()[-1][:200]}"
                ) from None
            if index.d != dim:
                raise ValueError(f"{name} holds a {index.d}-dim index, the manifest says {dim}")
            shards.append(index)
        first, *rest = shards
        loaded = cls(dim, factory, index=first, more=rest)
        if rest and not all(type(faiss.downcast_index(s)) is type(faiss.downcast_index(first)) for s in rest):
            raise ValueError(f"{path}: the index's shard files are not all of one kind")
        if rest and not loaded.is_flat():
            raise ValueError(f"{path}: only a Flat index comes in shards, this one is {factory!r}")
        return loaded


def _flat_of(dim: int, metric: int, count: int, blocks: Iterable[np.ndarray]) -> faiss.IndexFlat:
    """A Flat index of ``count`` rows copied from ``blocks`` (float32 ``(n, dim)`` arrays, ``count`` rows
    in all) into one array allocated at its final size: the RAM it takes is its own rows and one block,
    never an old array beside a new one."""
    index = faiss.IndexFlat(dim, metric)
    if count == 0:
        return index
    index.codes.resize(count * dim * 4)
    rows = _flat_rows(index, count)
    filled = 0
    for block in blocks:
        if filled + len(block) > count:
            raise ValueError(f"more than the {count} rows announced")
        rows[filled : filled + len(block)] = block
        filled += len(block)
    if filled != count:
        raise ValueError(f"{filled} rows given, {count} announced")
    index.ntotal = count
    return index


def _flat_rows(index: faiss.IndexFlat, count: int | None = None) -> np.ndarray:
    """The rows of a Flat index as a ``(n, dim)`` float32 view of its own array (no copy); valid while
    the index lives and does not grow."""
    count = int(index.ntotal) if count is None else count
    if count == 0:
        return np.empty((0, index.d), np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), count * index.d).reshape(count, index.d)


class CoarseSpill:
    """Coarse vectors of an add in progress, held until every document is encoded, so that a failed
    add leaves the FAISS index untouched. In RAM, or (``path`` given) in a scratch file that
    :meth:`close` deletes, so that a streamed build's RAM does not grow with the corpus.

    The scratch file is locked (``flock``) while the add runs, so one left by a killed process (whose
    lock died with it) is emptied and reused, with a warning, and one in use by another add is refused.
    Where ``flock`` is missing (Windows), any existing file is refused with a message instead."""

    def __init__(self, dim: int, path: Path | None = None) -> None:
        self.dim, self.path, self.count = dim, path, 0
        self._parts: list[np.ndarray] = []
        self._fd: int | None = None
        if path is not None:
            self._fd = _lock_scratch(path)

    def append(self, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors, self.dim, "coarse vectors")
        if self.path is None:
            self._parts.append(vectors)
        else:
            with open(self.path, "ab") as fh:
                fh.write(vectors.data)  # the array's own bytes, not a copy
        self.count += len(vectors)

    def _matrix(self) -> np.ndarray:
        if self.path is None:
            self._parts = [np.concatenate(self._parts)] if len(self._parts) > 1 else self._parts
            return self._parts[0] if self._parts else np.empty((0, self.dim), np.float32)
        return np.memmap(self.path, dtype=np.float32, mode="r", shape=(self.count, self.dim))

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` rows drawn at random without replacement (all rows, if there are no more than ``n``),
        in row order: a training sample for IVF/PQ indexes that does not depend on the corpus order."""
        matrix = self._matrix()
        if self.count <= n:
            return np.asarray(matrix)
        rows = np.sort(np.random.default_rng(seed).choice(self.count, n, replace=False))
        return np.asarray(matrix[rows])

    def blocks(self, size: int = 262_144):
        """The rows in order, ``size`` at a time; from a scratch file by plain reads (not a memory map,
        whose pages would count in the process's RSS until it is closed)."""
        if self.path is None:
            for part in self._parts:  # as appended: no joined copy
                for start in range(0, len(part), size):
                    yield part[start : start + size]
            return
        with open(self.path, "rb") as fh:
            for start in range(0, self.count, size):
                n = min(size, self.count - start)
                yield np.fromfile(fh, dtype=np.float32, count=n * self.dim).reshape(n, self.dim)

    def close(self) -> None:
        self._parts = []
        if self.path is not None:
            self.path.unlink(missing_ok=True)  # before the lock goes: no one else takes this file
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _lock_scratch(path: Path) -> int | None:
    """Create or take ``path`` as this process's scratch file, holding an exclusive ``flock`` on it
    (returned: the descriptor, to close when done). A file whose lock another process holds is refused;
    one nobody holds was left by a killed add: emptied, with a warning."""
    busy = (
        f"{path} is in use: another add or build into this fine store is running now. One add at a time: "
        "wait for it (or, if no other process uses this index, delete that file and retry)"
    )
    if fcntl is None:  # pragma: no cover - Windows: no flock; refuse any leftover
        try:
            open(path, "xb").close()
        except FileExistsError:
            raise RuntimeError(
                f"{path} exists: an add or build into this fine store was killed, or another process is "
                "adding to it now. If no other process uses it, delete that file and retry; nothing of "
                "the index depends on it"
            ) from None
        return None
    for _ in range(100):
        existed = path.exists()
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RuntimeError(busy) from None
            except OSError:  # a file system without flock: as on Windows, refuse a leftover
                if existed:
                    raise RuntimeError(
                        f"{path} exists: an add or build into this fine store was killed, or another process "
                        "is adding to it now. If no other process uses it, delete that file and retry"
                    ) from None
                os.close(fd)
                return None
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False
            if same:
                left = os.fstat(fd).st_size
                if left:
                    logger.warning(
                        "%s: emptied a scratch file of %d bytes left by an add or build that was killed (the "
                        "index never depended on it)", path, left,
                    )  # fmt: skip
                    os.ftruncate(fd, 0)
                return fd
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # its holder deleted it between our open and our lock: take the path anew
    raise RuntimeError(busy)  # pragma: no cover - a path deleted under us 100 times over


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
    """

    def __init__(self, vectors: np.ndarray, *, path: Path | None = None) -> None:
        if vectors.ndim != 2 or vectors.dtype.name not in FINE_DTYPES:
            raise ValueError(
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
            raise ValueError(f"fine_dtype={dtype!r} is not supported; choose one of {FINE_DTYPES}")
        return np.dtype(dtype)

    @classmethod
    def empty(cls, dim: int, dtype: str = "float16") -> FineStore:
        """An empty in-memory store."""
        return cls(np.empty((0, dim), dtype=cls._check_dtype(dtype)))

    @classmethod
    def on_disk(cls, path: str | Path, dim: int, dtype: str = "float16") -> FineStore:
        """An empty store backed by the new file ``path`` (an existing file is refused, never overwritten)."""
        path = Path(path)
        np_dtype = cls._check_dtype(dtype)
        if path.exists():
            raise ValueError(f"fine_path={str(path)!r} already exists; give a new file name")
        if not path.parent.is_dir():
            raise ValueError(f"fine_path={str(path)!r}: directory {str(path.parent)!r} does not exist")
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
        return int(self.vectors.shape[1])

    @property
    def dtype(self) -> str:
        return self.vectors.dtype.name

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def nbytes(self) -> int:
        return int(self.vectors.nbytes)

    def extend(self, vectors: np.ndarray) -> None:
        """Append rows (cast to the store's dtype). On disk: written at the file's end, then the header
        is updated, so the file holds a complete matrix after every call."""
        vectors = _as_matrix(vectors, self.dim, "vectors")
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
        """Keep the first ``n`` rows: the roll-back of a failed :meth:`extend`."""
        if not 0 <= n <= len(self):
            raise ValueError(f"cannot truncate a store of {len(self)} rows to {n}")
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

    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidate ids with the fine vectors; keep the best ``k``.

        ``candidates`` is ``(n_queries, c)`` with ``-1`` for none. Returns ``(D, I)`` of shape
        ``(n_queries, k)``, best first, ties broken by the lower id, padded with ``-1`` / ``-inf``.
        Scores are float32 inner products (the stored float16 vectors are widened first). Only the
        candidates' rows are read, so a memory-mapped store costs one page read per candidate.
        """
        queries = _as_matrix(queries, self.dim, "queries")
        candidates = np.asarray(candidates, dtype=np.int64)
        n_q, n_c = candidates.shape
        valid = candidates >= 0
        vectors = np.asarray(self.vectors[np.where(valid, candidates, 0).ravel()], dtype=np.float32)
        scores = np.einsum("qcd,qd->qc", vectors.reshape(n_q, n_c, self.dim), queries)
        scores[~valid] = -np.inf
        order = np.lexsort((np.where(valid, candidates, np.iinfo(np.int64).max), -scores), axis=-1)[:, :k]
        top_scores = np.take_along_axis(scores, order, axis=1)
        top_ids = np.where(np.isfinite(top_scores), np.take_along_axis(candidates, order, axis=1), -1)
        if top_ids.shape[1] < k:  # fewer candidates than k: pad as FAISS does
            pad = k - top_ids.shape[1]
            top_scores = np.pad(top_scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            top_ids = np.pad(top_ids, ((0, 0), (0, pad)), constant_values=-1)
        return top_scores.astype(np.float32), top_ids

    def scores(self, queries: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Fine scores ``(n, c)`` of each query with its ``ids`` (``(n, c)``, all valid rows), float32."""
        rows = np.asarray(self.vectors[np.asarray(ids, dtype=np.int64).ravel()], dtype=np.float32)
        return np.einsum("qcd,qd->qc", rows.reshape(*ids.shape, self.dim), queries)

    def rerank_with_fallback(
        self,
        queries: np.ndarray,
        candidates: np.ndarray,
        k: int,
        *,
        patience: int | None = None,
        rows: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
        """The funnel's second stage: :meth:`rerank`, except that a query whose (approximate) coarse
        stage returned fewer than ``min(k, len(self))`` ids is ranked exactly instead. With
        ``patience``, each query reads its candidates a step at a time and stops when its top ``k``
        has settled (:func:`adaptive_retrieval.shortlist.patient_rerank`). Returns ``(D, I, number of
        such fallbacks, candidates read per query)``. ``rows``: only the first ``rows`` rows exist for
        this search (the others belong to an add not yet committed), for the fallback too."""
        queries = _as_matrix(queries, self.dim, "queries")
        candidates = np.asarray(candidates, dtype=np.int64)
        if patience is None:
            D, I = self.rerank(queries, candidates, k)
            read = (candidates >= 0).sum(axis=1)
        else:
            from .shortlist import patient_rerank

            D, I, read = patient_rerank(
                lambda rows, ids: self.scores(queries[rows], ids), candidates, k, patience
            )
        rows = len(self) if rows is None else rows
        short = (I >= 0).sum(axis=1) < min(k, rows)
        if short.any():
            D[short], I[short] = self.search_exact(queries[short], k, rows=rows)
        return D, I, int(short.sum()), read

    def search_exact(
        self, queries: np.ndarray, k: int, *, block: int = 65_536, rows: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over every stored vector, ``block`` rows at a time: the reference the funnel is
        measured against, and the fallback when a coarse stage comes up short. Each block is read and
        widened to float32 once for all queries (memory: one block, and one score per query and row of
        it); ties are broken by the lower id, as :meth:`rerank` does. ``rows``: only the first ``rows``
        (default: all)."""
        queries = _as_matrix(queries, self.dim, "queries")
        vectors = self.vectors  # one matrix for the whole scan, whatever an add does meanwhile
        n = len(vectors) if rows is None else min(rows, len(vectors))
        n_q = len(queries)
        best_d = [np.empty(0, dtype=np.float32) for _ in range(n_q)]
        best_i = [np.empty(0, dtype=np.int64) for _ in range(n_q)]
        for start in range(0, n, block):
            prefetch(vectors[start : min(start + block, n)])
            rows = np.asarray(vectors[start : min(start + block, n)], dtype=np.float32)
            # einsum, as rerank: the same arithmetic per row, so equal rows score equal and the exact
            # scores are bit for bit the funnel's
            scores = np.einsum("rd,qd->qr", rows, queries)
            keep = min(k, rows.shape[0])
            kth = np.partition(scores, rows.shape[0] - keep, axis=1)[:, rows.shape[0] - keep]
            for q in range(n_q):
                hit = np.flatnonzero(scores[q] >= kth[q])  # the block's top k, and every tie with it
                d = np.concatenate([best_d[q], scores[q, hit]])
                i = np.concatenate([best_i[q], start + hit])
                order = np.lexsort((i, -d))[:k]
                best_d[q], best_i[q] = d[order], i[order]
        D = np.full((n_q, k), -np.inf, dtype=np.float32)
        I = np.full((n_q, k), -1, dtype=np.int64)
        for q in range(n_q):
            D[q, : len(best_d[q])], I[q, : len(best_i[q])] = best_d[q], best_i[q]
        return D, I

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
        try:
            vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path} is not a readable fine-vector file: {err}") from None
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
            raise ValueError(f"{source} holds {copied} bytes of vectors, expected {size}")
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
    """A ``.npy`` version 1.0 header padded to :data:`_HEADER_BYTES` (the format allows space padding)."""
    text = repr(
        {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": (n, dim)}
    )
    body = text.encode("latin1")
    pad = _HEADER_BYTES - 10 - len(body) - 1
    if pad < 0:
        raise ValueError(f"a {n} x {dim} matrix does not fit the fixed .npy header")
    return b"\x93NUMPY\x01\x00" + (_HEADER_BYTES - 10).to_bytes(2, "little") + body + b" " * pad + b"\n"
