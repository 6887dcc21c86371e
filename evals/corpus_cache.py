"""Encode a corpus once per model at every layer, cached on disk; derive any view from that.

The cache holds, for each layer ``1..L``, the full-width view ``(layer, hidden)`` of every document
(one forward pass). A view ``(layer, dim)`` is then ``encoder.project(full[layer], view)``: a linear head,
cutting and re-normalising applied to a normalised vector give the same view as applied to the pooled
state.

The cache key covers the model's weights (not its coarse heads, which apply after), pooling, max length
and a hash of the exact
``(id, text)`` stream, so a stale cache is never used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from adaptive_retrieval import Encoder, View
from adaptive_retrieval.corpus import DocId

DEFAULT_CACHE_DIR = (
    Path(os.environ.get("ADAPTIVE_RETRIEVAL_CACHE", Path.home() / ".cache" / "adaptive-retrieval"))
    / "eval-encodings"
)


def corpus_hash(ids: Sequence[DocId], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        digest.update(f"{doc_id!r}\x00{text}\x1e".encode())
    return digest.hexdigest()


def cache_key(encoder: Encoder, ids: Sequence[DocId], texts: Sequence[str]) -> dict[str, str | int]:
    """What an encoding depends on: the weights (not the model's name, nor its coarse heads, which apply
    after the cache), pooling, max length and the exact ``(id, text)`` stream."""
    return {
        "fingerprint": encoder.weights_fingerprint,
        "pooling": encoder.pooling,
        "max_length": encoder.max_length,
        "corpus_sha256": corpus_hash(ids, texts),
        "n_docs": len(ids),
    }


def cache_paths(cache_dir: Path, key: dict[str, str | int]) -> tuple[Path, Path]:
    stem = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json"


def encode_all_layers(
    encoder: Encoder,
    ids: Sequence[DocId],
    texts: Sequence[str],
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    *,
    batch_size: int | None = None,
) -> np.ndarray:
    """``(n_layers, n_docs, hidden)`` float32: every layer's full-width view of every document.

    Read from ``cache_dir`` when a cache with the same key exists; otherwise encoded (one forward pass
    per batch, progress bar) and written atomically. ``cache_dir=None`` disables caching.
    """
    key = cache_key(encoder, ids, texts)
    shape = (encoder.n_layers, len(ids), encoder.hidden_size)
    path = meta_path = None
    if cache_dir is not None:
        path, meta_path = cache_paths(cache_dir, key)
        if path.is_file() and meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                cached = np.load(path, mmap_mode="r")
                if meta.get("key") == key and cached.shape == shape and cached.dtype == np.float32:
                    return cached
            except (ValueError, OSError):
                pass  # damaged: encode again
    views = [View(layer, encoder.hidden_size) for layer in range(1, encoder.n_layers + 1)]
    vectors = encoder.encode(list(texts), views, batch_size=batch_size, show_progress=True)
    stacked = np.stack([vectors[v] for v in views])
    if path is not None and meta_path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp-{os.getpid()}.npy")
        np.save(tmp, stacked, allow_pickle=False)
        os.replace(tmp, path)
        meta_path.write_text(json.dumps({"key": key, "encoded_with": encoder.name}, sort_keys=True))
    return stacked


def view_matrix(encoder: Encoder, all_layers: np.ndarray, view: View) -> np.ndarray:
    """The ``(n_docs, view.dim)`` matrix of ``view``, through the encoder's own view function
    (:meth:`Encoder.project`: the layer's coarse head if any, cut, normalise)."""
    full = torch.from_numpy(np.array(all_layers[view.layer - 1], dtype=np.float32))  # a writable copy
    return encoder.project(full.to(encoder.device), view).cpu().numpy()


def encode_beir_corpus(
    encoder: Encoder,
    corpus: dict,
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    *,
    batch_size: int | None = None,
) -> tuple[list[str], np.ndarray]:
    """A BEIR corpus (``id -> {"title", "text"}``) as the retriever indexes it: its ids, and
    :func:`encode_all_layers` of the same ``(id, text)`` pairs ``Retriever.build`` would encode."""
    from adaptive_retrieval.corpus import iter_documents

    pairs = list(iter_documents(corpus))
    doc_ids = [str(d) for d, _ in pairs]
    return doc_ids, encode_all_layers(
        encoder, doc_ids, [t for _, t in pairs], cache_dir, batch_size=batch_size
    )
