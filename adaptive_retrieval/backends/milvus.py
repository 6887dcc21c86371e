"""The funnel on Milvus: both views per document in one collection, through pymilvus' ``MilvusClient``.

One client for every deployment: ``uri="./papers.db"`` (a file path) runs **Milvus Lite**, the
engine embedded in this process (``pip install milvus-lite``), and ``uri="http://host:19530"`` a Milvus
server or cluster (with ``token=``). Each document is an entity::

    key     INT64 primary key: 63 bits of sha256 of the document id (point_key: the same in every process)
    doc_id  VARCHAR: the document id as JSON (so int and str ids come back as they went in)
    coarse  FLOAT_VECTOR(coarse dim), inner product, index ``coarse_index`` (FLAT by default; HNSW, IVF...)
    fine    FLOAT_VECTOR(fine dim), inner product, FLAT: it is only re-ranked, never searched whole
    add     VARCHAR: the token of the add that wrote it (see :mod:`adaptive_retrieval.backends.keyed`)
    meta    JSON: its metadata, so that a filter runs in Milvus (``meta["section"] == "libs"``) where it
            can be said there (:func:`milvus_expression`); a collection made before has no such field

A search is a batched coarse search for each query's shortlist of keys, then the shortlist re-ranked
in one of two ways (``rerank=``):

- ``"fetch"`` (the default): the shortlist's fine vectors are fetched (``get``) and scored here;
- ``"server"``: one fine search per query, filtered to its shortlist (``filter="key in [...]"``), so the
  re-rank runs where the vectors live and only ``k`` keys and scores come back.

On Milvus Lite the two cost about the same, with the same top 10 either way (``python -m
benchmarks.bench_engines``; the figures, with their results file, are in docs/scaling.md); fetching is
the default; on a remote server, where a fetched shortlist crosses the network (100 x 384 float32:
150 KB a query), measure ``"server"`` too.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np

from ..corpus import DocId
from ..errors import CorpusError, IndexConflict, IndexDamaged, InvalidArgument
from ..filters import Combine, Node
from ..passages import row_id_of
from .base import EngineOptions
from .keyed import (
    COMMITS_SUFFIX,
    KeyedBackend,
    adopted_token,
    client_library,
    lexical_in_engine,
    new_point_key,
    point_key,
)

DataType: Any = None  # pymilvus' names, bound by _import_pymilvus() when an engine is first made
MilvusClient: Any = None


def _import_pymilvus() -> None:
    """Bind pymilvus' names when a Milvus engine is first made (:func:`.keyed.client_library`)."""
    global DataType, MilvusClient
    if MilvusClient is None:
        hint = (
            "backend='milvus' needs pymilvus (and milvus-lite for a local file): "
            "pip install 'adaptive-retrieval[milvus]'"
        )
        pymilvus = client_library("pymilvus", hint)
        DataType = pymilvus.DataType
        MilvusClient = pymilvus.MilvusClient  # bound last: another thread sees both names or neither


logger = logging.getLogger(__name__)

_KNOBS = {"ef": "HNSW beam width", "nprobe": "IVF lists probed"}
_MAX_ID_CHARS = 65_535
_TOKEN_CHARS = 32  # an add token: a uuid4's hex


#: Milvus Lite files open in this process, and how many backends use each: the embedded engine holds a
#: file lock until it is released, so the last backend to close a file releases it (another process
#: can then open it).
_LITE_USERS: dict[str, int] = {}
_LITE_GUARD = threading.Lock()


