"""adaptive-retrieval: dense retrieval with 2D Matryoshka sentence embeddings.

>>> from adaptive_retrieval import Retriever
>>> retriever = Retriever.build(corpus, coarse=(4, 64), fine=(12, 768))   # doctest: +SKIP
>>> hits = retriever.search("does vitamin D reduce fracture risk?", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

from . import datasets, errors
from .backends import FaissOptions, MilvusOptions, QdrantOptions
from .corpus import document_text, iter_documents
from .encoder import Embeddings, Encoder, EncoderState
from .errors import AdaptiveRetrievalError
from .index import CoarseIndex, FineStore
from .models import DEFAULT_MODEL, NAMED_MODELS
from .results import Hit, SearchTimings
from .retriever import Retriever
from .version import __version__
from .views import View, pool, view_vector

__all__ = [
    "DEFAULT_MODEL",
    "NAMED_MODELS",
    "AdaptiveRetrievalError",
    "CoarseIndex",
    "Embeddings",
    "Encoder",
    "EncoderState",
    "FaissOptions",
    "FineStore",
    "Hit",
    "MilvusOptions",
    "QdrantOptions",
    "Retriever",
    "SearchTimings",
    "View",
    "__version__",
    "datasets",
    "document_text",
    "errors",
    "iter_documents",
    "pool",
    "view_vector",
]
