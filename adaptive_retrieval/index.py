"""The coarse store of the funnel: a FAISS index over coarse vectors (:class:`CoarseIndex`, grown in
shards), its per-call search parameters and row selectors. The spill where an add's coarse vectors wait
for their commit is :mod:`adaptive_retrieval.spill`, the fine store :mod:`adaptive_retrieval.fine_store`
(both re-exported here).

Searches return FAISS's ``(D, I)`` arrays of shape ``(n_queries, k)``, scores are inner products of
L2-normalised vectors (cosine similarity), and missing results are ``-1``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from pathlib import Path

import faiss
import numpy as np

from .codes import codebook_training, unit_coded
from .errors import (
    CorpusError,
    EngineError,
    IndexDamaged,
    InvalidArgument,
    InvalidArgumentType,
)
from .fine_store import FINE_DTYPES, FineStore, as_matrix, map_rows, mapping_of, prefetch
from .spill import CoarseSpill

logger = logging.getLogger(__name__)


# Search-time knobs of FAISS indexes: per call through faiss.SearchParameters*, or set on the index.
_KNOBS = ("nprobe", "efSearch", "k_factor", "max_codes")  # (polysemous "ht" is L2-only)


def _knob_value(name: str, value: object) -> int | float:
    if name == "k_factor":
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not ok or not value >= 1:  # type: ignore[operator]
            raise InvalidArgument(f"search parameter k_factor must be a number >= 1, got {value!r}")
        return float(value)  # type: ignore[arg-type]
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < (0 if name == "ht" else 1)
    ):
        least = 0 if name == "ht" else 1
        raise InvalidArgument(f"search parameter {name} must be an int >= {least}, got {value!r}")
    return int(value)


def search_parameters(
    index: faiss.Index, knobs: dict[str, object], factory: str = "", sel: faiss.IDSelector | None = None
) -> faiss.SearchParameters | None:
    """Per-call FAISS search parameters for ``knobs`` (``nprobe``, ``efSearch``, ``max_codes``,
    ``k_factor``) on ``index``, or ``None`` without knobs. Nothing is set on the index, so a
    search with knobs leaves the next search as it was and searches in other threads untouched.
    ``sel``: the rows the search may return (set on the index that holds the codes, inside any wrapper).

    Raises ``ValueError`` for an unknown knob, a bad value, or a knob no part of the index has. The
    returned object keeps the nested parameter objects it points to alive (``_keep``)."""
    if not knobs and sel is None:
        return None
    for name in knobs:
        if name not in _KNOBS:
            raise InvalidArgument(f"unknown search parameter {name!r}; known: {', '.join(_KNOBS)}")
    values = {name: _knob_value(name, value) for name, value in knobs.items()}
    used: set[str] = set()
    keep: list[faiss.SearchParameters] = []

    def build(idx: faiss.Index, leaf_sel: faiss.IDSelector | None = None) -> faiss.SearchParameters | None:
        idx = faiss.downcast_index(idx)
        params = None
        if isinstance(idx, faiss.IndexPreTransform):
            inner = build(idx.index, leaf_sel)
            if inner is not None:
                params = faiss.SearchParametersPreTransform()
                params.index_params = inner
        elif isinstance(idx, faiss.IndexRefine):
            inner = build(idx.base_index, leaf_sel)
            if inner is not None or "k_factor" in values:
                params = faiss.IndexRefineSearchParameters()
                params.k_factor = values.get("k_factor", idx.k_factor)
                used.add("k_factor")
                if inner is not None:
                    params.base_index_params = inner
        elif isinstance(idx, faiss.IndexHNSW) and ("efSearch" in values or leaf_sel is not None):
            params = faiss.SearchParametersHNSW()
            params.efSearch = values.get("efSearch", idx.hnsw.efSearch)
            used.add("efSearch")
        elif isinstance(idx, faiss.IndexIVF):
            quantizer = build(idx.quantizer)  # e.g. efSearch of an HNSW coarse quantizer
            if quantizer is not None or {"nprobe", "max_codes"} & set(values) or leaf_sel is not None:
                params = faiss.SearchParametersIVF()
                params.nprobe = values.get("nprobe", idx.nprobe)
                params.max_codes = values.get("max_codes", idx.max_codes)
                used.update({"nprobe", "max_codes"} & set(values))
                if quantizer is not None:
                    params.quantizer_params = quantizer
        elif leaf_sel is not None:
            params = faiss.SearchParameters()
        if (
            params is not None
            and leaf_sel is not None
            and not isinstance(idx, (faiss.IndexPreTransform, faiss.IndexRefine))
        ):
            params.sel = leaf_sel
        if params is not None:
            keep.append(params)
        return params

    params = build(index, sel)
    missing = [name for name in values if name not in used]
    if missing:
        raise InvalidArgument(
            f"index={factory or type(index).__name__!r} has no search parameter {missing[0]!r}"
            + (f" ({factory} search scans every row and takes none)" if factory in ("Flat", "SQ8") else "")
        )
    params._keep = [keep, sel]  # SWIG holds raw pointers to the nested objects
    return params


def selector(allowed: np.ndarray) -> faiss.IDSelector:
    """A FAISS selector of the rows ``allowed`` marks (a bitmap; it keeps its bits alive)."""
    bits = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
    sel = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bits))
    sel._bits = bits
    return sel


class CoarseIndex:
    """A FAISS index over the coarse view, built from a factory string with inner-product metric.

    Indexes that need training are trained with :meth:`train` on a sample of the vectors before the
    first :meth:`add`.

    Args:
        dim: the coarse view's dimension.
        factory: any FAISS factory string: ``"Flat"`` (exact float32), ``"SQ8"`` (int8 codes over
            ``[-1, 1]``: :func:`adaptive_retrieval.codes.unit_coded`; the engine's default, :data:`adaptive_retrieval.codes.DEFAULT_FACTORY`), ``"HNSW32"``,
            ``"IVF1024,Flat"``, ``"IVF4096,PQ16"``, ...
        index: an existing FAISS index of that kind (instead of building one), e.g. one read from a file.
        more: the further shards of a Flat index grown in shards (:meth:`grown`), in row order.

    Raises:
        InvalidArgument: a factory string FAISS cannot build for ``dim`` dims.

    Example:
        >>> import numpy as np
        >>> coarse = CoarseIndex(4)
        >>> coarse.add(np.eye(4, dtype=np.float32))
        >>> coarse.search(np.eye(4, dtype=np.float32)[:1], 2)[1]
        array([[0, 1]])
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
            raise InvalidArgument(
                f"index must be a FAISS factory string such as 'Flat' or 'HNSW32', got {factory!r}"
            )
        self.dim = dim
        self.factory = factory
        if index is None:
            try:
                index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
            except RuntimeError as err:
                reason = str(err).strip().splitlines()[-1][:200]
                raise InvalidArgument(
                    f"index={factory!r} is not a FAISS factory string FAISS can build for {dim} dims "
                    f"({reason}); try 'SQ8', 'Flat', 'HNSW32' or 'IVF256,Flat'"
                ) from None
            unit_coded(index)
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
        """Whether vectors can be added (an index that needs no training always is)."""
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
        row copied O(log n) times over any sequence of adds).

        Raises:
            InvalidArgumentType: this index is not Flat. InvalidArgument: a block of another width."""
        if not self.is_flat():
            raise InvalidArgumentType(
                f"index={self.factory!r} is not Flat: only a Flat index grows in shards"
            )
        shards = [shard for shard in self.shards if shard.ntotal > 0]
        total, keep = count, len(shards)
        while keep > 0 and shards[keep - 1].ntotal < 2 * total:
            keep -= 1
            total += int(shards[keep].ntotal)
        merged = [_flat_rows(shard) for shard in shards[keep:]]
        checked = (as_matrix(block, self.dim, "vectors") for block in blocks)
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
        """Train an index that needs it (IVF, PQ) on ``vectors`` ``(n, dim)``: a sample of the corpus.

        Raises:
            CorpusError: FAISS could not train the index on them (e.g. fewer vectors than IVF lists).
            InvalidArgument: vectors of another width."""
        vectors = as_matrix(vectors, self.dim, "vectors")
        try:
            with codebook_training(self.index, len(vectors), self.factory):
                self.index.train(vectors)
        except RuntimeError as err:
            raise CorpusError(
                f"index={self.factory!r} could not be trained on {len(vectors)} vectors: "
                f"{str(err).strip().splitlines()[-1][:200]}. Use a smaller index (fewer IVF lists, fewer PQ "
                "bits per code) or more documents."
            ) from None

    def add(self, vectors: np.ndarray) -> None:
        """Append rows ``(n, dim)`` in place (to the last shard of a Flat index grown in shards).

        Raises:
            EngineError: an index not yet trained. InvalidArgument: vectors of another width."""
        if not self.is_trained:
            raise EngineError(f"index={self.factory!r} must be trained before vectors are added")
        (self._more[-1] if self._more else self.index).add(as_matrix(vectors, self.dim, "vectors"))

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
        """Remove the vectors with ids ``start..`` (the roll-back of a failed add).

        Raises:
            EngineError: an index that cannot remove rows (HNSW: :meth:`can_remove`)."""
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
            raise EngineError(
                f"index={self.factory!r} cannot remove vectors, so a failed add left {len(self) - start} extra "
                "coarse vectors; reload the index from its last save"
            ) from None

    def compacted(self, keep: np.ndarray, block: int = 65_536) -> CoarseIndex:
        """A new index of rows ``keep`` (ascending), renumbered ``0..``; this one left as it is. A Flat
        index is copied row by row (exact); another index of codes in row order (SQ8, PQ) keeps its codes
        (FAISS's ``remove_ids`` of the others); an IVF index drops the other rows' codes and renumbers its
        lists (its codes unchanged); any other (HNSW) is rebuilt from its rows as it reconstructs them
        (exact for HNSW over Flat storage).

        Args:
            keep: the rows to keep, ascending.
            block: rows copied at a time."""
        keep = np.asarray(keep, dtype=np.int64)
        if self.is_flat():
            blocks = (self.rows_of(keep[s : s + block]) for s in range(0, len(keep), block))
            return CoarseIndex(
                self.dim, self.factory, index=_flat_of(self.dim, self.index.metric_type, len(keep), blocks)
            )
        if isinstance(faiss.downcast_index(self.index), faiss.IndexFlatCodes) and not self._more:
            target = faiss.clone_index(self.index)  # SQ8, PQ: the kept codes, in order, unchanged
            dead = np.setdiff1d(np.arange(len(self), dtype=np.int64), keep)
            target.remove_ids(faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead)))
            return CoarseIndex(self.dim, self.factory, index=target)
        if _ivf_of(self.index) is not None and self.can_remove():
            target = faiss.clone_index(self.index)
            inner = _ivf_of(target)
            dead = np.setdiff1d(np.arange(len(self), dtype=np.int64), keep)
            target.remove_ids(faiss.IDSelectorBatch(len(dead), faiss.swig_ptr(dead)))
            new_row = np.full(len(self), -1, dtype=np.int64)
            new_row[keep] = np.arange(len(keep))
            lists = inner.invlists
            for list_no in range(inner.nlist):
                size = lists.list_size(list_no)
                if size:
                    ids = faiss.rev_swig_ptr(lists.get_ids(list_no), size)
                    ids[:] = new_row[ids]
            if inner.direct_map.type != faiss.DirectMap.NoMap:
                inner.make_direct_map(True)
            return CoarseIndex(self.dim, self.factory, index=target)
        target = faiss.clone_index(self.index)
        target.reset()
        for start in range(0, len(keep), block):
            target.add(self.rows_of(keep[start : start + block]))
        return CoarseIndex(self.dim, self.factory, index=target)

    def rows_of(self, rows: np.ndarray) -> np.ndarray:
        """Rows ``rows`` (ascending) as float32 ``(len(rows), dim)``, as the index reconstructs them."""
        if len(rows) == 0:
            return np.empty((0, self.dim), np.float32)
        lo, hi = int(rows[0]), int(rows[-1]) + 1
        return self.reconstruct_n(lo, hi - lo)[rows - lo]

    def ivf(self) -> faiss.IndexIVF | None:
        """The IVF index inside this one (for its ``nprobe`` and ``nlist``), or ``None``."""
        try:
            return faiss.extract_index_ivf(self.index)
        except RuntimeError:
            return None

    def hnsw_ef(self) -> int | None:
        """The ``efSearch`` an HNSW index searches with by default; ``None`` for other indexes."""
        index = faiss.downcast_index(self.index)
        return int(index.hnsw.efSearch) if isinstance(index, faiss.IndexHNSW) else None

    def search_parameters(self, **knobs: float) -> faiss.SearchParameters | None:
        """:func:`search_parameters` for this index: per-call parameters, checked, or ``None``."""
        return search_parameters(self.index, knobs, self.factory)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        params: faiss.SearchParameters | None = None,
        allowed: np.ndarray | None = None,
        **knobs: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search over every shard.

        Args:
            queries: ``(n_queries, dim)`` query vectors.
            k: rows per query.
            params: per-call parameters from :meth:`search_parameters` (instead of ``knobs``).
            allowed: ``(len(self),)`` bool: only these rows can be returned (a FAISS selector, with
                ``knobs``; not with ``params``).
            **knobs: search-time parameters such as ``nprobe`` (IVF) or ``efSearch`` (HNSW) for this call
                only; the index is left as it was.

        Returns:
            ``(D, I)``, each ``(n_queries, k)``, best first, padded with ``-1`` ids.

        Raises:
            InvalidArgument: queries of another width, or an unknown knob or bad value.
        """
        if allowed is not None and not self._more:
            params = search_parameters(self.index, knobs, self.factory, sel=selector(allowed[: len(self)]))
        elif params is None and knobs:
            params = self.search_parameters(**knobs)
        x = as_matrix(queries, self.dim, "queries")
        if self._more:  # Flat shards (which take no knobs): each searched, the answers merged
            Ds, Is, offset = [], [], 0
            for shard in self.shards:
                if allowed is None:
                    D, I = shard.search(x, k)
                else:  # the selector held here until the search returns (SWIG keeps a raw pointer)
                    sel = selector(allowed[offset : offset + shard.ntotal])
                    part = faiss.SearchParameters(sel=sel)
                    D, I = shard.search(x, k, params=part)
                    del part, sel
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
        of later searches (a configuration step, never done by a search).

        Raises:
            InvalidArgument: a knob this index does not have, or a bad value."""
        self.search_parameters(**knobs)  # the same checks as per call
        space = faiss.ParameterSpace()
        for name, value in knobs.items():
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError:
                raise InvalidArgument(f"index={self.factory!r} has no search parameter {name!r}") from None

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
        """Read an index written by :meth:`save`.

        Args:
            path: the first shard's file.
            dim: the dimension the manifest records.
            factory: the factory string the manifest records.
            more: the files of its further shards, in order.

        Raises:
            IndexDamaged: a file FAISS cannot read, of another dimension, or shards of mixed or non-Flat kinds.
        """
        shards = []
        for name in [path, *more]:
            try:
                index = faiss.read_index(str(name))
            except RuntimeError as err:
                raise IndexDamaged(
                    f"{name} is not a readable FAISS index: {str(err).strip().splitlines()[-1][:200]}"
                ) from None
            if index.d != dim:
                raise IndexDamaged(f"{name} holds a {index.d}-dim index, the manifest says {dim}")
            shards.append(index)
        first, *rest = shards
        loaded = cls(dim, factory, index=first, more=rest)
        if rest and not all(type(faiss.downcast_index(s)) is type(faiss.downcast_index(first)) for s in rest):
            raise IndexDamaged(f"{path}: the index's shard files are not all of one kind")
        if rest and not loaded.is_flat():
            raise IndexDamaged(f"{path}: only a Flat index comes in shards, this one is {factory!r}")
        return loaded


def _ivf_of(index: faiss.Index) -> faiss.IndexIVF | None:
    """The IVF index inside ``index`` whose lists can be renumbered in place (array lists), else ``None``."""
    try:
        ivf = faiss.extract_index_ivf(index)
    except RuntimeError:
        return None
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    return ivf if isinstance(lists, faiss.ArrayInvertedLists) else None


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
            raise CorpusError(f"more than the {count} rows announced")
        rows[filled : filled + len(block)] = block
        filled += len(block)
    if filled != count:
        raise CorpusError(f"{filled} rows given, {count} announced")
    index.ntotal = count
    return index


def _flat_rows(index: faiss.IndexFlat, count: int | None = None) -> np.ndarray:
    """The rows of a Flat index as a ``(n, dim)`` float32 view of its own array (no copy); valid while
    the index lives and does not grow."""
    count = int(index.ntotal) if count is None else count
    if count == 0:
        return np.empty((0, index.d), np.float32)
    return faiss.rev_swig_ptr(index.get_xb(), count * index.d).reshape(count, index.d)


__all__ = [
    "FINE_DTYPES",
    "CoarseIndex",
    "CoarseSpill",
    "FineStore",
    "map_rows",
    "mapping_of",
    "prefetch",
    "search_parameters",
    "selector",
]
