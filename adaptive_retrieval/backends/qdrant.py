"""The funnel on Qdrant: both views per document as named vectors, the funnel as one server-side query.

Each document is a point with two named vectors, ``coarse`` and ``fine`` (dot product over
L2-normalised view vectors: cosine, as the FAISS funnel scores), and its document id and its add's
token as payload, with its metadata under ``meta`` (the tokens of committed adds are points of ``<collection>_commits``, which has no
vectors: see :mod:`adaptive_retrieval.backends`). Its
point id is a UUID made from the document id (:func:`adaptive_retrieval.backends.point_uuid`): an add
refuses an id the collection already holds, so writers never overwrite each other's documents, and a
collection can be reopened from any process (:meth:`QdrantBackend.open`). A search is one ``query_points`` per query
(batched with ``query_batch_points``)::

    prefetch: query=coarse vector, using="coarse", limit=candidates     # recall on the coarse view
    query:    fine vector, using="fine", limit=k                          # re-rank those candidates only

so the fine vectors are compared only with the candidates, where they live, and nothing but ``k`` ids
and scores comes back. A metadata filter runs in Qdrant (a payload filter on ``meta.<field>``) where it
can say it (:func:`qdrant_filter`); a server filters faster on fields given a payload index
(``client.create_payload_index(collection, "meta.<field>", ...)``). The same client code runs against a Qdrant server or cluster
(``location=URL``), where the coarse vectors get an HNSW index and the fine ones are stored without one
(they are only re-ranked), and in-process (``location=":memory:"`` or ``path=``): **Qdrant's local
mode, a Python emulation of the engine's API, not the engine** (it always searches exactly); the tests
run on it.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..corpus import DocId
from ..errors import IndexConflict, IndexDamaged, InvalidArgument
from ..filters import Combine, Node, kind_of
from ..passages import row_id_of
from .base import EngineOptions
from .keyed import (
    COMMITS_SUFFIX,
    KeyedBackend,
    adopted_token,
    client_library,
    lexical_in_engine,
    new_point_uuid,
    point_uuid,
)

if TYPE_CHECKING:  # for readers and pdoc; at run time the names are bound at the first use
    from qdrant_client.models import SearchParams

QdrantClient: Any = None  # qdrant-client's names, bound by _import_client() when first needed
models: Any = None


def _import_client() -> None:
    """Bind qdrant-client's names when an engine is first made or a filter first compiled
    (:func:`.keyed.client_library`)."""
    global QdrantClient, models
    if models is None:  # bound last: another thread sees both names or neither
        hint = "backend='qdrant' needs the qdrant-client package: pip install 'adaptive-retrieval[scale]'"
        QdrantClient = client_library("qdrant_client", hint).QdrantClient
        models = client_library("qdrant_client.models", hint)


_KNOBS = ("hnsw_ef", "exact")


@dataclasses.dataclass
class QdrantOptions(EngineOptions):
    """A Qdrant collection's build options (``Retriever.build(backend=QdrantOptions(...))``).

    Args:
        location: ``":memory:"`` (default), or a server URL such as ``"http://localhost:6333"``.
        path: a folder for Qdrant's local on-disk mode (instead of ``location``).
        collection: the collection name (default: a new unique name); an existing one is refused
            (reopen one with ``Retriever.load`` of the directory ``save`` wrote).
        client: a ready ``qdrant_client.QdrantClient`` (instead of ``location``/``path``).
        hnsw: build an HNSW graph on the coarse vectors (a server's default); the fine vectors never
            get one. Local mode always searches exactly.
        upload_batch: points per upsert request.
        payload_metadata: keep each document's metadata in its point's payload (``meta``), so that
            filters run in Qdrant; ``False``: filters are applied to Qdrant's answers (asked deeper as
            the share of documents matched falls). A collection saved before payloads held metadata
            reopens without.
        lexical: where a hybrid index's BM25 postings live: ``"engine"``: each point holds its document's
            term weights as a sparse vector (``lexical``), searched by Qdrant
            (:mod:`adaptive_retrieval.engine_lexical`); ``"local"``: the lexical index's own postings, in
            the index directory beside the collection; ``None`` (default): ``"engine"`` on a server (or a
            ``client`` given), ``"local"`` in local mode. Ignored without a lexical index.

    The engine checks these when it is created (``Retriever.build``, ``create_engine``), not here: it
    raises ``InvalidArgument`` for ``client`` beside ``location``/``path`` (or both of those),
    ``IndexConflict`` for an existing collection, and ``ImportError`` without qdrant-client.

    Example:
        >>> options = QdrantOptions(path="./qdrant-data", collection="papers")
        >>> options.location, options.hnsw, options.upload_batch, options.payload_metadata, options.lexical
        (None, True, 256, True, None)
    """

    engine: ClassVar[str] = "qdrant"
    location: str | None = None
    path: str | None = None
    collection: str | None = None
    client: Any = None
    hnsw: bool = True
    upload_batch: int = 256
    payload_metadata: bool = True
    lexical: str | None = None


def _client(location: str | None, path: str | None, client: Any) -> tuple[Any, bool]:
    _import_client()
    if client is not None:
        if location is not None or path is not None:
            raise InvalidArgument("give backend_options client= or location=/path=, not both")
        return client, False
    if location is not None and path is not None:
        raise InvalidArgument("give backend_options location= or path=, not both")
    return (QdrantClient(path=path) if path is not None else QdrantClient(location or ":memory:")), True


class QdrantBackend(KeyedBackend):
    """A Qdrant collection holding a retriever's two views; see the module docstring and
    :class:`QdrantOptions` for the arguments (``coarse_dim``, ``fine_dim``: the views' dimensions)."""

    name = "qdrant"
    Options = QdrantOptions
    key = staticmethod(point_uuid)
    renew = staticmethod(new_point_uuid)

    def __init__(
        self, coarse_dim: int, fine_dim: int, options: QdrantOptions, *, existing: bool = False
    ) -> None:
        o = options
        server = o.client is not None or (o.path is None and o.location not in (None, ":memory:"))
        in_engine = lexical_in_engine(o.lexical, server)
        self.client, self._own_client = _client(o.location, o.path, o.client)
        self.location, self.path = o.location, o.path
        self.collection = o.collection or f"adaptive-retrieval-{uuid.uuid4().hex[:8]}"
        self.commits = self.collection + COMMITS_SUFFIX
        self.upload_batch = o.upload_batch
        self.native_filters = o.payload_metadata
        self._search_params: dict[str, Any] = {}
        self._created = False
        self.lexical_field = in_engine
        if existing:
            return
        if self.client.collection_exists(self.collection):
            self.close()
            raise IndexConflict(
                f"Qdrant collection {self.collection!r} already exists; choose another collection= name, "
                "or reopen it with Retriever.load of the directory its retriever was saved to"
            )
        self.client.create_collection(
            self.collection,
            vectors_config={
                "coarse": models.VectorParams(
                    size=coarse_dim,
                    distance=models.Distance.DOT,
                    hnsw_config=None if o.hnsw else models.HnswConfigDiff(m=0),
                ),
                "fine": models.VectorParams(
                    size=fine_dim, distance=models.Distance.DOT, hnsw_config=models.HnswConfigDiff(m=0)
                ),
            },
            sparse_vectors_config={"lexical": models.SparseVectorParams()} if self.lexical_field else None,
        )
        self._created = True
        if not self.client.collection_exists(self.commits):
            self.client.create_collection(self.commits, vectors_config={})
        elif self.client.get_collection(self.commits).config.params.vectors:  # not a record of commits
            self.client.delete_collection(self.collection)
            self.close()
            raise IndexConflict(
                f"Qdrant collection {self.commits!r} exists and is not this library's record of commits "
                f"(which has no vectors); choose another collection= name than {self.collection!r}"
            )

    WHERE = ("location", "path", "client")

    @classmethod
    def saved_options(cls, entry: dict[str, Any], where: dict[str, Any]) -> QdrantOptions:
        if not where:  # where it was saved
            where = {"location": entry.get("location"), "path": entry.get("path")}
        return QdrantOptions(
            **where, collection=entry["collection"], payload_metadata=bool(entry.get("payload_metadata"))
        )

    def stored_documents(self) -> tuple[list[Any], list[DocId], list[str | None] | None]:
        """Every point, in point-id order (its add's token where that add has not committed)."""
        if not self.client.collection_exists(self.collection):
            raise IndexDamaged(f"Qdrant collection {self.collection!r} does not exist (any more) there")
        self._records_commits = self._tags_adds = self.client.collection_exists(self.commits)
        sparse = self.client.get_collection(self.collection).config.params.sparse_vectors or {}
        self.lexical_field = "lexical" in sparse
        committed = self._committed_tokens() if self._records_commits else set()
        keys: list[str] = []
        doc_ids: list[DocId] = []
        tokens: list[str | None] = []
        for p in self._scroll(self.collection, ["doc_id", "add"]):
            keys.append(str(p.id))
            doc_ids.append(row_id_of(p.payload["doc_id"]))  # a passage: a list in JSON
            token = p.payload.get("add")
            tokens.append(adopted_token(keys[-1], token, committed))
        return keys, doc_ids, tokens if self._records_commits else None  # an older collection: all

    def _scroll(self, collection: str, payload: list[str]) -> Iterator[Any]:
        """Every point of ``collection`` (these payload fields, no vectors), in point-id order."""
        offset = None
        while True:
            points, offset = self.client.scroll(
                collection, limit=4096, offset=offset, with_payload=payload, with_vectors=False
            )
            yield from points
            if offset is None:
                return

    def add(
        self, first_row: int, doc_ids: list[DocId], coarse: np.ndarray, fine: np.ndarray,
        metadata: list[dict[str, Any] | None] | None = None, terms: list[Any] | None = None,
    ) -> None:  # fmt: skip
        keys = self.staged_keys(first_row, doc_ids)
        token = self._stage(keys, doc_ids)
        tags = {} if token is None else {"add": token}
        records = metadata if metadata is not None else [None] * len(keys)
        coarse = np.asarray(coarse, dtype=np.float32)
        fine = np.asarray(fine, dtype=np.float32)
        for start in range(0, len(coarse), self.upload_batch):
            end = min(start + self.upload_batch, len(coarse))
            vectors = {"coarse": coarse[start:end].tolist(), "fine": fine[start:end].tolist()}
            if terms is not None and self.lexical_field:
                vectors["lexical"] = [
                    models.SparseVector(indices=t.tolist(), values=w.tolist()) for t, w in terms[start:end]
                ]
            self.client.upsert(
                self.collection,
                points=models.Batch(
                    ids=keys[start:end],
                    vectors=vectors,
                    payloads=[
                        {"doc_id": d, **tags, **({"meta": m or {}} if self.native_filters else {})}
                        for d, m in zip(doc_ids[start:end], records[start:end])
                    ],
                ),
                wait=True,
            )

    def _record_tokens(self, tokens: list[str]) -> None:
        """One point: the first token, the others (delete records) in its payload, so that the record is
        written whole or not at all (a batch of points is not atomic in every Qdrant)."""
        payload = {"token": tokens[0], **({"deletes": tokens[1:]} if len(tokens) > 1 else {})}
        point = models.PointStruct(id=_record_id(tokens[0]), vector={}, payload=payload)
        self.client.upsert(self.commits, points=[point], wait=True)

    def _unrecord_tokens(self, tokens: list[str]) -> None:
        ids = models.PointIdsList(points=[_record_id(t) for t in tokens])
        self.client.delete(self.commits, points_selector=ids, wait=True)

    def _forget_deletes(self, head: str, records: list[str]) -> None:
        """The record of ``head`` without its delete records (one overwrite)."""
        point = models.PointStruct(id=_record_id(head), vector={}, payload={"token": head})
        self.client.upsert(self.commits, points=[point], wait=True)

    def _committed_tokens(self) -> set[str]:
        """Every recorded token: each record's own and the delete records written with it."""
        out: set[str] = set()
        for r in self._scroll(self.commits, ["token", "deletes"]):
            if "token" in r.payload:
                out.add(r.payload["token"])
                out.update(r.payload.get("deletes") or ())
        return out

    def _count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def _present(self, keys: list[Any]) -> set[Any]:
        found = self.client.retrieve(self.collection, ids=keys, with_payload=False, with_vectors=False)
        return {str(p.id) for p in found}

    def _delete(self, keys: list[Any]) -> None:
        self.client.delete(self.collection, points_selector=models.PointIdsList(points=keys), wait=True)

    def _ask(self, using: str, params: Any = None, where: Any = None) -> Any:
        """``ask(vectors, limit)`` for :meth:`adaptive_retrieval.backends.KeyedBackend.known_rows`: a batch of nearest-point queries."""

        def ask(vectors: np.ndarray, limit: int) -> tuple[list[list[Any]], list[list[float]]]:
            requests = [
                models.QueryRequest(query=v.tolist(), using=using, limit=limit, params=params, filter=where)
                for v in vectors
            ]
            return _keys_scores(self.client.query_batch_points(self.collection, requests=requests))

        return ask

    def _compile(self, node: Node) -> Any:
        where = qdrant_filter(node)
        return where if where is None or isinstance(where, models.Filter) else models.Filter(must=[where])

    def _fetch_fine(self, keys: list[Any]) -> dict[Any, np.ndarray]:
        points = self.client.retrieve(self.collection, ids=keys, with_vectors=["fine"])
        return {str(p.id): np.asarray(p.vector["fine"], dtype=np.float32) for p in points}

    def _exact_params(self) -> Any:
        return models.SearchParams(exact=True)

    def _ask_lexical(self, where: Any = None) -> Any:
        def ask(queries: np.ndarray, limit: int) -> tuple[list[list[Any]], list[list[float]]]:
            requests = [
                models.QueryRequest(
                    query=models.SparseVector(indices=t.tolist(), values=w.tolist()),
                    using="lexical",
                    limit=limit,
                    filter=where,
                )
                for t, w in queries
            ]
            return _keys_scores(self.client.query_batch_points(self.collection, requests=requests))

        return ask

    def _fetch_sparse(self, keys: list[Any]) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
        points = self.client.retrieve(self.collection, ids=keys, with_vectors=["lexical"])
        out = {}
        for p in points:
            vector = (p.vector or {}).get("lexical")
            if vector is not None:
                out[str(p.id)] = (np.asarray(vector.indices, np.int64), np.asarray(vector.values, np.float32))
        return out

    def funnel_in_engine(
        self, coarse_q: np.ndarray, fine_q: np.ndarray, k: int, shortlist: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        """The funnel server-side, one request per query (batched): the coarse prefetch, then the fine
        re-rank of its candidates. ``None`` (the generic path, fetching fine vectors) while the collection
        holds documents this retriever does not know, whose keys would take shortlist slots unseen. One
        request runs both stages: all of its time counts as the coarse search's."""
        if self._foreign():
            return None
        requests = [
            models.QueryRequest(
                prefetch=models.Prefetch(
                    query=c.tolist(), using="coarse", limit=max(shortlist, k), params=params
                ),
                query=f.tolist(),
                using="fine",
                limit=k,
            )
            for c, f in zip(coarse_q, fine_q)
        ]
        answers = self.client.query_batch_points(self.collection, requests=requests)
        D, I = self.rows_of(*_keys_scores(answers), k)
        return D, I, np.full(len(coarse_q), max(shortlist, k), dtype=np.int64), time.perf_counter()

    def search_parameters(
        self, depth: int | None = None, calibrated: dict[str, int] | None = None, **knobs: Any
    ) -> SearchParams | None:
        """Per-call search parameters: ``hnsw_ef`` (HNSW beam width on a server), ``exact``; checked
        here, over the defaults :meth:`set_knobs` set."""
        unknown = [k for k in knobs if k not in _KNOBS]
        if unknown:
            raise InvalidArgument(
                f"unknown Qdrant search parameter {unknown[0]!r}; known: {', '.join(_KNOBS)}"
            )
        if "hnsw_ef" in knobs and (
            isinstance(knobs["hnsw_ef"], bool)
            or not isinstance(knobs["hnsw_ef"], int)
            or knobs["hnsw_ef"] < 1
        ):
            raise InvalidArgument(f"search parameter hnsw_ef must be an int >= 1, got {knobs['hnsw_ef']!r}")
        if "exact" in knobs and not isinstance(knobs["exact"], bool):
            raise InvalidArgument(f"search parameter exact must be True or False, got {knobs['exact']!r}")
        merged = {**self._search_params, **knobs}
        if depth is not None and "hnsw_ef" not in merged:
            # HNSW explores max(hnsw_ef, limit) points, hnsw_ef defaulting to the graph's ef_construct: a
            # calibrated shortlist shorter than its depth searches as deep as the calibration did
            ef = self._ef_construct()
            if ef is not None and depth > ef:
                merged["hnsw_ef"] = int(depth)
        return models.SearchParams(**merged) if merged else None

    def _ef_construct(self) -> int | None:
        """The coarse vectors' HNSW ``ef_construct`` (``None`` without a graph), read once."""
        if not hasattr(self, "_ef"):
            config = self.client.get_collection(self.collection).config
            own = config.params.vectors["coarse"].hnsw_config  # a diff over the collection's
            m, ef = (config.hnsw_config.m, config.hnsw_config.ef_construct)
            if own is not None:
                m = own.m if own.m is not None else m
                ef = own.ef_construct if own.ef_construct is not None else ef
            self._ef = None if m == 0 else ef
        return self._ef

    def set_knobs(self, **knobs: Any) -> None:
        self.search_parameters(**knobs)
        self._search_params.update(knobs)

    def manifest(self) -> dict[str, Any]:
        if self.path is None and self.location in (None, ":memory:"):
            raise InvalidArgument(
                "this retriever's Qdrant collection is in memory and ends with this process; build it with "
                "backend_options path=... (local mode on disk) or location=<server URL> to save and reopen it"
            )
        return {
            "name": self.name,
            "collection": self.collection,
            "location": self.location,
            "path": None if self.path is None else os.path.abspath(self.path),  # loadable from any folder
            "payload_metadata": self.native_filters,
            "lexical": "engine" if self.lexical_field else "local",
        }

    def discard(self) -> None:
        if self._created:
            self.client.delete_collection(self.collection)
            if self.client.collection_exists(self.commits):
                self.client.delete_collection(self.commits)
        self.close()

    def close(self) -> None:
        """Close the client if this backend created it (a client passed in stays the caller's)."""
        if self._own_client:
            self.client.close()

    def describe(self) -> str:
        return f"qdrant:{self.collection}"


def _record_id(token: str) -> str:
    """A commit record's point id: an add token (a uuid4's hex) as its UUID; a delete record's, a UUID
    derived from it."""
    try:
        return str(uuid.UUID(hex=token))
    except ValueError:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, token))


