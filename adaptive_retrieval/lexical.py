"""The lexical index beside the vectors: BM25 over every row's text.

A document's *terms* (:meth:`LexicalIndex.terms`, the one definition): its text lower-cased, split into
words of two or more word characters, stop words of the index's language dropped (``bm25s``' lists),
each word stemmed by Snowball (PyStemmer). Scores are ``bm25s``' Lucene BM25 (tests hold them to
``bm25s``' own to float32 precision): a term's weight in a row is
``idf * tf / (tf + k1 * (1 - b + b * length / mean length))``, ``idf = log(1 + (N - df + 0.5) / (df + 0.5))``.

What is held is an inverted index of term counts, not scores, so that a write appends to it instead of
rebuilding it: for each term its postings (the rows holding it, in order, each as a varint of its gap
from the previous row and whether the term occurs more than once there, the counts above 1 kept aside),
and each row's length. About 1.3 bytes per distinct term of a row on SciFact-like text, where ``bm25s``'
matrix of float32 scores and int32 rows takes 8 (and had to be rebuilt over every row when one was
added). The scores are computed at search for the query's terms only. Rows are the id map's rows: a
deleted document's row stays (it never matches, being masked by every search) until compaction drops it.

Writing is two-phase like every store of an index (:mod:`adaptive_retrieval.writer`): :meth:`LexicalIndex.stage` takes
the new rows' texts, :meth:`LexicalIndex.prepare` builds the new postings beside searches, :meth:`LexicalIndex.commit` swaps them in
under the write lock, :meth:`LexicalIndex.rollback` drops them. Searches read one state (a tuple swapped by reference).
Saved as ``lexical-<gen>.npz`` (the postings, vocabulary, each row's document id), uncompressed, so that a
loaded index reads its postings memory-mapped from the file, as the fine store is; an index saved in the
earlier layout (each row's term ids) is converted at load.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexDamaged, InstallationError, InvalidArgument
from .postings import (
    ARRAYS,
    Postings,
    check,
    count_dtype,
    counted,
    encoded,
    mapped,
    members,
    norms,
    pointer_of,
    varints,
)

logger = logging.getLogger(__name__)

_WORD = re.compile(r"(?u)\b\w\w+\b")
_STOPWORD_LISTS = {
    "english": "STOPWORDS_EN", "german": "STOPWORDS_GERMAN", "dutch": "STOPWORDS_DUTCH",
    "french": "STOPWORDS_FRENCH", "spanish": "STOPWORDS_SPANISH", "portuguese": "STOPWORDS_PORTUGUESE",
    "italian": "STOPWORDS_ITALIAN", "russian": "STOPWORDS_RUSSIAN", "swedish": "STOPWORDS_SWEDISH",
    "norwegian": "STOPWORDS_NORWEGIAN", "turkish": "STOPWORDS_TURKISH", "danish": "STOPWORDS_DANISH",
}  # fmt: skip
"""The languages ``bm25s`` has a stop-word list for (the others are stemmed and keep every word)."""


def _libraries() -> tuple[Any, Any]:
    try:
        import bm25s.stopwords
        import Stemmer
    except ImportError as err:
        raise InstallationError(
            f"the lexical index needs bm25s and PyStemmer ({err}): pip install bm25s PyStemmer"
        ) from None
    return bm25s.stopwords, Stemmer


def languages() -> list[str]:
    """The languages a lexical index can stem (Snowball's, through PyStemmer)."""
    return sorted(_libraries()[1].algorithms())


class Terms:
    """What every lexical index holds whatever holds its postings: its language (stemmer and stop words),
    BM25's ``k1`` and ``b``, the vocabulary (each term's id) and the one definition of a text's terms.

    Args:
        language: the stemmer's and stop words' language (:func:`adaptive_retrieval.lexical.languages`); ``"english"`` by default.
        k1, b: BM25's term-frequency saturation and length normalisation (``bm25s``' defaults).

    Raises:
        InvalidArgument: a language Snowball does not stem, or a bad ``k1``/``b``.
        InstallationError: bm25s or PyStemmer is not installed.
    """

    def __init__(self, language: str = "english", *, k1: float = 1.5, b: float = 0.75) -> None:
        stopwords, stemmer = _libraries()
        if not isinstance(language, str) or language not in stemmer.algorithms():
            raise InvalidArgument(
                f"language={language!r} has no stemmer: choose one of {', '.join(languages())}"
            )
        if not (isinstance(k1, (int, float)) and k1 >= 0 and isinstance(b, (int, float)) and 0 <= b <= 1):
            raise InvalidArgument(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.language, self.k1, self.b = language, float(k1), float(b)
        self._stem = stemmer.Stemmer(language).stemWords
        listed = _STOPWORD_LISTS.get(language)
        self._stop = frozenset(getattr(stopwords, listed)) if listed else frozenset()
        self.vocabulary: dict[str, int] = {}

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

    @property
    def settings(self) -> dict[str, Any]:
        """What the manifest records: ``{"language", "k1", "b"}``."""
        return {"language": self.language, "k1": self.k1, "b": self.b}

    @property
    def vocabulary_bytes(self) -> int:
        """The bytes of the vocabulary's Python objects (the dict, its strings and ids)."""
        words = self.vocabulary
        return sys.getsizeof(words) + sum(sys.getsizeof(w) + sys.getsizeof(i) for w, i in words.items())

    @staticmethod
    def _idf(df: np.ndarray, rows: int) -> np.ndarray:
        return np.log1p((rows - df + 0.5) / (df + 0.5))

    def stage_delete(self, rows: Sequence[int]) -> None:
        """A write deletes these committed rows: nothing to do where a dead row's postings stay (masked by
        every search) until compaction, as here."""

    # the write protocol's last steps, the same for both kinds: each holds its searched state in
    # ``_state`` (and the one before the last commit in ``_last``), builds ``_next`` in ``prepare()``,
    # drops what is staged in ``_clear()`` and counts the terms its state knows in ``_terms_known()``

    def commit(self) -> None:
        """Make the staged rows count in searches (under the write lock)."""
        if self._next is None:
            self.prepare()
        if self._next is not None:
            self._last, self._state = self._state, self._next
            self.vocabulary = self._staged_vocabulary or self.vocabulary
        self._clear()

    def rollback(self, committed: bool) -> None:
        """Drop the staged rows; ``committed``: undo the last commit too."""
        if committed and self._last is not None:
            self._state, self._last = self._last, None
            self.vocabulary = {t: i for t, i in self.vocabulary.items() if i < self._terms_known()}
        self._clear()


class LexicalIndex(Terms):
    """BM25 over the texts of an index's rows, its postings held here (see the module docstring and
    :class:`adaptive_retrieval.lexical.Terms` for the arguments)."""

    def __init__(self, language: str = "english", *, k1: float = 1.5, b: float = 0.75) -> None:
        super().__init__(language, k1=k1, b=b)
        self._state = self._empty()
        self._staged: list[np.ndarray] = []
        self._staged_vocabulary: dict[str, int] | None = None
        self._next: Postings | None = None
        self._last: Postings | None = None  # the state before the last commit (for a roll-back after it)
        self._source: Path | None = None  # the file whose postings the state reads mapped

    def _empty(self) -> Postings:
        none = np.empty(0, np.int64)
        return encoded(none, none, none, none, 0, self.k1, self.b)

    def __len__(self) -> int:
        """The committed rows."""
        return self._state.rows

    @property
    def stats(self) -> dict[str, Any]:
        """The index's size: rows, distinct terms, postings (a term in a row), the bytes its arrays hold
        (``bytes``), of those the bytes read memory-mapped from its saved file (``mapped``: in RAM only as
        far as searches touch them), and the vocabulary's Python objects (``vocabulary_bytes``)."""
        s = self._state
        arrays = [getattr(s, name) for name in (*ARRAYS, "norm")]
        return {
            "language": self.language, "rows": len(self), "terms": s.vocabulary, "postings": int(s.pointer[-1]),
            "bytes": int(sum(a.nbytes for a in arrays)),
            "mapped": int(sum(a.nbytes for a in arrays if mapped(a))),
            "vocabulary_bytes": self.vocabulary_bytes,
        }  # fmt: skip

    # ------------------------------------------------------------------------------------ writing

    def stage(self, texts: Sequence[str]) -> None:
        """Take the terms of new rows (after the committed and earlier staged ones); invisible to searches.
        Returns ``None``: the engine is given no terms to hold (the postings are here)."""
        if self._staged_vocabulary is None:
            self._staged_vocabulary = dict(self.vocabulary)
        self._staged.extend(self._ids(t, self._staged_vocabulary, grow=True) for t in texts)

    def prepare(self) -> None:
        """Append the staged rows' postings to a copy of the committed ones (beside searches)."""
        if not self._staged:
            self._next = None
            return
        s = self._state
        vocabulary = len(self._staged_vocabulary or self.vocabulary)
        terms, rows, counts = counted(self._staged, s.rows)
        lengths = np.concatenate([s.lengths, [len(t) for t in self._staged]]).astype(np.uint32)
        grown = vocabulary - s.vocabulary

        def extended(pointer: np.ndarray) -> np.ndarray:
            return np.concatenate([pointer, np.full(grown, pointer[-1])])

        offset, extra_pointer = extended(s.offset), extended(s.extra_pointer)
        last = np.concatenate([s.last, np.full(grown, -1, np.int64)])
        # the new postings come after every old one of their term: each term's first new gap is from its
        # last old row (or from 0), the others from the previous new row
        first = np.ones(len(terms), bool)
        first[1:] = terms[1:] != terms[:-1]
        before = last[terms[first]]
        gaps = np.diff(rows, prepend=0)
        gaps[first] = np.where(before >= 0, rows[first] - before, rows[first])
        codes, sizes = varints(gaps << 1 | (counts > 1))
        final = np.zeros(len(terms), bool)  # each term's last new posting
        final[:-1], final[-1:] = first[1:], True
        last[terms[final]] = rows[final]
        more = counts > 1
        dtype = max(count_dtype(counts[more]), s.extra.dtype, key=lambda d: d.itemsize)
        self._next = Postings(
            lengths,
            extended(s.pointer) + pointer_of(terms, vocabulary),
            offset + pointer_of(terms, vocabulary, sizes),
            np.insert(s.codes, np.repeat(offset[terms + 1], sizes), codes),
            np.insert(s.extra.astype(dtype), extra_pointer[terms[more] + 1], counts[more].astype(dtype)),
            extra_pointer + pointer_of(terms[more], vocabulary),
            last,
            norms(lengths, self.k1, self.b),
        )

    def _clear(self) -> None:
        self._staged, self._staged_vocabulary, self._next = [], None, None

    def _terms_known(self) -> int:
        return self._state.vocabulary

    def _realigned(self, state: Postings, rows: Sequence[int | None]) -> Postings:
        """``state`` with its rows in a new order: new row ``i`` is old row ``rows[i]`` (``None``: a row
        without terms)."""
        new_of_old = np.full(state.rows + 1, -1, np.int64)
        old = np.array([-1 if r is None else r for r in rows], np.int64)
        new_of_old[old[old >= 0]] = np.flatnonzero(old >= 0)
        terms, old_rows, counts = state.decoded()
        moved = new_of_old[old_rows]
        kept = moved >= 0
        lengths = np.where(old >= 0, state.lengths[np.maximum(old, 0)] if state.rows else 0, 0)
        return encoded(terms[kept], moved[kept], counts[kept], lengths, state.vocabulary, self.k1, self.b)

    def compacted(self, keep: np.ndarray) -> Callable[[], None]:
        """The index of rows ``keep`` only (renumbered ``0..``), built now; returns the swap to run under
        the write lock."""
        new = self._realigned(self._state, [int(r) for r in keep])

        def swap() -> None:
            self._state, self._last = new, None

        return swap

    # ------------------------------------------------------------------------------------ searching

    def query_terms(self, query: str, state: Postings | None = None) -> np.ndarray:
        """The query's known term ids (terms no committed row holds, in ``state`` if given, are dropped)."""
        known = (state or self._state).vocabulary
        return np.asarray([i for i in self._ids(query, self.vocabulary, grow=False) if i < known], np.int32)

    def scores(self, query: str) -> np.ndarray:
        """The BM25 score of every committed row for ``query`` (``(len(self),)`` float32; 0: no term; a term
        the query repeats counts each time, as in ``bm25s``)."""
        s = self._state
        out = np.zeros(s.rows, np.float32)
        for term in self.query_terms(query, s):
            if s.pointer[term + 1] == s.pointer[term]:
                continue
            rows, more, counts = s.checked(term)
            idf = np.float32(self._idf(np.float64(len(rows)), s.rows))
            norm = s.norm[rows]
            weights = np.divide(idf, norm + 1, dtype=np.float32)  # a count of 1, most postings'
            if len(more):  # the rest: their counts aside, in order
                counts = counts.astype(np.float32)
                weights[more] = idf * counts / (counts + norm[more])
            out[rows] += weights
        return out

    def bound(self, query: str) -> float:
        """The most any row could score for ``query`` if every one of its terms were known: the sum of its
        terms' inverse document frequencies (``log(1 + (N - df + 0.5) / (df + 0.5))``, which a term's score
        approaches as its count in a row grows), a term no row holds counted at ``df = 0``. A row's score
        divided by it says how much of the query the row matches (:mod:`adaptive_retrieval.hybrid`'s
        ``"match"`` rule); 0 for a query without terms or an empty index."""
        s = self._state
        if not len(s.codes):
            return 0.0
        ids = self.query_terms(query, s)
        unknown = len(self.terms(query)) - len(ids)
        df = np.concatenate([s.pointer[ids + 1] - s.pointer[ids], np.zeros(unknown)]).astype(np.float64)
        return float(self._idf(df, s.rows).sum())

    def top(self, query: str, m: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The ``m`` best rows for ``query`` among ``allowed`` (bool by row), those with a positive score.

        Returns:
            ``(scores, rows)``, best first (fewer than ``m`` where fewer rows hold a query term).
        """
        return top_rows(self.scores(query), m, allowed)

    def evidence(
        self, queries: Sequence[str], depth: int, allowed: np.ndarray | None, also: Sequence[np.ndarray],
        params: Any = None,
    ) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:  # fmt: skip
        """What a fused search needs of the lexical index, per query: its ``depth`` best rows among
        ``allowed`` (:meth:`top`) and the BM25 scores of the rows ``also`` lists (the funnel's).

        Returns:
            Per query ``(scores, rows, also_scores)``: the best rows and their scores, best first, and
            the scores of ``also``'s rows (0: no term). ``params``: unused here (the engine's filter, for
            an index whose postings an engine holds)."""
        out = []
        for query, rows in zip(queries, also):
            scores = self.scores(query)
            best, found = top_rows(scores, depth, allowed)
            out.append((best, found, scores[np.asarray(rows, np.int64)]))
        return out

    # ------------------------------------------------------------------------------------ files

    def save(self, path: Path, ids: Sequence[Any]) -> None:
        """Write the committed rows' postings, the vocabulary and each row's document id (``ids``, by row;
        ``None`` at a dead row) to ``path`` (an uncompressed ``.npz``: :meth:`load` maps its arrays)."""
        s = self._state
        words = sorted(self.vocabulary, key=self.vocabulary.__getitem__)[: s.vocabulary]
        config = {
            "language": self.language, "k1": self.k1, "b": self.b, "layout": "varint-postings",
            "ids": list(ids)[: len(self)],
        }  # fmt: skip
        arrays = {name: getattr(s, name) for name in ARRAYS}
        if self._source is not None and Path(path).exists() and os.path.samefile(path, self._source):
            arrays = {name: np.array(a) for name, a in arrays.items()}  # read before the file is rewritten
        with open(path, "wb") as fh:
            np.savez(
                fh, **arrays,
                vocabulary=np.frombuffer("\n".join(words).encode(), np.uint8),
                config=np.frombuffer(json.dumps(config).encode(), np.uint8),
            )  # fmt: skip

    @classmethod
    def load(cls, path: Path, ids: Sequence[Any], *, mmap: bool = True) -> LexicalIndex:
        """The index saved at ``path``, its rows realigned to ``ids`` (the id map's, by row; a document the
        file does not hold, e.g. one another writer added to an engine's collection, gets no terms).
        ``mmap``: the postings are read memory-mapped from the file where its rows need no realigning.

        Raises:
            IndexDamaged: a file that is not a saved lexical index."""
        try:
            arrays = members(path, mmap)
            config = json.loads(arrays["config"].tobytes())
            words = arrays["vocabulary"].tobytes().decode()
            index = cls(config["language"], k1=config["k1"], b=config["b"])
            vocabulary = words.split("\n") if words else []
            saved_ids = config["ids"]
            if config.get("layout") == "varint-postings":
                state = Postings(
                    *(arrays[name] for name in ARRAYS),
                    norm=norms(np.asarray(arrays["lengths"]), index.k1, index.b),
                )
                check(state, len(vocabulary), len(saved_ids))
            else:  # the earlier layout: each row's term ids
                indptr, terms = np.asarray(arrays["indptr"], np.int64), np.asarray(arrays["terms"])
                if (
                    len(indptr) != len(saved_ids) + 1
                    or np.any(np.diff(indptr) < 0)
                    or not np.issubdtype(terms.dtype, np.integer)
                    or (len(terms) and (terms.min() < 0 or terms.max() >= len(vocabulary)))
                ):
                    raise ValueError("its arrays disagree")
                parts = [terms[indptr[r] : indptr[r + 1]] for r in range(len(saved_ids))]
                state = encoded(*counted(parts, 0), np.diff(indptr), len(vocabulary), index.k1, index.b)
            index.vocabulary = {w: i for i, w in enumerate(vocabulary)}
            by_id = {json.dumps(d): r for r, d in enumerate(saved_ids) if d is not None}
            # a dead row (no id) keeps its saved row where the file's is dead too: its postings count in
            # BM25's statistics as they did before the save, whether or not the rows are realigned
            rows = [
                by_id.get(json.dumps(d)) if d is not None
                else i if i < len(saved_ids) and saved_ids[i] is None else None
                for i, d in enumerate(ids)
            ]  # fmt: skip
            missing = sum(r is None and d is not None for r, d in zip(rows, ids))
            if missing:
                logger.warning(
                    "%d documents have no terms in the lexical index (added by another writer)", missing
                )
            same = len(ids) == len(saved_ids) and all(r == i for i, r in enumerate(rows))
            index._state = state if same else index._realigned(state, rows)
        except (
            OSError,
            ValueError,
            KeyError,
            TypeError,
            IndexError,
            zipfile.BadZipFile,
            InvalidArgument,
        ) as err:
            raise IndexDamaged(f"{path} is not a readable lexical index: {err}") from None
        index._source = Path(path) if any(mapped(getattr(state, n)) for n in ARRAYS) else None
        return index


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
