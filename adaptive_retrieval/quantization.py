"""int8 linear layers for faster CPU encoding: int8 weights, each token's activations quantized on its own.

torch's dynamic quantization (``torch.ao.quantization.quantize_dynamic``) gives a whole batch one
activation scale. In these encoders a few tokens (the special tokens, mostly) carry activations tens of
times larger than the rest, so one scale leaves the other tokens a handful of levels, and the queries'
results drift far from float32's (docs/measurements.md, "int8 queries", with its results file). Here
every token (row) gets its own scale and every output channel its own weight scale (symmetric, 127
levels), and the product runs as an int8 matrix multiply with int32 accumulation (``torch._int_mm``:
oneDNN's VNNI/AMX kernels on CPU), dequantized by the two scales:

    y = (round(x / s_x) @ round(W / s_w).T) * s_x * s_w + b,   s_x = max|x_row| / 127, s_w = max|W_row| / 127

Within a token, a few channels are outliers too. Given the largest magnitude each linear layer's input
channels reach on sample texts, each channel j is first divided by ``s_j = max|x_j|**a / max|W_j|**(1-a)``
and the weight's column j multiplied by it (SmoothQuant's migration, a = 0.5: exact in float, it moves
the outliers' range from the activations into the weights, which are quantized per output channel).

``python -m benchmarks.bench_int8`` measures the speed-up over float32 and the overlap of the results with
float32's, one query at a time; the figures, with their results files, are in docs/measurements.md
("int8 queries").
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .backbones import backbone_for
from .corpus import check_texts
from .errors import InstallationError, InvalidArgument

LEVELS = 127  # symmetric int8: -127 .. 127
SAMPLE_TEXTS = (
    "What is the capital of Australia?",
    "how to reset a forgotten password on a laptop",
    "The mitochondria produce most of the chemical energy needed to power the cell's biochemical reactions.",
    "Interest rates rose for the third time this year as inflation stayed above the central bank's target.",
    "A man is playing a guitar on the street while a small crowd watches.",
    "Two dogs run through the snow.",
    "Patients receiving the drug showed a 23% reduction in systolic blood pressure after 12 weeks (p < 0.01).",
    "Usage: tar [OPTION...] [FILE]... Store, list or extract files in an archive; -x extracts, -v lists.",
    "def parse(path): return json.loads(open(path).read())",
    "The committee will meet on Tuesday, 14 March, at 9:30 in room B-204 to review the budget proposal.",
    "Does vitamin D supplementation reduce the risk of fractures in elderly women?",
    "She said she had never seen anything like it in all her years at sea.",
    "Error 404: the requested resource could not be found on this server.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "The team won the championship after a penalty shoot-out in the final minute.",
    "In 1905 Einstein published four papers that changed physics: on the photoelectric effect, Brownian "
    "motion, special relativity and the equivalence of mass and energy.",
    "best budget noise cancelling headphones 2024 review",
    "Mix the flour, sugar and butter, then bake for 25 minutes at 180 degrees.",
    "The court ruled that the contract was void because one party had been misled about its terms.",
    "A woman is slicing an onion.",
    "Gene expression profiling identified 312 transcripts differentially regulated in tumour tissue "
    "compared with adjacent normal tissue, including several known oncogenes.",
    "Is it safe to drive with the check engine light on?",
    "The river flooded the lower town twice in one decade, and the council finally built a levee.",
    "Configure the network interface with a static IP address by editing /etc/network/interfaces.",
)
"""Sample texts whose activations set the smoothing when no texts are given: a few of many kinds (the
outlier channels are the model's own; another domain's texts calibrate it as well: docs/measurements.md)."""
SMOOTHING = 0.5
"""SmoothQuant's migration strength: 0 leaves activations as they are, 1 moves all their range to weights."""


def _scales(x: torch.Tensor) -> torch.Tensor:
    """One scale per row of ``x`` (2-D): its largest magnitude over ``LEVELS``."""
    return x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / LEVELS


