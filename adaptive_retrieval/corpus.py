"""The accepted corpus forms, turned into one stream of ``(doc_id, text)`` pairs.

- a list of strings: ids are positions (counted on from ``first_id`` when growing an index);
- a dict ``id -> text``;
- a dict ``id -> {"title": ..., "text": ...}`` (BEIR's form; the text is ``title + " " + text``);
- any other iterable of ``(id, text)`` pairs, e.g. a generator streaming a large corpus, or of
  ``(id, {"title": ..., "text": ...})`` pairs (the fields beside the text kept as metadata).

Ids are ``str`` or ``int``. Every check happens as the pair enters, naming the offending id.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np

from .errors import CorpusError, CorpusTypeError, InvalidArgument, InvalidArgumentType
from .passages import Passage

DocId = str | int
Corpus = (
    Iterable[str]
    | Mapping[DocId, str]
    | Mapping[DocId, Mapping[str, str]]
    | Iterable[tuple[DocId, str]]
    | Iterable[tuple[DocId, Mapping[str, str]]]
)


def check_id(doc_id: Any, where: str) -> DocId:
    """``doc_id`` as an id (``str`` or ``int``; a NumPy integer becomes an ``int``), or ``TypeError``
    naming ``where`` it came from. A row id of a passage (:class:`adaptive_retrieval.passages.Passage`)
    passes with its document's id checked."""
    if isinstance(doc_id, np.integer):
        return int(doc_id)
    if isinstance(doc_id, Passage):
        check_id(doc_id.doc, where)
        return doc_id
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        raise CorpusTypeError(
            f"corpus: document id at {where} must be a str or int, got {type(doc_id).__name__}: {doc_id!r:.80}"
        )
    return doc_id


def check_text(text: Any, doc_id: DocId, field: str = "text") -> str:
    """``text``, refused unless it is a string (CorpusTypeError naming the document and field)."""
    if not isinstance(text, str):
        raise CorpusTypeError(
            f"corpus: {field} of document {doc_id!r} must be a str, got {type(text).__name__}: {text!r:.80}"
        )
    return text


def check_encodable(text: str, what: str) -> None:
    """``ValueError`` naming ``what`` if ``text`` cannot be written as UTF-8 (a lone surrogate such as
    ``"\\ud800"``, e.g. from a bad decode): tokenizers refuse it deep inside, naming nothing."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidArgument(
            f"{what} is not valid Unicode text: {err.reason} at character {err.start} "
            f"({text[err.start : err.end]!r}); decode the source with errors='replace'"
        ) from None


def document_text(doc: Mapping[str, Any]) -> str:
    """The one definition of a document's text: ``title + " " + text`` (the text alone without a title).
    Indexing, training and every benchmark use it.

    Args:
        doc: a BEIR-style document: ``{"text": ..., "title": ...}`` (the title optional).

    Returns:
        The text to encode.

    Raises:
        KeyError: a document without ``"text"``.

    Example:
        >>> document_text({"title": "Vitamin D", "text": "It helps bones."})
        'Vitamin D It helps bones.'
    """
    title = doc.get("title") or ""
    return f"{title} {doc['text']}".strip() if title else doc["text"]


def _beir_text(doc: Mapping[str, Any], doc_id: DocId) -> str:
    if "text" not in doc:
        raise CorpusError(
            f"corpus: document {doc_id!r} is a dict without a 'text' field (BEIR form is {{'title', 'text'}})"
        )
    check_text(doc.get("title") or "", doc_id, "title")
    check_text(doc["text"], doc_id)
    return document_text(doc)


def _mixed(doc_id: DocId, expected: str, value: Any) -> CorpusError:
    return CorpusError(
        f"corpus mixes forms: document {doc_id!r} is a {type(value).__name__} where earlier documents are "
        f"{expected}; use one form throughout"
    )


def _from_mapping(corpus: Mapping[Any, Any]) -> Iterator[tuple[DocId, str, Any]]:
    form: str | None = None
    for doc_id, value in corpus.items():
        doc_id = check_id(doc_id, repr(doc_id))
        this = "strings" if isinstance(value, str) else "dicts" if isinstance(value, Mapping) else None
        if this is None:
            raise CorpusTypeError(
                f"corpus: document {doc_id!r} must be a str or a {{'title', 'text'}} dict, got {type(value).__name__}"
            )
        form = form or this
        if this != form:
            raise _mixed(doc_id, form, value)
        if this == "strings":
            yield doc_id, value, None
        else:
            yield doc_id, _beir_text(value, doc_id), _metadata(value)


def _metadata(doc: Mapping[str, Any]) -> dict[str, Any] | None:
    """The fields beside a document's text (title, url, ...): its metadata."""
    return {k: v for k, v in doc.items() if k != "text"} or None


