"""Encode a corpus once per model at every layer, cached on disk; derive any view from that.

The cache holds, for each layer ``1..L``, the full-width view ``(layer, hidden)`` of every document
without any coarse head (one forward pass; ``Encoder.encode(..., apply_heads=False)``). A view
``(layer, dim)`` is then ``encoder.project(full[layer], view)`` (for a stacked head, of the layers up to it: :func:`view_matrix`): a linear head, cutting and
re-normalising applied to a normalised vector give the same view as applied to the pooled state.

The cache key covers the model's weights (not its coarse heads, which apply after), pooling, max length,
a hash of the exact ``(id, text)`` stream and the format of what is stored, so a stale cache is never
used. (Format 1 stored the full-width views *with* the heads of the encoder that made the cache, which
:func:`view_matrix` then applied a second time; its caches are not read.)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .corpus import DocId
from .encoder import Encoder
from .errors import InvalidArgument
from .views import View

DEFAULT_CACHE_DIR = (
    Path(os.environ.get("ADAPTIVE_RETRIEVAL_CACHE", Path.home() / ".cache" / "adaptive-retrieval"))
    / "eval-encodings"
)
DEFAULT_PART_SIZE = 256
"""Documents per saved part of an encoding in progress: an interrupted encoding loses at most one part's work."""


CACHE_FORMAT = 2
"""What a cache holds: 2 = the layers' states without coarse heads (see the module docstring)."""


def corpus_hash(ids: Sequence[DocId], texts: Sequence[str]) -> str:
    digest = hashlib.sha256()
    for doc_id, text in zip(ids, texts):
        digest.update(f"{doc_id!r}\x00{text}\x1e".encode())
    return digest.hexdigest()


def cache_key(encoder: Encoder, ids: Sequence[DocId], texts: Sequence[str]) -> dict[str, str | int]:
    """What an encoding depends on: the weights (not the model's name, nor its coarse heads, which apply
    after the cache), the precision they ran in, pooling, max length, the exact ``(id, text)`` stream and
    the cache's format."""
    return {
        "format": CACHE_FORMAT,
        "fingerprint": encoder.weights_fingerprint,
        "pooling": encoder.pooling,
        "max_length": encoder.max_length,
        "corpus_sha256": corpus_hash(ids, texts),
        "n_docs": len(ids),
        # a bfloat16 encoder (the same weights' fingerprint) has its own entry; float32's key is unchanged
        **({} if encoder.precision == "float32" else {"precision": encoder.precision}),
    }


def cache_paths(cache_dir: Path, key: dict[str, str | int]) -> tuple[Path, Path]:
    stem = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json"


def cached_encoding(
    encoder: Encoder, ids: Sequence[DocId], texts: Sequence[str], cache_dir: Path
) -> np.ndarray | None:
    """:func:`encode_all_layers`' cached encoding of ``(ids, texts)`` (memory-mapped), or ``None`` when there
    is none, or it is damaged or of another key or shape."""
    key = cache_key(encoder, ids, texts)
    path, meta_path = cache_paths(cache_dir, key)
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        cached = np.load(path, mmap_mode="r")
    except (ValueError, OSError):
        return None  # damaged: encode again
    shape = (encoder.n_layers, len(ids), encoder.hidden_size)
    ok = meta.get("key") == key and cached.shape == shape and cached.dtype == np.float32
    return cached if ok else None


