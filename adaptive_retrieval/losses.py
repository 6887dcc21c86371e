"""The 2DMSE training objective and its ablations, over one cached forward pass.

The input is what one staged forward pass yields: the pooled state of every layer, for the two sides
of a batch of pairs (``(layers, batch, hidden)`` each). Every term takes its views from that tensor
through :func:`adaptive_retrieval.views.view_vector`, the library's one view definition, so training
optimises exactly the vectors that indexing and search use.

Objectives (``objective=``), all through the same code path:

``2dmse`` (Li et al., 2024, *2D Matryoshka Sentence Embeddings*, arXiv 2402.14776)
    the base loss on the last layer at full width and at a dim drawn from ``dims``; a layer drawn
    uniformly from ``1..L-1`` gets the same two terms scaled by ``1 / (1 + ln(1 + layer))`` (the depth
    scaling of the reference implementation, AnglE's ``angle_emb``); plus the KL divergence of the drawn
    layer's in-batch similarity distribution from the last layer's.
``mrl``
    Matryoshka only: the last layer's two terms (full and drawn dim), no layer terms.
``adaptive``
    layers only: last layer full, drawn layer full (scaled), KL.
``angle``
    the base loss on the last layer at full width: plain fine-tuning.
``starbucks`` (Zhuang et al., 2024, *Starbucks*, arXiv 2410.13230)
    the fixed diagonal ``(2,32) (4,64) (6,128) (8,256) (10,512) (12,768)`` of a 12 x 768 model (scaled to
    other shapes) all in every step, averaged, plus KL of each shallower pair to the last layer.

Base losses: in-batch negatives (InfoNCE, scale 20) for ``(query, positive)`` pairs (no labels); for
scored pairs (``labels`` given), CoSENT (scale 20) and the AnglE angle term (Li & Li, 2023, arXiv
2309.12871). An optional teacher term aligns the last layer's in-batch similarity distribution with a
frozen teacher's (the base model's own fine embeddings, as the reference code's fixed teacher), to keep
the fine view from drifting on small data.

Differences from sentence-transformers' ``Matryoshka2dLoss``: its KL term compares softmaxed embedding
*dimensions*; here it compares in-batch *similarity* distributions (what retrieval ranks by), and the
last layer's distribution is a fixed target (no gradient flows into it through the KL term).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .errors import InvalidArgument
from .views import view_vector

OBJECTIVES = ("2dmse", "mrl", "adaptive", "angle", "starbucks")
STARBUCKS_12x768 = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))


def default_dims(hidden_size: int) -> tuple[int, ...]:
    """Powers of two from 8 up to 512 that are below the hidden size."""
    return tuple(d for d in (8, 16, 32, 64, 128, 256, 512) if d < hidden_size)


def starbucks_pairs(n_layers: int, hidden_size: int) -> tuple[tuple[int, int], ...]:
    """Starbucks' diagonal for a 12 x 768 model; for other shapes, layers and dims scaled alike."""
    pairs = []
    for layer, dim in STARBUCKS_12x768:
        pairs.append(
            (max(1, round(layer * n_layers / 12)), max(1, min(hidden_size, round(dim * hidden_size / 768))))
        )
    return tuple(dict.fromkeys(pairs))


# ----------------------------------------------------------------------------------- base losses