def _from_iterable(corpus: Iterable[Any], first_id: int) -> Iterator[tuple[DocId, str, Any]]:
    form: str | None = None
    for position, item in enumerate(corpus):
        this = "strings" if isinstance(item, str) else "(id, text) pairs" if isinstance(item, tuple) else None
        if this is None:
            raise CorpusTypeError(
                f"corpus[{position}] must be a str or an (id, text) tuple, got {type(item).__name__}: {item!r:.80}"
            )
        form = form or this
        if this != form:
            raise _mixed(position if this == "strings" else item[0], form, item)
        if this == "strings":
            yield first_id + position, item, None
        else:
            if len(item) != 2:
                raise CorpusError(
                    f"corpus[{position}] must be an (id, text) pair, got a tuple of {len(item)}"
                )
            doc_id = check_id(item[0], f"corpus[{position}]")
            if isinstance(item[1], Mapping):  # (id, {"title", "text", ...}): BEIR's fields, kept as metadata
                yield doc_id, _beir_text(item[1], doc_id), _metadata(item[1])
            else:
                yield doc_id, check_text(item[1], doc_id), None


def iter_documents(corpus: Corpus, *, first_id: int = 0) -> Iterator[tuple[DocId, str]]:
    """Yield ``(doc_id, text)`` from any accepted corpus form, checking each document as it enters.

    Args:
        corpus: a list of strings (ids are positions), a dict id -> text, a dict id ->
            ``{"title", "text", ...}`` (BEIR form; :func:`document_text`), or ``(id, text)`` pairs.
        first_id: the id of a list's first string.

    Yields:
        ``(doc_id, text)``, in the corpus' order.

    Raises:
        CorpusError: an empty corpus, mixed forms, a repeated id or a document without text (a
            ``ValueError``).
        CorpusTypeError: a text that is not a string, an id that is neither str nor int, or a corpus that
            is a single string (a ``TypeError``).
        InvalidArgument: a text that is not valid Unicode.

    Example:
        >>> list(iter_documents(["first", "second"], first_id=10))
        [(10, 'first'), (11, 'second')]
    """
    for doc_id, text, _ in iter_records(corpus, first_id=first_id):
        yield doc_id, text


def iter_records(corpus: Corpus, *, first_id: int = 0) -> Iterator[tuple[DocId, str, Any]]:
    """:func:`iter_documents` with each document's metadata: ``(doc_id, text, metadata)``, where the
    metadata of a ``{"title", "text", ...}`` document is its fields but ``text`` (``None`` otherwise)."""
    if isinstance(corpus, (str, bytes)):
        raise CorpusTypeError(
            "corpus must be a collection of documents, not a single string; wrap it in a list"
        )
    if isinstance(corpus, Mapping):
        stream = _from_mapping(corpus)
    elif isinstance(corpus, Iterable):
        stream = _from_iterable(corpus, first_id)
    else:
        raise CorpusTypeError(
            f"corpus must be a list of strings, a dict id -> text, a dict id -> {{'title', 'text'}} or an "
            f"iterable of (id, text) pairs; got {type(corpus).__name__}"
        )
    seen: set[DocId] = set()
    for doc_id, text, metadata in stream:
        check_encodable(text, f"corpus: the text of document {doc_id!r}")
        if doc_id in seen:
            raise CorpusError(f"corpus: document id {doc_id!r} appears twice")
        seen.add(doc_id)
        yield doc_id, text, metadata
    if not seen:
        raise CorpusError("corpus is empty: give at least one document")


def chunks(records: Iterable[tuple], size: int) -> Iterator[tuple[list, ...]]:
    """Group ``(id, text, ...)`` tuples into ``(ids, texts, ...)`` chunks of at most ``size`` documents."""
    it = iter(records)
    while block := list(islice(it, size)):
        yield tuple(list(column) for column in zip(*block))


def check_texts(texts: Any, *, name: str = "texts") -> list[str]:
    """Return ``texts`` as a list of strings, or raise naming the first bad item."""
    if isinstance(texts, str):
        return [texts]
    if not isinstance(texts, Iterable):
        raise InvalidArgumentType(f"{name} must be a string or a list of strings, got {type(texts).__name__}")
    out = list(texts)
    for i, text in enumerate(out):
        if not isinstance(text, str):
            raise InvalidArgumentType(f"{name}[{i}] must be a str, got {type(text).__name__}: {text!r:.80}")
        check_encodable(text, f"{name}[{i}]")
    return out
