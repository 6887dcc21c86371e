"""The first stage within a memory budget: which coarse code a document gets, chosen without labels.

The coarse index is what sits in RAM: at 100M documents every byte per document is 100 MB. For a budget of
``B`` bytes per document, a projected coarse view (each document's fine vector on the corpus' leading
directions, :func:`adaptive_retrieval.adapt.project_fine`) can be held several ways, each a FAISS index:

- ``B / 4`` dimensions in float32 (``"Flat"``);
- ``B`` dimensions, one int8 code each (``"SQ8"``, over ``[-1, 1]``: :func:`adaptive_retrieval.codes.unit_coded`);
- ``2B`` dimensions, 4 bits each (``"SQ4"``, over the range FAISS trains on the documents);
- ``B`` sub-vectors of 8 bits after FAISS's learned rotation (``"OPQ<B>,PQ<B>"``) of :data:`OPQ_DIM` dimensions
  (sub-vectors of at least :data:`MIN_SUBVECTOR` dimensions: ``B`` up to 64).

Which needs the shortest shortlist for a fidelity depends on the corpus (``benchmarks/bench_first_stage``
measures them on five sets). :func:`choose` measures each on the build's own pseudo-queries (the first
sentences of held-out documents, as :mod:`adaptive_retrieval.adapt` makes them) against the exact fine top
``k`` over the first chunk of documents, and keeps the one whose shortlist for the target is shortest (on a
tie: the higher mean share of the top ``k`` over the shortlists up to it, :func:`rising`, then fewer bytes,
then the simpler code). ``Retriever.build(..., coarse_bytes=B)`` uses it: the coarse view
becomes ``(layer, dim)`` of the choice, the FAISS engine's index its code, and the record
(:class:`FirstStage`: the choice, every candidate's measured shortlist, the queries) is saved in the manifest
and reported by ``retriever.first_stage``.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import faiss
import numpy as np

from .adapt import MIN_DOCS, project_fine
from .backends import EngineOptions
from .codes import DEFAULT_FACTORY
from .errors import InvalidArgument, InvalidArgumentType
from .ids import IdMap
from .index import CoarseIndex
from .views import View
from .writer import IndexWriter

logger = logging.getLogger(__name__)

GRID: tuple[int, ...] = (
    10,
    15,
    20,
    30,
    40,
    50,
    60,
    80,
    100,
    120,
    150,
    200,
    250,
    300,
    400,
    500,
    600,
    800,
    1000,
)
"""The shortlists tried: a candidate's shortlist for the target is the smallest of these that reaches it."""
OPQ_DIM = 256
"""The projected dimensions an OPQ code is learned over (measured as good as over the whole fine vector,
in a third of the training time: docs/measurements.md)."""
MIN_DIM = 8
"""No candidate has fewer coarse dimensions than this."""
MIN_SUBVECTOR = 4
"""An OPQ code splits its dimensions into sub-vectors of at least this many (OPQ128 over 256 dims, 2 each, trained
for minutes on 10,000 documents where SQ4 over 256 dims, trained in no time, measured the same shortlist on SciFact)."""
BUDGETS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 512, 1024)
"""The budgets a refused one is compared with, to name the smallest that meets the target."""
SIMPLER = ("SQ8", "Flat", "SQ4", "OPQ")
"""On a tie of shortlist, overlap up to it and bytes, the first of these wins (no training beats training)."""


@dataclass(frozen=True)
class Representation:
    """One way to hold a document's coarse vector: the projected view's ``dim`` and the FAISS ``index``."""

    dim: int
    index: str

    @property
    def bytes(self) -> int:
        """Bytes per document of the index's codes."""
        return int(CoarseIndex(self.dim, self.index).index.sa_code_size())

    @property
    def name(self) -> str:
        """As the tables write it, e.g. ``proj128-SQ4``."""
        return f"proj{self.dim}-{self.index}"

    def build(self, docs: np.ndarray) -> CoarseIndex:
        """A coarse index of this kind over ``docs`` (the projected view at ``dim``), trained on them if it needs it."""
        index = CoarseIndex(self.dim, self.index)
        if not index.is_trained:
            index.train(docs)
        index.add(docs)
        return index


