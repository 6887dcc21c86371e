"""From a corpus to the vector batches an index takes: each chunk of documents encoded once.

:class:`CorpusEncoding` streams a corpus in chunks through the encoder and yields the
``(doc_ids, coarse_vectors, fine_vectors[, texts, metadata])`` batches that
:class:`~adaptive_retrieval.writer.IndexWriter` commits. At a build with ``adapt=True`` the first chunk
also fits the coarse head to the corpus (:func:`~adaptive_retrieval.adapt.adapt_encoder`); from then on
every document's coarse vector is its fine vector projected (:func:`~adaptive_retrieval.adapt.project_fine`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from .adapt import Adaptation, adapt_encoder, project_fine
from .corpus import Corpus, DocId, chunks, iter_records
from .encoder import Encoder
from .errors import CorpusError
from .views import View


def projection_of(adaptation: Adaptation | None) -> np.ndarray | None:
    """The ``(fine_dim, coarse_dim)`` projection of a head fitted to the corpus, or ``None`` (no fitted
    head, or one without a projection)."""
    if adaptation is None or adaptation.chosen != "ridge":
        return None
    return adaptation.projection


class CorpusEncoding:
    """The batches of one add: ``corpus`` in chunks of ``chunk_size``, encoded by ``encoder`` at the
    views ``coarse`` and ``fine``. With ``adapt``, the first chunk fits the coarse head; afterwards
    :attr:`encoder` and :attr:`adaptation` hold what the index should use from then on.

    Args:
        known: whether a document id is already in the index (refused before any encoding).
        first_id: the id a list of strings starts from (the index's size).
        store_text: whether the batches carry texts and metadata.
        bar: a tqdm bar advanced by documents encoded.
    """

    def __init__(
        self,
        corpus: Corpus,
        encoder: Encoder,
        coarse: View,
        fine: View,
        *,
        adaptation: Adaptation | None,
        adapt: bool,
        candidates: int,
        known: Callable[[DocId], bool],
        first_id: int,
        store_text: bool,
        chunk_size: int,
        batch_size: int | None,
        bar: Any,
    ) -> None:
        self.corpus, self.encoder, self.coarse, self.fine = corpus, encoder, coarse, fine
        self.adaptation, self.adapt, self.candidates = adaptation, adapt, candidates
        self.known, self.first_id, self.store_text = known, first_id, store_text
        self.chunk_size, self.batch_size, self.bar = chunk_size, batch_size, bar

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        for ids, texts, metadata in chunks(
            iter_records(self.corpus, first_id=self.first_id), self.chunk_size
        ):
            self._refuse_known(ids)
            stored = (texts, metadata) if self.store_text else ()
            coarse, fine = self._fit(texts) if self.adapt else self._encode(texts)
            yield ids, coarse, fine, *stored

    def _refuse_known(self, ids: list[DocId]) -> None:
        """Before encoding: a repeated id costs no forward pass."""
        known = next((d for d in ids if self.known(d)), None)
        if known is None:
            return
        corpus = self.corpus
        positional = isinstance(corpus, Sequence) and isinstance(corpus[0], str)
        hint = (
            f" (a list of strings takes the ids {self.first_id}, {self.first_id + 1}, ... from the index's "
            "size; give a dict or (id, text) pairs to choose ids)"
            if positional
            else ""
        )
        raise CorpusError(f"corpus: document id {known!r} is already in the index{hint}; nothing was added")

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.encoder
        projection = projection_of(self.adaptation)
        if projection is not None:  # the coarse vectors come from the fine ones
            fine = enc.encode(
                enc.as_documents(texts), [self.fine], batch_size=self.batch_size, progress=self.bar
            )
            return project_fine(fine[self.fine], projection), fine[self.fine]
        vectors = enc.encode(
            enc.as_documents(texts), [self.coarse, self.fine], batch_size=self.batch_size, progress=self.bar
        )
        return vectors[self.coarse], vectors[self.fine]

    def _fit(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Encode the first chunk once, fit the coarse head on it, and return its coarse and fine vectors
        (with a fitted head, the coarse ones are the fine ones projected, as for every later document;
        else through the model's head: the index never holds coarse vectors of two kinds)."""
        enc, hidden = self.encoder, self.encoder.hidden_size
        layers = [View(layer, hidden) for layer in range(1, self.coarse.layer + 1)]
        plain_views = sorted({*layers, View(self.fine.layer, hidden)})
        plain = enc.encode(
            enc.as_documents(texts),
            plain_views,
            batch_size=self.batch_size,
            apply_heads=False,
            progress=self.bar,
        )
        fine_states = torch.from_numpy(plain[View(self.fine.layer, hidden)]).to(enc.device)
        fine = enc.project(fine_states, self.fine).float().cpu().numpy()
        states = [plain[v] for v in layers]
        self.encoder, self.adaptation = adapt_encoder(
            enc,
            self.coarse,
            self.fine,
            states,
            fine,
            texts=texts,
            candidates=self.candidates,
            batch_size=self.batch_size,
            show_progress=False
            if self.bar.disable
            else None,  # the pseudo-queries: a bar of their own when long
        )
        self.adapt = False
        projection = projection_of(self.adaptation)
        if projection is not None:
            return project_fine(fine, projection), fine
        pooled = [torch.from_numpy(s).to(enc.device) for s in states]
        head_input = self.encoder.head_input(pooled, self.coarse.layer)
        return self.encoder.project(head_input, self.coarse).float().cpu().numpy(), fine
