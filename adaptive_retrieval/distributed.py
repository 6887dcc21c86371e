"""Corpus encoding on a Ray cluster (or on this machine), through Ray Data's ``map_batches``.

Each Ray actor loads the encoder once and turns batches of texts into both view vectors with
:meth:`adaptive_retrieval.Encoder.encode`, the library's one encoding path. The result streams back, batch
by batch, into :meth:`adaptive_retrieval.Retriever.add_vector_batches` (or into any other sink, e.g. a
Qdrant cluster through ``backend="qdrant"``)::

    import ray
    from adaptive_retrieval import Encoder, Retriever
    from adaptive_retrieval.distributed import encode_with_ray, vector_batches

    encoder = Encoder.from_pretrained("mpnet-base")
    ds = ray.data.read_parquet("s3://bucket/corpus/")           # columns: doc_id, text
    encoded = encode_with_ray(ds, "mpnet-base", (4, 64), (12, 768), concurrency=8, num_gpus=1,
                              fingerprint=encoder.fingerprint)
    retriever = Retriever.from_vector_batches(
        encoder, (4, 64), (12, 768), vector_batches(encoded, (4, 64), (12, 768)),
        backend=FaissOptions(fine_path="fine.npy"),
    )

The same code runs on the local machine (``ray.init()`` starts a local cluster) and on a Ray cluster
(``ray.init(address="auto")``), unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .encoder import Encoder
from .errors import InvalidArgument, ModelMismatch
from .views import View, ViewLike

try:
    import ray
except ImportError as err:  # pragma: no cover - depends on the installation
    raise ImportError("Ray Data encoding needs ray: pip install 'adaptive-retrieval[scale]'") from err


def column(view: View) -> str:
    """The column that holds ``view``'s vectors, e.g. ``view_4x64``."""
    return f"view_{view.layer}x{view.dim}"


class _EncodeViews:
    """A Ray Data actor: loads the encoder once, then encodes every batch it is given."""

    def __init__(
        self, model: str, views: list[tuple[int, int]], fingerprint: str | None, text_column: str
    ) -> None:
        self.encoder = Encoder.from_pretrained(model)
        if fingerprint is not None and self.encoder.fingerprint != fingerprint:
            raise ModelMismatch(
                f"model {model!r} on this Ray worker has weights sha256 {self.encoder.fingerprint[:12]}..., "
                f"not the {fingerprint[:12]}... asked for: give every worker the same model"
            )
        self.views = [self.encoder.check_view(v) for v in views]
        self.text_column = text_column

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        texts = [str(t) for t in batch[self.text_column]]
        vectors = self.encoder.encode(self.encoder.as_documents(texts), self.views, show_progress=False)
        out = {k: v for k, v in batch.items() if k != self.text_column}
        out.update({column(view): vectors[view] for view in self.views})
        return out


def encode_with_ray(
    dataset: ray.data.Dataset,
    model: str,
    coarse: ViewLike,
    fine: ViewLike,
    *,
    text_column: str = "text",
    batch_size: int = 256,
    concurrency: int = 1,
    num_gpus: float = 0,
    fingerprint: str | None = None,
) -> ray.data.Dataset:
    """A Ray Dataset with the coarse and fine view vectors of ``dataset[text_column]`` added as
    columns :func:`column` ``(view)`` (the text column is dropped; every other column, e.g. ids, stays).

    Args:
        dataset: a Ray Dataset with a text column.
        model: a named model or a directory every worker can read.
        coarse, fine: the views, e.g. ``(4, 64)`` and ``(12, 768)``.
        batch_size: texts per ``map_batches`` call.
        concurrency: encoder actors (one model copy each).
        num_gpus: GPUs per actor (0: CPU).
        fingerprint: the weights hash the workers' model must have (e.g. ``retriever.encoder.fingerprint``),
            so that a worker with different weights fails instead of writing vectors the index would mix.
    """
    if text_column not in dataset.columns():
        raise InvalidArgument(f"dataset has no column {text_column!r}; its columns are {dataset.columns()}")
    views = [View.parse(coarse, name="coarse").as_tuple(), View.parse(fine, name="fine").as_tuple()]
    return dataset.map_batches(
        _EncodeViews,
        fn_constructor_kwargs={
            "model": str(model),
            "views": views,
            "fingerprint": fingerprint,
            "text_column": text_column,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=concurrency,
        num_gpus=num_gpus,
    )


def vector_batches(
    encoded: ray.data.Dataset,
    coarse: ViewLike,
    fine: ViewLike,
    *,
    id_column: str = "doc_id",
    batch_size: int = 10_000,
) -> Iterator[tuple[list[Any], np.ndarray, np.ndarray]]:
    """Stream ``(doc_ids, coarse_vectors, fine_vectors)`` out of :func:`encode_with_ray`'s dataset, in
    the form :meth:`adaptive_retrieval.Retriever.add_vector_batches` takes."""
    c, f = column(View.parse(coarse, name="coarse")), column(View.parse(fine, name="fine"))
    for batch in encoded.iter_batches(batch_size=batch_size, batch_format="numpy"):
        yield [x.item() if hasattr(x, "item") else x for x in batch[id_column]], batch[c], batch[f]
