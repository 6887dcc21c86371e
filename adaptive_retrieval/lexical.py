"""The lexical index beside the vectors: BM25 over every row's text (scored by ``bm25s``).

A document's *terms* (:meth:`LexicalIndex.terms`, the one definition): its text lower-cased, split into
words of two or more word characters, stop words of the index's language dropped (``bm25s``' lists),
each word stemmed by Snowball (PyStemmer). The terms of every row are kept as term ids (a CSR pair of
arrays), so that the BM25 matrix can be rebuilt without the texts: after a write, at :meth:`LexicalIndex.compacted`
and at load. Rows are the id map's rows: a deleted document's row stays (it never matches, being masked
by every search) until compaction drops it.

Writing is two-phase like every store of an index (:mod:`adaptive_retrieval.writer`): :meth:`LexicalIndex.stage` takes
the new rows' texts, :meth:`LexicalIndex.prepare` builds the new BM25 matrix beside searches, :meth:`LexicalIndex.commit` swaps it in
under the write lock, :meth:`LexicalIndex.rollback` drops it. Searches read one state (a tuple swapped by reference).
Saved as ``lexical-<gen>.npz`` (term ids, vocabulary, each row's document id), realigned by id on load.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexDamaged, InstallationError, InvalidArgument

logger = logging.getLogger(__name__)

_WORD = re.compile(r"(?u)\b\w\w+\b")
_STOPWORD_LISTS = {
    "english": "STOPWORDS_EN", "german": "STOPWORDS_GERMAN", "dutch": "STOPWORDS_DUTCH",
    "french": "STOPWORDS_FRENCH", "spanish": "STOPWORDS_SPANISH", "portuguese": "STOPWORDS_PORTUGUESE",
    "italian": "STOPWORDS_ITALIAN", "russian": "STOPWORDS_RUSSIAN", "swedish": "STOPWORDS_SWEDISH",
    "norwegian": "STOPWORDS_NORWEGIAN", "turkish": "STOPWORDS_TURKISH", "danish": "STOPWORDS_DANISH",
}  # fmt: skip
"""The languages ``bm25s`` has a stop-word list for (the others are stemmed and keep every word)."""


def _libraries() -> tuple[Any, Any, Any]:
    try:
        import bm25s
        import bm25s.stopwords
        import Stemmer
    except ImportError as err:
        raise InstallationError(
            f"the lexical index needs bm25s and PyStemmer ({err}): pip install bm25s PyStemmer"
        ) from None
    return bm25s, bm25s.stopwords, Stemmer


def languages() -> list[str]:
    """The languages a lexical index can stem (Snowball's, through PyStemmer)."""
    return sorted(_libraries()[2].algorithms())


@dataclass(frozen=True)
class _State:
    """What a search reads: the committed rows' terms and their BM25 matrix (``None``: no rows)."""

    indptr: np.ndarray  # (rows + 1,) int64
    terms: np.ndarray  # (total,) term ids (:func:`term_dtype`)
    vocabulary: int  # term ids below this are known to the matrix
    bm25: Any


class LexicalIndex:
    """BM25 over the texts of an index's rows (see the module docstring).

    Args:
        language: the stemmer's and stop words' language (:func:`adaptive_retrieval.lexical.languages`); ``"english"`` by default.
        k1, b: BM25's term-frequency saturation and length normalisation (``bm25s``' defaults).

    Raises:
        InvalidArgument: a language Snowball does not stem, or a bad ``k1``/``b``.
        InstallationError: bm25s or PyStemmer is not installed.
    """

    def __init__(self, language: str = "english", *, k1: float = 1.5, b: float = 0.75) -> None:
        bm25s, stopwords, stemmer = _libraries()
        if not isinstance(language, str) or language not in stemmer.algorithms():
            raise InvalidArgument(
                f"language={language!r} has no stemmer: choose one of {', '.join(languages())}"
            )
        if not (isinstance(k1, (int, float)) and k1 >= 0 and isinstance(b, (int, float)) and 0 <= b <= 1):
            raise InvalidArgument(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.language, self.k1, self.b = language, float(k1), float(b)
        self._bm25s = bm25s
        self._stem = stemmer.Stemmer(language).stemWords
        listed = _STOPWORD_LISTS.get(language)
        self._stop = frozenset(getattr(stopwords, listed)) if listed else frozenset()
        self.vocabulary: dict[str, int] = {}
        self._state = _State(np.zeros(1, np.int64), np.empty(0, np.int32), 0, None)
        self._staged: list[np.ndarray] = []
        self._staged_vocabulary: dict[str, int] | None = None
        self._next: _State | None = None
        self._last: _State | None = None  # the state before the last commit (for a roll-back after it)

    # ------------------------------------------------------------------------------------ terms

    def terms(self, text: str) -> list[str]:
        """A text's terms, in order (see the module docstring)."""
        words = [w for w in _WORD.findall(text.lower()) if w not in self._stop]
        return self._stem(words) if words else []

    def _ids(self, text: str, vocabulary: dict[str, int], grow: bool) -> np.ndarray:
        out = []
        for term in self.terms(text):
            tid = vocabulary.get(term)
            if tid is None and grow:
                tid = vocabulary[term] = len(vocabulary)
            if tid is not None:
                out.append(tid)
        return np.asarray(out, dtype=np.int32)

    def __len__(self) -> int:
        """The committed rows."""
        return len(self._state.indptr) - 1

    @property
    def settings(self) -> dict[str, Any]:
        """What the manifest records: ``{"language", "k1", "b"}``."""
        return {"language": self.language, "k1": self.k1, "b": self.b}

    @property
    def stats(self) -> dict[str, Any]:
        """The index's size: rows, distinct terms, term occurrences, and bytes held."""
        s = self._state
        matrix = 0 if s.bm25 is None else sum(s.bm25.scores[n].nbytes for n in ("data", "indices", "indptr"))
        return {
            "language": self.language, "rows": len(self), "terms": s.vocabulary,
            "postings": len(s.terms), "bytes": int(s.indptr.nbytes + s.terms.nbytes + matrix),
        }  # fmt: skip

    # ------------------------------------------------------------------------------------ writing

    def stage(self, texts: Sequence[str]) -> None:
        """Take the terms of new rows (after the committed and earlier staged ones); invisible to searches."""
        if self._staged_vocabulary is None:
            self._staged_vocabulary = dict(self.vocabulary)
        self._staged.extend(self._ids(t, self._staged_vocabulary, grow=True) for t in texts)

    def prepare(self) -> None:
        """Build the BM25 matrix over the committed and staged rows (beside searches)."""
        if not self._staged:
            self._next = None
            return
        s = self._state
        lengths = np.fromiter((len(t) for t in self._staged), np.int64, len(self._staged))
        indptr = np.concatenate([s.indptr, s.indptr[-1] + np.cumsum(lengths)])
        vocabulary = len(self._staged_vocabulary or self.vocabulary)
        terms = np.concatenate([s.terms, *self._staged]).astype(term_dtype(vocabulary), copy=False)
        self._next = self._built(indptr, terms, vocabulary)

    def commit(self) -> None:
        """Make the staged rows searchable (under the write lock)."""
        if self._next is None and self._staged:
            self.prepare()
        if self._next is not None:
            self._last, self._state = self._state, self._next
            self.vocabulary = self._staged_vocabulary or self.vocabulary
        self._clear()

    def rollback(self, committed: bool) -> None:
        """Drop the staged rows; ``committed``: undo the last commit too."""
        if committed and self._last is not None:
            self._state, self._last = self._last, None
            self.vocabulary = {t: i for t, i in self.vocabulary.items() if i < self._state.vocabulary}
        self._clear()

    def _clear(self) -> None:
        self._staged, self._staged_vocabulary, self._next = [], None, None

    def _built(self, indptr: np.ndarray, terms: np.ndarray, vocabulary: int) -> _State:
        rows = len(indptr) - 1
        if rows == 0 or len(terms) == 0:  # nothing to match: no matrix
            return _State(indptr, terms, vocabulary, None)
        bm25 = self._bm25s.BM25(k1=self.k1, b=self.b)
        docs = [terms[indptr[i] : indptr[i + 1]].tolist() for i in range(rows)]
        bm25.index((docs, {i: i for i in range(vocabulary)}), create_empty_token=False, show_progress=False)
        return _State(indptr, terms, vocabulary, bm25)

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """The index of rows ``keep`` only (renumbered ``0..``), built now; returns the swap to run under
        the write lock."""
        s = self._state
        parts = [s.terms[s.indptr[r] : s.indptr[r + 1]] for r in keep]
        new = self._built(*_stacked(parts, s.vocabulary), s.vocabulary)

        def swap() -> None:
            self._state, self._last = new, None

        return swap

    # ------------------------------------------------------------------------------------ searching

    def query_terms(self, query: str) -> np.ndarray:
        """The query's known term ids (terms no committed row holds are dropped)."""
        s = self._state
        return np.asarray(
            [i for i in self._ids(query, self.vocabulary, grow=False) if i < s.vocabulary], np.int32
        )

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every committed row for ``query`` (``(len(self),)`` float32; 0: no term)."""
        s = self._state
        ids = self.query_terms(query)
        if s.bm25 is None or len(ids) == 0:
            return np.zeros(len(s.indptr) - 1, np.float32)
        return np.asarray(s.bm25.get_scores_from_ids(ids.tolist()), dtype=np.float32)

    def bound(self, query: str) -> float:
        """The most any row could score for ``query`` if every one of its terms were known: the sum of its
        terms' inverse document frequencies (``bm25s``' Lucene form, ``log(1 + (N - df + 0.5) / (df +
        0.5))``, which a term's score approaches as its count in a row grows), a term no row holds counted
        at ``df = 0``. A row's score divided by it says how much of the query the row matches
        (:mod:`adaptive_retrieval.hybrid`'s ``"match"`` rule); 0 for a query without terms or an empty
        index."""
        s = self._state
        if s.bm25 is None:
            return 0.0
        ids = self.query_terms(query)
        unknown = len(self.terms(query)) - len(ids)
        indptr = s.bm25.scores["indptr"]
        df = np.concatenate([indptr[ids + 1] - indptr[ids], np.zeros(unknown)]).astype(np.float64)
        rows = len(s.indptr) - 1
        return float(np.log1p((rows - df + 0.5) / (df + 0.5)).sum())

    def top(self, query: str, m: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` best rows for ``query`` among ``allowed`` (bool by row), those with a positive score.

        Returns:
            ``(scores, rows)``, best first (fewer than ``m`` where fewer rows hold a query term).
        """
        return top_rows(self.scores(query), m, allowed)

    # ------------------------------------------------------------------------------------ files

    def save(self, path: Path, ids: Sequence[Any]) -> None:
        """Write the committed rows' terms, the vocabulary and each row's document id (``ids``, by row;
        ``None`` at a dead row) to ``path`` (an ``.npz``)."""
        s = self._state
        words = sorted(self.vocabulary, key=self.vocabulary.__getitem__)[: s.vocabulary]
        config = {"language": self.language, "k1": self.k1, "b": self.b, "ids": list(ids)[: len(self)]}
        with open(path, "wb") as fh:
            np.savez(
                fh, indptr=s.indptr, terms=s.terms,
                vocabulary=np.frombuffer("\n".join(words).encode(), np.uint8),
                config=np.frombuffer(json.dumps(config).encode(), np.uint8),
            )  # fmt: skip

    @classmethod
    def load(cls, path: Path, ids: Sequence[Any]) -> LexicalIndex:
        """The index saved at ``path``, its rows realigned to ``ids`` (the id map's, by row; a document the
        file does not hold, e.g. one another writer added to an engine's collection, gets no terms).

        Raises:
            IndexDamaged: a file that is not a saved lexical index."""
        try:
            with np.load(path, allow_pickle=False) as saved:
                config = json.loads(saved["config"].tobytes())
                words = saved["vocabulary"].tobytes().decode()
                indptr, terms = saved["indptr"].astype(np.int64), saved["terms"]
            index = cls(config["language"], k1=config["k1"], b=config["b"])
        except (OSError, ValueError, KeyError, TypeError, InvalidArgument) as err:
            raise IndexDamaged(f"{path} is not a readable lexical index: {err}") from None
        vocabulary = words.split("\n") if words else []
        index.vocabulary = {w: i for i, w in enumerate(vocabulary)}
        by_id = {json.dumps(d): r for r, d in enumerate(config["ids"]) if d is not None}
        if (
            len(indptr) != len(config["ids"]) + 1
            or not np.issubdtype(terms.dtype, np.integer)
            or (len(terms) and (terms.min() < 0 or terms.max() >= len(vocabulary)))
        ):
            raise IndexDamaged(f"{path} is not a readable lexical index: its arrays disagree")
        rows = [by_id.get(json.dumps(d)) if d is not None else None for d in ids]
        parts = [terms[indptr[r] : indptr[r + 1]] if r is not None else terms[:0] for r in rows]
        missing = sum(r is None and d is not None for r, d in zip(rows, ids))
        if missing:
            logger.warning(
                "%d documents have no terms in the lexical index (added by another writer)", missing
            )
        index._state = index._built(*_stacked(parts, len(vocabulary)), len(vocabulary))
        return index


def _stacked(parts: list[np.ndarray], vocabulary: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows' term ids as one CSR pair ``(indptr, terms)``."""
    lengths = np.fromiter((len(p) for p in parts), np.int64, len(parts))
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    dtype = term_dtype(vocabulary)
    return indptr, (np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype))


def term_dtype(vocabulary: int) -> np.dtype:
    """How the rows' term ids are held: 2 bytes each while the vocabulary has at most 65,536 terms, else 4."""
    return np.dtype(np.uint16 if vocabulary <= 1 << 16 else np.int32)


def top_rows(scores: np.ndarray, m: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``m`` best rows by ``scores`` among ``allowed`` with a positive score, best first:
    ``(scores, rows)``."""
    if allowed is not None:
        scores = np.where(allowed[: len(scores)], scores, 0)
    candidates = np.flatnonzero(scores > 0)
    if len(candidates) > m:
        candidates = candidates[np.argpartition(-scores[candidates], m - 1)[:m]]
    order = candidates[np.argsort(-scores[candidates], kind="stable")]
    return scores[order], order.astype(np.int64)
