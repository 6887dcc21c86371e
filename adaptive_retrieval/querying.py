"""Queries on their way to the engine: how they are encoded, and which shortlist they get.

- :class:`QueryPrecision`: the encoder's own, or a bfloat16 or int8 copy of it made once
  (:meth:`adaptive_retrieval.Encoder.bfloat16`, :meth:`adaptive_retrieval.Encoder.quantized`).
- :func:`encode_queries`: one forward pass per query, every layer once: the early layer's coarse view (an
  ``"early"`` coarse query), then the same state resumed to the fine layer; a ``"projected"`` coarse
  query is the fine vector projected into the coarse space.
- :func:`resolve_coarse_query` and :func:`shortlist_plan`: the coarse query and the shortlist a search
  runs with, from its arguments, the index's projection and its calibration.
- :func:`adaptive_retrieval.querying.allowed_rows`: the rows a search may return (live, matching its filter) and whether it ranks
  them exactly.
- :func:`adaptive_retrieval.querying.ranked`: the engine's funnel, the fusion with the lexical index, and a long document's passages
  grouped into the document.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from .adapt import project_fine
from .checks import positive_int
from .encoder import Encoder
from .errors import InvalidArgument, InvalidArgumentType
from .filters import evaluate
from .hybrid import Fusion, fused_search
from .ids import IdMap
from .metadata import MetadataStore
from .passages import group
from .precision import resolve
from .shortlist import Calibration
from .views import View

COARSE_QUERIES = ("projected", "early")
"""What searches the coarse index for a query (see :meth:`adaptive_retrieval.Retriever.search`)."""
QUERY_PRECISIONS = ("auto", "float32", "bfloat16", "int8")
"""How queries may be encoded (see :meth:`adaptive_retrieval.Retriever.set_query_precision`)."""


class QueryPrecision:
    """How a retriever's queries are encoded: ``"float32"``, ``"bfloat16"`` (the encoder's layers in
    bfloat16) or ``"int8"`` (its linear layers in int8, each token quantized on its own): a copy made on
    first use. ``"auto"`` (the default, also ``None``): bfloat16 where the processor has it natively (or
    the documents were encoded in it), else float32 (:func:`adaptive_retrieval.precision.resolve`)."""

    def __init__(self) -> None:
        self.chosen: str | None = None
        self._copy: tuple[Encoder, str, Encoder] | None = None  # (encoder, precision, its copy)
        self._lock = threading.Lock()

    def set(self, precision: str | None) -> None:
        if precision is not None and precision not in QUERY_PRECISIONS:
            raise InvalidArgument(f"precision={precision!r}: choose one of {', '.join(QUERY_PRECISIONS)}")
        self.chosen = None if precision == "auto" else precision

    def of(self, encoder: Encoder) -> str:
        """The precision queries of ``encoder`` are encoded in."""
        if self.chosen is not None:
            return self.chosen
        if encoder.precision == "bfloat16":
            return "bfloat16"
        return resolve("auto", encoder.device)

    def encoder(self, encoder: Encoder) -> Encoder:
        """The encoder queries go through: ``encoder`` or its copy in the chosen precision, made once however
        many searches ask for it at first."""
        precision = self.of(encoder)
        if precision == encoder.precision:
            return encoder
        made = self._copy
        if made is None or made[0] is not encoder or made[1] != precision:
            with self._lock:
                made = self._copy
                if made is None or made[0] is not encoder or made[1] != precision:
                    copy = encoder.quantized if precision == "int8" else encoder.bfloat16
                    made = self._copy = (encoder, precision, copy())
        return made[2]


# Retriever.set_query_precision, .query_precision and .query_encoder, attached there


def set_query_precision(self: Any, precision: str | None) -> None:
    """Encode queries in ``"float32"``, ``"bfloat16"`` or ``"int8"`` (a copy of the encoder made at the next
    search by :meth:`adaptive_retrieval.Encoder.bfloat16` or :meth:`adaptive_retrieval.Encoder.quantized`,
    raising what they raise; the bfloat16 copy holds half the float32 model's bytes beside it), or
    ``"auto"`` (``None``; the default): bfloat16 where the processor has AMX or AVX-512 BF16 (queries 1.7x
    faster, keeping 0.994-0.997 of float32's top 10 on five sets; ``ADAPTIVE_RETRIEVAL_PRECISION`` overrides)
    or where the documents were encoded in it, else float32. ``python -m benchmarks.bench_latency``,
    ``python -m benchmarks.bench_int8`` and ``python -m evals.precision_eval`` measure them on your CPU
    (figures: docs/measurements.md).

    Raises:
        InvalidArgument: another precision; ``"float32"`` on an index whose encoder runs in bfloat16.
    """
    if precision == "float32" and self.encoder.precision != "float32":
        raise InvalidArgument(
            "precision='float32': this retriever's encoder runs in bfloat16; to search in float32, load the "
            "index with model=Encoder.from_pretrained(<its model>) (a given encoder runs as it is)"
        )
    self._precision.set(precision)


def query_precision(self: Any) -> str:
    """``"float32"``, ``"bfloat16"`` or ``"int8"``: what queries are encoded in
    (:meth:`adaptive_retrieval.Retriever.set_query_precision`; assigning it is the same)."""
    return self._precision.of(self.encoder)


def query_encoder(self: Any) -> Encoder:
    """The encoder queries go through: the retriever's ``encoder``, or its copy in the query precision."""
    return self._precision.encoder(self.encoder)


def resolve_coarse_query(coarse_query: str | None, projection: np.ndarray | None) -> str:
    """The coarse query a search runs: ``None`` gives the index's default (``"projected"`` with a
    projection, else ``"early"``); a given one is checked."""
    if coarse_query is None:
        return "early" if projection is None else "projected"
    if coarse_query not in COARSE_QUERIES:
        raise InvalidArgument(f"coarse_query={coarse_query!r}: choose one of {', '.join(COARSE_QUERIES)}")
    if coarse_query == "projected" and projection is None:
        raise InvalidArgument(
            "coarse_query='projected' needs the projection of a coarse head fitted to this corpus at "
            "build (Retriever.build(..., adapt=True), the default, when the fit was kept: see "
            "retriever.adaptation); this index has none, so its queries search with coarse_query='early'"
        )
    return coarse_query


def lexical_for(lexical: Any, hybrid: bool | None) -> Any:
    """The lexical index a search fuses: the index's own unless ``hybrid`` is ``False``.

    Raises:
        InvalidArgument: ``hybrid=True`` in an index without a lexical index (InvalidArgumentType: not a bool).
    """
    if hybrid is not None and not isinstance(hybrid, bool):
        raise InvalidArgumentType(f"hybrid must be True, False or None, got {hybrid!r}")
    if hybrid and lexical is None:
        raise InvalidArgument(
            "hybrid=True needs a lexical index: this index has none (built with hybrid=False, or from "
            "vectors without texts); rebuild it with Retriever.build(..., hybrid=True)"
        )
    return None if hybrid is False else lexical


def shortlist_plan(
    k: int, candidates: int | None, default: int, calibration: Calibration | None, coarse_query: str
) -> tuple[int, int | None, int | None]:
    """The coarse candidates a search asks for, the patience of a patient re-rank (or ``None``), and the
    depth the shortlist was calibrated at (or ``None``): an index that cannot widen cheaply (HNSW) must
    search that deep for a shorter shortlist to be the calibration's first candidates."""
    if candidates is not None:
        return max(positive_int(candidates, "candidates"), k), None, None
    if calibration is None or calibration.coarse_query != coarse_query:
        return max(default, k), None, None
    if calibration.rule == "patient":
        return max(calibration.cap, k), calibration.patience, calibration.cap
    return max(calibration.candidates, k), None, calibration.cap


def calibrated_width(calibration: Calibration | None, coarse_query: str) -> dict[str, int] | None:
    """The search width a calibration chose (:attr:`adaptive_retrieval.shortlist.Calibration.knobs`, e.g.
    an IVF index's ``nprobe``), for searches of the coarse query it measured; else ``None``."""
    if calibration is None or calibration.coarse_query != coarse_query:
        return None
    return calibration.knobs


def encode_queries(
    enc: Encoder,
    queries: list[str],
    coarse: View,
    fine: View,
    coarse_query: str,
    projection: np.ndarray | None,
    seconds: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The coarse and fine query vectors, each layer run once: layers ``1..coarse.layer``, then the same
    state resumed to ``fine.layer``. ``seconds``, if given, receives ``encode_coarse`` and
    ``resume_fine``."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        state = enc.advance(enc.start(enc.as_queries(queries)), coarse.layer)
        coarse_q = enc.view(state, coarse.dim).float().cpu().numpy() if coarse_query == "early" else None
        t1 = time.perf_counter()
        fine_q = enc.view(enc.advance(state, fine.layer), fine.dim).float().cpu().numpy()
        if coarse_q is None:
            coarse_q = project_fine(fine_q, projection)
        t2 = time.perf_counter()
    if seconds is not None:
        seconds["encode_coarse"] = seconds.get("encode_coarse", 0.0) + t1 - t0
        seconds["resume_fine"] = seconds.get("resume_fine", 0.0) + t2 - t1
    return coarse_q, fine_q


__all__ = [
    "BY",
    "COARSE_QUERIES",
    "FILTER_EXPONENT",
    "QUERY_PRECISIONS",
    "QueryPrecision",
    "allowed_rows",
    "calibrated_width",
    "check_by",
    "encode_queries",
    "filtered_shortlist",
    "lexical_for",
    "ranked",
    "resolve_coarse_query",
    "shortlist_plan",
]


def allowed_rows(
    ids: IdMap, metadata: MetadataStore, node: Any, exact_below: int,
    cost: Callable[[float], float | None] | None = None,
) -> tuple[np.ndarray | None, bool, str]:  # fmt: skip
    """The rows a search may return, and how it runs (called under the search's read lock).

    Args:
        ids: the index's id map (its live rows).
        metadata: the index's metadata (a filter's columns).
        node: a parsed filter (:func:`adaptive_retrieval.filters.parse`), or ``None``.
        exact_below: a filter matching at most this many rows ranks them exactly.
        cost: the engine's estimate of a filtered funnel's cost for the share of rows matched, in fine
            rows scored (:meth:`adaptive_retrieval.backends.Backend.filtered_cost`): a filter matching
            fewer rows than that is ranked exactly too, being cheaper so.

    Returns:
        ``(allowed, exact, path)``: ``(rows,)`` bool or ``None`` (every row), whether to rank the allowed
        rows exactly, and the path's name (:attr:`adaptive_retrieval.results.SearchTimings.paths`).
    """
    alive = ids.alive
    if node is None:
        return alive, False, "funnel"
    allowed = evaluate(node, metadata, len(ids))
    if alive is not None:
        allowed &= alive[: len(allowed)]
    matched = int(np.count_nonzero(allowed))
    funnel = None if cost is None else cost(matched / max(len(allowed), 1))
    exact = matched <= exact_below or (funnel is not None and matched <= funnel)
    return allowed, exact, "filtered exact" if exact else "filtered funnel"


FILTER_EXPONENT = 0.5
"""How a filtered funnel widens its shortlist without a calibration that measured it: ``1 / share ** 0.5``"""


def filtered_shortlist(
    shortlist: int, allowed: np.ndarray, calibration: Calibration | None = None, node: Any = True
) -> int:
    """The shortlist of a filtered funnel: ``shortlist / share ** a``, at most the rows matched, where ``a``
    is what :meth:`adaptive_retrieval.Retriever.calibrate` measured under random filters
    (``measured["filter_exponent"]``), else :data:`adaptive_retrieval.querying.FILTER_EXPONENT`. A filter's top ``k`` can lie deeper
    in the coarse ranking of the matching documents than an unfiltered top ``k`` in the whole index's;
    ``benchmarks.bench_filters`` (docs/results/filters) measured a fixed shortlist losing fidelity at 50%
    and 20%. Without a filter (``node`` ``None``: ``allowed`` are the live rows) the shortlist is kept."""
    if node is None:
        return shortlist
    matched = int(np.count_nonzero(allowed))
    share = max(matched / max(len(allowed), 1), 1e-9)
    exponent = (
        FILTER_EXPONENT
        if calibration is None
        else calibration.measured.get("filter_exponent", FILTER_EXPONENT)
    )
    return int(min(np.ceil(shortlist / share**exponent), max(matched, 1)))


BY = ("document", "passage")
"""What a search ranks (see :meth:`adaptive_retrieval.Retriever.search`)."""


def check_by(by: str) -> str:
    """``by`` as a search takes it, or InvalidArgument naming the choices."""
    if by not in BY:
        raise InvalidArgument(f"by={by!r}: choose one of {', '.join(BY)}")
    return by


def ranked(
    engine: Any, ids: IdMap, fusion: Fusion, lexical: Any, queries: list[str], coarse_q: np.ndarray,
    fine_q: np.ndarray, k: int, shortlist: int, *, by: str, exact: bool, patience: int | None, **search: Any,
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:  # fmt: skip
    """The engine's funnel (and, with ``lexical``, the fusion) for ``k`` hits per query: ``(D, I, fallbacks,
    read)`` as :meth:`adaptive_retrieval.backends.base.Backend.search` returns them. ``by="document"`` in
    an index of passages ranks rows deep enough that their best passages give ``k`` documents
    (:func:`adaptive_retrieval.passages.group`), widening until they do or no row is left."""
    allowed = search.get("allowed")
    rows = ids.count if allowed is None else int(np.count_nonzero(allowed))
    grouped = by == "document" and ids.documents < ids.count
    depth = min(3 * k, rows) if grouped else k
    while True:
        width = max(shortlist, depth)
        funnel_depth = (
            depth if lexical is None else fusion.funnel_depth(depth, width, rows if exact else None, patience)
        )
        D, I, fallbacks, read = engine.search(
            coarse_q, fine_q, funnel_depth, width, patience=patience, exact=exact, **search
        )
        if lexical is not None:  # the lexical candidates join, the union is ranked by the fused score
            D, I, read = fused_search(
                engine,
                lexical,
                fusion,
                queries,
                fine_q,
                D,
                I,
                depth,
                allowed,
                read,
                search.get("seconds"),
                documents=ids.ids if ids.documents < ids.count else None,
                params=search.get("params"),
            )
        if not grouped:
            return D, I, fallbacks, read
        D, I, short = group(D, I, ids.ids, k)
        if not short or depth >= rows:
            return D, I, fallbacks, read
        depth = min(4 * depth, rows)
