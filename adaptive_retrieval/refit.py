"""Re-deriving an adapted index's coarse view from the fine vectors it stores, after churn.

An adapted index's coarse vectors are its documents' fine vectors projected on the corpus' leading
directions (:mod:`adaptive_retrieval.adapt`), found on the documents of its build. After many adds,
deletes and upserts the corpus' directions move, and a projection fitted on other documents keeps less of
what ranks them. :func:`drift` measures it without labels and without encoding anything: the share of the
stored fine vectors' energy (the sum of their squared coordinates) the index's projection keeps, over the
share the best projection of the same width keeps now (1.0: nothing to gain). :func:`refit`
(``Retriever.refit``) takes the new directions, re-projects every stored fine vector into a new coarse
index (swapped in whole), and turns the early-layer head onto the new directions, so that both coarse
queries stay in the documents' space.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .adapt import fine_basis, project_fine
from .checks import positive_int
from .errors import InvalidArgument

logger = logging.getLogger(__name__)

REFIT_BELOW = 0.97
"""A drift ratio under which :func:`drift` says a refit is due (see docs/measurements.md for what it cost)."""


@dataclass(frozen=True)
class Drift:
    """How much of the stored fine vectors' energy the index's projection keeps, against the best now."""

    kept: float
    """Share of the energy the index's projection keeps"""
    best: float
    """Share the best projection of the same width (the sample's leading directions) keeps"""
    documents: int
    """Fine vectors sampled"""

    @property
    def ratio(self) -> float:
        """``kept / best``: 1.0 when the projection is still the best one"""
        return self.kept / self.best if self.best > 0 else 1.0

    @property
    def due(self) -> bool:
        """Whether a refit is due (:data:`REFIT_BELOW`)"""
        return self.ratio < REFIT_BELOW


def sample_fine(retriever: Any, size: int, seed: int = 0, block: int = 65_536) -> np.ndarray:
    """Up to ``size`` live documents' fine vectors, drawn at random (in row order), float32."""
    rows = retriever.ids.live_rows()
    if len(rows) > size:
        rows = np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))
    parts = []
    for start in range(0, len(retriever.ids), block):
        inside = rows[(rows >= start) & (rows < start + block)]
        if len(inside):
            stop = int(inside[-1]) + 1
            parts.append(retriever.backend.vectors("fine", start, stop)[inside - start])
    return np.concatenate(parts) if parts else np.empty((0, retriever.fine.dim), np.float32)


def _kept(fine: np.ndarray, projection: np.ndarray) -> float:
    x = fine @ projection
    return float((x * x).sum() / max(float((fine * fine).sum()), 1e-12))


def _projection_of(fine: np.ndarray, dim: int) -> np.ndarray:
    """The ``dim`` leading directions of ``fine`` as the build finds them
    (:func:`adaptive_retrieval.adapt.fine_basis`), as a ``(fine_dim, dim)`` projection."""
    return np.ascontiguousarray(fine_basis(fine)[1][:dim].T.numpy(), dtype=np.float32)


def drift(self: Any, sample: int = 20_000, seed: int = 0) -> Drift:
    """How far the corpus' directions have moved from the index's projection (``Retriever.drift``).

    Args:
        sample: fine vectors read (at random).
        seed: the sample's seed.

    Returns:
        :class:`adaptive_retrieval.refit.Drift` (``.ratio``, ``.due``).

    Raises:
        InvalidArgument: an index without a projection (no coarse head fitted to its corpus).
    """
    projection = _projection(self)
    with self._lock.read():  # rows as they are now (a compaction renumbers them under the write lock)
        fine = sample_fine(self, positive_int(sample, "sample"), seed)
    best = _projection_of(fine, projection.shape[1])
    return Drift(kept=_kept(fine, projection), best=_kept(fine, best), documents=len(fine))


def refit(self: Any, sample: int = 100_000, seed: int = 0, block: int = 65_536) -> Drift:
    """Fit the coarse view to the documents the index holds now (``Retriever.refit``): new leading
    directions from a sample of the stored fine vectors, every document's coarse vector re-projected into
    a new coarse index (built beside searches, swapped in whole, dead rows reclaimed first), the early
    head turned onto the new directions. No text is encoded. The calibration, measured on the old coarse
    view, is dropped (calibrate again).

    Args:
        sample: fine vectors the directions are fitted on (at random).
        seed: the sample's seed.
        block: rows re-projected at a time.

    Returns:
        The :class:`adaptive_retrieval.refit.Drift` of the new projection (``ratio`` 1.0 on the sample it was fitted on).

    Raises:
        InvalidArgument: an index without a projection. EngineError: an engine that cannot rebuild its
            coarse index (Qdrant, Milvus). RetrieverBusy: another write is running.
    """
    self._check_open()
    old = _projection(self)
    sample = positive_int(sample, "sample")
    t0 = time.perf_counter()
    if self.ids.dead:
        self.compact()
    with self.writer.exclusive():
        fine = sample_fine(self, sample, seed)
        new = _projection_of(fine, old.shape[1])
        before = _kept(fine, old)
        n = len(self.ids)
        blocks = (
            project_fine(self.backend.vectors("fine", s, min(s + block, n)), new) for s in range(0, n, block)
        )
        swap = self.backend.recoarsened(blocks, n, project_fine(fine, new))
        head = self.encoder.heads.get(self.coarse.layer)
        rotated = None
        if head is not None:  # it predicted coordinates on the old directions: now on the new ones
            turn = torch.as_tensor(old.T @ new, dtype=head.dtype, device=head.device)
            rotated = head[:, : old.shape[1]] @ turn
        with self._lock.write():
            swap()
            self.adaptation.projection = new
            if rotated is not None:
                self.encoder = self.encoder.with_heads({self.coarse.layer: rotated})
            self.calibration = None
    result = Drift(kept=_kept(fine, new), best=_kept(fine, new), documents=len(fine))
    logger.info(
        "refit the coarse view on %d documents' fine vectors: energy kept %.4f -> %.4f in %.1f s",
        len(fine), before, result.kept, time.perf_counter() - t0,
    )  # fmt: skip
    return result


def _projection(self: Any) -> np.ndarray:
    projection = self.projection
    if projection is None:
        raise InvalidArgument(
            "this index has no projection to refit: its coarse view is the model's own (no head was fitted "
            "to its corpus at build; build with adapt=True)"
        )
    return projection


__all__ = ["REFIT_BELOW", "Drift", "drift", "refit", "sample_fine"]
