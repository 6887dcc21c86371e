"""The lexical index whose postings an engine holds (Qdrant, Milvus): BM25 as the engine's own sparse
vector search.

Each document's BM25 term weights ride with its vectors, as a sparse vector (``lexical``): term id ->
``tf / (tf + k1 * (1 - b + b * length / mean length))``, the document's side of the score of
:class:`adaptive_retrieval.lexical.LexicalIndex`. A query is the sparse vector of its known terms' inverse
document frequencies (a term the query repeats counts each time, as in ``bm25s``), so the engine's inner
product is the document's BM25 score, and the engine ranks, filters and scales it as it does its dense
searches (a Qdrant server or a Milvus cluster holds the postings, not this process). What stays here is
small: the vocabulary, each term's document frequency and the live documents' count (for the inverse
document frequencies and the ``match`` rule's bound, :meth:`EngineLexicalIndex.bound`), and the mean
length the weights were written with.

Two differences from the local index, both those of postings written once and never rewritten (Qdrant's
own BM25 through fastembed makes the first too, with a fixed mean length):

- the mean length is fixed when the index's first documents are written: the mean of the first batch
  written (a build's first chunk, 10,000 documents), saved with the index; documents added later
  are weighed with it, where the local index re-weighs every document as the mean moves;
- a deleted document leaves the document frequencies and the count when its delete commits (its terms
  are read back from the engine before its points go), where the local index keeps its postings until
  compaction.

An engine that holds the postings (:attr:`adaptive_retrieval.backends.base.Backend.lexical_field`)
writes each document's sparse vector with its dense ones (``add(..., terms=)``) and answers two calls:
``_ask_lexical(where)``, a batched sparse search under its own filter (as its ``_ask`` is for the dense
views), and ``_fetch_sparse(keys)``, the stored sparse vectors; :func:`engine_search` and
:func:`sparse_of` turn those into rows, as the engine's dense answers are.

Writing is two-phase, as every store of an index: :meth:`EngineLexicalIndex.stage` returns the new
documents' sparse vectors, which the engine writes with their dense ones (unseen until the commit);
:meth:`EngineLexicalIndex.prepare` counts their terms beside searches; :meth:`EngineLexicalIndex.commit`
swaps the counts in under the write lock. Saved as ``lexical-<gen>.npz``: the vocabulary, the document
frequencies and the settings (the engine keeps the rest).
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .backends.keyed import asked
from .errors import IndexDamaged, InvalidArgument
from .lexical import Terms
from .postings import members

logger = logging.getLogger(__name__)

LAYOUT = "engine-postings"
"""The saved file's layout name (a local index's is ``varint-postings``)."""

Sparse = tuple[np.ndarray, np.ndarray]
"""A sparse vector: ``(term ids ascending, weights float32)``."""


def engine_search(
    engine: Any, weights: list[Sparse], depth: int, allowed: np.ndarray | None = None, params: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """``engine``'s ``depth`` best rows per query by its lexical sparse vectors (scores: inner products with
    the queries' ``weights``), as ``(D, I)``: ``allowed`` rows only, under the filter in ``params`` where
    the engine runs it (its ``in_engine``), as its coarse search is (``KeyedBackend.coarse_search``)."""
    where = asked(params)[1]
    share = 1.0 if allowed is None else float(np.count_nonzero(allowed)) / max(len(allowed), 1)
    native = where is not None and engine.in_engine(depth, share)
    queries = np.empty(len(weights), dtype=object)
    for i, w in enumerate(weights):
        queries[i] = w
    ask = engine._ask_lexical(where if native else None)
    return engine.known_rows(ask, queries, depth, allowed, native=native)


def sparse_of(engine: Any, rows: Sequence[int]) -> list[Sparse]:
    """These rows' lexical sparse vectors in ``engine``, fetched in one request (none stored: empty)."""
    keys = [engine.ids.key_of(int(r)) for r in rows]
    found = engine._fetch_sparse(sorted(set(keys)))
    empty = (np.zeros(0, np.int64), np.zeros(0, np.float32))
    return [found.get(key, empty) for key in keys]


@dataclass(frozen=True)
class Statistics:
    """What a search reads here: each term's document frequency (``df``, by term id), the live documents'
    count (``rows``) and the mean length the engine's weights were written with (``None``: none yet)."""

    df: np.ndarray
    rows: int
    mean: float | None


