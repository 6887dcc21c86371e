"""Any view as a sentence-transformers model: ``encoder.export_sentence_transformers(path, view=(4, 64))``.

The written folder is an ordinary sentence-transformers model whose ``encode`` gives the view's vectors:

    Transformer   the encoder's model cut to the view's layer (the layers above it are not saved)
    Pooling       mean or CLS, as the encoder pools
    Dense         the layer's coarse head (no bias, identity activation), cut to the view's dims; without
                  a head, the identity cut to them
    Normalize

A *stacked* head (what ``Retriever.build`` fits to a corpus: it reads the pooled states of layers
1..L, each normalised, side by side) replaces ``Pooling`` with :class:`StackedPooling`, a module of this
library: the folder then needs ``adaptive-retrieval`` installed, and sentence-transformers 6 loads a
module from outside its own package only when asked to, ``SentenceTransformer(path,
trust_remote_code=True)``. The encoder's prompts become the model's
``prompts`` (``query``, ``document``). Needs ``sentence-transformers`` (the ``peers`` extra).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InvalidArgument
from .views import POOLING_MODES, View, ViewLike, pool

try:
    from sentence_transformers import SentenceTransformer

    try:  # sentence-transformers 6
        from sentence_transformers.sentence_transformer.modules import (
            Dense,
            Module,
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # earlier versions
        from sentence_transformers.models import Dense, Module, Normalize, Pooling, Transformer
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError(
        "exporting a view needs sentence-transformers: pip install 'adaptive-retrieval[peers]'"
    ) from err


class StackedPooling(Module):
    """The input of a stacked coarse head: layers ``1 .. layer`` pooled (``pooling``), each L2-normalised,
    side by side as ``sentence_embedding`` ``(batch, layer * hidden)``. Reads ``all_layer_embeddings``
    (the exported model's config sets ``output_hidden_states``)."""

    config_keys: list[str] = ["hidden_size", "layer", "pooling"]  # noqa: RUF012 - sentence-transformers' convention

    def __init__(self, hidden_size: int, layer: int, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLING_MODES:
            raise InvalidArgument(f"pooling={pooling!r}: choose one of {POOLING_MODES}")
        self.hidden_size, self.layer, self.pooling = int(hidden_size), int(layer), pooling

    def forward(self, features: dict[str, Any]) -> dict[str, Any]:
        layers = features["all_layer_embeddings"]  # layer 0 (embeddings), 1, 2, ...
        mask = features["attention_mask"]
        pooled = [F.normalize(pool(layers[i], mask, self.pooling), dim=-1) for i in range(1, self.layer + 1)]
        features["sentence_embedding"] = torch.cat(pooled, dim=-1)
        return features

    def get_sentence_embedding_dimension(self) -> int:
        return self.layer * self.hidden_size

    get_embedding_dimension = get_sentence_embedding_dimension

    def save(self, output_path: str, *args: Any, **kwargs: Any) -> None:
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path: str, subfolder: str = "", **kwargs: Any) -> StackedPooling:
        hub = {k: kwargs[k] for k in ("token", "cache_folder", "revision", "local_files_only") if k in kwargs}
        return cls(**cls.load_config(model_name_or_path=model_name_or_path, subfolder=subfolder, **hub))


def _cut_model(encoder: Any, layer: int, stacked: bool) -> Any:
    """A copy of the encoder's model that runs layers ``1 .. layer`` only."""
    model = copy.deepcopy(encoder.model).to("cpu")
    model.encoder.layer = model.encoder.layer[:layer]
    model.config.num_hidden_layers = layer
    model.config.output_hidden_states = stacked
    return model


def export_sentence_transformers(encoder: Any, path: str | Path, view: ViewLike) -> Path:
    """Write ``view`` of ``encoder`` as a sentence-transformers model folder at ``path`` (a new or empty
    folder); see the module docstring. Returns the path."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise InvalidArgument(f"path={str(path)!r} exists and is not an empty folder")
    view = encoder.check_view(view)
    head = encoder.heads.get(view.layer)
    stacked = encoder.stacked(view.layer)
    hidden = encoder.hidden_size
    width = view.layer * hidden if stacked else hidden
    weight = (torch.eye(hidden) if head is None else head.detach().float().cpu())[
        :, : view.dim
    ].T.contiguous()
    with tempfile.TemporaryDirectory() as scratch:
        _cut_model(encoder, view.layer, stacked).save_pretrained(scratch)
        encoder.tokenizer.save_pretrained(scratch)
        transformer = Transformer(scratch, max_seq_length=encoder.max_length)
        pooling = (
            StackedPooling(hidden, view.layer, encoder.pooling)
            if stacked
            else Pooling(hidden, pooling_mode=encoder.pooling)
        )
        dense = Dense(
            width, view.dim, bias=False, activation_function=torch.nn.Identity(), init_weight=weight
        )
        prompts = {
            name: prompt
            for name, prompt in (("query", encoder.query_prompt), ("document", encoder.document_prompt))
            if prompt
        }
        model = SentenceTransformer(
            modules=[transformer, pooling, dense, Normalize()], device="cpu", prompts=prompts or None
        )
        model.save(str(path))
    (path / "adaptive_retrieval_view.json").write_text(
        json.dumps(
            {
                "model": encoder.name,
                "fingerprint": encoder.fingerprint,
                "view": list(View.parse(view).as_tuple()),
            },
            indent=2,
        )
    )
    return path