@dataclasses.dataclass
class MilvusOptions(EngineOptions):
    """A Milvus collection's build options (``Retriever.build(backend=MilvusOptions(uri=...))``).

    Args:
        uri: a file path ending in ``.db`` (Milvus Lite) or a server URI (``http://host:19530``);
            required unless ``client`` is given.
        token: a server's credentials (``"user:password"`` or an API key).
        collection: the collection name (default: a new unique name); an existing one is refused
            (reopen one with ``Retriever.load`` of the directory its retriever was saved to).
        client: a ready ``pymilvus.MilvusClient`` (instead of ``uri``).
        coarse_index: the coarse vectors' Milvus index type (``"FLAT"``, ``"HNSW"``, ``"IVF_FLAT"``...)
            and ``coarse_index_params`` its build parameters (e.g. ``{"M": 16, "efConstruction": 200}``).
        rerank: ``"fetch"`` or ``"server"``: where a shortlist is re-ranked (see the module docstring).
        upload_batch: entities per insert request.
        lexical: where a hybrid index's BM25 postings live: ``"engine"``: each entity holds its document's
            term weights in a sparse vector field (``lexical``, an inverted index), searched by Milvus
            (:mod:`adaptive_retrieval.engine_lexical`); ``"local"``: the lexical index's own postings, in
            the index directory beside the collection; ``None`` (default): ``"engine"`` on a server (or a
            ``client`` given), ``"local"`` on Milvus Lite. Ignored without a lexical index.

    The engine checks these when it is created (``Retriever.build``, ``create_engine``), not here: it
    raises ``InvalidArgument`` for a missing ``uri``, ``client`` beside ``uri`` or another ``rerank``,
    ``IndexConflict`` for an existing collection, and ``ImportError`` without pymilvus.

    Example:
        >>> MilvusOptions(uri="./index.db", coarse_index="HNSW", coarse_index_params={"M": 16}).rerank
        'fetch'
    """

    engine: ClassVar[str] = "milvus"
    uri: str | None = None
    token: str | None = None
    collection: str | None = None
    client: Any = None
    coarse_index: str = "FLAT"
    coarse_index_params: dict[str, Any] | None = None
    rerank: str = "fetch"
    upload_batch: int = 1000
    lexical: str | None = None


def _is_lite(uri: str) -> bool:
    return "://" not in uri


def _lite_open(uri: str) -> None:
    with _LITE_GUARD:
        path = os.path.abspath(uri)
        _LITE_USERS[path] = _LITE_USERS.get(path, 0) + 1


def _lite_close(uri: str) -> None:
    path = os.path.abspath(uri)
    with _LITE_GUARD:
        _LITE_USERS[path] -= 1
        last = _LITE_USERS[path] == 0
        if last:
            del _LITE_USERS[path]
    if last:
        from milvus_lite.server_manager import server_manager_instance

        server_manager_instance.release_server(path)


_NO_TERM = 2**32 - 2
"""The term id of a document without terms (Milvus refuses an empty sparse vector): no query holds it."""


def _sparse(vector: Any) -> dict[int, float]:
    """A sparse vector ``(term ids, weights)`` as Milvus takes it (none, or one without terms: the
    placeholder term ``_NO_TERM``, weighted 1)."""
    if vector is None or not len(vector[0]):
        return {_NO_TERM: 1.0}
    return {int(t): float(w) for t, w in zip(vector[0], vector[1])}


def _key(hit: Any) -> int:
    """A search hit's primary key (Milvus Lite names it by the field, a server ``id``)."""
    try:
        return int(hit["key"])
    except KeyError:
        return int(hit["id"])


