"""Per-architecture adapters that run a Hugging Face encoder's transformer layers in stages.

A Hugging Face ``forward`` always runs every layer. To stop after layer ``i`` and later resume at
``i + 1`` we call the model's own submodules (embeddings, then each layer) in the same order and with
the same arguments its ``forward`` would (MPNet's attention excepted: torch's fused attention replaces
its eager one, see :class:`MPNetBackbone`); at inference a layer's own steps, so that its intermediate
block can run as one oneDNN call (:func:`adaptive_retrieval.cpu_linear.intermediate`). Each adapter is
tested against the model's own ``output_hidden_states``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask

from .cpu_linear import intermediate
from .errors import InvalidArgument

LayerContext = dict[str, Any]


class Backbone:
    """Stage-wise access to an encoder: :meth:`embed` (layer 0), then :meth:`run_layer` per layer."""

    model_types: tuple[str, ...] = ()

    def __init__(self, model: PreTrainedModel) -> None:
        self.model = model
        self.config = model.config
        self.layers: nn.ModuleList = model.encoder.layer

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    def embed(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, LayerContext]:
        """Return the embedding output (hidden state 0) and what every layer call needs beside it."""
        raise NotImplementedError

    def run_layer(self, index: int, hidden: torch.Tensor, context: LayerContext) -> torch.Tensor:
        """Run layer ``index`` (0-based) on ``hidden``; return the next hidden state."""
        raise NotImplementedError

    def speed_probe(self, tokens: int) -> tuple[tuple[object, ...], Callable[[], object]]:
        """For :func:`adaptive_retrieval.cpu_linear.choose_path`: what decides the speed of this model's
        layers (its type and sizes, and ``tokens``), and a call running its first layer, at inference, on two
        texts of ``tokens`` random token ids."""
        c = self.config
        key = (
            c.model_type,
            self.hidden_size,
            getattr(c, "intermediate_size", None),
            c.num_attention_heads,
            tokens,
        )
        generator = torch.Generator().manual_seed(0)
        ids = torch.randint(0, c.vocab_size, (2, tokens), generator=generator).to(self.model.device)
        with torch.inference_mode():
            hidden, context = self.embed(ids, torch.ones_like(ids))
        return key, lambda: self.run_layer(0, hidden, context)

    def _mask(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor | None:
        # The same helper the models' own forward uses, so every attention implementation
        # (eager, sdpa, ...) gets the mask format it expects.
        return create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden, attention_mask=attention_mask
        )


def _first(output: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


class BertLikeBackbone(Backbone):
    """BERT and its descendants that share its layer call: RoBERTa, XLM-RoBERTa, CamemBERT, ELECTRA."""

    model_types = ("bert", "roberta", "xlm-roberta", "camembert", "electra")

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.model.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)
        if getattr(self.model, "embeddings_project", None) is not None:  # ELECTRA with small embeddings
            hidden = self.model.embeddings_project(hidden)
        return hidden, {"attention_mask": self._mask(hidden, attention_mask)}

    def run_layer(self, index, hidden, context):
        layer = self.layers[index]
        if torch.is_grad_enabled() or layer.is_decoder:  # training (checkpointing...): the layer's own call
            return _first(layer(hidden, context["attention_mask"]))
        # the layer's own steps (its forward without a decoder's cross-attention), so that the
        # intermediate block can run fused (cpu_linear.intermediate)
        attended = _first(layer.attention(hidden, context["attention_mask"]))
        return layer.output(intermediate(layer.intermediate, attended), attended)


class MPNetBackbone(Backbone):
    """MPNet: BERT-like layers plus a relative position bias shared by every layer.

    transformers' MPNet attention is eager only: it materialises the (batch, heads, tokens, tokens)
    scores, divides them, adds the position bias, adds the mask and softmaxes them, four passes over the
    largest tensor of the layer, in every layer. Here the bias and the mask are added once per batch
    (:meth:`embed`), and each layer runs the same projections, the same residuals and layer norms
    (the model's own modules) around torch's fused ``scaled_dot_product_attention``: the same
    arithmetic (``softmax(q k^T / sqrt(d) + bias + mask) v``), equal to the model's own forward to 1e-5
    (tests); with it mpnet-base encodes faster than sentence-transformers (``python -m benchmarks.bench_encode``;
    the figures, with their results files: docs/measurements.md, "Encoding throughput")."""

    model_types = ("mpnet",)

    def embed(self, input_ids, attention_mask, token_type_ids=None):
        hidden = self.model.embeddings(input_ids=input_ids)
        bias = self.model.encoder.compute_position_bias(hidden)  # (batch, heads, tokens, tokens)
        mask = self._mask(hidden, attention_mask)  # additive, broadcast over heads, or None
        if mask is not None and mask.dtype == torch.bool:  # True = attend, as sdpa-style masks are
            mask = torch.zeros(mask.shape, dtype=bias.dtype, device=bias.device).masked_fill(
                ~mask, torch.finfo(bias.dtype).min
            )
        return hidden, {"attention_bias": bias if mask is None else bias + mask}

    def run_layer(self, index, hidden, context):
        layer = self.layers[index]
        attention = layer.attention.attn
        batch, tokens, _ = hidden.shape
        heads, size = attention.num_attention_heads, attention.attention_head_size

        def split(x: torch.Tensor) -> torch.Tensor:
            return x.view(batch, tokens, heads, size).transpose(1, 2)

        mixed = F.scaled_dot_product_attention(
            split(attention.q(hidden)),
            split(attention.k(hidden)),
            split(attention.v(hidden)),
            attn_mask=context["attention_bias"],
            dropout_p=attention.dropout.p if attention.training else 0.0,
        )
        mixed = mixed.transpose(1, 2).reshape(batch, tokens, heads * size)
        attended = layer.attention.LayerNorm(layer.attention.dropout(attention.o(mixed)) + hidden)
        return layer.output(intermediate(layer.intermediate, attended), attended)


BACKBONES: tuple[type[Backbone], ...] = (BertLikeBackbone, MPNetBackbone)
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for b in BACKBONES for t in b.model_types)


def backbone_for(model: PreTrainedModel) -> Backbone:
    """Pick the adapter for ``model`` (a base model or a model with a head; the head is ignored)."""
    base = getattr(model, "base_model", model)
    model_type = getattr(base.config, "model_type", None)
    for cls in BACKBONES:
        if model_type in cls.model_types:
            return cls(base)
    raise InvalidArgument(
        f"model type {model_type!r} is not supported; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )
