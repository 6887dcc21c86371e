"""adaptive-retrieval: dense retrieval with 2D Matryoshka sentence embeddings.

>>> from adaptive_retrieval import Retriever
>>> retriever = Retriever.build(corpus, coarse=(4, 64), fine=(12, 768))   # doctest: +SKIP
>>> hits = retriever.search("does vitamin D reduce fracture risk?", k=10)  # doctest: +SKIP

The names below are imported on first use (PEP 562): ``import adaptive_retrieval`` alone loads neither
torch nor transformers, so the command line answers ``--help`` and refuses bad input at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

if TYPE_CHECKING:  # what the lazy names are, for type checkers and readers
    from . import datasets, errors
    from .backends import FaissOptions, MilvusOptions, QdrantOptions
    from .corpus import document_text, iter_documents
    from .encoder import Embeddings, Encoder, EncoderState
    from .errors import AdaptiveRetrievalError
    from .hybrid import Fusion
    from .index import CoarseIndex, FineStore
    from .lexical import LexicalIndex
    from .models import DEFAULT_MODEL, NAMED_MODELS
    from .results import Hit, SearchTimings
    from .retriever import Retriever
    from .views import View, pool, view_vector

#: Each public name and the module that defines it (a module itself where the two are equal).
_WHERE = {
    "DEFAULT_MODEL": "models",
    "NAMED_MODELS": "models",
    "AdaptiveRetrievalError": "errors",
    "CoarseIndex": "index",
    "Embeddings": "encoder",
    "Encoder": "encoder",
    "EncoderState": "encoder",
    "FaissOptions": "backends",
    "FineStore": "index",
    "Fusion": "hybrid",
    "Hit": "results",
    "LexicalIndex": "lexical",
    "MilvusOptions": "backends",
    "QdrantOptions": "backends",
    "Retriever": "retriever",
    "SearchTimings": "results",
    "View": "views",
    "datasets": "datasets",
    "document_text": "corpus",
    "errors": "errors",
    "iter_documents": "corpus",
    "pool": "views",
    "view_vector": "views",
}


def __getattr__(name: str) -> Any:
    """Import a public name on first use, then keep it (the next access is a plain attribute)."""
    if name not in _WHERE:
        raise AttributeError(f"module 'adaptive_retrieval' has no attribute {name!r}")
    module = importlib.import_module(f".{_WHERE[name]}", __name__)
    value = module if name == _WHERE[name] else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})


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
    "Fusion",
    "Hit",
    "LexicalIndex",
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
