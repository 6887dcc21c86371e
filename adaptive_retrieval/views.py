"""Views: which layer's hidden state, cut to how many dimensions.

A *view* ``View(layer, dim)`` is the hidden state after transformer layer ``layer`` (1-based; 0 is the
embedding output), pooled over tokens (mean or CLS, as the model was trained), passed through the
layer's linear coarse head if the encoder has one, cut to its first ``dim`` dimensions and
L2-normalised.

:func:`pool` and :func:`view_vector` are the one definition of that recipe. The encoder, the
retriever, training losses and the evaluations all call them, so they can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from .errors import InvalidArgument, InvalidArgumentType, ModelMismatch

Pooling = Literal["mean", "cls"]
POOLING_MODES: tuple[str, ...] = ("mean", "cls")

_VIEW_RE = re.compile(r"^\s*(\d+)\s*[xX:,]\s*(\d+)\s*$")


@dataclass(frozen=True, order=True)
class View:
    """A ``(layer, dim)`` pair. Ordered by layer, then dimension (cheapest first).

    Build one from a tuple, a string or another view with :meth:`parse`.

    Args:
        layer: the transformer layer, 1-based (0: the embedding output).
        dim: how many leading dimensions are kept.

    Raises:
        InvalidArgumentType: a layer or dim that is not an int.
        InvalidArgument: a negative layer or a dim below 1.

    Example:
        >>> View.parse((4, 64)) == View.parse("4x64") == View(4, 64)
        True
        >>> str(View(4, 64)), View(4, 64) < View(4, 128) < View(6, 32)
        ('4x64', True)
    """

    layer: int
    dim: int

    def __post_init__(self) -> None:
        for name in ("layer", "dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentType(
                    f"View.{name} must be an int, got {value!r} ({type(value).__name__})"
                )
        if self.layer < 0:
            raise InvalidArgument(f"View.layer must be >= 0 (0 is the embedding output), got {self.layer}")
        if self.dim < 1:
            raise InvalidArgument(f"View.dim must be >= 1, got {self.dim}")

    @classmethod
    def parse(cls, value: ViewLike, *, name: str = "view") -> View:
        """Turn ``(layer, dim)``, ``"LxD"`` (e.g. ``"4x64"``) or a :class:`View` into a :class:`View`.

        Args:
            value: the view in any of those forms.
            name: the argument name used in error messages.

        Raises:
            InvalidArgument: a string that is not ``"LxD"``, or a layer or dim out of range.
            InvalidArgumentType: anything else, or a pair that is not two ints.
        """
        if isinstance(value, View):
            return value
        if isinstance(value, str):
            match = _VIEW_RE.match(value)
            if not match:
                raise InvalidArgument(f"{name}={value!r} is not a view; write it as 'LAYERxDIM', e.g. '4x64'")
            return cls(int(match.group(1)), int(match.group(2)))
        if isinstance(value, (tuple, list)) and len(value) == 2:
            layer, dim = value
            if any(isinstance(v, bool) or not isinstance(v, int) for v in (layer, dim)):
                raise InvalidArgumentType(f"{name}={value!r}: layer and dim must be ints, e.g. (4, 64)")
            return cls(layer, dim)
        raise InvalidArgumentType(
            f"{name}={value!r} is not a view; give (layer, dim) such as (4, 64), a string such as '4x64', "
            "or a View"
        )

    def check(self, n_layers: int, hidden_size: int, *, name: str = "view", model: str = "the model") -> View:
        """This view, checked against a model's shape.

        Args:
            n_layers, hidden_size: the model's shape.
            name, model: the argument and the model named in the error.

        Raises:
            ModelMismatch: unless ``1 <= layer <= n_layers`` and ``1 <= dim <= hidden_size``.
        """
        if not 1 <= self.layer <= n_layers or not 1 <= self.dim <= hidden_size:
            raise ModelMismatch(
                f"{name}={self.as_tuple()} is outside {model}, which has layers 1..{n_layers} and "
                f"dims 1..{hidden_size}"
            )
        return self

    def as_tuple(self) -> tuple[int, int]:
        return (self.layer, self.dim)

    def __str__(self) -> str:
        return f"{self.layer}x{self.dim}"


ViewLike = View | tuple[int, int] | list[int] | str


def check_pair(coarse: View, fine: View) -> None:
    """Raise :class:`adaptive_retrieval.errors.ModelMismatch` (a ``ValueError``) if the coarse view is deeper
    than the fine one (nothing to resume), or on the same layer and wider (a shortlist dearer than its
    re-rank)."""
    if coarse.layer > fine.layer:
        raise ModelMismatch(
            f"coarse={coarse.as_tuple()} is deeper than fine={fine.as_tuple()}: the fine view resumes "
            "the coarse forward pass, so its layer must be >= the coarse layer"
        )
    if coarse.layer == fine.layer and coarse.dim > fine.dim:
        raise ModelMismatch(
            f"coarse={coarse.as_tuple()} is wider than fine={fine.as_tuple()} on the same layer: the coarse "
            "view must be the cheaper one (an earlier layer, or fewer dims)"
        )


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: Pooling) -> torch.Tensor:
    """Pool token states ``(batch, seq, hidden)`` to ``(batch, hidden)``.

    Args:
        hidden: the token states ``(batch, seq, hidden)``.
        attention_mask: ``(batch, seq)``, 1 for a real token, 0 for padding.
        pooling: ``"mean"`` averages the tokens the attention mask keeps; ``"cls"`` takes the first token.

    Returns:
        ``(batch, hidden)``, in ``hidden``'s dtype.

    Raises:
        InvalidArgument: another pooling.
    """
    if pooling == "mean":
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    raise InvalidArgument(f"pooling={pooling!r} is not supported; choose one of {POOLING_MODES}")


def view_vector(pooled: torch.Tensor, dim: int, head: torch.Tensor | None = None) -> torch.Tensor:
    """Cut pooled states ``(batch, hidden)`` to their first ``dim`` dims and L2-normalise them.

    Cutting commutes with pooling (both are linear in the token states), so one pooled state serves every
    dimension of the same layer; and because a head is linear and the result is normalised, a head may be
    applied to an already-normalised pooled state.

    Args:
        pooled: ``(batch, hidden)`` pooled states (or what a stacked head reads).
        dim: the dimensions kept.
        head: a linear coarse head ``(hidden, out)`` (no bias) applied to the pooled state first; see
            :meth:`adaptive_retrieval.Encoder.set_head`.

    Returns:
        ``(batch, min(dim, width))``, each row of unit length.

    Example:
        >>> import torch
        >>> view_vector(torch.tensor([[3.0, 4.0, 12.0]]), 2)
        tensor([[0.6000, 0.8000]])
    """
    if head is not None:
        pooled = pooled @ head.to(device=pooled.device, dtype=pooled.dtype)
    return F.normalize(pooled[..., :dim], p=2, dim=-1)


def stack_pooled(pooled: Sequence[torch.Tensor]) -> torch.Tensor:
    """What a *stacked* coarse head reads: pooled states ``(batch, hidden)`` of layers ``1 .. L``, each
    L2-normalised, side by side ``(batch, L * hidden)`` (see :meth:`adaptive_retrieval.Encoder.set_head`)."""
    return torch.cat([F.normalize(p, p=2, dim=-1) for p in pooled], dim=-1)
