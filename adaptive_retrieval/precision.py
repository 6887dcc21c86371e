"""What an encoder's model runs in: float32 (the default), or a bfloat16 copy of it.

A bfloat16 copy (:meth:`adaptive_retrieval.Encoder.bfloat16`) runs the same layers with bfloat16 weights and
states: oneDNN multiplies bfloat16 values and sums them in float32 (AMX tiles or AVX-512 BF16 where the
processor has them: :func:`adaptive_retrieval.cpu_linear.bfloat16_native`); pooling, heads and vectors stay
float32 (:meth:`adaptive_retrieval.Encoder.advance` pools in float32). Its vectors approximate the float32
encoder's (cosine ~0.9999); ``python -m evals.precision_eval`` measures its answers against float32's, and
``python -m benchmarks.bench_encode`` its speed (figures: docs/measurements.md). It keeps the fingerprint of
the weights it approximates, so an index built in either precision accepts the other's queries.

These functions are :class:`adaptive_retrieval.Encoder`'s methods of the same names (attached there).
"""

from __future__ import annotations

import copy
import logging
import os
from typing import Any

import torch

from .backbones import backbone_for
from .cpu_linear import bfloat16_faster, bfloat16_native
from .errors import InvalidArgument

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
"""What an encoder's model may run in (:attr:`adaptive_retrieval.Encoder.precision`)."""

ENV_DEFAULT = "ADAPTIVE_RETRIEVAL_PRECISION"
"""Set to ``float32`` or ``bfloat16``, what ``"auto"`` means in this process: the queries' default
(:meth:`adaptive_retrieval.Retriever.set_query_precision`) and ``Retriever.build(precision="auto")``. The test
suite, the evals and the benchmarks set ``float32``, so that their figures compare with earlier runs."""


def check_precision(precision: str) -> str:
    """``precision`` if it is ``"auto"`` or one of :data:`PRECISIONS`, else ``InvalidArgument``."""
    if precision != "auto" and precision not in PRECISIONS:
        raise InvalidArgument(f"precision={precision!r}: choose auto, {', '.join(PRECISIONS)}")
    return precision


def resolve(precision: str, device: Any = "cpu") -> str:
    """What ``precision`` means for an encoder on ``device``: ``"auto"`` is :data:`ENV_DEFAULT`'s value where
    set, else bfloat16 on a CPU where it pays (native bfloat16 and a product measured faster than float32's:
    :func:`adaptive_retrieval.cpu_linear.bfloat16_faster`; docs/measurements.md, "Encoding throughput"),
    else float32 (a GPU included: not measured there)."""
    if check_precision(precision) != "auto":
        return precision
    chosen = os.environ.get(ENV_DEFAULT, "").strip().lower()
    if chosen:
        if chosen not in PRECISIONS:
            raise InvalidArgument(f"{ENV_DEFAULT}={chosen!r}: choose one of {', '.join(PRECISIONS)}")
        return chosen
    cpu = getattr(device, "type", str(device).split(":")[0]) == "cpu"
    return "bfloat16" if cpu and bfloat16_faster() else "float32"


def precision_of(self: Any) -> str:
    """``"float32"`` or ``"bfloat16"``: what the model's layers run in. Pooled states, heads and vectors
    are float32 either way."""
    dtype = next(self.model.parameters()).dtype
    return "bfloat16" if dtype == torch.bfloat16 else "float32"


def bfloat16(self: Any) -> Any:
    """A copy whose model runs in bfloat16 (:mod:`adaptive_retrieval.precision`); this encoder is left as it
    was, and one already in bfloat16 returns itself. On a processor without native bfloat16 it runs slower
    than float32 (a warning says so). Training needs the float32 model."""
    if precision_of(self) == "bfloat16":
        return self
    if self.device.type == "cpu" and not bfloat16_native():
        logger.warning(
            "this processor has no native bfloat16 (AMX or AVX-512 BF16): a bfloat16 encoder runs slower "
            "here than float32"
        )
    fingerprint = self.weights_fingerprint
    model = copy.deepcopy(self.model).to(torch.bfloat16)
    other = copy.copy(self)
    other.model, other.backbone, other.heads = model, backbone_for(model), dict(self.heads)
    other._weights_fingerprint = fingerprint
    return other


def with_precision(self: Any, precision: str) -> Any:
    """This encoder (``precision`` its own) or its copy in ``precision`` (``"bfloat16"``: :func:`bfloat16`).

    Raises:
        InvalidArgument: another precision, or float32 asked of a bfloat16 encoder (load the model again)."""
    if precision not in PRECISIONS:
        raise InvalidArgument(f"precision={precision!r}: choose one of {', '.join(PRECISIONS)}")
    if precision == precision_of(self):
        return self
    if precision == "bfloat16":
        return bfloat16(self)
    raise InvalidArgument(
        "precision='float32' from a bfloat16 encoder: its float32 weights are gone; load the model again"
    )