class MilvusBackend(KeyedBackend):
    """A Milvus collection holding a retriever's two views; see the module docstring and
    :class:`MilvusOptions` for the arguments (``coarse_dim``, ``fine_dim``: the views' dimensions)."""

    name = "milvus"
    Options = MilvusOptions
    key = staticmethod(point_key)
    renew = staticmethod(new_point_key)
    _MAX_LIMIT = 16_384  # Milvus's largest topk

    def __init__(
        self, coarse_dim: int, fine_dim: int, options: MilvusOptions, *, existing: bool = False
    ) -> None:
        o = options
        uri, client, rerank = o.uri, o.client, o.rerank
        _import_pymilvus()
        if rerank not in ("fetch", "server"):
            raise InvalidArgument(f"rerank={rerank!r}: choose 'fetch' (the default) or 'server'")
        self.rerank_at = rerank  # where a shortlist is re-ranked: "fetch" or "server"
        self.lexical_field = lexical_in_engine(o.lexical, client is not None or not _is_lite(str(uri)))
        if client is None and not uri:
            raise InvalidArgument(
                "backend='milvus' needs backend_options uri=...: a file path such as './index.db' (Milvus "
                "Lite, embedded) or a server URI such as 'http://localhost:19530'"
            )
        if client is not None and uri is not None:
            raise InvalidArgument("give backend_options client= or uri=, not both")
        self._own_client = client is None
        self.uri = None if client is not None else str(uri)
        self.client = client if client is not None else MilvusClient(self.uri, token=o.token or "")
        if self._own_client and _is_lite(self.uri):
            _lite_open(self.uri)
        self.collection = o.collection or f"adaptive_retrieval_{uuid.uuid4().hex[:8]}"
        self.commits = self.collection + COMMITS_SUFFIX
        self.upload_batch = o.upload_batch
        self._created = False
        self._coarse_index: str | None = None if existing else o.coarse_index.upper()
        if existing:
            return
        if self.client.has_collection(self.collection):
            self.close()
            raise IndexConflict(
                f"Milvus collection {self.collection!r} already exists; choose another collection= name, "
                "or reopen it with Retriever.load of the directory its retriever was saved to"
            )
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("key", DataType.INT64, is_primary=True)
        schema.add_field("doc_id", DataType.VARCHAR, max_length=_MAX_ID_CHARS)
        schema.add_field("coarse", DataType.FLOAT_VECTOR, dim=coarse_dim)
        schema.add_field("fine", DataType.FLOAT_VECTOR, dim=fine_dim)
        schema.add_field("add", DataType.VARCHAR, max_length=_TOKEN_CHARS)  # the add's token
        schema.add_field("meta", DataType.JSON)  # the document's metadata
        if self.lexical_field:
            schema.add_field("lexical", DataType.SPARSE_FLOAT_VECTOR)  # its BM25 term weights
        index_params = self.client.prepare_index_params()
        index_params.add_index(
            "coarse", index_type=o.coarse_index, metric_type="IP", params=o.coarse_index_params or {}
        )
        index_params.add_index("fine", index_type="FLAT", metric_type="IP")
        if self.lexical_field:
            index_params.add_index("lexical", index_type="SPARSE_INVERTED_INDEX", metric_type="IP")
        self.client.create_collection(
            self.collection, schema=schema, index_params=index_params, consistency_level="Strong"
        )
        self._created = True
        if not self.client.has_collection(self.commits):
            self._create_commits()
        elif {f["name"] for f in self.client.describe_collection(self.commits)["fields"]} != {"token", "v"}:
            self.client.drop_collection(self.collection)
            self.close()
            raise IndexConflict(
                f"Milvus collection {self.commits!r} exists and is not this library's record of commits; "
                f"choose another collection= name than {self.collection!r}"
            )

    def _create_commits(self) -> None:
        """The companion collection of committed add tokens (Milvus needs a vector field: a constant)."""
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("token", DataType.VARCHAR, max_length=_TOKEN_CHARS, is_primary=True)
        schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)
        index_params = self.client.prepare_index_params()
        index_params.add_index("v", index_type="FLAT", metric_type="IP")
        self.client.create_collection(
            self.commits, schema=schema, index_params=index_params, consistency_level="Strong"
        )

    WHERE = ("uri", "token", "client", "rerank")

    @classmethod
    def saved_options(cls, entry: dict[str, Any], where: dict[str, Any]) -> MilvusOptions:
        where = dict(where)
        if where.get("client") is None and where.get("uri") is None:  # where it was saved
            where["uri"] = entry.get("uri")
        where["rerank"] = where.get("rerank") or entry.get("rerank", "fetch")
        return MilvusOptions(**where, collection=entry["collection"])

    def stored_documents(self) -> tuple[list[Any], list[DocId], list[str | None] | None]:
        """Every entity, in the order the engine lists them (its add's token where that add has not
        committed); a collection released (e.g. by a restart) is loaded again first."""
        if not self.client.has_collection(self.collection):
            raise IndexDamaged(
                f"Milvus collection {self.collection!r} does not exist (any more) at {self.uri!r}"
            )
        self.client.load_collection(self.collection)
        fields = {f["name"] for f in self.client.describe_collection(self.collection)["fields"]}
        self._tags_adds = "add" in fields  # the schema requires it where it has it
        self.native_filters = "meta" in fields  # idem
        self.lexical_field = "lexical" in fields
        self._records_commits = self._tags_adds and self.client.has_collection(self.commits)
        committed: set[str] = set()
        if self._records_commits:
            self.client.load_collection(self.commits)
            committed = self._committed_tokens()
        keys, doc_ids, tokens = [], [], []
        wanted = ["key", "doc_id", "add"] if self._tags_adds else ["key", "doc_id"]
        for e in self._entities(self.collection, wanted):
            keys.append(int(e["key"]))
            doc_ids.append(row_id_of(json.loads(e["doc_id"])))  # a passage: a list in JSON
            token = e.get("add") or None
            tokens.append(adopted_token(keys[-1], token, committed))
        return keys, doc_ids, tokens if self._records_commits else None

    def _entities(self, collection: str, fields: list[str]) -> Iterator[dict[str, Any]]:
        """Every entity of ``collection`` (these fields), as the engine lists them."""
        # Milvus Lite has no timestamp service: the iterator logs that (client and embedded server side)
        # and reads a snapshot as of now, which is what reopening needs
        quiet = [logging.getLogger(name) for name in ("pymilvus", "grpc._server")]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(logging.CRITICAL)
        try:
            it = self.client.query_iterator(collection, batch_size=4096, output_fields=fields)
            while batch := it.next():
                yield from batch
            it.close()
        finally:
            for q, level in zip(quiet, levels):
                q.setLevel(level)

    def _record_tokens(self, tokens: list[str]) -> None:
        self.client.insert(self.commits, [{"token": t, "v": [1.0, 0.0]} for t in tokens])

    def _unrecord_tokens(self, tokens: list[str]) -> None:
        self.client.delete(self.commits, ids=list(tokens))

    def _committed_tokens(self) -> set[str]:
        return {e["token"] for e in self._entities(self.commits, ["token"])}

    def add(
        self, first_row: int, doc_ids: list[DocId], coarse: np.ndarray, fine: np.ndarray,
        metadata: list[dict[str, Any] | None] | None = None, terms: list[Any] | None = None,
    ) -> None:  # fmt: skip
        names = [json.dumps(d) for d in doc_ids]
        long = next((d for d, n in zip(doc_ids, names) if len(n) > _MAX_ID_CHARS), None)
        if long is not None:
            raise CorpusError(
                f"document id {long!r:.80} is longer than Milvus stores ({_MAX_ID_CHARS} characters)"
            )
        keys = self.staged_keys(first_row, doc_ids)
        token = self._stage(keys, doc_ids)
        extra = {} if token is None else {"add": token}
        records = metadata if metadata is not None else [None] * len(keys)
        coarse = np.asarray(coarse, dtype=np.float32)
        fine = np.asarray(fine, dtype=np.float32)
        for start in range(0, len(keys), self.upload_batch):
            end = min(start + self.upload_batch, len(keys))
            self.client.insert(
                self.collection,
                [
                    {
                        "key": keys[i],
                        "doc_id": names[i],
                        "coarse": coarse[i].tolist(),
                        "fine": fine[i].tolist(),
                        **extra,
                        **({"meta": records[i] or {}} if self.native_filters else {}),
                        **(
                            {"lexical": _sparse(None if terms is None else terms[i])}
                            if self.lexical_field
                            else {}
                        ),
                    }
                    for i in range(start, end)
                ],
            )

    #: an add that brings the documents written since the last flush to this many is flushed before its
    #: commit: Milvus scans a growing segment, and searches a flushed (sealed) one by its index. On Milvus
    #: Lite, lexical sparse vectors over 6,904 documents: 43 ms a query with the last 904 unflushed, 15 ms
    #: flushed, 14 ms added 100 at a time, each add flushed; dense views over 10,000: 40 ms and 12 ms. A
    #: flush takes about 0.25 s, less than encoding 100 documents
    FLUSH_AT = 100
    _unflushed = 0
    _counted: str | None = None

    def prepare(self) -> None:
        """:meth:`adaptive_retrieval.backends.keyed.KeyedBackend.prepare`, then the collection flushed where
        :attr:`FLUSH_AT` says (beside searches)."""
        super().prepare()
        token = self._add_token
        if token is not None and self._counted != token:  # an add counts once (prepare runs again at commit)
            self._unflushed += len(self._written)
            self._counted = token
        if self._unflushed >= self.FLUSH_AT:
            self.client.flush(self.collection)
            self._unflushed = 0

    def _present(self, keys: list[Any]) -> set[Any]:
        found = self.client.get(self.collection, ids=keys, output_fields=["key"])
        return {int(e["key"]) for e in found}

    def _delete(self, keys: list[Any]) -> None:
        for i in range(0, len(keys), self.upload_batch):
            self.client.delete(self.collection, ids=keys[i : i + self.upload_batch])

    def _search(
        self, vectors: np.ndarray, field: str, limit: int, params: Any = None, filter: str = ""
    ) -> Any:
        params = dict(params or {})
        if params.get("ef", limit) < limit:  # Milvus refuses an HNSW beam narrower than the answer
            params["ef"] = limit
        return self.client.search(
            self.collection,
            data=np.asarray(vectors, dtype=np.float32).tolist(),
            anns_field=field,
            limit=limit,
            filter=filter,
            output_fields=["key"],
            search_params={"metric_type": "IP", "params": params},
        )

    def _count(self) -> int:
        return int(self.client.query(self.collection, filter="", output_fields=["count(*)"])[0]["count(*)"])

    def _ask(self, field: str, params: Any = None, where: Any = None) -> Any:
        """``ask(vectors, limit)`` for :meth:`adaptive_retrieval.backends.KeyedBackend.known_rows`: one
        batched search."""

        def ask(vectors: np.ndarray, limit: int) -> tuple[list[list[Any]], list[list[float]]]:
            results = self._search(vectors, field, limit, params, filter=where or "")
            return [[_key(h) for h in hits] for hits in results], [
                [h["distance"] for h in hits] for hits in results
            ]

        return ask

    def _compile(self, node: Node) -> str | None:
        return milvus_expression(node)

    def in_engine(self, depth: int, share: float) -> bool:
        """Only where the answers would have to be asked deeper than Milvus answers (16,384): on Milvus
        Lite a filter on the JSON field is read row by row, a search costing several times an unfiltered
        one however few rows match (``python -m benchmarks.bench_filters --indexes milvus``; figures in
        docs/measurements.md), where asking ``depth / share`` deep stays cheap up to that limit."""
        return depth / max(share, 1e-9) > self._MAX_LIMIT

    def _fetch_fine(self, keys: list[Any]) -> dict[Any, np.ndarray]:
        got = self.client.get(self.collection, ids=keys, output_fields=["fine"])
        return {int(e["key"]): np.asarray(e["fine"], dtype=np.float32) for e in got}

    def _ask_lexical(self, where: Any = None) -> Any:
        def ask(queries: np.ndarray, limit: int) -> tuple[list[list[Any]], list[list[float]]]:
            results = self.client.search(
                self.collection,
                data=[_sparse(q) for q in queries],
                anns_field="lexical",
                limit=limit,
                filter=where or "",
                output_fields=["key"],
                search_params={"metric_type": "IP"},
            )
            return [[_key(h) for h in hits] for hits in results], [
                [h["distance"] for h in hits] for hits in results
            ]

        return ask

    def _fetch_sparse(self, keys: list[Any]) -> dict[Any, tuple[np.ndarray, np.ndarray]]:
        got = self.client.get(self.collection, ids=keys, output_fields=["lexical"])
        out = {}
        for e in got:
            held = {int(t): w for t, w in (e.get("lexical") or {}).items() if int(t) != _NO_TERM}
            terms = np.array(sorted(held), np.int64)
            out[int(e["key"])] = (terms, np.array([held[t] for t in terms.tolist()], np.float32))
        return out

    def funnel_in_engine(
        self, coarse_q: np.ndarray, fine_q: np.ndarray, k: int, shortlist: int, params: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float] | None:
        """With ``rerank="server"``: a coarse search (one batched request), then each query's shortlist
        re-ranked by a fine search filtered to it, where the vectors live. ``None`` (the generic path:
        the shortlist's fine vectors fetched and scored here) with ``rerank="fetch"``, or while the
        collection holds documents this retriever does not know."""
        if self.rerank_at == "fetch" or self._foreign():
            return None
        shortlist = max(shortlist, k)
        coarse = self._search(coarse_q, "coarse", shortlist, params)
        t1 = time.perf_counter()
        keys, scores = [], []
        for f, hits in zip(fine_q, coarse):
            listed = [_key(h) for h in hits]
            if not listed:
                keys.append([]), scores.append([])
                continue
            fine = self._search(f[None], "fine", k, filter=f"key in {listed}")[0]
            keys.append([_key(h) for h in fine])
            scores.append([h["distance"] for h in fine])
        D, I = self.rows_of(keys, scores, k)
        return D, I, np.array([len(h) for h in coarse], dtype=np.int64), t1

    def search_parameters(
        self, depth: int | None = None, calibrated: dict[str, int] | None = None, **knobs: Any
    ) -> dict[str, Any] | None:
        """Per-call search parameters of the coarse index: ``ef`` (HNSW), ``nprobe`` (IVF)."""
        for name, value in knobs.items():
            if name not in _KNOBS:
                raise InvalidArgument(f"unknown Milvus search parameter {name!r}; known: {', '.join(_KNOBS)}")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise InvalidArgument(f"search parameter {name} must be an int >= 1, got {value!r}")
        params = {name: int(value) for name, value in knobs.items()}
        if depth is not None and "ef" not in params and self._coarse_type().startswith("HNSW"):
            # HNSW explores max(ef, limit) entities: a calibrated shortlist shorter than its depth
            # searches as deep as the calibration did
            params["ef"] = int(depth)
        return params or None

    def _coarse_type(self) -> str:
        """The coarse vectors' index type (``"FLAT"``, ``"HNSW"``...), read from the engine once."""
        if self._coarse_index is None:
            described = self.client.describe_index(self.collection, "coarse")
            self._coarse_index = str(described.get("index_type", "")).upper()
        return self._coarse_index

    def manifest(self) -> dict[str, Any]:
        if self.uri is None:
            raise InvalidArgument(
                "this retriever's Milvus client was passed in, so its URI is unknown here; save() records "
                "where the collection lives: build with backend_options uri=... to save and reopen it"
            )
        uri = os.path.abspath(self.uri) if _is_lite(self.uri) else self.uri  # loadable from any folder
        return {
            "name": self.name, "collection": self.collection, "uri": uri, "rerank": self.rerank_at,
            "lexical": "engine" if self.lexical_field else "local",
        }  # fmt: skip

    def discard(self) -> None:
        if self._created:
            self.client.drop_collection(self.collection)
            if self.client.has_collection(self.commits):
                self.client.drop_collection(self.commits)
        self.close()

    def close(self) -> None:
        """Close the client if this backend created it (a client passed in stays the caller's)."""
        if self._own_client and self.client is not None:
            self.client.close()
            if _is_lite(self.uri):
                _lite_close(self.uri)  # the last user of a Milvus Lite file releases its lock
            self.client = None

    def describe(self) -> str:
        return f"milvus:{self.collection}"


