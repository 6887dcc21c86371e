"""The library's own exceptions.

Every error the library raises on purpose is an :class:`AdaptiveRetrievalError`, so one ``except``
clause catches them all. Each class also inherits the builtin exception the library raised before it
had its own (``ValueError``, ``TypeError`` or ``RuntimeError``), so code written against those keeps
working::

    try:
        retriever = Retriever.load("my-index")
    except IndexDamaged as err:        # also a ValueError
        ...

Which class to raise:

- :class:`InvalidArgument` (``ValueError``) / :class:`InvalidArgumentType` (``TypeError``): an option
  out of range or of the wrong type (``k=0``, ``candidates="ten"``, an unknown engine).
- :class:`CorpusError` / :class:`CorpusTypeError`: a document, an id or a vector batch that cannot be
  indexed (an empty text, a repeated id, a wrong shape).
- :class:`QueryError` / :class:`QueryTypeError`: a query that cannot be searched (empty, not a string).
- :class:`IndexDamaged`: an index directory whose files do not match its manifest, or that is not an
  index at all.
- :class:`IndexConflict`: another writer changed what this retriever is about to write over.
- :class:`ModelMismatch`: a model that does not match the index (weights, pooling, prompts, views).
- :class:`ModelNotFound`: a model name, directory or hub id that cannot be resolved here.
- :class:`EngineError` (``RuntimeError``): a vector engine (Qdrant, Milvus) that refused or failed.
- :class:`RetrieverBusy` / :class:`RetrieverClosed` (``RuntimeError``): an operation the retriever's
  state does not allow now.
- :class:`InstallationError` (``RuntimeError``): something this installation lacks or cannot provide (a
  file shipped with the package, a named model's parts, a working int8 kernel in the installed torch).
"""

from __future__ import annotations


class AdaptiveRetrievalError(Exception):
    """The base of every error this library raises on purpose."""


class InvalidArgument(AdaptiveRetrievalError, ValueError):
    """An argument's value is out of its range or not one of its choices."""


class InvalidArgumentType(InvalidArgument, TypeError):
    """An argument is of the wrong type."""


class CorpusError(AdaptiveRetrievalError, ValueError):
    """Documents, ids, metadata or vectors that cannot be indexed."""


class CorpusTypeError(CorpusError, TypeError):
    """Documents, ids, metadata or vectors of the wrong type."""


class QueryError(AdaptiveRetrievalError, ValueError):
    """A query that cannot be searched."""


class QueryTypeError(QueryError, TypeError):
    """A query of the wrong type."""


class IndexDamaged(AdaptiveRetrievalError, ValueError):
    """An index directory that is damaged, inconsistent, of an unknown format, or no index at all."""


class IndexConflict(AdaptiveRetrievalError, ValueError):
    """Another writer changed the index this retriever is about to write over."""


class ModelMismatch(AdaptiveRetrievalError, ValueError):
    """A model (or view) that does not match the index or the other views it is used with."""


class ModelNotFound(AdaptiveRetrievalError, ValueError):
    """A model that cannot be resolved here: an unknown name, a missing directory, an uncached hub id."""


class EngineError(AdaptiveRetrievalError, RuntimeError):
    """A vector engine (Qdrant, Milvus) refused or failed an operation."""


class RetrieverBusy(AdaptiveRetrievalError, RuntimeError):
    """An operation that must run alone (an add, a save) while another one runs."""


class RetrieverClosed(AdaptiveRetrievalError, RuntimeError):
    """A retriever used after :meth:`adaptive_retrieval.Retriever.close`."""


class InstallationError(AdaptiveRetrievalError, RuntimeError):
    """Something this installation lacks or cannot provide: a file shipped with the package, a named
    model's parts (not installed, not downloadable, or damaged), a working kernel of the installed torch."""


__all__ = [
    "AdaptiveRetrievalError",
    "CorpusError",
    "CorpusTypeError",
    "EngineError",
    "IndexConflict",
    "IndexDamaged",
    "InstallationError",
    "InvalidArgument",
    "InvalidArgumentType",
    "ModelMismatch",
    "ModelNotFound",
    "QueryError",
    "QueryTypeError",
    "RetrieverBusy",
    "RetrieverClosed",
]