def representations(budget: int, fine_dim: int) -> list[Representation]:
    """The candidates that hold a document in ``budget`` bytes with at most ``fine_dim`` dimensions."""
    out = []
    if budget % 4 == 0 and MIN_DIM <= budget // 4 <= fine_dim:
        out.append(Representation(budget // 4, "Flat"))
    if MIN_DIM <= budget <= fine_dim:
        out.append(Representation(budget, "SQ8"))
    if MIN_DIM <= 2 * budget <= fine_dim:
        out.append(Representation(2 * budget, "SQ4"))
    opq_dim = min(OPQ_DIM, fine_dim)
    if budget <= opq_dim // MIN_SUBVECTOR and opq_dim % budget == 0:
        out.append(Representation(opq_dim, f"OPQ{budget},PQ{budget}"))
    return out


def check_budget(budget: Any) -> int | None:
    """``budget`` as bytes per document (``None``: no budget).

    Raises:
        InvalidArgumentType: not an int. InvalidArgument: below 1."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)):
        raise InvalidArgumentType(f"coarse_bytes must be an int (bytes per document), got {budget!r}")
    if budget < 1:
        raise InvalidArgument(f"coarse_bytes must be at least 1 byte per document, got {budget}")
    return int(budget)


def shortlist_curve(rows: np.ndarray, exact: np.ndarray, grid: Sequence[int]) -> dict[int, float]:
    """Mean share of each query's exact top ``k`` (``exact``, ``(n, k)``) among its first ``s`` coarse
    ``rows``, for each ``s`` of ``grid``."""
    missing = np.iinfo(np.int64).max
    ranks = np.full(exact.shape, missing, dtype=np.int64)
    for q in range(len(rows)):
        where = {int(r): i for i, r in enumerate(rows[q]) if r >= 0}
        ranks[q] = [where.get(int(r), missing) for r in exact[q]]
    return {s: float((ranks < s).mean()) for s in grid}


def rising(curve: dict[int, float], shortlist: int | None) -> float | None:
    """The mean overlap of ``curve`` at every shortlist up to ``shortlist`` (``None``: none): of two codes
    that reach the target at the same shortlist, the one nearer to it at the shorter ones."""
    if shortlist is None:
        return None
    return float(np.mean([v for s, v in curve.items() if s <= shortlist]))


def needed(curve: dict[int, float], target: float) -> int | None:
    """The smallest shortlist of ``curve`` that reaches ``target``, or ``None``."""
    return next((s for s, v in sorted(curve.items()) if v >= target - 1e-9), None)


@dataclass
class FirstStage:
    """What :func:`choose` measured and chose, as the manifest records it."""

    budget: int
    target: float
    k: int
    dim: int
    index: str
    bytes: int
    shortlist: int | None
    """The chosen code's shortlist for ``target`` on the pseudo-queries (``None``: not measured)"""
    queries: str
    documents: int
    frontier: list[dict[str, Any]] = field(default_factory=list)
    """Every candidate: ``name``, ``dim``, ``index``, ``bytes``, ``shortlist`` (``None``: over the grid),
    ``overlap_at_shortlist``, ``overlap_up_to`` (:func:`rising`), ``overlap_at_longest`` (the overlap at the
    longest shortlist measured), ``seconds``"""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The record as ``manifest.json`` holds it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> FirstStage:
        """Read back :meth:`as_dict`."""
        return cls(**record)


def measure(
    representation: Representation, docs_fine: np.ndarray, directions: np.ndarray, queries_fine: np.ndarray,
    exact: np.ndarray, grid: Sequence[int],
) -> dict[str, Any]:  # fmt: skip
    """One candidate's row: its index over ``docs_fine`` projected on the first ``dim`` of ``directions``
    (``(r, fine_dim)``), searched by ``queries_fine`` projected the same way; ``curve``: its
    :func:`shortlist_curve` against ``exact`` over ``grid``."""
    t0 = time.perf_counter()
    projection = np.ascontiguousarray(directions[: representation.dim].T, dtype=np.float32)
    index = representation.build(project_fine(docs_fine, projection))
    _, rows = index.search(project_fine(queries_fine, projection), max(grid))
    curve = shortlist_curve(rows, exact, grid)
    return {
        "name": representation.name,
        "dim": representation.dim,
        "index": representation.index,
        "bytes": representation.bytes,
        "overlap_at_longest": curve[max(grid)],
        "curve": curve,
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _rank(row: dict[str, Any]) -> tuple:
    kind = next(i for i, name in enumerate(SIMPLER) if row["index"].startswith(name))
    margin = -round(row.get("overlap_up_to") or 0.0, 3)  # nearer the target at shorter shortlists
    return (row["shortlist"] is None, row["shortlist"] or 0, margin, row["bytes"], kind)


def choose(
    budget: int,
    docs_fine: np.ndarray,
    directions: np.ndarray,
    queries_fine: np.ndarray,
    *,
    target: float = 0.95,
    k: int = 10,
    longest: int = GRID[-1],
    queries: str = "",
) -> FirstStage:
    """The representation within ``budget`` bytes per document whose shortlist for ``target`` of the exact
    fine top ``k`` is shortest on ``queries_fine`` over ``docs_fine`` (see the module docstring).

    Args:
        budget: bytes per document.
        docs_fine: the documents' fine vectors (the build's first chunk).
        directions: the corpus' leading directions, ``(r, fine_dim)``, largest first.
        queries_fine: the pseudo-queries' fine vectors.
        target: the overlap@k the shortlist must reach.
        k: the top the overlap is measured on.
        longest: the longest shortlist a candidate may need.
        queries: what the queries are, for the record.

    Raises:
        InvalidArgument: no candidate within ``budget`` reaches ``target`` within the grid's largest
            shortlist (the message names the smallest budget that does), or none fits at all.
    """
    t0 = time.perf_counter()
    docs_fine = np.ascontiguousarray(docs_fine, dtype=np.float32)
    queries_fine = np.ascontiguousarray(queries_fine, dtype=np.float32)
    n, fine_dim = docs_fine.shape
    k = min(k, n)
    cap = min(n, longest)
    grid = sorted({s for s in GRID if s < cap} | {cap})
    exact_index = faiss.IndexFlatIP(fine_dim)
    exact_index.add(docs_fine)
    _, exact = exact_index.search(queries_fine, k)
    width = min(len(directions), fine_dim)

    def rows_for(b: int) -> list[dict[str, Any]]:
        out = []
        for rep in representations(b, width):
            row = measure(rep, docs_fine, directions, queries_fine, exact, grid)
            curve = row.pop("curve")
            row["shortlist"] = needed(curve, target)
            row["overlap_at_shortlist"] = None if row["shortlist"] is None else curve[row["shortlist"]]
            row["overlap_up_to"] = rising(curve, row["shortlist"])
            out.append(row)
        return out

    frontier = rows_for(budget)
    if not frontier:
        raise InvalidArgument(
            f"coarse_bytes={budget}: no code holds a document in {budget} bytes with {MIN_DIM} to {width} "
            f"dimensions; give at least {min(b for b in BUDGETS if representations(b, width))}"
        )
    best = min(frontier, key=_rank)
    if best["shortlist"] is None:
        larger = next((b for b in BUDGETS if b > budget and any(r["shortlist"] for r in rows_for(b))), None)
        raise InvalidArgument(
            f"coarse_bytes={budget}: no code of {budget} bytes per document returns {target:.0%} of the exact "
            f"top {k} within a shortlist of {cap} on this corpus' pseudo-queries (best: "
            f"{best['name']}, {best['overlap_at_longest']:.3f} at {cap}); "
            + (f"the smallest budget that does is {larger}" if larger else "no budget up to 1024 bytes does")
        )
    record = FirstStage(
        budget=budget, target=target, k=k, dim=best["dim"], index=best["index"], bytes=best["bytes"],
        shortlist=best["shortlist"], queries=queries or f"{len(queries_fine)} queries", documents=n,
        frontier=frontier, seconds=round(time.perf_counter() - t0, 3),
    )  # fmt: skip
    logger.info(
        "first stage within %d B/document: %s (%d B, shortlist %d for %.0f%% of the exact top %d); "
        "measured %s in %.1f s",
        budget, best["name"], best["bytes"], best["shortlist"], 100 * target, k,
        ", ".join(f"{r['name']} {r['shortlist'] or '>' + str(max(grid))}" for r in frontier), record.seconds,
    )  # fmt: skip
    return record


def by_size(budget: int, dim: int, documents: int) -> FirstStage:
    """Without a projection to choose dimensions on (a corpus too small to fit one, or the model's own
    coarse head kept), the coarse view's ``dim`` in the most precise code within ``budget``: float32, int8,
    else 4 bits (not measured).

    Raises:
        InvalidArgument: not even 4 bits a dimension fit; the message names the budget that does."""
    for index, size in (("Flat", 4 * dim), ("SQ8", dim), ("SQ4", (dim + 1) // 2)):
        if size <= budget:
            return FirstStage(
                budget=budget, target=0.0, k=0, dim=dim, index=index, bytes=size, shortlist=None,
                queries="none: no projection was fitted (the coarse view's dimensions kept, its code chosen by size)",
                documents=documents,
            )  # fmt: skip
    raise InvalidArgument(
        f"coarse_bytes={budget}: the coarse view's {dim} dimensions need at least {(dim + 1) // 2} bytes per "
        "document (4 bits each); no projection was fitted to choose fewer dimensions on (a corpus of at least "
        f"{MIN_DOCS} documents and adapt=True fit one)"
    )


def within_budget(
    adaptation: Any, coarse: View, docs_fine: np.ndarray, budget: int
) -> tuple[FirstStage, View]:
    """A build's choice for its first chunk (``docs_fine``) and the coarse view it makes: with a projection
    and pseudo-queries (``adaptation``, an :class:`adaptive_retrieval.adapt.Adaptation` fitted with texts),
    the code :func:`choose` measures best, the view's dimensions and ``adaptation``'s projection set to it;
    without, :func:`by_size` on the view as it is. ``adaptation``'s unsaved directions and pseudo-queries
    are dropped either way."""
    directions, queries = adaptation.directions, adaptation.pseudo_fine
    adaptation.directions = adaptation.pseudo_fine = None  # held no longer than needed
    if adaptation.chosen != "ridge" or directions is None or queries is None:
        return by_size(budget, coarse.dim, len(docs_fine)), coarse
    record = choose(
        budget, docs_fine, directions, queries, k=min(10, len(docs_fine)), queries=adaptation.pseudo_queries
    )
    adaptation.dim = record.dim
    adaptation.projection = np.ascontiguousarray(directions[: record.dim].T, dtype=np.float32)
    return record, View(coarse.layer, record.dim)


def budget_options(coarse_bytes: Any, options: EngineOptions) -> int | None:
    """``coarse_bytes`` checked against the engine options it would override (the FAISS engine, its default index).

    Raises:
        InvalidArgument: another engine, or a FAISS index given beside it (InvalidArgumentType: not an int)."""
    coarse_bytes = check_budget(coarse_bytes)
    if coarse_bytes is None:
        return None
    if options.engine != "faiss":
        raise InvalidArgument(
            f"coarse_bytes= chooses the FAISS engine's coarse index; {options.engine} holds its own vectors "
            "(its quantization is set in its options)"
        )
    if getattr(options, "index", DEFAULT_FACTORY) != DEFAULT_FACTORY:
        raise InvalidArgument(
            f"coarse_bytes= chooses the coarse index; FaissOptions(index={options.index!r}) chooses it too: give one"
        )
    return coarse_bytes


def first_stage_chosen(self: Any, encoding: Any) -> Iterator[tuple[Any, ...]]:
    """The batches of a build whose first chunk chooses the coarse code (``encoding``, an
    :class:`adaptive_retrieval.indexing.CorpusEncoding` with ``coarse_bytes``): that chunk encoded (and the
    choice made) first, the retriever's still-empty engine remade for it when it differs, then every batch."""
    stream = iter(encoding)
    first = next(stream, None)
    if first is None:
        return iter(())  # the writer says what an empty corpus is
    self.first_stage = encoding.first_stage
    if encoding.coarse != self.coarse or encoding.first_stage.index != self.backend.describe():
        assert len(self.ids) == 0, "only an empty retriever changes engine"
        self.backend = self.backend.remade(encoding.coarse.dim, encoding.first_stage.index)
        self.coarse = encoding.coarse
        self.ids = IdMap((), key=self.backend.key, keys=self.backend.opened_keys, renew=self.backend.renew)
        self.backend.attach(self.ids)
        self.writer = IndexWriter.of(self)
    return itertools.chain([first], stream)


__all__ = [
    "BUDGETS",
    "GRID",
    "MIN_DIM",
    "MIN_SUBVECTOR",
    "OPQ_DIM",
    "FirstStage",
    "Representation",
    "budget_options",
    "by_size",
    "check_budget",
    "choose",
    "first_stage_chosen",
    "measure",
    "needed",
    "representations",
    "rising",
    "shortlist_curve",
    "within_budget",
]