class EngineLexicalIndex(Terms):
    """BM25 whose postings ``engine`` holds as sparse vectors (see the module docstring).

    Args:
        engine: a keyed engine whose collection has the ``lexical`` sparse field
            (:attr:`adaptive_retrieval.backends.base.Backend.lexical_field`).
        language, k1, b: as :class:`adaptive_retrieval.lexical.Terms`.
        mean: the mean length the engine's weights were written with (``None``: a new index, fixed by
            its first batch).
    """

    def __init__(
        self, engine: Any, language: str = "english", *, k1: float = 1.5, b: float = 0.75,
        mean: float | None = None,
    ) -> None:  # fmt: skip
        super().__init__(language, k1=k1, b=b)
        if not engine.lexical_field:
            raise InvalidArgument(f"{engine.describe()} holds no lexical sparse vectors")
        self.engine = engine
        self._state = Statistics(np.zeros(0, np.int64), 0, mean)
        self._last: Statistics | None = None
        self._clear()

    def _clear(self) -> None:
        self._staged_vocabulary: dict[str, int] | None = None
        self._added = np.zeros(0, np.int64)  # by term id: the staged new documents holding it
        self._removed = np.zeros(0, np.int64)  # and the staged deleted ones
        self._rows = 0  # the staged documents' count: new ones less deleted ones
        self._staged_mean: float | None = None
        self._next: Statistics | None = None

    @staticmethod
    def _counted(total: np.ndarray, terms: list[np.ndarray]) -> np.ndarray:
        """``total`` plus, by term id, how many of ``terms`` (each a document's distinct terms) hold it."""
        if not terms:
            return total
        found = np.bincount(np.concatenate([np.zeros(0, np.int64), *terms]).astype(np.int64))
        size = max(len(total), len(found))
        return np.pad(total, (0, size - len(total))) + np.pad(found, (0, size - len(found)))

    def __len__(self) -> int:
        """The live documents counted (committed)."""
        return self._state.rows

    @property
    def settings(self) -> dict[str, Any]:
        """What the manifest records: ``{"language", "k1", "b", "postings": "engine"}``."""
        return {**super().settings, "postings": "engine"}

    @property
    def stats(self) -> dict[str, Any]:
        """The index's size here: rows, distinct terms, postings (a term in a document: the sum of the
        document frequencies), the bytes held here (``bytes``: the document frequencies; the postings are
        the engine's), ``mapped`` (0), the vocabulary's Python objects (``vocabulary_bytes``), the engine
        (``where``) and the mean length its weights were written with (``mean_length``)."""
        s = self._state
        return {
            "language": self.language, "rows": s.rows, "terms": len(s.df), "postings": int(s.df.sum()),
            "bytes": int(s.df.nbytes), "mapped": 0, "where": self.engine.describe(), "mean_length": s.mean,
            "vocabulary_bytes": self.vocabulary_bytes,
        }  # fmt: skip

    # ------------------------------------------------------------------------------------ writing

    def stage(self, texts: Sequence[str]) -> list[Sparse]:
        """Take the terms of new documents; returns their sparse vectors, for the engine to write."""
        if self._staged_vocabulary is None:
            self._staged_vocabulary = dict(self.vocabulary)
        rows = [self._ids(t, self._staged_vocabulary, grow=True) for t in texts]
        mean = self._state.mean if self._state.mean is not None else self._staged_mean
        if mean is None:  # the index's first batch fixes the mean length
            mean = self._staged_mean = max(float(np.mean([len(r) for r in rows])) if rows else 0.0, 1.0)
        out = []
        for row in rows:
            terms, counts = np.unique(row, return_counts=True)
            norm = self.k1 * (1 - self.b + self.b * len(row) / mean)
            out.append((terms.astype(np.int64), (counts / (counts + norm)).astype(np.float32)))
        self._added = self._counted(self._added, [terms for terms, _ in out])
        self._rows += len(out)
        return out

    def stage_delete(self, rows: Sequence[int]) -> None:
        """These committed documents die with the write: their terms, read back from the engine now
        (before their points go), leave the document frequencies at the commit."""
        if len(rows):
            self._removed = self._counted(self._removed, [terms for terms, _ in sparse_of(self.engine, rows)])
            self._rows -= len(rows)

    def prepare(self) -> None:
        """The new counts (beside searches)."""
        if not (len(self._added) or len(self._removed) or self._rows):
            self._next = None
            return
        s = self._state
        size = len(self._staged_vocabulary or self.vocabulary)
        df = np.zeros(size, np.int64)
        df[: len(s.df)] = s.df
        df[: len(self._added)] += self._added[:size]
        df[: len(self._removed)] -= self._removed[:size]
        mean = s.mean if s.mean is not None else self._staged_mean
        self._next = Statistics(np.maximum(df, 0), max(s.rows + self._rows, 0), mean)

    def _terms_known(self) -> int:
        return len(self._state.df)

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """Nothing to rebuild: the counts are of live documents already."""
        return lambda: None

    # ------------------------------------------------------------------------------------ searching

    def weights(self, query: str) -> Sparse:
        """The query's sparse vector: each known term's inverse document frequency, times its count in
        the query."""
        s = self._state
        ids = self._ids(query, self.vocabulary, grow=False).astype(np.int64)
        ids = ids[ids < len(s.df)]
        ids = ids[s.df[ids] > 0]
        terms, counts = np.unique(ids, return_counts=True)
        return terms, (self._idf(s.df[terms].astype(np.float64), s.rows) * counts).astype(np.float32)

    def bound(self, query: str) -> float:
        """As :meth:`adaptive_retrieval.lexical.LexicalIndex.bound`: the sum of the query's terms' inverse
        document frequencies, a term no document holds counted at ``df = 0``; 0 for an empty index."""
        s = self._state
        if not s.df.any():
            return 0.0
        terms = self.terms(query)
        ids = self._ids(query, self.vocabulary, grow=False).astype(np.int64)
        ids = ids[ids < len(s.df)]
        df = np.concatenate([s.df[ids], np.zeros(len(terms) - len(ids))]).astype(np.float64)
        return float(self._idf(df, s.rows).sum())

    def evidence(
        self, queries: Sequence[str], depth: int, allowed: np.ndarray | None, also: Sequence[np.ndarray],
        params: Any = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
        """As :meth:`adaptive_retrieval.lexical.LexicalIndex.evidence`: the engine's ``depth`` best
        documents per query (one batched sparse search, under the filter in ``params`` where the engine
        runs it), and the scores of ``also``'s rows from their sparse vectors, fetched in one request."""
        weights = [self.weights(q) for q in queries]
        none = (np.zeros(0, np.float32), np.zeros(0, np.int64))
        found = [none] * len(queries)
        asked = [i for i, (terms, _) in enumerate(weights) if len(terms)]
        if asked:
            D, I = engine_search(self.engine, [weights[i] for i in asked], depth, allowed, params)
            for j, i in enumerate(asked):
                keep = (I[j] >= 0) & (D[j] > 0)
                found[i] = (D[j][keep].astype(np.float32), I[j][keep])
        known = [dict(zip(rows.tolist(), best.tolist())) for best, rows in found]
        wanted = sorted(
            {int(r) for i in asked for r in also[i] if int(r) not in known[i]}
        )  # the funnel's rows the lexical search did not return
        fetched = dict(zip(wanted, sparse_of(self.engine, wanted))) if wanted else {}
        out = []
        for (terms, values), (best, rows), scores_of, funnel in zip(weights, found, known, also):
            scores = np.zeros(len(funnel), np.float32)
            for n, r in enumerate(np.asarray(funnel).tolist() if len(terms) else []):
                if r in scores_of:
                    scores[n] = scores_of[r]
                else:
                    held, weight = fetched[r]
                    _, a, b = np.intersect1d(terms, held, assume_unique=True, return_indices=True)
                    scores[n] = np.dot(values[a], weight[b])
            out.append((best, rows, scores))
        return out

    def top(self, query: str, m: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` best rows for ``query`` among ``allowed``: ``(scores, rows)``, best first."""
        best, rows, _ = self.evidence([query], m, allowed, [np.zeros(0, np.int64)])[0]
        return best, rows

    # ------------------------------------------------------------------------------------ files

    def save(self, path: Path, ids: Sequence[Any] = ()) -> None:
        """Write the vocabulary, the document frequencies and the settings to ``path`` (``.npz``)."""
        s = self._state
        words = sorted(self.vocabulary, key=self.vocabulary.__getitem__)[: len(s.df)]
        config = {**super().settings, "layout": LAYOUT, "rows": s.rows, "mean": s.mean}
        with open(path, "wb") as fh:
            np.savez(
                fh, df=s.df,
                vocabulary=np.frombuffer("\n".join(words).encode(), np.uint8),
                config=np.frombuffer(json.dumps(config).encode(), np.uint8),
            )  # fmt: skip

    @classmethod
    def load(cls, path: Path, ids: Sequence[Any], engine: Any) -> EngineLexicalIndex:
        """The index saved at ``path``, over ``engine``'s reopened collection, whose documents are ``ids``
        (one a row). Documents another writer added since the save are in the engine's postings but not
        in the counts saved here: a warning says how many.

        Raises:
            IndexDamaged: a file that is not a saved lexical index of this layout, or an engine without
                the lexical sparse field."""
        try:
            arrays = members(path, mmap=False)
            config = json.loads(arrays["config"].tobytes())
            if config.get("layout") != LAYOUT:
                raise ValueError(f"its layout is {config.get('layout')!r}")
            words = arrays["vocabulary"].tobytes().decode()
            vocabulary = words.split("\n") if words else []
            df = np.asarray(arrays["df"])
            if df.ndim != 1 or len(df) != len(vocabulary) or not np.issubdtype(df.dtype, np.integer):
                raise ValueError("its arrays disagree")
            index = cls(engine, config["language"], k1=config["k1"], b=config["b"], mean=config["mean"])
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, InvalidArgument) as err:
            raise IndexDamaged(f"{path} is not a readable lexical index: {err}") from None
        if len(ids) != config["rows"]:
            logger.warning(
                "%d documents in the collection, %d counted by its lexical index when it was saved: "
                "documents added or deleted by another writer are not in its document frequencies",
                len(ids), config["rows"],
            )  # fmt: skip
        index.vocabulary = {w: i for i, w in enumerate(vocabulary)}
        index._state = Statistics(df.astype(np.int64), len(ids), config["mean"])
        return index
