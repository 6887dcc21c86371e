"""The metadata filter language: checked where it enters, evaluated over the metadata columns.

The language is the one users already write for Chroma, LangChain and LlamaIndex stores::

    {"section": "libs"}                                   equality
    {"size": {"$gte": 1000}}                              $eq $ne $gt $gte $lt $lte
    {"section": {"$in": ["libs", "admin"]}}               $in $nin
    {"$and": [{...}, {...}]}, {"$or": [{...}, {...}]}     combinations (several fields in one dict: $and)

Values compared are strings, numbers (ints and floats alike) and booleans. A comparison matches the
documents whose field holds a value of the operand's kind that satisfies it; a document without the
field (or with a value of another kind) matches none, ``$ne`` and ``$nin`` included (as in Chroma).
Strings order as Python orders them.

:func:`parse` checks a filter before any query is encoded (:class:`adaptive_retrieval.errors.InvalidArgument`
naming the part at fault); :func:`evaluate` turns it into a mask over an index's rows, against its
:class:`adaptive_retrieval.metadata.MetadataStore`, refusing a field no document has or an operand of a
kind the field never holds.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import InvalidArgument, InvalidArgumentType

COMPARISONS = ("$eq", "$ne", "$gt", "$gte", "$lt", "$lte")
MEMBERSHIPS = ("$in", "$nin")
OPERATORS = COMPARISONS + MEMBERSHIPS
"""Every operator a field takes"""
EXACT_INT = 2**53
"""Integers up to this size compare exactly (numbers are float64 columns); larger ones are kept with the
document but not filterable (store them as strings to filter on them)"""


@dataclass(frozen=True)
class Compare:
    """One field compared with a value (``op`` in :data:`OPERATORS`; ``value`` a tuple for ``$in``/``$nin``)."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True)
class Combine:
    """``$and`` / ``$or`` of parts."""

    op: str
    parts: tuple[Node, ...]


Node = Compare | Combine


def kind_of(value: Any) -> str | None:
    """The kind a metadata value is filtered as: ``"bool"``, ``"number"``, ``"string"``; ``None`` for a
    value filters do not compare (a list, a dict, ``None``, a NaN)."""
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "number" if abs(int(value)) <= EXACT_INT else None  # beyond: not exact as a float64
    if isinstance(value, (float, np.floating)):
        return "number" if math.isfinite(value) else None
    if isinstance(value, str):
        return "string"
    return None


def parse(filter: Any, where: str = "filter") -> Node | None:
    """A filter checked and parsed; ``None`` (no filter) stays ``None``.

    Args:
        filter: the filter as users write it (see the module docstring).
        where: how the error names it.

    Returns:
        Its tree, or ``None``.

    Raises:
        InvalidArgumentType: not a dict, or a value that is not a string, number or boolean.
        InvalidArgument: an empty filter, an unknown operator, ``$in`` without a list, a range operator
            with a boolean.
    """
    if filter is None:
        return None
    return _parse(filter, where)


def _parse(filter: Any, where: str) -> Node:
    if not isinstance(filter, dict):
        raise InvalidArgumentType(
            f"{where} must be a dict such as {{'section': 'libs'}}, got {type(filter).__name__}"
        )
    if not filter:
        raise InvalidArgument(f"{where} is empty: give a field, or leave the filter out")
    parts: list[Node] = []
    for key, value in filter.items():
        if not isinstance(key, str):
            raise InvalidArgumentType(f"{where}: keys must be field names or $and/$or, got {key!r}")
        if key in ("$and", "$or"):
            if not isinstance(value, (list, tuple)) or not value:
                raise InvalidArgument(f"{where}[{key!r}] must be a non-empty list of filters, got {value!r}")
            parts.append(
                Combine(key, tuple(_parse(v, f"{where}[{key!r}][{i}]") for i, v in enumerate(value)))
            )
        elif key.startswith("$"):
            raise InvalidArgument(
                f"{where}: unknown operator {key!r} at the top level; fields are compared with "
                f"{', '.join(OPERATORS)} inside {{field: {{op: value}}}}, combined with $and/$or"
            )
        elif isinstance(value, dict):
            if not value:
                raise InvalidArgument(f"{where}[{key!r}] is an empty condition")
            parts.extend(_condition(key, op, operand, where) for op, operand in value.items())
        else:
            parts.append(_condition(key, "$eq", value, where))
    return parts[0] if len(parts) == 1 else Combine("$and", tuple(parts))