_ORDER = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


def milvus_expression(node: Node) -> str | None:
    """A filter that :func:`adaptive_retrieval.filters.native` passed, as a Milvus boolean expression
    over the ``meta`` JSON field (``$in`` as a disjunction: Milvus takes ``in`` on fields only; ``$ne``
    and ``$nin`` require the field, as :func:`adaptive_retrieval.filters.evaluate` does), or ``None``
    where a string holds a character Milvus cannot read escaped (a control character other than tab and
    newline: its parser refuses ``\\u`` escapes)."""
    if isinstance(node, Combine):
        parts = [milvus_expression(p) for p in node.parts]
        if any(p is None for p in parts):
            return None
        joiner = " and " if node.op == "$and" else " or "
        return "(" + joiner.join(parts) + ")"  # type: ignore[arg-type]
    path = f'meta["{node.field}"]'  # a plain name (filters.NATIVE_FIELD)
    values = node.value if isinstance(node.value, tuple) else (node.value,)
    # strings quoted and escaped (UTF-8 kept as is), booleans true/false
    literals = [json.dumps(v, ensure_ascii=False) for v in values]
    if any("\\u" in v for v in literals):
        return None
    if node.op in _ORDER:
        return f"{path} {_ORDER[node.op]} {literals[0]}"
    if node.op in ("$eq", "$in"):
        return "(" + " or ".join(f"{path} == {v}" for v in literals) + ")"
    return f"(exists {path} and " + " and ".join(f"{path} != {v}" for v in literals) + ")"  # $ne, $nin
