"""adaptive-retrieval: dense retrieval with 2D Matryoshka sentence embeddings.

>>> from adaptive_retrieval import Retriever
>>> retriever = Retriever.build(corpus, coarse=(4, 64), fine=(12, 768))   # doctest: +SKIP
>>> hits = retriever.search("does vitamin D reduce fracture risk?", k=10)  # doctest: +SKIP
"""

from __future__ import annotations

from . import datasets
from .corpus import document_text, iter_documents
from .encoder import Embeddings, Encoder, EncoderState
from .index import CoarseIndex, FineStore
from .models import DEFAULT_MODEL, NAMED_MODELS
from .retriever import Hit, Retriever, SearchTimings
from .views import View, pool, view_vector

__all__ = [
    "DEFAULT_MODEL",
    "NAMED_MODELS",
    "CoarseIndex",
    "Embeddings",
    "Encoder",
    "EncoderState",
    "FineStore",
    "Hit",
    "Retriever",
    "SearchTimings",
    "View",
    "datasets",
    "document_text",
    "iter_documents",
    "pool",
    "view_vector",
]
__version__ = "0.1.0"