def _condition(field: str, op: Any, operand: Any, where: str) -> Compare:
    at = f"{where}[{field!r}]"
    if op not in OPERATORS:
        raise InvalidArgument(f"{at}: unknown operator {op!r}; known: {', '.join(OPERATORS)}")
    if op in MEMBERSHIPS:
        if not isinstance(operand, (list, tuple, set, frozenset)) or not operand:
            raise InvalidArgument(f"{at}[{op!r}] must be a non-empty list of values, got {operand!r}")
        values = tuple(operand)
        for v in values:
            _check_operand(v, f"{at}[{op!r}]")
        return Compare(field, op, values)
    kind = _check_operand(operand, f"{at}[{op!r}]")
    if op not in ("$eq", "$ne") and kind == "bool":
        raise InvalidArgument(f"{at}: {op} compares numbers or strings, got the boolean {operand!r}")
    return Compare(field, op, operand)


def _check_operand(value: Any, at: str) -> str:
    kind = kind_of(value)
    if kind is None and isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        raise InvalidArgument(
            f"{at}: integers beyond 2**53 do not compare exactly ({value}); store them as strings"
        )
    if kind is None:
        raise InvalidArgumentType(
            f"{at}: filters compare strings, numbers and booleans, got {type(value).__name__} {value!r}"
        )
    return kind


def fields(node: Node) -> set[str]:
    """The fields a filter reads."""
    if isinstance(node, Compare):
        return {node.field}
    return set().union(*(fields(p) for p in node.parts))


NATIVE_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""The field names an engine's own filter language is given (others are filtered by the allowed rows)"""


def native(node: Node | None, store: Any) -> Node | None:
    """``node`` where an engine holding every row's metadata can evaluate it as :func:`evaluate` does,
    else ``None``: every field it reads holds values of one kind only, the kind of its operands, and
    none that filters skip (``store.opaque``: a list, an object, a null, a NaN, a big int; an engine
    may match inside a list), under a plain name (:data:`NATIVE_FIELD`). Then a comparison means the
    same there: a row without the field, or with a value of another kind, matches none.

    Args:
        node: a parsed filter, evaluated already (so every field it reads is known).
        store: the index's :class:`adaptive_retrieval.metadata.MetadataStore`.
    """

    def same(n: Node) -> bool:
        if isinstance(n, Combine):
            return all(same(p) for p in n.parts)
        if not NATIVE_FIELD.fullmatch(n.field) or n.field in store.opaque:
            return False
        values = n.value if n.op in MEMBERSHIPS else (n.value,)
        return len(store.kinds(n.field)) == 1 and {kind_of(v) for v in values} == store.kinds(n.field)

    return node if node is not None and same(node) else None


def evaluate(node: Node, store: Any, rows: int) -> np.ndarray:
    """The rows ``0..rows-1`` whose metadata matches.

    Args:
        node: a parsed filter (:func:`parse`).
        store: the index's metadata columns (:class:`adaptive_retrieval.metadata.MetadataStore`).
        rows: how many rows the mask covers.

    Returns:
        ``(rows,)`` bool.

    Raises:
        InvalidArgument: a field no document has, or an operand of a kind the field never holds
            (named, with the kinds it holds).
    """
    if isinstance(node, Combine):
        first, *rest = (evaluate(p, store, rows) for p in node.parts)
        out = first.copy()
        for m in rest:
            if node.op == "$and":
                out &= m
            else:
                out |= m
        return out
    kinds = store.kinds(node.field)
    if not kinds:
        known = ", ".join(repr(f) for f in store.field_names()[:20]) or "none"
        raise InvalidArgument(f"filter field {node.field!r}: no document has it (fields: {known})")
    values = node.value if node.op in MEMBERSHIPS else (node.value,)
    asked = {kind_of(v) for v in values}
    if not asked & kinds:  # a list may mix kinds; a kind the field never holds matches nothing
        kind = sorted(asked)[0]  # type: ignore[type-var]
        raise InvalidArgument(
            f"filter field {node.field!r} holds {' and '.join(sorted(kinds))} values; the filter "
            f"compares it with a {kind} ({node.op} {node.value!r})"
        )
    out = np.zeros(rows, dtype=bool)
    for kind in sorted(asked & kinds):  # type: ignore[type-var]
        same = tuple(v for v in values if kind_of(v) == kind)
        out |= store.column(node.field, kind).compare(node.op, same, rows)
    return out
