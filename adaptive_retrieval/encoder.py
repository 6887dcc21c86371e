"""The encoder: tokenizer + transformer, run in stages so that a forward pass can stop and resume.

``start`` tokenizes and embeds a batch (hidden state 0), ``advance`` runs the next layers on a saved
state, and ``view`` turns the current state into a view vector through :func:`adaptive_retrieval.views.pool`
and :func:`adaptive_retrieval.views.view_vector`. ``encode`` does all of that for many texts and many views
in one pass per batch, stopping at the deepest requested layer: each requested layer is pooled once and
cut to each requested dim. Batches are sorted by token length (less padding; on CPU a batch of long texts
runs in parts: ``CPU_FORWARD_BYTES``) and the original order is restored. ``encode(...,
apply_heads=False)`` leaves the coarse heads out: each view is then its layer's own pooled state, cut and
normalised (what a cache of the weights' states holds, to which ``Encoder.project`` applies the heads
later).

Coarse heads (``Encoder.set_head``): a linear map (no bias) of a layer's pooled state, applied before the
view is cut, in indexing and in search alike. A ``(hidden, out)`` head reads the layer's pooled state; a
*stacked* ``(layer * hidden, out)`` head reads the normalised pooled states of layers ``1 .. layer`` side
by side (``Encoder.head_input``): every one of them is computed on the way to ``layer`` anyway, so a
stacked view costs the same forward pass.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from . import loading
from .backbones import Backbone, LayerContext, backbone_for
from .corpus import check_texts
from .cpu_linear import choose_path, use_onednn
from .errors import InvalidArgument, InvalidArgumentType, ModelMismatch
from .precision import bfloat16, precision_of, with_precision
from .quantization import quantize_encoder
from .views import POOLING_MODES, Pooling, View, ViewLike, pool, stack_pooled, view_vector

logger = logging.getLogger(__name__)

PROGRESS_MIN_BATCHES = 8
"""Show a progress bar by default when an ``encode`` call has at least this many batches."""

CPU_FORWARD_BYTES: int | None = 16 * 2**20
"""On CPU, the most bytes the widest activation of one forward pass may take (its tokens x the
feed-forward width x the element size): ``encode`` runs a batch of long texts in parts below it (None: whole
batches; on a GPU batches are whole). glibc's allocator gives a block above its mmap threshold (32 MiB at
most) fresh pages from the kernel every time, each page faulting at its first write, and reuses freed blocks
below it: 32 texts of 256 tokens make a 48 MiB feed-forward activation in MiniLM, 96 MiB in mpnet-base, and
their linear layers ran slower for it. In a scratch comparison on an Intel Xeon, parts of this size ran both
models faster than whole batches and than parts of 4 to 48 MiB; ``python -m benchmarks.bench_encode``
measures parts against whole batches (docs/measurements.md, "Encoding throughput")."""


def activation_bytes(model: PreTrainedModel) -> int:
    """The bytes one token takes in ``model``'s widest activation: its feed-forward width x its element size."""
    width = getattr(model.config, "intermediate_size", None) or 4 * model.config.hidden_size
    return int(width) * next(model.parameters()).element_size()


