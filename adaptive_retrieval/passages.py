"""Long documents as passages, and a search's passages grouped back into documents.

A document longer than the model's max length is split (:func:`split`) into windows of that many
tokens, overlapping by :data:`OVERLAP` tokens, each ending on a paragraph or sentence break where one
lies in its last third. Each passage becomes a row of the index, named by a :class:`Passage`: its
document, its number and its character span in the document's text (:func:`adaptive_retrieval.corpus.
document_text`). A document that fits stays one row, named by its own id. Every store numbers passages
as it numbers documents (vectors, texts, metadata copied from the document, BM25 terms); deleting or
replacing a document kills all its rows (:func:`document_rows`).

A search ranks rows and :func:`group` keeps each document's best passage (its score is the document's),
widening the search until ``k`` documents are found; ``by="passage"`` returns the passages themselves.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

OVERLAP = 48
"""Tokens each passage shares with the one before it: a sentence cut at a window's edge is whole in one."""

_MARGIN = 2  # tokens kept spare: a passage's text tokenized alone may take a token more than its window
_PARAGRAPH = re.compile(r"\n\s*\n")
_SENTENCE = re.compile(r"[.!?;:]\s|\n")


class Passage(NamedTuple):
    """The row id of one passage of a long document: ``doc`` (the document's id), ``n`` (0-based), and the
    passage's character span ``start:end`` in the document's text. Two passages are the same row when their
    document and number are (the span describes the row, it does not name it). Saved as the JSON list
    ``[doc, n, start, end]``.

    Example:
        >>> p = Passage("bash.1", 3, 4210, 5790)
        >>> p == Passage("bash.1", 3, 0, 0), p.doc
        (True, 'bash.1')
    """

    doc: str | int
    n: int
    start: int
    end: int

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Passage) and self.doc == other.doc and self.n == other.n

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(("passage", self.doc, self.n))

    def __repr__(self) -> str:
        return f"Passage({self.doc!r}, {self.n}, {self.start}:{self.end})"


def document_of(row_id: Any) -> Any:
    """The id of the document a row holds (a :class:`Passage`'s document, else the row id itself)."""
    return row_id.doc if isinstance(row_id, Passage) else row_id


def is_continuation(row_id: Any) -> bool:
    """Whether a row is a long document's second or later passage (every document has one row that is not)."""
    return isinstance(row_id, Passage) and row_id.n > 0


def row_id_of(saved: Any) -> Any:
    """A row id read back from JSON: ``[doc, n, start, end]`` is a :class:`Passage`; anything else as it is."""
    if isinstance(saved, list) and len(saved) == 4:
        return Passage(saved[0], int(saved[1]), int(saved[2]), int(saved[3]))
    return saved


def document_rows(ids: Any, doc_id: Any) -> list[Any]:
    """The row ids of a committed document in ``ids`` (an :class:`adaptive_retrieval.ids.IdMap`): ``[doc_id]``,
    its passages in order, or ``[]`` if the index does not hold it."""
    if doc_id in ids:
        return [doc_id]
    rows, n = [], 0
    while (row := ids.row(Passage(doc_id, n, 0, 0))) is not None:
        rows.append(ids[row])
        n += 1
    return rows


def budget(encoder: Any) -> int:
    """How many of a text's own tokens ``encoder`` reads whole (its max length, less the special tokens and
    the document prompt): a longer document is split."""
    tokenizer = encoder.tokenizer
    prompt = encoder.document_prompt
    taken = tokenizer.num_special_tokens_to_add() + (
        len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) if prompt else 0
    )
    return max(encoder.max_length - taken, 8)


