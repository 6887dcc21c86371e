"""The coarse index's codes: int8 over [-1, 1] for normalised vectors, the default (:data:`DEFAULT_FACTORY`,
:func:`unit_coded`), and how product quantizers train (:func:`codebook_training`: without FAISS's per-run
warnings or its polysemous step)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import faiss
import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_FACTORY = "SQ8"
"""The coarse index a FAISS engine builds unless told otherwise: one int8 code per coordinate (64 B per
document at 64 dims, a quarter of float32), scanned exhaustively; see :func:`unit_coded`."""

OPQ_ITERATIONS = 20
"""Iterations an OPQ rotation trains (FAISS's default: 50). Measured on SciFact's fine vectors projected on
256 directions (Intel Xeon): the same shortlists for 0.95 of the exact top 10 as 50 at 16 and 64 bytes (50 and
15), in about 0.7x the time."""


def unit_coded(index: faiss.Index) -> bool:
    """Give an 8-bit scalar quantizer in ``index`` (``"SQ8"``, ``"HNSW32_SQ8"``), not yet trained, the range
    ``[-1, 1]`` on every coordinate, and say whether it did.

    Every coarse vector is L2-normalised, so each coordinate lies in ``[-1, 1]``: codes over that range
    need no training sample and never clamp a later add (a range trained on the first documents can;
    FAISS clamps silently). Measured on the five sets' real coarse vectors (``benchmarks.bench_first_stage``,
    ``proj64-sq8``): the same shortlists as float32 for 0.95 and 0.99 of the exact top 10, at a quarter of
    the bytes. A 4-bit quantizer is left to FAISS's training (over ``[-1, 1]`` it measured worse)."""
    index = faiss.downcast_index(index)
    codes = faiss.downcast_index(index.storage) if isinstance(index, faiss.IndexHNSW) else index
    if (
        not isinstance(codes, faiss.IndexScalarQuantizer)
        or codes.is_trained
        or codes.sq.qtype != faiss.ScalarQuantizer.QT_8bit
    ):
        return False
    d = codes.d
    faiss.copy_array_to_vector(np.r_[np.full(d, -1.0), np.full(d, 2.0)].astype(np.float32), codes.sq.trained)
    codes.is_trained = True
    index.is_trained = True
    return True


@contextlib.contextmanager
def codebook_training(index: faiss.Index, n: int, factory: str) -> Iterator[None]:
    """While ``index`` trains on ``n`` vectors, its product quantizers (PQ, and OPQ's rotation training) run
    k-means without FAISS's warning per run (hundreds of lines when ``n`` is below 39 per centroid): said
    once here instead. An OPQ rotation trains :data:`OPQ_ITERATIONS` iterations.

    A PQ (``"PQ16"``, ``"OPQ16,PQ16"``, ``"IVF1024,PQ16"``) skips FAISS's polysemous training, which the
    factory switches on unless the string ends in ``np``: it reorders the centroids by annealing so that
    Hamming distances between codes approximate L2 ones, for a polysemous search this library never runs (its
    metric is inner product).
    The same centroids in another order: the same distances and answers (tested); the step took seconds per
    code book whatever the corpus (a third or more of an OPQ code's training on 10,000 vectors, in a scratch
    run)."""
    quantizers, lent = [], []
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexPreTransform):
        for i in range(index.chain.size()):
            transform = faiss.downcast_VectorTransform(index.chain.at(i))
            if isinstance(transform, faiss.OPQMatrix) and transform.pq is None:
                transform.niter = min(transform.niter, OPQ_ITERATIONS)
                pq = faiss.ProductQuantizer(transform.d_out, transform.M, 8)
                transform.pq = pq  # FAISS trains with it: a raw pointer, taken back below
                lent.append((transform, pq))
                quantizers.append(pq)
        index = faiss.downcast_index(index.index)
    if isinstance(getattr(index, "pq", None), faiss.ProductQuantizer):
        quantizers.append(index.pq)
    if isinstance(index, (faiss.IndexPQ, faiss.IndexIVFPQ)):
        index.do_polysemous_training = False
    for pq in quantizers:
        pq.cp.min_points_per_centroid = 1
    least = max((39 * pq.ksub for pq in quantizers), default=0)
    if n < least:
        logger.info("%s: codebooks trained on %d vectors (FAISS suggests %d or more)", factory, n, least)
    try:
        yield
    finally:
        for transform, _ in lent:
            transform.pq = None


__all__ = ["DEFAULT_FACTORY", "OPQ_ITERATIONS", "codebook_training", "unit_coded"]