def _keys_scores(answers: list[Any]) -> tuple[list[list[Any]], list[list[float]]]:
    return [[str(p.id) for p in a.points] for a in answers], [[p.score for p in a.points] for a in answers]


def qdrant_filter(node: Node) -> Any:
    """A filter that :func:`adaptive_retrieval.filters.native` passed, as a Qdrant payload condition on
    ``meta.<field>`` (a ``Filter``, or one ``FieldCondition``), or ``None`` where Qdrant cannot say it (an order of strings). Numbers compare by
    range (integers and floats alike); ``$ne``/``$nin`` require the field, as :func:`adaptive_retrieval.filters.evaluate` does."""
    _import_client()
    if isinstance(node, Combine):
        parts = [qdrant_filter(p) for p in node.parts]
        if any(p is None for p in parts):
            return None
        return models.Filter(must=parts) if node.op == "$and" else models.Filter(should=parts)
    key = f"meta.{node.field}"
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    if node.op in ("$gt", "$gte", "$lt", "$lte"):
        if kind_of(node.value) != "number":
            return None
        return models.FieldCondition(key=key, range=models.Range(**{node.op[1:]: node.value}))
    equal = [_qdrant_equal(key, v) for v in values]
    if node.op in ("$eq", "$in"):
        return equal[0] if len(equal) == 1 else models.Filter(should=equal)
    present = models.Filter(must_not=[models.IsEmptyCondition(is_empty=models.PayloadField(key=key))])
    return models.Filter(must=[present], must_not=equal)  # $ne, $nin


def _qdrant_equal(key: str, value: Any) -> Any:
    if kind_of(value) == "number":  # 1 and 1.0 alike, as the metadata columns compare them
        return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))