def encode_all_layers(
    encoder: Encoder,
    ids: Sequence[DocId],
    texts: Sequence[str],
    cache_dir: Path | None = DEFAULT_CACHE_DIR,
    *,
    batch_size: int | None = None,
    part_size: int = DEFAULT_PART_SIZE,
) -> np.ndarray:
    """``(n_layers, n_docs, hidden)`` float32: every layer's full-width view of every document.

    Read from ``cache_dir`` when a cache with the same key exists; otherwise encoded (one forward pass
    per batch, progress bar) and written atomically. ``cache_dir=None`` disables caching.

    An encoding in progress is saved ``part_size`` documents at a time beside the cache (a
    ``<key>.parts/`` folder, removed once the whole cache is written), so an interrupted run (a
    killed job, a session that ends) resumes at its last whole part instead of starting over.
    """
    if isinstance(part_size, bool) or not isinstance(part_size, int) or part_size < 1:
        raise InvalidArgument(f"part_size must be a positive int, got {part_size!r}")
    key = cache_key(encoder, ids, texts)
    views = [View(layer, encoder.hidden_size) for layer in range(1, encoder.n_layers + 1)]
    if cache_dir is None:
        vectors = encoder.encode(
            list(texts), views, batch_size=batch_size, show_progress=True, apply_heads=False
        )
        return np.stack([vectors[v] for v in views])
    path, meta_path = cache_paths(cache_dir, key)
    cached = cached_encoding(encoder, ids, texts, cache_dir)
    if cached is not None:
        return cached
    parts = path.with_suffix(".parts")
    stacked = _encode_in_parts(encoder, list(texts), views, parts, key, part_size, batch_size)
    tmp = path.with_suffix(f".tmp-{os.getpid()}.npy")
    np.save(tmp, stacked, allow_pickle=False)
    os.replace(tmp, path)
    meta_path.write_text(json.dumps({"key": key, "encoded_with": encoder.name}, sort_keys=True))
    shutil.rmtree(parts, ignore_errors=True)
    return stacked


def _encode_in_parts(
    encoder: Encoder,
    texts: list[str],
    views: list[View],
    parts: Path,
    key: dict[str, str | int],
    part_size: int,
    batch_size: int | None,
) -> np.ndarray:
    """Encode ``texts`` part by part into ``parts/`` (each part written atomically), reusing the parts
    a previous run of the same key and part size left there; returns all parts stacked.

    Parts follow the texts sorted by token count, longest first, as :meth:`adaptive_retrieval.Encoder.encode` batches
    them: with ``part_size`` a multiple of the batch size, the batches (and so the vectors) are those
    of one uninterrupted pass, and no part pads short texts to a long one's width."""
    parts.mkdir(parents=True, exist_ok=True)
    order = np.argsort([-len(x) for x in encoder.tokenize(texts)], kind="stable")
    stamp = {"key": key, "part_size": part_size, "order": "token count, longest first"}
    stamp_path = parts / "key.json"
    try:
        same = json.loads(stamp_path.read_text()) == stamp
    except (ValueError, OSError):
        same = False
    if not same:  # another key or part size (or a damaged stamp): what is there cannot be trusted
        for old in parts.glob("*.npy"):
            old.unlink()
        stamp_path.write_text(json.dumps(stamp, sort_keys=True))
    out = np.empty((len(views), len(texts), encoder.hidden_size), dtype=np.float32)
    with tqdm(total=len(texts), desc="encode corpus", unit="doc", disable=len(texts) <= part_size) as bar:
        for start in range(0, len(texts), part_size):
            stop = min(start + part_size, len(texts))
            rows = order[start:stop]
            part_path = parts / f"{start:010d}.npy"
            part = None
            if part_path.is_file():
                try:
                    part = np.load(part_path, allow_pickle=False)
                except (ValueError, OSError):
                    part = None
                if part is not None and part.shape != (len(views), stop - start, encoder.hidden_size):
                    part = None
            if part is None:
                vectors = encoder.encode(
                    [texts[i] for i in rows],
                    views,
                    batch_size=batch_size,
                    show_progress=False,
                    apply_heads=False,
                )
                part = np.stack([vectors[v] for v in views])
                tmp = parts / f"{start:010d}.tmp-{os.getpid()}.npy"
                np.save(tmp, part, allow_pickle=False)
                os.replace(tmp, part_path)
            out[:, rows] = part
            bar.update(stop - start)
    return out


def view_matrix(encoder: Encoder, all_layers: np.ndarray, view: View) -> np.ndarray:
    """The ``(n_docs, view.dim)`` matrix of ``view``, through the encoder's own view function
    (:meth:`adaptive_retrieval.Encoder.project`: the layer's coarse head if any, cut, normalise)."""
    layers = range(view.layer) if encoder.stacked(view.layer) else [view.layer - 1]
    pooled = {i: torch.from_numpy(np.array(all_layers[i], dtype=np.float32)) for i in layers}  # writable
    full = encoder.head_input([pooled.get(i) for i in range(view.layer)], view.layer)
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