def split(
    tokenizer: Any, texts: Sequence[str], size: int, overlap: int = OVERLAP
) -> list[list[tuple[int, int]]]:
    """Each text's passages as character spans ``(start, end)``: one span over the whole text when it has
    at most ``size`` tokens, else windows of ``size`` tokens (less a spare two: a passage's text tokenized
    alone may take a token more) overlapping by ``overlap``, each cut at the last paragraph (else sentence)
    break in its last third when there is one.

    Args:
        tokenizer: a fast Hugging Face tokenizer (character offsets).
        texts: the documents' texts.
        size: tokens per passage (:func:`budget`).
        overlap: tokens shared by consecutive passages (less than half of ``size``).
    """
    overlap = max(min(overlap, (size - _MARGIN) // 2 - 1), 0)
    if not texts:
        return []
    offsets = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
        "offset_mapping"
    ]
    return [
        [(0, len(text))] if len(spans) <= size else _windows(text, spans, max(size - _MARGIN, 4), overlap)
        for text, spans in zip(texts, offsets)
    ]


def _windows(text: str, offsets: Sequence[tuple[int, int]], size: int, overlap: int) -> list[tuple[int, int]]:
    starts = [s for s, _ in offsets]
    out, first, total = [], 0, len(offsets)
    while True:
        last = min(first + size, total)  # the window's tokens: first .. last-1
        if last < total:
            last = _break(text, offsets, starts, first + (2 * size) // 3, last) or last
        out.append((offsets[first][0] if out else 0, offsets[last - 1][1] if last < total else len(text)))
        if last >= total:
            return out
        first = max(last - overlap, first + 1)


def _break(text: str, offsets: Sequence[tuple[int, int]], starts: list[int], lo: int, hi: int) -> int | None:
    """The token after the last paragraph (else sentence) break among tokens ``lo .. hi-1`` (the window's
    end itself when a break lies there), or ``None``."""
    begin, end = offsets[lo][0], offsets[hi - 1][1]
    region = text[begin : end + 1]  # the character after the window: a break right at its end
    for pattern in (_PARAGRAPH, _SENTENCE):
        found = [m.end() for m in pattern.finditer(region)]
        if found:
            cut = bisect.bisect_left(starts, begin + found[-1], lo, hi)
            if lo < cut <= hi:
                return cut
    return None


def expand(
    ids: Sequence[Any],
    texts: Sequence[str],
    metadata: Sequence[Any],
    spans: Sequence[Sequence[tuple[int, int]]],
) -> tuple[list[Any], list[str], list[Any], int]:
    """A chunk of documents as rows: a document of one span stays one row (its id, its text); a longer one
    gives a row per span (a :class:`Passage`, the span's text, the document's metadata).

    Returns:
        ``(row_ids, row_texts, row_metadata, documents split)``.
    """
    row_ids: list[Any] = []
    row_texts: list[str] = []
    row_meta: list[Any] = []
    split_docs = 0
    for doc_id, text, meta, doc_spans in zip(ids, texts, metadata, spans):
        if len(doc_spans) == 1:
            row_ids.append(doc_id)
            row_texts.append(text)
            row_meta.append(meta)
            continue
        split_docs += 1
        for n, (start, end) in enumerate(doc_spans):
            row_ids.append(Passage(doc_id, n, start, end))
            row_texts.append(text[start:end])
            row_meta.append(meta)
    return row_ids, row_texts, row_meta, split_docs


def group(D: np.ndarray, I: np.ndarray, ids: Sequence[Any], k: int) -> tuple[np.ndarray, np.ndarray, bool]:
    """Rows ranked per query (``D``, ``I``, best first, ``-1`` padding) as the ``k`` best documents: each
    document's best row, in order.

    Returns:
        ``(D, I, short)``: ``(n, k)`` scores and rows (each a document's best passage), padded with
        ``-inf``/``-1``; ``short``: some query found fewer than ``k`` documents among its rows.
    """
    out_D = np.full((len(I), k), -np.inf, dtype=np.float32)
    out_I = np.full((len(I), k), -1, dtype=np.int64)
    short = False
    for q, (scores, rows) in enumerate(zip(D.tolist(), I.tolist())):
        seen: set[Any] = set()
        for score, row in zip(scores, rows):
            if row < 0 or len(seen) == k:
                break
            doc = document_of(ids[row])
            if doc not in seen:
                out_D[q, len(seen)], out_I[q, len(seen)] = score, row
                seen.add(doc)
        short = short or len(seen) < k
    return out_D, out_I, short
