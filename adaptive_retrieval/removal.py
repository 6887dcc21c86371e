"""Removing documents: :func:`delete` (their rows die at once) and :func:`compact` (their rows reclaimed),
run by itself when dead rows pass a share of the index (:func:`compact_if_due`). Defined here, attached to
:class:`adaptive_retrieval.Retriever` (``self`` is the retriever)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from .corpus import DocId
from .errors import AdaptiveRetrievalError, RetrieverBusy

logger = logging.getLogger(__name__)


def delete(self: Any, ids: Iterable[DocId], *, missing: str = "raise") -> int:
    """Delete documents by id, all or none: the next search no longer finds them (searches running
    beside see the index before or after, never a part); their rows are reclaimed by :meth:`compact`,
    run once dead rows pass :attr:`adaptive_retrieval.Retriever.compact_at` of the index.

    Args:
        ids: the documents' ids (a list; ``[]`` deletes nothing).
        missing: ``"raise"``: an id the index does not hold is an error and nothing is deleted;
            ``"ignore"``: such ids are skipped.

    Returns:
        How many documents were deleted.

    Raises:
        CorpusError: an unknown id (``missing="raise"``). CorpusTypeError: a single id, not a list.
        InvalidArgument: another ``missing``. EngineError: an engine that does not delete yet (Qdrant, Milvus).
        RetrieverBusy: another write is running. RetrieverClosed: the retriever was closed.

    Example:
        >>> retriever.delete(["d1", "d2"])  # doctest: +SKIP
        2
    """
    self._check_open()
    deleted = self.writer.delete(ids, missing=missing)
    compact_if_due(self)
    return deleted


def compact(self: Any) -> int:
    """Reclaim the rows of deleted and replaced documents: the engine's coarse index and fine store keep
    only the live rows, renumbered in order (built beside searches, swapped in at once). Rows, as
    :meth:`adaptive_retrieval.Retriever.search_arrays` returns them, change; ids do not.

    Returns:
        How many rows were reclaimed.

    Raises:
        EngineError: an engine that does not compact. RetrieverBusy: another write is running.
    """
    self._check_open()
    return self.writer.compact()


def compact_if_due(self: Any) -> None:
    """:func:`compact` when the dead rows reach :attr:`adaptive_retrieval.Retriever.compact_at` of the rows.
    The write before it has committed: a compaction that cannot run now (another write holds the
    writer, a disk full) is logged and left for later, never raised as that write's failure."""
    share = self.compact_at
    if share is not None and self.ids.dead and self.ids.dead >= share * len(self.ids):
        try:
            self.writer.compact()
        except RetrieverBusy:
            logger.debug("compaction due but another write is running: left for a later write")
        except AdaptiveRetrievalError as err:
            logger.warning(
                "compaction due but it failed (the index is unchanged; compact() retries): %s", err
            )
        except OSError as err:
            logger.warning(
                "compaction due but it failed (the index is unchanged; compact() retries): %s", err
            )


__all__ = ["compact", "compact_if_due", "delete"]
