"""The funnel on Qdrant: both views per document as named vectors, the funnel as one server-side query.

Each document is a point whose id is its internal row, with two named vectors, ``coarse`` and ``fine``
(dot product over L2-normalised view vectors: cosine, as the FAISS funnel scores). A search is one
``query_points`` call per query (batched with ``query_batch_points``)::

    prefetch: query=coarse vector, using="coarse", limit=candidates     # recall on the coarse view
    query:    fine vector, using="fine", limit=k                          # re-rank those candidates only

so the fine vectors are compared only with the candidates, where they live, and nothing but ``k`` ids
and scores comes back. The same client code runs in-process (``location=":memory:"`` or ``path=``:
Qdrant's local mode, used by the tests) and against a Qdrant server or cluster (``location=URL``), where
the coarse vectors get an HNSW index and the fine ones are stored without one (they are only re-ranked).
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

try:
    from qdrant_client import QdrantClient, models
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "backend='qdrant' needs the qdrant-client package: pip install 'adaptive-retrieval[scale]'"
    ) from err

_KNOBS = ("hnsw_ef", "exact")


class QdrantBackend:
    """A Qdrant collection holding a retriever's two views; see the module docstring.

    Args:
        coarse_dim, fine_dim: the views' dimensions.
        location: ``":memory:"`` (default), or a server URL such as ``"http://localhost:6333"``.
        path: a folder for Qdrant's local on-disk mode (instead of ``location``).
        collection: the collection name (default: a new unique name); an existing one is refused.
        client: a ready :class:`qdrant_client.QdrantClient` (instead of ``location``/``path``).
        hnsw: build an HNSW graph on the coarse vectors (a server's default); the fine vectors never
            get one. Local mode always searches exactly.
        upload_batch: points per upsert request.
    """

    def __init__(
        self,
        coarse_dim: int,
        fine_dim: int,
        *,
        location: str | None = None,
        path: str | None = None,
        collection: str | None = None,
        client: Any = None,
        hnsw: bool = True,
        upload_batch: int = 256,
    ) -> None:
        self._own_client = client is None
        if client is None:
            if location is not None and path is not None:
                raise ValueError("give backend_options location= or path=, not both")
            client = QdrantClient(path=path) if path is not None else QdrantClient(location or ":memory:")
        self.client = client
        self.collection = collection or f"adaptive-retrieval-{uuid.uuid4().hex[:8]}"
        if self.client.collection_exists(self.collection):
            raise ValueError(
                f"Qdrant collection {self.collection!r} already exists; choose another collection= name"
            )
        self.upload_batch = upload_batch
        self._search_params: dict[str, Any] = {}
        self.client.create_collection(
            self.collection,
            vectors_config={
                "coarse": models.VectorParams(
                    size=coarse_dim,
                    distance=models.Distance.DOT,
                    hnsw_config=None if hnsw else models.HnswConfigDiff(m=0),
                ),
                "fine": models.VectorParams(
                    size=fine_dim, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0)
                ),
            },
        )

    def __len__(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def add(self, first_row: int, coarse: np.ndarray, fine: np.ndarray) -> None:
        """Upsert documents with internal ids ``first_row, first_row + 1, ...``."""
        coarse = np.asarray(coarse, dtype=np.float32)
        fine = np.asarray(fine, dtype=np.float32)
        for start in range(0, len(coarse), self.upload_batch):
            end = min(start + self.upload_batch, len(coarse))
            self.client.upsert(
                self.collection,
                points=models.Batch(
                    ids=list(range(first_row + start, first_row + end)),
                    vectors={"coarse": coarse[start:end].tolist(), "fine": fine[start:end].tolist()},
                ),
                wait=True,
            )

    def remove_from(self, start: int) -> None:
        """Delete the points with ids ``start..`` (the roll-back of a failed add; ids are contiguous)."""
        extra = len(self) - start
        if extra > 0:
            self.client.delete(
                self.collection,
                points_selector=models.PointIdsList(points=list(range(start, start + extra))),
                wait=True,
            )

    def close(self) -> None:
        """Close the client if this backend created it (a client passed in stays the caller's)."""
        if self._own_client:
            self.client.close()

    def search_parameters(self, **knobs: Any) -> models.SearchParams | None:
        """Per-call search parameters: ``hnsw_ef`` (HNSW beam width on a server), ``exact``; checked
        here, over the defaults :meth:`set_knobs` set."""
        unknown = [k for k in knobs if k not in _KNOBS]
        if unknown:
            raise ValueError(f"unknown Qdrant search parameter {unknown[0]!r}; known: {', '.join(_KNOBS)}")
        if "hnsw_ef" in knobs and (
            isinstance(knobs["hnsw_ef"], bool)
            or not isinstance(knobs["hnsw_ef"], int)
            or knobs["hnsw_ef"] < 1
        ):
            raise ValueError(f"search parameter hnsw_ef must be an int >= 1, got {knobs['hnsw_ef']!r}")
        if "exact" in knobs and not isinstance(knobs["exact"], bool):
            raise ValueError(f"search parameter exact must be True or False, got {knobs['exact']!r}")
        merged = {**self._search_params, **knobs}
        return models.SearchParams(**merged) if merged else None

    def set_knobs(self, **knobs: Any) -> None:
        """Default search parameters of later searches (a configuration step, never done by a search)."""
        self.search_parameters(**knobs)
        self._search_params.update(knobs)

    def search(
        self,
        coarse_q: np.ndarray,
        fine_q: np.ndarray,
        k: int,
        candidates: int,
        params: models.SearchParams | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The funnel for each query, server-side: ``(D, I)`` of shape ``(n_queries, k)``, internal ids,
        padded with ``-1`` / ``-inf`` as FAISS does. ``params``: from :meth:`search_parameters` (default:
        the defaults)."""
        if params is None:
            params = self.search_parameters()
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(
                    query=c.tolist(), using="coarse", limit=max(candidates, k), params=params
                ),
                query=f.tolist(),
                using="fine",
                limit=k,
            )
            for c, f in zip(coarse_q, fine_q)
        ]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        D = np.full((len(requests), k), -np.inf, dtype=np.float32)
        I = np.full((len(requests), k), -1, dtype=np.int64)
        for row, answer in enumerate(answers):
            # equal scores: lower id first, as the FAISS funnel breaks ties
            points = sorted(answer.points, key=lambda p: (-p.score, p.id))[:k]
            D[row, : len(points)] = [p.score for p in points]
            I[row, : len(points)] = [p.id for p in points]
        return D, I