def forward_batches(
    order: np.ndarray, lengths: Sequence[int], batch_size: int, per_token: int | None = None
) -> list[np.ndarray]:
    """``order`` (texts sorted longest first; ``lengths`` their token counts in that order) cut into forward
    passes of at most ``batch_size`` texts and, given ``per_token`` (:func:`activation_bytes`), at most
    :data:`CPU_FORWARD_BYTES` in the widest activation (a part's longest text x its size x ``per_token``;
    a text over it runs alone)."""
    if per_token is None or CPU_FORWARD_BYTES is None:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[np.ndarray] = []
    i = 0
    while i < len(order):
        fits = max(1, CPU_FORWARD_BYTES // (max(1, lengths[i]) * per_token))
        batches.append(order[i : i + min(batch_size, fits)])
        i += len(batches[-1])
    return batches


@dataclass
class EncoderState:
    """A batch part-way through the encoder: the hidden state after ``layer`` transformer layers, and the
    pooled states of layers ``1 .. layer`` (``pooled[i]`` is layer ``i + 1``; a stacked head reads them)."""

    hidden: torch.Tensor
    attention_mask: torch.Tensor
    context: LayerContext
    layer: int
    pooled: tuple[torch.Tensor, ...] = ()


class Embeddings(dict):
    """``{View: float32 array (n, dim)}``; a key may also be given as ``(layer, dim)`` or ``"LxD"``."""

    def __getitem__(self, key: ViewLike) -> np.ndarray:
        return super().__getitem__(View.parse(key, name="key"))

    def __contains__(self, key: object) -> bool:
        try:
            return super().__contains__(View.parse(key, name="key"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return False

    def get(self, key: ViewLike, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - dict.get would bypass parsing


class Encoder:
    """A Hugging Face encoder with stage-wise forward passes and the one view definition.

    Args:
        model: a supported Hugging Face encoder (BERT family or MPNet; a model with a head is fine), moved
            to ``device`` and set to eval mode; on CPU its ``nn.Linear`` layers become
            :class:`adaptive_retrieval.cpu_linear.OneDNNLinear` (same parameters; oneDNN's product), in place.
        tokenizer: its tokenizer.
        pooling: ``"mean"`` or ``"cls"``, as the model was trained.
        max_length: longer texts are truncated to this many tokens (default: the tokenizer's limit,
            at most the model's position embeddings).
        name: the model's name or path, recorded in saved indexes.
        device: where to run; default CUDA when available, else CPU.
        batch_size: default batch size of :meth:`encode`.
        heads: linear coarse heads ``{layer: (hidden, out) or (layer * hidden, out) matrix}`` (:meth:`set_head`).
        query_prompt, document_prompt: prepended to every query / document text (E5's ``"query: "``, BGE's
            instruction), kept as attributes of those names; by default the model's own (:meth:`from_pretrained`).

    Raises:
        InvalidArgument: an unsupported model type, an unknown pooling, a bad ``batch_size``, ``max_length``
            or head (InvalidArgumentType: a prompt that is not a string)."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        pooling: Pooling = "mean",
        max_length: int | None = None,
        name: str | None = None,
        device: str | torch.device | None = None,
        batch_size: int = 32,
        heads: Mapping[int, torch.Tensor] | None = None,
        query_prompt: str = "",
        document_prompt: str = "",
    ) -> None:
        for key, prompt in (("query_prompt", query_prompt), ("document_prompt", document_prompt)):
            if not isinstance(prompt, str):
                raise InvalidArgumentType(f'{key} must be a str ("" for none), got {type(prompt).__name__}')
        if pooling not in POOLING_MODES:
            raise InvalidArgument(f"pooling={pooling!r} is not supported; choose one of {POOLING_MODES}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {batch_size!r}")
        self.backbone: Backbone = backbone_for(model)
        self.model = model
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = self._resolve_max_length(max_length)
        self.name = name
        self.batch_size = batch_size
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model.to(self.device)
        self.model.eval()
        if self.device.type == "cpu":  # inference through oneDNN's matrix multiply, or MKL's (cpu_linear.py)
            use_onednn(self.model)
            if next(self.model.parameters()).dtype == torch.float32:
                choose_path(self.model, *self.backbone.speed_probe(min(256, self.max_length)))
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self._weights_fingerprint: str | None = None
        self.heads: dict[int, torch.Tensor] = {}
        for layer, head in (heads or {}).items():
            self.set_head(layer, head)

    from_pretrained = classmethod(loading.from_pretrained)

    # ----------------------------------------------------------------------------------------- facts

    @property
    def n_layers(self) -> int:
        """The number of transformer layers (views take layers ``1 .. n_layers``)."""
        return self.backbone.n_layers

    @property
    def hidden_size(self) -> int:
        """The width of the hidden states (views take dims ``1 .. hidden_size``)."""
        return self.backbone.hidden_size

    @property
    def full_view(self) -> View:
        """The last layer at full width: what the model itself produces."""
        return View(self.n_layers, self.hidden_size)

    def export_sentence_transformers(self, path: Any, view: ViewLike | None = None) -> Any:
        """Write ``view`` (default :attr:`full_view`) into ``path`` (new or empty) as a sentence-transformers
        model whose ``encode`` gives this encoder's vectors of that view: layers cut, the head as a ``Dense``
        module, dims cut (:mod:`adaptive_retrieval.export`). Returns the folder's path."""
        from .export import export_sentence_transformers

        return export_sentence_transformers(self, path, self.full_view if view is None else view)

    def as_queries(self, texts: Sequence[str]) -> list[str]:
        """``texts`` as this model encodes queries: with the ``query_prompt`` in front (if any)."""
        return [self.query_prompt + t for t in texts] if self.query_prompt else list(texts)

    def as_documents(self, texts: Sequence[str]) -> list[str]:
        """``texts`` as this model encodes documents: with the ``document_prompt`` in front (if any)."""
        return [self.document_prompt + t for t in texts] if self.document_prompt else list(texts)

    def check_view(self, view: ViewLike, *, name: str = "view") -> View:
        """Parse ``view`` and check it fits this model and its layer's coarse head, if any: a
        ``ModelMismatch`` naming the model's limits if not (``name``: the argument named in errors)."""
        view = self._check_layer_view(view, name=name)
        head = self.heads.get(view.layer)
        if head is not None and view.dim > head.shape[1]:
            raise ModelMismatch(
                f"{name}={view.as_tuple()}: layer {view.layer} of {self.name or 'the model'} has a coarse head "
                f"with {head.shape[1]} output dims; choose dim <= {head.shape[1]}"
            )
        return view

    def _check_layer_view(self, view: ViewLike, *, name: str) -> View:
        """Parse ``view`` and check it fits this model's layers and hidden size (heads aside)."""
        return View.parse(view, name=name).check(
            self.n_layers, self.hidden_size, name=name, model=self.name or "the model"
        )

    def set_head(self, layer: int, head: torch.Tensor | None) -> None:
        """Give ``layer`` (``1 .. n_layers``) a linear coarse head (no bias): ``(hidden, out)`` or, stacked,
        ``(layer * hidden, out)`` (:meth:`head_input`), ``out <= hidden``; ``None`` removes it. Every view of
        that layer goes through it, in indexing and search alike (:mod:`adaptive_retrieval.encoder`), and
        the :attr:`fingerprint` covers it. Another layer or shape raises ``InvalidArgument``."""
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer <= self.n_layers:
            raise InvalidArgument(f"head layer must be an int in 1..{self.n_layers}, got {layer!r}")
        if head is None:
            self.heads.pop(layer, None)
            return
        head = torch.as_tensor(head, dtype=torch.float32)
        inputs = (self.hidden_size, layer * self.hidden_size)
        if head.ndim != 2 or head.shape[0] not in inputs or not 1 <= head.shape[1] <= self.hidden_size:
            raise InvalidArgument(
                f"a head for layer {layer} must have shape ({self.hidden_size}, out) or, stacked, "
                f"({layer * self.hidden_size}, out), with out <= {self.hidden_size}; got {tuple(head.shape)}"
            )
        self.heads[layer] = head.to(self.device)

    def with_heads(self, heads: Mapping[int, torch.Tensor | None]) -> Encoder:
        """A copy of this encoder that shares its model and tokenizer but has its own coarse heads: these
        ``{layer: head}`` set over this one's (``None`` removes a layer's head). This encoder is left as it
        was, so a retriever can carry a head fitted to its corpus without touching a shared encoder."""
        other = copy.copy(self)
        other.heads = dict(self.heads)
        for layer, head in heads.items():
            other.set_head(layer, head)
        return other

    def quantized(self, sample_texts: Sequence[str] | None = None) -> Encoder:
        """A copy whose linear layers run in int8 (:mod:`adaptive_retrieval.quantization`: int8 weights
        per output channel, each token's activations quantized on its own, outlier channels smoothed
        by their maxima on ``sample_texts``, default a built-in sample of many kinds), for faster
        encoding on CPU; the staged forward and the heads are unchanged, and this encoder is left as it
        was. Its vectors approximate this one's (measure the cost: ``python -m benchmarks.bench_int8``); it
        keeps the fingerprint of the weights it approximates, so an index built in float32 accepts it. CPU
        only (else ``InvalidArgument``); a torch without a working int8 product raises ``InstallationError``."""
        return quantize_encoder(self, sample_texts)

    # what the model runs in, and its copies in another (precision.py)
    precision = property(precision_of)
    bfloat16 = bfloat16
    with_precision = with_precision

    def stacked(self, layer: int) -> bool:
        """Whether the head of ``layer`` reads the pooled states of layers ``1 .. layer`` (see
        :meth:`set_head`)."""
        head = self.heads.get(layer)
        return head is not None and layer > 1 and head.shape[0] == layer * self.hidden_size

    def head_input(self, pooled: Sequence[torch.Tensor] | torch.Tensor, layer: int) -> torch.Tensor:
        """What the head of ``layer`` reads, from ``pooled``: the pooled states ``(batch, hidden)`` of
        layers ``1 .. layer`` or more (``pooled[i]`` is layer ``i + 1``; a sequence or a stacked tensor).
        That is the layer's own state, or, for a stacked head, the states of layers ``1 .. layer``, each
        L2-normalised, side by side ``(batch, layer * hidden)``."""
        if len(pooled) < layer:
            raise InvalidArgument(f"pooled holds {len(pooled)} layers; layer {layer} needs layers 1..{layer}")
        if not self.stacked(layer):
            return pooled[layer - 1]
        return stack_pooled([pooled[i] for i in range(layer)])

    def project(self, pooled: torch.Tensor, view: View) -> torch.Tensor:
        """A view from what the head of ``view.layer`` reads (:meth:`head_input`; the layer's pooled state
        when it has no stacked head): the head (if any), cut, normalised."""
        head = self.heads.get(view.layer)
        width = self.hidden_size if head is None else head.shape[0]
        if pooled.shape[-1] != width:
            raise InvalidArgument(
                f"project: the head of layer {view.layer} reads {width} values per row, got "
                f"{pooled.shape[-1]}; pass head_input(pooled_layers, {view.layer})"
            )
        return view_vector(pooled, view.dim, head)

    @property
    def fingerprint(self) -> str:
        """Identifies everything a view depends on: :attr:`weights_fingerprint` and the coarse heads."""
        if not self.heads:
            return self.weights_fingerprint
        digest = hashlib.sha256(self.weights_fingerprint.encode())
        for layer, head in sorted(self.heads.items()):
            digest.update(f"head{layer}|{tuple(head.shape)}|".encode())
            digest.update(head.detach().to("cpu").contiguous().numpy().tobytes())
        return digest.hexdigest()

    @property
    def weights_fingerprint(self) -> str:
        """sha256 of the weights (names, dtypes, shapes, bytes) that views depend on; identifies the model in
        saved indexes. The pooler head (unused by views, re-initialised at random when a checkpoint lacks
        it) is left out."""
        if self._weights_fingerprint is None:
            digest = hashlib.sha256()
            for key, tensor in sorted(self.model.state_dict().items()):
                if key.split(".")[0] == "pooler":  # never used by a view; often absent and re-initialised
                    continue
                t = tensor.detach().to("cpu").contiguous()
                digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._weights_fingerprint = digest.hexdigest()
        return self._weights_fingerprint

    def _resolve_max_length(self, max_length: int | None) -> int:
        limit = int(getattr(self.model.config, "max_position_embeddings", 512))
        if self.model.config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet"):
            limit -= 2  # positions start after the padding index
        if max_length is None:
            tok_max = getattr(self.tokenizer, "model_max_length", None) or limit
            return int(min(tok_max, limit))
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
            raise InvalidArgument(f"max_length must be an int >= 2, got {max_length!r}")
        return min(max_length, limit)

    # ------------------------------------------------------------------------------- staged forward

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_length`` (longer texts are cut, never an error)."""
        if not texts:  # tokenizers fail on an empty batch
            return []
        return self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=False)[
            "input_ids"
        ]

    def over_length(self, texts: Sequence[str]) -> int:
        """How many of ``texts`` are longer than ``max_length`` tokens: what :meth:`tokenize` cuts."""
        if not texts:
            return 0
        ids = self.tokenizer(list(texts), truncation=True, max_length=self.max_length + 1, padding=False)
        return sum(len(x) > self.max_length for x in ids["input_ids"])

    def _pad(self, ids: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(x) for x in ids)
        pad_id = self.tokenizer.pad_token_id or 0
        input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, x in enumerate(ids):
            input_ids[row, : len(x)] = x
            mask[row, : len(x)] = 1
        return torch.from_numpy(input_ids).to(self.device), torch.from_numpy(mask).to(self.device)

    def start(
        self, texts: Sequence[str] | None = None, *, token_ids: Sequence[Sequence[int]] | None = None
    ) -> EncoderState:
        """Tokenize and embed a batch: the state at layer 0. Give ``texts`` or pre-tokenized ``token_ids``."""
        if token_ids is None:
            token_ids = self.tokenize(check_texts(texts))
        if len(token_ids) == 0:
            raise InvalidArgument("texts is empty: nothing to encode")
        input_ids, mask = self._pad(token_ids)
        hidden, context = self.backbone.embed(input_ids, mask, torch.zeros_like(input_ids))
        return EncoderState(hidden=hidden, attention_mask=mask, context=context, layer=0)

    def advance(self, state: EncoderState, to_layer: int) -> EncoderState:
        """Run layers ``state.layer + 1 .. to_layer`` on ``state`` and return the new state.

        No layer runs twice: advancing to the layer a state already holds returns it unchanged.
        """
        if not state.layer <= to_layer <= self.n_layers:
            raise InvalidArgument(
                f"to_layer={to_layer} must be between the state's layer ({state.layer}) and the model's "
                f"last layer ({self.n_layers})"
            )
        hidden, pooled = state.hidden, list(state.pooled)
        for index in range(state.layer, to_layer):
            hidden = self.backbone.run_layer(index, hidden, state.context)
            pooled.append(pool(hidden.float(), state.attention_mask, self.pooling))  # float32 as is
        return EncoderState(
            hidden=hidden,
            attention_mask=state.attention_mask,
            context=state.context,
            layer=to_layer,
            pooled=tuple(pooled),
        )

    def pooled_layers(
        self, texts: Sequence[str] | None = None, *, token_ids: Sequence[Sequence[int]] | None = None
    ) -> torch.Tensor:
        """Pooled states of every layer for one batch, ``(n_layers, batch, hidden)``, from one staged
        forward pass. Follows the ambient grad mode, so training losses can use it."""
        state = self.advance(self.start(texts, token_ids=token_ids), self.n_layers)
        return torch.stack(state.pooled)

    def view(self, state: EncoderState, dim: int) -> torch.Tensor:
        """The view ``(state.layer, dim)`` of a batch state: pooled, through the layer's head if any, cut,
        L2-normalised."""
        return self.project(self.head_input(state.pooled, state.layer), View(state.layer, dim))

    # -------------------------------------------------------------------------------------- encode

    def encode(
        self,
        texts: str | Sequence[str],
        views: ViewLike | Iterable[ViewLike] | None = None,
        *,
        batch_size: int | None = None,
        show_progress: bool | None = None,
        apply_heads: bool = True,
        progress: Any = None,
        desc: str = "encode",
    ) -> Embeddings:
        """Encode ``texts`` at every view in ``views``, one forward pass per batch (:mod:`adaptive_retrieval.encoder`).

        Args:
            texts: a string or a list of strings.
            views: one view or many (``(4, 64)``, ``"4x64"``, a ``View``); default :attr:`full_view`.
            batch_size: default the encoder's.
            show_progress: default a bar from ``PROGRESS_MIN_BATCHES`` batches on.
            apply_heads: ``False``: each view is its layer's own pooled state, cut and normalised.
            progress: a ``tqdm`` bar of the caller's (one over a corpus) advanced instead of one of its own.
            desc: what its own bar says it is doing.

        Returns:
            :class:`Embeddings` ``{View: float32 array (n, dim)}`` (1-D arrays when ``texts`` is one string).

        Raises:
            InvalidArgument: no views, a bad ``batch_size``, or a text that is not valid Unicode
                (InvalidArgumentType: not strings). ModelMismatch: a view outside the model or its head."""
        single = isinstance(texts, str)
        items = check_texts(texts)
        wanted = self._check_views(views, apply_heads)
        batch_size = self.batch_size if batch_size is None else batch_size
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidArgument(f"batch_size must be a positive int, got {batch_size!r}")
        out = {v: np.empty((len(items), v.dim), dtype=np.float32) for v in wanted}
        if not items:
            return Embeddings(out)
        if progress is not None:
            show_progress = False
        for rows, vectors in self._encode_batches(
            items, wanted, batch_size, show_progress, apply_heads, desc
        ):
            for v, array in vectors.items():
                out[v][rows] = array
            if progress is not None:
                progress.update(len(rows))
        if single:
            return Embeddings({v: a[0] for v, a in out.items()})
        return Embeddings(out)

    def _check_views(
        self, views: ViewLike | Iterable[ViewLike] | None, apply_heads: bool = True
    ) -> list[View]:
        if views is None:
            return [self.full_view]
        if isinstance(views, (View, str)) or (
            isinstance(views, tuple) and len(views) == 2 and all(isinstance(v, int) for v in views)
        ):
            views = [views]  # one view given on its own
        # without heads, no head narrower than its layer limits the views' dims
        check = self.check_view if apply_heads else self._check_layer_view
        wanted = sorted({check(v, name="views") for v in views})
        if not wanted:
            raise InvalidArgument("views is empty: name at least one view, e.g. [(4, 64), (12, 768)]")
        return wanted

    def _encode_batches(
        self,
        texts: list[str],
        views: list[View],
        batch_size: int,
        show_progress: bool | None,
        apply_heads: bool = True,
        desc: str = "encode",
    ) -> Iterator[tuple[np.ndarray, dict[View, np.ndarray]]]:
        token_ids = self.tokenize(texts)
        order = np.argsort([-len(x) for x in token_ids], kind="stable")
        per_token = activation_bytes(self.model) if self.device.type == "cpu" else None
        batches = forward_batches(order, [len(token_ids[i]) for i in order], batch_size, per_token)
        if show_progress is None:  # by batches asked for, not the parts they run in
            show_progress = -(-len(order) // batch_size) >= PROGRESS_MIN_BATCHES
        layers = sorted({v.layer for v in views})
        with torch.inference_mode():
            for rows in tqdm(batches, desc=desc, unit="batch", disable=not show_progress):
                state = self.start(token_ids=[token_ids[i] for i in rows])
                vectors: dict[View, np.ndarray] = {}
                for layer in layers:
                    state = self.advance(state, layer)
                    for v in views:
                        if v.layer == layer:
                            if apply_heads:
                                vector = self.project(self.head_input(state.pooled, layer), v)
                            else:
                                vector = view_vector(state.pooled[layer - 1], v.dim)
                            vectors[v] = vector.float().cpu().numpy()
                yield rows, vectors
