"""Linear layers through oneDNN's matrix multiply when an encoder runs on CPU without gradients.

torch runs a float32 ``nn.Linear`` on CPU through MKL's ``sgemm``. On AMD processors MKL picks its AVX2
kernels even where the processor has AVX-512; oneDNN, which every x86 build of torch also carries (it
is what ``torch.compile`` uses for linear layers on CPU), picks by the processor's features. The same
float32 products with float32 accumulation, in another order: outputs differ from MKL's by ~1e-6 of
their magnitude, the encoders' vectors by < 1e-6 (tests).

With the GELU fused too (:func:`intermediate`), an encoder runs faster on an AMD processor with AVX-512
than with MKL's linear layers; on an Intel processor MKL already uses AVX-512, so expect parity there.
``python -m benchmarks.bench_encode`` measures both paths (``cpu_linear.set_enabled(False)`` is the
MKL side); the figures, with their results files, are in docs/measurements.md ("Encoding throughput").

:func:`use_onednn` turns a model's ``nn.Linear`` modules into :class:`OneDNNLinear` (the same module,
the same parameters and state dict; only ``forward`` differs). Training (gradients enabled), other
devices and other dtypes, CPU autocast and ``torch.jit.trace`` take ``nn.Linear``'s own path.
Which path runs faster depends on the processor and the model: :func:`choose_path` times one layer of each
model both ways at its first encoder in a process and keeps the faster (oneDNN's on a tie).
``ADAPTIVE_RETRIEVAL_ONEDNN=1`` in the environment keeps oneDNN's without measuring; ``=0`` (read at the
first such call of the process), or :func:`set_enabled` ``(False)`` at any time, sends every call to
``nn.Linear``'s path.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Hashable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation

logger = logging.getLogger(__name__)

ENV_SWITCH = "ADAPTIVE_RETRIEVAL_ONEDNN"
_enabled = True


def _switch() -> bool | None:
    """:data:`ENV_SWITCH`'s value: ``False`` (``0``, ``false``, ``no``, ``off``), ``True`` (``1``, ``true``,
    ``yes``, ``on``), or ``None`` (unset or anything else: each model's path measured, :func:`choose_path`)."""
    value = os.environ.get(ENV_SWITCH, "").strip().lower()
    return (
        False
        if value in ("0", "false", "no", "off")
        else True
        if value in ("1", "true", "yes", "on")
        else None
    )


def set_enabled(enabled: bool) -> None:
    """Route :class:`OneDNNLinear` calls through oneDNN (``True``, the default, where :func:`available`)
    or through ``nn.Linear``'s own path (``False``), for the whole process."""
    global _enabled
    _enabled = bool(enabled)


def _onednn_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, post: str = "none"
) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` by oneDNN, followed by the exact (erf) GELU when ``post="gelu"``."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, post, [], "none" if post == "gelu" else "")


DTYPES = (torch.float32, torch.bfloat16)
"""The dtypes :class:`OneDNNLinear` sends to oneDNN: float32, and bfloat16 (an encoder's
:meth:`adaptive_retrieval.Encoder.bfloat16` copy; products of bfloat16 values summed in float32)."""


def bfloat16_native() -> bool:
    """Whether this processor multiplies bfloat16 natively (AMX tiles, or AVX-512 BF16): where a bfloat16
    encoder (:meth:`adaptive_retrieval.Encoder.bfloat16`) runs faster than float32. Elsewhere oneDNN
    emulates the products, slower than float32."""
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    try:
        return any(bool(getattr(cpu, name)()) for name in checks if hasattr(cpu, name))
    except RuntimeError:  # pragma: no cover - a torch build that cannot ask
        return False


BFLOAT16_SHAPE = (256, 768, 3072)
"""The product :func:`bfloat16_speedup` times, (rows, inputs, outputs): one 256-token text through an
mpnet-base intermediate layer (or sixteen 16-token queries)."""

BFLOAT16_MARGIN = 1.1
"""How much faster than float32 a bfloat16 product must run for :func:`bfloat16_faster`: bfloat16 only
approximates float32's vectors, so a tie keeps float32."""


def bfloat16_speedup(rounds: int = 7) -> float:
    """float32's time over bfloat16's for oneDNN's linear layer at :data:`BFLOAT16_SHAPE` on this
    processor, the best of ``rounds`` each, alternating (about 0.1 s). 0.0 where bfloat16 products do
    not run here."""
    if not (available("none", torch.float32) and available("none", torch.bfloat16)):
        return 0.0
    rows, inputs, outputs = BFLOAT16_SHAPE
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, inputs, generator=generator)
    weight = torch.randn(outputs, inputs, generator=generator) * inputs**-0.5
    bias = torch.zeros(outputs)
    half = (x.bfloat16(), weight.bfloat16(), bias.bfloat16())
    best = _fastest(
        {"float32": lambda: _onednn_linear(x, weight, bias), "bfloat16": lambda: _onednn_linear(*half)},
        rounds,
    )
    return best["float32"] / best["bfloat16"]


def _fastest(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """The best time of each call over ``rounds``, alternating, after a first call each (oneDNN builds its
    kernels then), without gradients."""
    best = dict.fromkeys(calls, float("inf"))
    with torch.inference_mode():
        for call in calls.values():
            call()
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                best[name] = min(best[name], time.perf_counter() - start)
    return best


@functools.cache
def bfloat16_faster() -> bool:
    """Whether a bfloat16 encoder pays here: native bfloat16 (:func:`bfloat16_native`) and, measured once
    per process, oneDNN's bfloat16 product at least :data:`BFLOAT16_MARGIN` times as fast as its float32
    one (:func:`bfloat16_speedup`). Native is not enough: on an Intel Xeon with AVX-512 BF16 but no AMX
    the bfloat16 encoder ran slower than float32 (docs/measurements.md, "Encoding throughput"), where an
    AMD EPYC's AVX-512 BF16 ran it 1.8x faster. What ``precision="auto"`` reads
    (:func:`adaptive_retrieval.precision.resolve`)."""
    if not bfloat16_native():
        return False
    speedup = bfloat16_speedup()
    faster = speedup >= BFLOAT16_MARGIN
    logger.info(
        "bfloat16 products run %.2fx float32's here: %s by default",
        speedup,
        "bfloat16" if faster else "float32",
    )
    return faster


def available(post: str = "none", dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's linear (followed by ``post``: ``"none"`` or ``"gelu"``) on ``dtype`` runs here and
    agrees with ``F.linear`` (and ``F.gelu``), checked once per process and dtype.

    The op is torch's (``torch.ops.mkldnn._linear_pointwise``, the one ``torch.compile`` emits); a torch
    build without it, or one whose results differ, falls back to ``F.linear`` with a log line."""
    return dtype in DTYPES and _probe(post, dtype)


@functools.cache
def _probe(post: str, dtype: torch.dtype = torch.float32) -> bool:
    if _switch() is False:
        return False
    if not torch.backends.mkldnn.is_available():
        return False
    after = F.gelu if post == "gelu" else (lambda y: y)
    # bfloat16 operands are compared with the float32 product of the same (rounded) values: the sums'
    # order and the output's rounding to bfloat16 differ, so within bfloat16's precision
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(3, 5, 64, generator=generator).to(dtype)
        weight = torch.randn(48, 64, generator=generator).to(dtype)
        bias = torch.randn(48, generator=generator).to(dtype)
        with torch.no_grad():
            got = _onednn_linear(x, weight, bias, post).float()
            got_no_bias = _onednn_linear(x, weight, None, post).float()
            x, weight, bias = x.float(), weight.float(), bias.float()
            want, want_no_bias = after(F.linear(x, weight, bias)), after(F.linear(x, weight))
        scale = want.abs().max()  # bfloat16's error grows with the values' magnitude
        agrees = torch.allclose(got, want, rtol=tolerance, atol=tolerance * scale) and torch.allclose(
            got_no_bias, want_no_bias, rtol=tolerance, atol=tolerance * scale
        )
    except (RuntimeError, AttributeError) as error:
        logger.info("oneDNN linear (%s, %s) not available (%s); using torch's default", post, dtype, error)
        return False
    if not agrees:
        logger.warning(
            "oneDNN linear (%s, %s) disagrees with torch's here; using torch's default", post, dtype
        )
    return agrees


class OneDNNLinear(nn.Linear):
    """An ``nn.Linear`` whose forward runs through oneDNN for float32 (or bfloat16) inputs of its own
    dtype on CPU when no gradient is recorded (``torch.no_grad`` / ``torch.inference_mode``), and as
    ``nn.Linear`` otherwise."""

    mkl: bool = False
    """float32 inputs take ``nn.Linear``'s own path (MKL's ``sgemm``) here: set by :func:`choose_path` on a
    model whose layers ran faster that way on this processor (bfloat16 inputs still go to oneDNN)."""

    def fast(self, x: torch.Tensor, post: str = "none") -> bool:
        """Whether a call on ``x`` takes oneDNN's path (followed by ``post``)."""
        return (
            not torch.is_grad_enabled()
            and not (self.mkl and x.dtype == torch.float32)
            and x.device.type == "cpu"
            and x.dtype == self.weight.dtype
            and x.dim() >= 2
            and _enabled
            and not torch.is_autocast_enabled("cpu")  # autocast casts inside F.linear, not here
            and not torch.jit.is_tracing()  # a trace records F.linear, as it would without this class
            and available(post, x.dtype)
        )

    def onednn(self, x: torch.Tensor, post: str = "none") -> torch.Tensor:
        # oneDNN reads the bias as dense: a strided one (a view) would be read wrong
        bias = None if self.bias is None else self.bias.contiguous()
        return _onednn_linear(x, self.weight, bias, post)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.onednn(x) if self.fast(x) else super().forward(x)


def fusable(dense: nn.Module) -> bool:
    """Whether ``dense`` may run fused into its block's next step (:func:`intermediate`): a plain
    :class:`OneDNNLinear`, not wrapped (LoRA) nor replaced (int8), with no forward hooks, which a fused call
    (``dense.onednn``, not ``dense(x)``) would not run (int8 calibration's
    :func:`adaptive_retrieval.quantization.input_maxima` records every linear's inputs by hooks)."""
    return (
        type(dense) is OneDNNLinear
        and not (dense._forward_hooks or dense._forward_pre_hooks)
        and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
    )


def intermediate(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` for a BERT-style intermediate block (``dense``, then ``intermediate_act_fn``), with
    an exact GELU fused into oneDNN's matrix multiply where both apply: one pass over the layer's widest
    activation instead of two."""
    dense, act = getattr(module, "dense", None), getattr(module, "intermediate_act_fn", None)
    if (
        fusable(dense)
        and type(act) is GELUActivation
        and act.act is F.gelu  # the exact GELU, as torch computes it
        and dense.fast(x, "gelu")
    ):
        return dense.onednn(x, "gelu")
    return module(x)


def use_onednn(model: nn.Module) -> int:
    """Turn every plain ``nn.Linear`` in ``model`` into a :class:`OneDNNLinear`, in place; return how many.

    Subclasses of ``nn.Linear`` (int8 layers, adapters' own layers) are left as they are. The model is
    changed in place (``isinstance(m, nn.Linear)`` still holds; code matching the exact type, such as
    ``torch.ao.quantization.quantize_dynamic``'s default mapping, no longer sees these layers)."""
    count = 0
    for module in model.modules():
        if type(module) is nn.Linear:
            module.__class__ = OneDNNLinear
            count += 1
    return count


PATH_MARGIN = 1.05
"""How much faster than oneDNN's a model's layer must run on MKL's linear layers for :func:`choose_path` to
take MKL's: oneDNN's path is the default (it fuses the GELU), a tie keeps it."""

_chosen: dict[Hashable, str] = {}


def set_path(model: nn.Module, path: str) -> int:
    """Send ``model``'s float32 :class:`OneDNNLinear` calls through ``"onednn"`` or ``"mkl"`` (``nn.Linear``'s
    own path, the GELU unfused); return how many layers were set."""
    if path not in ("onednn", "mkl"):
        raise ValueError(f"path={path!r}: choose onednn or mkl")
    layers = [m for m in model.modules() if isinstance(m, OneDNNLinear)]
    for layer in layers:
        layer.mkl = path == "mkl"
    return len(layers)


def path_of(model: nn.Module) -> str | None:
    """``"onednn"`` or ``"mkl"``: the path ``model``'s float32 linear layers take (``None``: it has no
    :class:`OneDNNLinear`, or oneDNN's op is missing or switched off here, so every call is ``nn.Linear``'s)."""
    layers = [m for m in model.modules() if isinstance(m, OneDNNLinear)]
    if not layers or not (_enabled and available()):
        return None
    return "mkl" if all(layer.mkl for layer in layers) else "onednn"


def choose_path(model: nn.Module, key: Hashable, run_layer: Callable[[], object], rounds: int = 3) -> str:
    """Set ``model``'s float32 linear layers to the path that runs one of its layers faster here.

    ``run_layer`` runs one transformer layer of ``model`` on a fixed input (the encoder passes two
    256-token texts); it is timed with every linear layer on oneDNN's path (GELU fused) and on MKL's,
    alternating, the best of ``rounds`` each after a first call, and MKL's is taken where it is at least
    :data:`PATH_MARGIN` times as fast. Measured once per ``key`` (the model's shape) in a process: eight
    calls of one layer (about 0.1 s for MiniLM, 0.3 s for mpnet-base on 2 cores). Why a layer and not its
    products: on an Intel Xeon MKL's products timed alone won for MiniLM, whose whole model then ran 9%
    slower without the fused GELU. An AMD EPYC runs both models 1.12-1.20x faster on oneDNN's; on Intel
    Xeons the two paths come within a few percent (docs/measurements.md, "Encoding throughput").

    :data:`ENV_SWITCH` set to ``1`` keeps oneDNN's path without measuring, ``0`` sends every call to
    ``nn.Linear``'s. Returns the path set."""
    switch = _switch()
    if switch is False or not available():  # every call is nn.Linear's (MKL's) whatever the flags say
        set_path(model, "onednn")
        return "mkl"
    if switch is True:
        set_path(model, "onednn")
        return "onednn"
    if key not in _chosen:

        def on(path: str) -> Callable[[], object]:
            return lambda: (set_path(model, path), run_layer())

        best = _fastest({"onednn": on("onednn"), "mkl": on("mkl")}, rounds)
        _chosen[key] = "mkl" if best["onednn"] >= PATH_MARGIN * best["mkl"] else "onednn"
        logger.info(
            "linear layers for %s: oneDNN's %.1f ms a layer, MKL's %.1f ms: %s's",
            key,
            1e3 * best["onednn"],
            1e3 * best["mkl"],
            _chosen[key],
        )
    set_path(model, _chosen[key])
    return _chosen[key]