def info_nce(a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
    """In-batch negatives: row ``i`` of ``a`` should pick column ``i`` of ``b`` (inputs L2-normalised)."""
    logits = a @ b.T * scale
    return F.cross_entropy(logits, torch.arange(len(a), device=a.device))


def _pairwise_ranking(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``log(1 + sum over label_i < label_j of exp(score_i - score_j))``: the CoSENT form."""
    diff = scores[:, None] - scores[None, :]
    mask = labels[:, None] < labels[None, :]
    diff = diff.masked_fill(~mask, float("-inf")).reshape(-1)
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff]), dim=0)


def cosent(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """CoSENT (Su, 2022): pairs with higher gold scores should have higher cosines (inputs normalised)."""
    return _pairwise_ranking((a * b).sum(-1) * scale, labels)


def angle(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """AnglE's angle term: split each vector into real and imaginary halves, and rank pairs by the
    absolute angle difference of ``a / b`` in complex space (a smaller angle for higher gold scores)."""
    half = a.shape[-1] // 2
    if half == 0:
        return a.new_zeros(())
    ra, ia, rb, ib = a[:, :half], a[:, half : 2 * half], b[:, :half], b[:, half : 2 * half]
    denom = (rb**2 + ib**2).sum(-1, keepdim=True).clamp_min(1e-12)
    re = (ra * rb + ia * ib) / denom
    im = (ia * rb - ra * ib) / denom
    norm_ratio = ((ra**2 + ia**2).sum(-1, keepdim=True) / denom).sqrt().clamp_min(1e-12)
    delta = torch.cat([re, im], dim=-1) / norm_ratio
    return _pairwise_ranking(delta.sum(-1).abs() * scale, labels)


def similarity_kl(
    student: tuple[torch.Tensor, torch.Tensor], target: tuple[torch.Tensor, torch.Tensor], temperature: float
) -> torch.Tensor:
    """``KL(P_target || P_student)`` of the in-batch similarity distributions ``softmax(a @ b.T / t)``,
    batch-mean, scaled by ``t**2``; the target side carries no gradient."""
    log_p = F.log_softmax(student[0] @ student[1].T / temperature, dim=-1)
    with torch.no_grad():
        q = F.softmax(target[0] @ target[1].T / temperature, dim=-1)
    return F.kl_div(log_p, q, reduction="batchmean") * temperature**2


# ------------------------------------------------------------------------------------- the module


@dataclass(frozen=True)
class Draw:
    """What one step drew: the shallower layer (or None) and the matryoshka dim (or None)."""

    layer: int | None
    dim: int | None


def _positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(
            f"{name} must be a {'non-negative' if allow_zero else 'positive'} number, got {value!r}"
        )
    return float(value)


class TwoDMatryoshkaLoss(nn.Module):
    """The 2DMSE objective (and its ablations) over pooled states of every layer.

    Args:
        n_layers, hidden_size: the model's shape.
        objective: one of :data:`OBJECTIVES`.
        dims: matryoshka dims to draw from (default :func:`default_dims`: 8..512 below the hidden size).
        layers: the shallower layers to draw from (default every layer ``1..L-1``, as the paper). A
            subset (e.g. the coarse layers a funnel will use) spends a short training budget where it
            is needed; the draw stays uniform over the set.
        ibn_weight, ibn_scale: in-batch negatives (InfoNCE) for unlabeled pairs.
        cosent_weight, cosent_scale: CoSENT for scored pairs.
        angle_weight, angle_scale: AnglE's angle term for scored pairs.
        kl_weight, kl_temperature: alignment of a shallower layer's in-batch similarities to the last's.
        teacher_weight: alignment of the last layer's similarities to a frozen teacher's (0: off).
        seed: seeds the layer and dim draws (a ``torch.Generator`` of the module's own).

    Call it with ``pooled_a``, ``pooled_b`` of shape ``(n_layers, batch, hidden)`` (layers 1..L), optional
    ``labels`` (batch,) for scored pairs, and optional ``teacher_a``, ``teacher_b`` (batch, dim).
    """

    def __init__(
        self,
        n_layers: int,
        hidden_size: int,
        *,
        objective: str = "2dmse",
        dims: Sequence[int] | None = None,
        layers: Sequence[int] | None = None,
        ibn_weight: float = 1.0,
        ibn_scale: float = 20.0,
        cosent_weight: float = 1.0,
        cosent_scale: float = 20.0,
        angle_weight: float = 0.02,
        angle_scale: float = 20.0,
        kl_weight: float = 1.0,
        kl_temperature: float = 1.0,
        teacher_weight: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise InvalidArgument(
                f"objective={objective!r} is not known; choose one of {', '.join(OBJECTIVES)}"
            )
        for name, value in (("n_layers", n_layers), ("hidden_size", hidden_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"{name} must be a positive int, got {value!r}")
        if objective in ("2dmse", "adaptive") and n_layers < 2:
            raise InvalidArgument(
                f"objective={objective!r} draws a layer below the last, so n_layers must be >= 2"
            )
        dims = default_dims(hidden_size) if dims is None else tuple(dims)
        if objective in ("2dmse", "mrl"):
            if not dims:
                raise InvalidArgument(
                    f"dims is empty: objective={objective!r} needs at least one matryoshka dim"
                )
            bad = [
                d for d in dims if isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= hidden_size
            ]
            if bad:
                raise InvalidArgument(f"dims must be ints in 1..{hidden_size} (the hidden size), got {bad}")
        layers = tuple(range(1, n_layers)) if layers is None else tuple(layers)
        if objective in ("2dmse", "adaptive"):
            bad = [
                x for x in layers if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x < n_layers
            ]
            if not layers or bad:
                raise InvalidArgument(
                    f"layers must be a non-empty set of ints in 1..{n_layers - 1} (below the last layer), "
                    f"got {list(layers)}"
                )
        self.n_layers, self.hidden_size, self.objective = n_layers, hidden_size, objective
        self.layers = tuple(sorted(set(layers)))
        self.dims = tuple(sorted(set(dims)))
        self.ibn_weight = _positive(ibn_weight, "ibn_weight", allow_zero=True)
        self.ibn_scale = _positive(ibn_scale, "ibn_scale")
        self.cosent_weight = _positive(cosent_weight, "cosent_weight", allow_zero=True)
        self.cosent_scale = _positive(cosent_scale, "cosent_scale")
        self.angle_weight = _positive(angle_weight, "angle_weight", allow_zero=True)
        self.angle_scale = _positive(angle_scale, "angle_scale")
        self.kl_weight = _positive(kl_weight, "kl_weight", allow_zero=True)
        self.kl_temperature = _positive(kl_temperature, "kl_temperature")
        self.teacher_weight = _positive(teacher_weight, "teacher_weight", allow_zero=True)
        self.pairs = starbucks_pairs(n_layers, hidden_size) if objective == "starbucks" else ()
        self.generator = torch.Generator().manual_seed(seed)

    def draw(self) -> Draw:
        """Draw this step's shallower layer (uniform over ``layers``) and matryoshka dim, as the objective
        needs."""
        layer = dim = None
        if self.objective in ("2dmse", "adaptive"):
            layer = self.layers[int(torch.randint(len(self.layers), (1,), generator=self.generator))]
        if self.objective in ("2dmse", "mrl"):
            dim = self.dims[int(torch.randint(len(self.dims), (1,), generator=self.generator))]
        return Draw(layer, dim)

    def base(self, a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The base loss of one view: InfoNCE without labels; CoSENT + angle with labels."""
        if labels is None:
            return self.ibn_weight * info_nce(a, b, self.ibn_scale)
        loss = self.cosent_weight * cosent(a, b, labels, self.cosent_scale)
        if self.angle_weight > 0:
            loss = loss + self.angle_weight * angle(a, b, labels, self.angle_scale)
        return loss

    def forward(
        self,
        pooled_a: torch.Tensor,
        pooled_b: torch.Tensor,
        labels: torch.Tensor | None = None,
        teacher_a: torch.Tensor | None = None,
        teacher_b: torch.Tensor | None = None,
        draw: Draw | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Return the loss and its named terms (floats, for logging). ``draw`` overrides the random draw."""
        self._check_inputs(pooled_a, pooled_b, labels, teacher_a, teacher_b)
        draw = self.draw() if draw is None else draw

        def views(layer: int, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
            return view_vector(pooled_a[layer - 1], dim), view_vector(pooled_b[layer - 1], dim)

        last, full = self.n_layers, self.hidden_size
        terms: dict[str, torch.Tensor] = {}
        if self.objective == "starbucks":
            shallow = [p for p in self.pairs if p != (last, full)]
            losses = [self.base(*views(layer, dim), labels) for layer, dim in self.pairs]
            terms["starbucks"] = torch.stack(losses).mean()
            if self.kl_weight > 0:
                target = views(last, full)
                terms["kl"] = (
                    self.kl_weight
                    * torch.stack(
                        [
                            similarity_kl(views(layer, dim), target, self.kl_temperature)
                            for layer, dim in shallow
                        ]
                    ).mean()
                )
        else:
            terms["last_full"] = self.base(*views(last, full), labels)
            if draw.dim is not None:
                terms["last_dim"] = self.base(*views(last, draw.dim), labels)
            if draw.layer is not None:
                scale = 1.0 / (1.0 + math.log(1 + draw.layer))
                layer_loss = self.base(*views(draw.layer, full), labels)
                if draw.dim is not None:
                    layer_loss = layer_loss + self.base(*views(draw.layer, draw.dim), labels)
                terms["layer"] = scale * layer_loss
                if self.kl_weight > 0:
                    terms["kl"] = self.kl_weight * similarity_kl(
                        views(draw.layer, full), views(last, full), self.kl_temperature
                    )
        if self.teacher_weight > 0 and teacher_a is not None:
            teacher = (F.normalize(teacher_a, dim=-1), F.normalize(teacher_b, dim=-1))
            terms["teacher"] = self.teacher_weight * similarity_kl(views(last, full), teacher, 1.0)
        total = torch.stack(list(terms.values())).sum()
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def _check_inputs(self, pooled_a, pooled_b, labels, teacher_a, teacher_b) -> None:
        expected = (self.n_layers, self.hidden_size)
        for name, t in (("pooled_a", pooled_a), ("pooled_b", pooled_b)):
            if not isinstance(t, torch.Tensor) or t.ndim != 3 or (t.shape[0], t.shape[2]) != expected:
                shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise InvalidArgument(
                    f"{name} must have shape ({self.n_layers}, batch, {self.hidden_size}), got {shape}"
                )
        if pooled_a.shape != pooled_b.shape:
            raise InvalidArgument(
                f"pooled_a and pooled_b differ in shape: {tuple(pooled_a.shape)} vs {tuple(pooled_b.shape)}"
            )
        if pooled_a.shape[1] < 2:
            raise InvalidArgument(
                "a batch needs at least 2 pairs: in-batch losses compare pairs with each other"
            )
        if labels is not None and labels.shape != (pooled_a.shape[1],):
            raise InvalidArgument(f"labels must have shape ({pooled_a.shape[1]},), got {tuple(labels.shape)}")
        if (teacher_a is None) != (teacher_b is None):
            raise InvalidArgument("give both teacher_a and teacher_b, or neither")
        if teacher_a is not None and (
            teacher_a.shape[0] != pooled_a.shape[1] or teacher_a.shape != teacher_b.shape
        ):
            raise InvalidArgument(
                f"teacher_a and teacher_b must have shape ({pooled_a.shape[1]}, dim), got "
                f"{tuple(teacher_a.shape)} and {tuple(teacher_b.shape)}"
            )
