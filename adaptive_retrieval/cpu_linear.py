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
``ADAPTIVE_RETRIEVAL_ONEDNN=0`` in the environment (read at the first such call of the process), or
:func:`set_enabled` ``(False)`` at any time, sends every call to ``nn.Linear``'s path.
"""

from __future__ import annotations

import functools
import logging
import os

import torch
import torch.nn.functional as F
from torch import nn
from transformers.activations import GELUActivation

logger = logging.getLogger(__name__)

ENV_SWITCH = "ADAPTIVE_RETRIEVAL_ONEDNN"
_enabled = True


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


def available(post: str = "none", dtype: torch.dtype = torch.float32) -> bool:
    """Whether oneDNN's linear (followed by ``post``: ``"none"`` or ``"gelu"``) on ``dtype`` runs here and
    agrees with ``F.linear`` (and ``F.gelu``), checked once per process and dtype.

    The op is torch's (``torch.ops.mkldnn._linear_pointwise``, the one ``torch.compile`` emits); a torch
    build without it, or one whose results differ, falls back to ``F.linear`` with a log line."""
    return dtype in DTYPES and _probe(post, dtype)


@functools.cache
def _probe(post: str, dtype: torch.dtype = torch.float32) -> bool:
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off"):
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

    def fast(self, x: torch.Tensor, post: str = "none") -> bool:
        """Whether a call on ``x`` takes oneDNN's path (followed by ``post``)."""
        return (
            not torch.is_grad_enabled()
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
