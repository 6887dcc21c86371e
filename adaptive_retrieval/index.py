"""The two stores of the funnel: a FAISS index over coarse vectors, and a matrix of fine vectors.

Both speak FAISS's vocabulary: searches return ``(D, I)`` arrays of shape ``(n_queries, k)``, scores
are inner products of L2-normalised vectors (cosine similarity), and missing results are ``-1``.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

FINE_DTYPES = ("float16", "float32")

# FAISS factory strings whose search-time knobs can be set through faiss.ParameterSpace.
_KNOBS = ("nprobe", "efSearch", "ht", "k_factor", "max_codes")


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

    def __init__(self, dim: int, factory: str = "Flat", *, index: faiss.Index | None = None) -> None:
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

    @property
    def is_trained(self) -> bool:
        return bool(self.index.is_trained)

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def train(self, vectors: np.ndarray) -> None:
        vectors = _as_matrix(vectors, self.dim, "vectors")
        try:
            self.index.train(vectors)
        except RuntimeError as err:
            raise ValueError(
                f"index={self.factory!r} could not be trained on {len(vectors)} vectors: "
                f"{str(err).strip().splitlines()[-1][:200]}. Use a smaller index (fewer IVF lists) or more documents."
            ) from None

    def add(self, vectors: np.ndarray) -> None:
        if not self.is_trained:
            raise RuntimeError(f"index={self.factory!r} must be trained before vectors are added")
        self.index.add(_as_matrix(vectors, self.dim, "vectors"))

    def search(self, queries: np.ndarray, k: int, **knobs: float) -> tuple[np.ndarray, np.ndarray]:
        """FAISS search: ``(D, I)``, each ``(n_queries, k)``, padded with ``-1`` ids.

        ``knobs`` set search-time parameters such as ``nprobe`` (IVF) or ``efSearch`` (HNSW).
        """
        if knobs:
            self.set_knobs(**knobs)
        return self.index.search(_as_matrix(queries, self.dim, "queries"), k)

    def set_knobs(self, **knobs: float) -> None:
        """Set search-time parameters (``nprobe``, ``efSearch``, ...) on the index."""
        space = faiss.ParameterSpace()
        for name, value in knobs.items():
            if name not in _KNOBS:
                raise ValueError(f"unknown search parameter {name!r}; known: {', '.join(_KNOBS)}")
            try:
                space.set_index_parameter(self.index, name, value)
            except RuntimeError:
                raise ValueError(f"index={self.factory!r} has no search parameter {name!r}") from None

    def nbytes(self) -> int:
        """Size of the serialised index in bytes."""
        return int(faiss.serialize_index(self.index).size)

    def save(self, path: Path) -> None:
        faiss.write_index(self.index, str(path))

    @classmethod
    def load(cls, path: Path, dim: int, factory: str) -> CoarseIndex:
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as err:
            raise ValueError(
                f"{path} is not a readable FAISS index: {str(err).strip().splitlines()[-1][:200]}"
            ) from None
        if index.d != dim:
            raise ValueError(f"{path} holds a {index.d}-dim index, the manifest says {dim}")
        return cls(dim, factory, index=index)


class FineStore:
    """The fine view of every document: a ``(n_docs, dim)`` matrix, float16 by default.

    Row ``i`` belongs to the document with internal id ``i``. Loaded stores are memory-mapped, so only
    the rows of re-ranked candidates are read from disk.
    """

    def __init__(self, vectors: np.ndarray) -> None:
        if vectors.ndim != 2 or vectors.dtype.name not in FINE_DTYPES:
            raise ValueError(
                f"fine vectors must be a 2-D float16/float32 matrix, got {vectors.shape} {vectors.dtype}"
            )
        self.vectors = vectors

    @classmethod
    def empty(cls, dim: int, dtype: str = "float16") -> FineStore:
        if dtype not in FINE_DTYPES:
            raise ValueError(f"fine_dtype={dtype!r} is not supported; choose one of {FINE_DTYPES}")
        return cls(np.empty((0, dim), dtype=dtype))

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

    def appended(self, vectors: np.ndarray) -> FineStore:
        """A new store with ``vectors`` appended (this one is left as it is)."""
        vectors = _as_matrix(vectors, self.dim, "vectors").astype(self.vectors.dtype)
        return FineStore(np.concatenate([np.asarray(self.vectors), vectors]))

    def rerank(self, queries: np.ndarray, candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Score each query's candidate ids with the fine vectors; keep the best ``k``.

        ``candidates`` is ``(n_queries, c)`` with ``-1`` for none. Returns ``(D, I)`` of shape
        ``(n_queries, k)``, best first, ties broken by the lower id, padded with ``-1`` / ``-inf``.
        Scores are float32 inner products (the stored float16 vectors are widened first).
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

    def search_exact(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact search over every stored vector: the reference the funnel is measured against."""
        everyone = np.broadcast_to(np.arange(len(self), dtype=np.int64), (len(queries), len(self)))
        return self.rerank(queries, everyone, k)

    def save(self, path: Path) -> None:
        np.save(path, np.asarray(self.vectors), allow_pickle=False)

    @classmethod
    def load(cls, path: Path, *, mmap: bool = True) -> FineStore:
        try:
            vectors = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ValueError(f"{path} is not a readable fine-vector file: {err}") from None
        return cls(vectors)
