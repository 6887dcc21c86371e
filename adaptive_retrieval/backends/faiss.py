"""The funnel in this process: a FAISS index over the coarse vectors and a fine store.

Rows are written in two steps (see :mod:`adaptive_retrieval.backends`): :meth:`FaissBackend.add` appends
the fine vectors to the store and holds the coarse ones in a spill (RAM, or a scratch file beside an
on-disk store); :meth:`FaissBackend.commit` trains the coarse index if it needs it and adds them. A
failed add truncates the store and leaves the FAISS index as it was (an index that cannot remove rows,
HNSW, is staged in a copy swapped in when whole).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..checks import positive_int
from ..codes import DEFAULT_FACTORY
from ..corpus import DocId
from ..errors import InvalidArgument, InvalidArgumentType
from ..index import FINE_DTYPES, CoarseIndex, CoarseSpill, FineStore
from ..storage import extra_writers, read_data_files
from .base import Backend, EngineOptions, FileWriter

_FILL_ROWS = 16_384  # rows read from the spill at a time into a new Flat shard (4 MB at 64 dims)


@dataclasses.dataclass
class FaissOptions(EngineOptions):
    """The FAISS engine's build options (``Retriever.build(backend=FaissOptions(index="HNSW32"))``).

    Args:
        index: FAISS factory string for the coarse index, inner product: ``"SQ8"`` (the default: an int8
            code per coordinate over ``[-1, 1]``, scanned exhaustively; 64 B per document at 64 dims,
            measured to need the same shortlists as float32: :func:`adaptive_retrieval.codes.unit_coded`),
            ``"Flat"`` (float32), ``"HNSW32"``, ``"HNSW32_SQ8"``, ``"IVF1024,PQ16"``...
        fine_dtype: ``"float16"`` (half the memory) or ``"float32"``: how the fine vectors are stored.
        fine_path: a new ``.npy`` file to hold the fine vectors as they are encoded (default: in RAM;
            saved, they are memory-mapped either way).
        train_size: how many coarse vectors, drawn at random, train an index that needs training.

    Raises:
        InvalidArgumentType: ``index`` not a non-empty string.
        InvalidArgument: an unknown ``fine_dtype``, or ``train_size`` not a positive int.

    Example:
        >>> FaissOptions(index="IVF1024,PQ16", fine_path="/data/fine.npy", train_size=50_000)
        FaissOptions(index='IVF1024,PQ16', fine_dtype='float16', fine_path='/data/fine.npy', train_size=50000)
    """

    engine: ClassVar[str] = "faiss"
    index: str = DEFAULT_FACTORY
    fine_dtype: str = "float16"
    fine_path: str | Path | None = None
    train_size: int = 100_000

    def __post_init__(self) -> None:
        if not isinstance(self.index, str) or not self.index.strip():
            raise InvalidArgumentType(
                f"index must be a FAISS factory string such as 'Flat', got {self.index!r}"
            )
        if self.fine_dtype not in FINE_DTYPES:
            raise InvalidArgument(
                f"fine_dtype={self.fine_dtype!r} is not supported; choose one of {FINE_DTYPES}"
            )
        self.train_size = positive_int(self.train_size, "train_size")


class FaissBackend(Backend):
    """A :class:`adaptive_retrieval.index.CoarseIndex` and a :class:`adaptive_retrieval.index.FineStore`.

    ``train_size``: how many coarse vectors, drawn at random, train an index that needs training."""

    name = "faiss"
    Options = FaissOptions

    def __init__(
        self, coarse_index: CoarseIndex, fine_store: FineStore, *, train_size: int = 100_000
    ) -> None:
        self.coarse_index = coarse_index
        self.fine_store = fine_store
        self.train_size = train_size
        self._prepared: CoarseIndex | None = None  # a copy holding an add's rows, made outside the lock
        self._spill: CoarseSpill | None = None

    @classmethod
    def create(cls, coarse_dim: int, fine_dim: int, options: EngineOptions) -> FaissBackend:
        """An empty backend: a coarse index from the FAISS factory string ``options.index``, and a fine
        store in RAM or (``options.fine_path``) in a new ``.npy`` file."""
        assert isinstance(options, FaissOptions)
        coarse_index = CoarseIndex(coarse_dim, options.index)
        fine_store = (
            FineStore.empty(fine_dim, options.fine_dtype)
            if options.fine_path is None
            else FineStore.on_disk(options.fine_path, fine_dim, options.fine_dtype)
        )
        return cls(coarse_index, fine_store, train_size=options.train_size)

    @classmethod
    def open(
        cls, directory: Path, manifest: dict[str, Any], *, verify: bool | str = True, mmap: bool = True
    ) -> tuple[FaissBackend, list[DocId]]:
        """The coarse index, fine store and ids saved in ``directory`` (``mmap``: the fine store
        memory-mapped; ``verify``: as :func:`adaptive_retrieval.storage.verify_files`)."""
        coarse_index, fine_store, doc_ids = read_data_files(directory, manifest, verify=verify, mmap=mmap)
        train_size = manifest["backend"].get("train_size", FaissOptions.train_size)
        return cls(coarse_index, fine_store, train_size=train_size), doc_ids

    def __len__(self) -> int:
        return len(self.coarse_index)

    def add(
        self, first_row: int, doc_ids: list[DocId], coarse: np.ndarray, fine: np.ndarray,
        metadata: list[dict[str, Any] | None] | None = None, terms: list[Any] | None = None,
    ) -> None:  # fmt: skip
        self.fine_store.extend(fine)  # first: a loaded store moves to its growing file here
        if self._spill is None:  # beside an on-disk store, the pending coarse vectors wait on disk too
            path = self.fine_store.path
            pending = None if path is None else path.with_name(path.name + ".pending")
            self._spill = CoarseSpill(self.coarse_index.dim, pending)
        self._spill.append(coarse)

    def prepare(self) -> None:
        """Build, while searches go on, what :meth:`commit` swaps in: for a Flat index, a new shard of the
        pending rows (:meth:`adaptive_retrieval.index.CoarseIndex.grown`: the indexed rows are not
        copied, so RAM grows by the new rows and one block); for an index that cannot take rows in place
        (HNSW: no removal, so no roll-back; or an index not yet trained), a copy holding them."""
        spill = self._spill
        index = self.coarse_index
        if spill is None or (index.is_trained and not index.is_hnsw() and not index.is_flat()):
            return  # added in place by commit: IVF grows list by list, and removes rows on failure
        self._spill = None
        try:
            if index.is_flat():
                self._prepared = index.grown(spill.blocks(_FILL_ROWS), spill.count)
                return
            target = index.clone()
            if not target.is_trained:
                target.train(spill.sample(self.train_size))
            for block in spill.blocks():
                target.add(block)
            self._prepared = target
        finally:
            spill.close()

    def commit(self) -> None:
        """Swap in the copy :meth:`prepare` built (made here if the caller skipped it), or add the
        pending coarse vectors in place (removed again if this fails; the caller then rolls back the
        fine rows)."""
        if self._prepared is None:
            self.prepare()
        if self._prepared is not None:
            self.coarse_index, self._prepared = self._prepared, None
            return
        spill, self._spill = self._spill, None
        if spill is None:
            return
        try:
            index = self.coarse_index
            target = index if index.can_remove() else index.clone()
            before = len(target)
            try:
                for block in spill.blocks():
                    target.add(block)
            except BaseException:
                if target is index:
                    target.remove_from(before)
                raise
            self.coarse_index = target
        finally:
            spill.close()

    def rollback(self, start: int, committed: bool = False) -> None:
        self._prepared = None
        if self._spill is not None:
            self._spill.close()
            self._spill = None
        try:
            self.coarse_index.remove_from(start)
        finally:  # the fine rows go whatever the coarse index can do
            self.fine_store.truncate(min(start, len(self.fine_store)))

    def coarse_search(
        self, coarse_q: np.ndarray, depth: int, params: Any = None, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The coarse index's search (``allowed``: a FAISS selector of those rows; an approximate index
        searches wider as they get fewer: HNSW's ``efSearch`` and IVF's ``nprobe`` divided by the share
        of rows allowed, unless given)."""
        knobs = dict(params or {})
        calibrated = knobs.pop("depth", None)  # the depth a calibration measured at (search_parameters)
        nprobe = knobs.pop("base_nprobe", None)  # the nprobe a calibration chose (idem)
        if allowed is not None:
            share = float(np.count_nonzero(allowed)) / max(len(allowed), 1)
            knobs = self._widened(knobs, max(depth, calibrated or 0), share, nprobe)
        else:
            if calibrated is not None and "efSearch" not in knobs:
                knobs["efSearch"] = int(calibrated)
            if nprobe is not None:
                knobs["nprobe"] = int(nprobe)
        return self.coarse_index.search(coarse_q, depth, allowed=allowed, **knobs)

    def calibration_widths(self) -> list[tuple[dict[str, int], float]]:
        """An IVF coarse index's ``nprobe``, from its own doubled up to ``nlist`` (cost: the share of rows
        the lists probed hold, as :meth:`filtered_cost` models it); none for the others (a Flat index
        scans everything, an HNSW graph explores as deep as the shortlist)."""
        index, ivf = self.coarse_index, self.coarse_index.ivf()
        if ivf is None:
            return []
        rows, ratio, nlist = len(index), index.dim / self.fine_store.dim / 2, max(ivf.nlist, 1)
        widths, nprobe = [], max(int(ivf.nprobe), 1)
        while True:
            widths.append(({"nprobe": nprobe}, rows * ratio * nprobe / nlist))
            if nprobe >= nlist:
                return widths
            nprobe = min(2 * nprobe, nlist)

    def filtered_cost(self, share: float, depth: int, params: Any = None) -> float | None:
        """Measured on an Intel Xeon (``benchmarks.bench_filters``, 100k synthetic documents, 64-dim coarse,
        768-dim float16 fine): scoring a fine row costs about 1.3 us, a Flat coarse row 0.04 us (a share
        ``coarse_dim / fine_dim / 2`` of it), an HNSW candidate about 1.7 fine rows. Modelled so: Flat
        scans every row; IVF the share of lists its widened ``nprobe`` opens; HNSW its widened
        ``efSearch``; all re-rank ``depth``."""
        index = self.coarse_index
        rows, ratio = len(index), index.dim / self.fine_store.dim / 2
        knobs = self._widened({}, depth, share, (params or {}).get("base_nprobe"))
        if "efSearch" in knobs:
            return 1.7 * knobs["efSearch"] + depth
        ivf = index.ivf()
        if ivf is not None:
            return rows * ratio * knobs["nprobe"] / max(ivf.nlist, 1) + depth
        return rows * ratio + depth

    def _widened(
        self, knobs: dict[str, Any], depth: int, share: float, nprobe: int | None = None
    ) -> dict[str, Any]:
        index = self.coarse_index
        share = max(share, 1e-6)
        ef = index.hnsw_ef()
        if ef is not None and "efSearch" not in knobs:
            knobs["efSearch"] = int(min(max(ef, depth) / share, max(len(index), 1)))
        ivf = index.ivf()
        if ivf is not None and "nprobe" not in knobs:
            base = ivf.nprobe if nprobe is None else nprobe
            knobs["nprobe"] = int(min(np.ceil(base / share), ivf.nlist))
        return knobs

    def fine_scores(self, fine_q: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return self.fine_store.scores(fine_q, rows)

    def exact_search(
        self, fine_q: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.fine_store.search_exact(fine_q, k, rows=len(self), allowed=allowed)  # committed rows only

    def recoarsened(self, blocks: Iterable[np.ndarray], count: int, train: np.ndarray) -> Callable[[], None]:
        """A new coarse index of the same kind holding ``count`` new coarse vectors (``blocks``, in row
        order; ``train``: a sample to train an index that needs it), built now; the returned function
        swaps it in."""
        target = CoarseIndex(self.coarse_index.dim, self.coarse_index.factory)
        if target.is_flat():
            target = target.grown(blocks, count)
        else:
            if not target.is_trained:
                target.train(train[: self.train_size])
            for block in blocks:
                target.add(block)

        def swap() -> None:
            self.coarse_index = target

        return swap

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """The coarse index and fine store of rows ``keep``, built now (beside searches); the returned
        function swaps them in (under the write lock)."""
        coarse = self.coarse_index.compacted(keep)
        fine = self.fine_store.compacted(keep)

        def swap() -> None:
            self.coarse_index = coarse
            self.fine_store.adopt(fine)

        return swap

    def vectors(self, view: str, start: int, stop: int) -> np.ndarray:
        if view == "coarse":
            rows = self.coarse_index.reconstruct_n(start, max(stop - start, 0))
            if self.coarse_index.is_flat():
                return rows
            return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)  # decoded codes
        if view == "fine":
            return np.asarray(self.fine_store.vectors[start:stop], dtype=np.float32)
        raise InvalidArgument(f"view must be 'coarse' or 'fine', got {view!r}")

    def search_parameters(
        self, depth: int | None = None, calibrated: dict[str, int] | None = None, **knobs: Any
    ) -> Any:
        """FAISS's per-call parameters (``nprobe``, ``efSearch``, ``k_factor``, ``max_codes``), checked, as a
        dict :meth:`coarse_search` builds FAISS's parameters from; an HNSW index given a calibrated ``depth``
        searches with ``efSearch`` at least that (recorded as ``depth``; under a filter, widened from it) (FAISS's HNSW
        explores ``max(efSearch, k)`` candidates, so a shortlist shorter than the depth it was calibrated
        at would otherwise come from a shallower search than the one measured); an IVF index searches
        with the ``nprobe`` a calibration chose (``calibrated``; recorded as ``base_nprobe``: under a
        filter, widened from it) unless the call gives one."""
        self.coarse_index.search_parameters(**knobs)  # checked here, built per search (with its rows)
        ef = self.coarse_index.hnsw_ef()
        if depth is not None and ef is not None and "efSearch" not in knobs and depth > ef:
            knobs = {**knobs, "depth": int(depth)}  # coarse_search explores at least this deep
        nprobe = (calibrated or {}).get("nprobe")
        if nprobe is not None and "nprobe" not in knobs and self.coarse_index.ivf() is not None:
            knobs = {**knobs, "base_nprobe": int(nprobe)}
        return knobs or None

    def set_knobs(self, **knobs: Any) -> None:
        self.coarse_index.set_knobs(**knobs)

    def files(self) -> dict[str, FileWriter]:
        """The coarse index, the fine store and the document ids (the id list lives here, with them)."""
        committed = len(self)  # the fine store may hold an add's rows not yet committed
        coarse = self.coarse_index
        shards = {
            "coarse" if i == 0 else f"coarse-{i}": ("faiss", functools.partial(coarse.save, shard=i))
            for i in range(len(coarse.shards))
        }
        return {
            **shards,  # a Flat index grown in shards: one file per shard
            "fine": ("npy", lambda path: self.fine_store.save(path, rows=committed)),
            **extra_writers(list(self.ids.ids[:committed]), None, None),
        }

    def manifest(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": self.coarse_index.factory,
            "fine_dtype": self.fine_store.dtype,
            "train_size": self.train_size,
        }

    def nbytes(self) -> tuple[int, int]:
        return self.coarse_index.nbytes(), self.fine_store.nbytes()

    def remade(self, coarse_dim: int, index: str) -> FaissBackend:
        """An empty backend like this empty one (its fine dtype, fine file, training sample) for a coarse view
        of ``coarse_dim`` dims in the coarse index ``index``; this one's file is removed first.

        Raises:
            InvalidArgument: a factory string FAISS cannot build."""
        assert len(self.fine_store) == 0 and len(self.coarse_index) == 0, "only an empty backend is remade"
        options = FaissOptions(
            index=index,
            fine_dtype=self.fine_store.dtype,
            fine_path=self.fine_store.path,
            train_size=self.train_size,
        )
        CoarseIndex(coarse_dim, index)  # a string FAISS refuses: refused before anything is removed
        self.close()
        self.discard()
        return FaissBackend.create(coarse_dim, self.fine_store.dim, options)

    def discard(self) -> None:
        if self.fine_store.path is not None:
            self.fine_store.path.unlink(missing_ok=True)

    def close(self) -> None:
        self.fine_store.close()

    def describe(self) -> str:
        return self.coarse_index.factory