class Int8Linear(nn.Module):
    """A frozen ``nn.Linear`` in int8: weights quantized per output channel once, activations per token
    at each call. Inference only (no gradients flow through the rounding)."""

    def __init__(self, linear: nn.Linear, smooth: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        if smooth is not None:  # x W^T = (x / s)(W s)^T: the same product, outliers moved to the weight
            if smooth.shape != (linear.in_features,) or not bool((smooth > 0).all()):
                raise InvalidArgument(f"smooth must hold {linear.in_features} positive factors")
            weight = weight * smooth.float()
        self.register_buffer("inverse_smooth", None if smooth is None else 1 / smooth.float())
        scale = _scales(weight)
        # (out, in) row-major, passed transposed: the column-major (in, out) layout _int_mm reads fastest
        self.register_buffer("weight_int8", torch.round(weight / scale).to(torch.int8))
        self.register_buffer("weight_scale", scale.reshape(1, -1))
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x @ W.T + b`` in int8: each row of ``x`` (smoothed) quantized on its own scale, the product dequantized."""
        rows = x.reshape(-1, self.in_features).float()
        if self.inverse_smooth is not None:
            rows = rows * self.inverse_smooth
        scale = _scales(rows)
        codes = torch.round(rows / scale).to(torch.int8)
        y = torch._int_mm(codes, self.weight_int8.t()).float() * (scale * self.weight_scale)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per token"


def input_maxima(module: nn.Module, run: Callable[[], object]) -> dict[str, torch.Tensor]:
    """The largest magnitude each input channel of each ``nn.Linear`` in ``module`` reaches while
    ``run()`` runs (e.g. encodes sample texts), by name."""
    maxima: dict[str, torch.Tensor] = {}

    def record(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, ...], __: torch.Tensor) -> None:
            x = inputs[0].detach()
            seen = x.abs().reshape(-1, x.shape[-1]).amax(dim=0).float()
            maxima[name] = seen if name not in maxima else torch.maximum(maxima[name], seen)

        return hook

    handles = [
        m.register_forward_hook(record(name))
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear)
    ]
    try:
        run()
    finally:
        for h in handles:
            h.remove()
    return maxima


def smoothing_factors(linear: nn.Linear, maximum: torch.Tensor, alpha: float = SMOOTHING) -> torch.Tensor:
    """SmoothQuant's per-channel factors for ``linear`` given its inputs' channel maxima."""
    weight = linear.weight.detach().abs().amax(dim=0).float().clamp(min=1e-5)
    return maximum.float().clamp(min=1e-5) ** alpha / weight ** (1 - alpha)


def check_int8_matmul() -> None:
    """Raise unless this torch multiplies int8 matrices on this CPU, and correctly: ``torch._int_mm``
    has a CPU kernel from torch 2.3, and before 2.6 it gave wrong results on CPUs without AVX512-VNNI."""
    version = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    if version < (2, 6) or not hasattr(torch, "_int_mm"):
        raise InstallationError(
            f"int8 encoding needs torch >= 2.6 (its CPU int8 matrix product); this is {torch.__version__}"
        )
    generator = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (5, 64), dtype=torch.int8, generator=generator)
    b = torch.randint(-127, 128, (64, 24), dtype=torch.int8, generator=generator)
    if not torch.equal(torch._int_mm(a, b), a.int() @ b.int()):  # pragma: no cover - a broken kernel
        raise InstallationError(
            "torch's int8 matrix product gives wrong results on this CPU; encode in float32"
        )


def quantize_linears(
    module: nn.Module,
    maxima: dict[str, torch.Tensor] | None = None,
    alpha: float = SMOOTHING,
    *,
    inplace: bool = False,
) -> nn.Module:
    """``module`` (a copy, unless ``inplace``) with its ``nn.Linear`` layers replaced by
    :class:`Int8Linear`, each smoothed where ``maxima`` (:func:`input_maxima`) names it. CPU only."""
    check_int8_matmul()
    maxima = maxima or {}
    other = module if inplace else copy.deepcopy(module)
    for name, child in list(other.named_modules()):
        if isinstance(child, nn.Linear):
            smooth = smoothing_factors(child, maxima[name], alpha) if name in maxima else None
            parent, _, attr = name.rpartition(".")
            setattr(other.get_submodule(parent) if parent else other, attr, Int8Linear(child, smooth))
    return other


def quantize_encoder(encoder: Any, sample_texts: Sequence[str] | None = None) -> Any:
    """:meth:`adaptive_retrieval.Encoder.quantized`: a copy of ``encoder`` whose linear layers run in
    int8, calibrated on ``sample_texts`` (default :data:`SAMPLE_TEXTS`); ``encoder`` is left as it was. From a
    bfloat16 encoder, the copy's other layers run in float32 on its bfloat16-rounded weights."""
    if encoder.device.type != "cpu":
        raise InvalidArgument(f"int8 encoding runs on CPU; this encoder is on {encoder.device}")
    texts = check_texts(SAMPLE_TEXTS if sample_texts is None else sample_texts)
    if not texts:
        raise InvalidArgument("sample_texts is empty: give texts like those that will be encoded, or None")
    fingerprint = encoder.weights_fingerprint
    check_int8_matmul()
    # calibrated on a private copy: searches on this encoder meanwhile are neither recorded nor slowed;
    # from a bfloat16 encoder, its (rounded) weights in float32 around the int8 products
    model = copy.deepcopy(encoder.model).float()
    probe = copy.copy(encoder)
    probe.model, probe.backbone = model, backbone_for(model)
    maxima = input_maxima(model, lambda: probe.encode(texts, [encoder.full_view], show_progress=False))
    model = quantize_linears(model, maxima, inplace=True)
    other = copy.copy(encoder)
    other.model, other.backbone, other.heads = model, backbone_for(model), dict(encoder.heads)
    other._weights_fingerprint = fingerprint
    other.name = f"{encoder.name} (int8)" if encoder.name else "int8"
    return other
