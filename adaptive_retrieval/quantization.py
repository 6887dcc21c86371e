"""int8 linear layers for faster CPU encoding: int8 weights, each token's activations quantized on its own.

torch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``) gives a whole batch one
activation scale. In these encoders a few tokens (the special tokens, mostly) carry activations tens of
times larger than the rest, so one scale leaves the other tokens a handful of levels: measured on
mpnet-base-2dmse, query vectors kept a cosine of 0.72 to their float32 selves and 64% of the float32 top
10 (``docs/measurements.md``). Here every token (row) gets its own scale and every output channel its
own weight scale (symmetric, 127 levels), and the product runs as an int8 matrix multiply with int32
accumulation (``torch._int_mm``: oneDNN's VNNI/AMX kernels on CPU), dequantized by the two scales:

    y = (round(x / s_x) @ round(W / s_w).T) * s_x * s_w + b,   s_x = max|x_row| / 127, s_w = max|W_row| / 127

Measured there: cosine 0.996, and ~2x the float32 speed for one query at a time
(``benchmarks/bench_int8.py``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

LEVELS = 127  # symmetric int8: -127 .. 127


def _scales(x: torch.Tensor) -> torch.Tensor:
    """One scale per row of ``x`` (2-D): its largest magnitude over ``LEVELS``."""
    return x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / LEVELS


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` in int8: weights quantized per output channel once, activations per token
    at each call. Inference only (no gradients flow through the rounding)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        scale = _scales(weight)
        # (out, in) row-major, passed transposed: the column-major (in, out) layout _int_mm reads fastest
        self.register_buffer("weight_int8", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("weight_scale", scale.reshape(1, -1))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features).float()
        scale = _scales(rows)
        codes = torch.round(rows / scale).to(torch.int8)
        y = torch._int_mm(codes, self.weight_int8.t()).float() * (scale * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per token"


def quantize_linears(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose ``nn.Linear`` layers are :class:`Int8Linear`; ``module`` is left as
    it was. CPU only (``torch._int_mm`` on other devices has other shape rules)."""
    if not hasattr(torch, "_int_mm"):  # pragma: no cover - every supported torch has it
        raise RuntimeError(f"int8 encoding needs torch._int_mm, which torch {torch.__version__} lacks")
    other = copy.deepcopy(module)
    for name, child in list(other.named_modules()):
        if isinstance(child, nn.Linear):
            parent, _, attr = name.rpartition(".")
            setattr(other.get_submodule(parent) if parent else other, attr, Int8Linear(child))
    return other
