"""Checks of what enters at the library's front door: queries and counts, each refused where it enters
with a message naming the argument, the value and the fix."""

from __future__ import annotations

from typing import Any

import numpy as np

from .corpus import check_encodable
from .errors import InvalidArgument, QueryError, QueryTypeError


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int, refused unless it is a positive int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_query(query: Any) -> str:
    """One query: a non-empty string of valid Unicode."""
    if not isinstance(query, str):
        raise QueryTypeError(
            f"query must be a str, got {type(query).__name__}; use search_batch() for several"
        )
    if not query.strip():
        raise QueryError("query is empty or whitespace only; an empty query has no meaning to rank by")
    check_encodable(query, "query")
    return query


def check_queries(queries: Any) -> list[str]:
    """Many queries: a non-empty list (or iterable) of non-empty strings of valid Unicode."""
    if isinstance(queries, str):
        raise QueryTypeError("queries must be a list of strings; use search() for a single query")
    try:
        queries = list(queries)
    except TypeError:
        raise QueryTypeError(f"queries must be a list of strings, got {type(queries).__name__}") from None
    if not queries:
        raise QueryError("queries is empty: give at least one query")
    for i, q in enumerate(queries):
        if not isinstance(q, str):
            raise QueryTypeError(f"queries[{i}] must be a str, got {type(q).__name__}: {q!r:.80}")
        check_encodable(q, f"queries[{i}]")
        if not q.strip():
            raise QueryError(
                f"queries[{i}] is empty or whitespace only; an empty query has no meaning to rank by"
            )
    return queries
