"""The engines a retriever's vectors live in, behind one small interface (:mod:`.base`).

- ``faiss`` (:mod:`.faiss`): a FAISS index over the coarse vectors and a fine store (in RAM or a
  memory-mapped ``.npy``) in this process; saved as files of the index directory.
- ``qdrant`` (:mod:`.qdrant`): both views per document in a Qdrant collection (local mode or a server);
  the funnel runs server-side in one query.
- ``milvus`` (:mod:`.milvus`): both views per document in a Milvus collection (Milvus Lite, a file path,
  or a server/cluster, a URI); coarse search, then the shortlist re-ranked (fetched by default, or
  server-side).

:data:`ENGINES` is the one registry: adding an engine is its own module (a :class:`.base.Backend`
subclass and its :class:`.base.EngineOptions` dataclass) and one line here. The engines that store
documents by key share :mod:`.keyed`. An engine's client library is imported when the engine is used,
so a missing one fails with an install hint only then.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ..corpus import DocId
from ..errors import IndexDamaged, InvalidArgument, InvalidArgumentType
from .base import Backend, EngineOptions, FileWriter
from .faiss import FaissBackend, FaissOptions
from .keyed import COMMITS_SUFFIX, KeyedBackend, point_key, point_uuid
from .milvus import MilvusBackend, MilvusOptions
from .qdrant import QdrantBackend, QdrantOptions

ENGINES: dict[str, type[Backend]] = {
    "faiss": FaissBackend,
    "qdrant": QdrantBackend,
    "milvus": MilvusBackend,
}
"""The engines by name, as ``Retriever.build(backend=...)`` takes them and manifests record them."""
BACKENDS = tuple(ENGINES)
"""The engines' names (kept for callers of earlier versions)."""

_LEGACY_WARNED: set[str] = set()


def engine_options(
    backend: str | EngineOptions = "faiss",
    backend_options: dict[str, Any] | None = None,
    faiss_options: dict[str, Any] | None = None,
) -> EngineOptions:
    """The options an engine is built with, from what ``Retriever.build`` was given.

    Args:
        backend: an :class:`EngineOptions` (``FaissOptions(index="HNSW32")``), or an engine's name in
            :data:`ENGINES`.
        backend_options: with an engine's name, its options as a dict (``{"uri": "./index.db"}``).
        faiss_options: the FAISS options earlier versions took as ``build`` arguments (``index=``,
            ``fine_dtype=``, ``fine_path=``, ``train_size=``), accepted for ``backend="faiss"`` with a
            ``DeprecationWarning`` (once per name).

    Returns:
        ``backend`` itself when it is options already, else that engine's options class made from the rest.

    Raises:
        InvalidArgument: an unknown engine or option, or options given twice (an options object and a
            dict, or FAISS arguments for another engine).
        InvalidArgumentType: ``backend`` neither a name nor options, or ``backend_options`` not a dict.

    Example:
        >>> engine_options("faiss", {"index": "HNSW32"})
        FaissOptions(index='HNSW32', fine_dtype='float16', fine_path=None, train_size=100000)
    """
    legacy = dict(faiss_options or {})
    unexpected = sorted(set(legacy) - set(LEGACY_FAISS_ARGUMENTS))
    if unexpected:  # as Python says it for any function
        raise InvalidArgumentType(f"got an unexpected keyword argument {unexpected[0]!r}")
    if isinstance(backend, EngineOptions):
        if backend_options is not None or legacy:
            raise InvalidArgument(
                "backend= is already an options object: give its options there, not as backend_options= "
                f"or {', '.join(f'{n}=' for n in legacy) or 'build arguments'}"
            )
        return backend
    if not isinstance(backend, str):
        raise InvalidArgumentType(
            f"backend must be an engine's name ({', '.join(ENGINES)}) or its options (e.g. FaissOptions(...)), "
            f"got {type(backend).__name__}"
        )
    if backend not in ENGINES:
        raise InvalidArgument(f"backend={backend!r} is not known; choose one of {', '.join(ENGINES)}")
    options_class = ENGINES[backend].Options
    if legacy:
        _warn_legacy(legacy)
        if backend != "faiss":  # as before options objects: FAISS's defaults pass, anything else is refused
            FaissOptions(**legacy)  # a bad value is refused as for FAISS
            given = {
                n: v
                for n, v in legacy.items()
                if n in ("index", "fine_path") and v != getattr(FaissOptions, n)
            }
            if given:
                name = next(iter(given))
                raise InvalidArgument(
                    f"{name}= applies to the FAISS backend; {backend} takes its options as "
                    f"backend={options_class.__name__}(...) (see adaptive_retrieval.backends)"
                )
            return options_class.from_dict(backend_options)
        if backend_options is not None:
            raise InvalidArgument(
                "backend_options apply to backend='qdrant' or 'milvus'; give FaissOptions(...)"
            )
        return options_class(**legacy)
    return options_class.from_dict(backend_options)


#: The FAISS options that ``Retriever.build`` took as arguments before :class:`FaissOptions`.
LEGACY_FAISS_ARGUMENTS = ("index", "fine_dtype", "fine_path", "train_size")


def _warn_legacy(legacy: dict[str, Any]) -> None:
    for name in legacy:
        if name not in _LEGACY_WARNED:
            _LEGACY_WARNED.add(name)
            warnings.warn(
                f"{name}= is deprecated as a build argument; give backend=FaissOptions({name}=...)",
                DeprecationWarning,
                stacklevel=4,
            )


def create_engine(options: EngineOptions, coarse_dim: int, fine_dim: int) -> Backend:
    """A new, empty engine of the kind ``options`` belong to, for views of these dimensions.

    Args:
        options: the engine's options (from :func:`engine_options`).
        coarse_dim: the coarse view's dimension.
        fine_dim: the fine view's dimension.

    Returns:
        The engine, holding no rows.

    Raises:
        InvalidArgument: options the engine refuses (checked before anything is created).
        IndexConflict: a Qdrant or Milvus collection of that name exists already.
        EngineError: the engine refused or failed. ImportError: the engine's client library is missing.
    """
    return ENGINES[options.engine].create(coarse_dim, fine_dim, options)


def open_engine(
    directory: Path, manifest: dict[str, Any], options: dict[str, Any] | None = None
) -> tuple[Backend, list[DocId]]:
    """Reattach to the engine a saved index's manifest names.

    Args:
        directory: the index directory.
        manifest: its manifest, as read (its ``backend`` entry names the engine and where it lives).
        options: override where the engine lives (``Retriever.load(backend_options=)``, e.g. a ``client``).

    Returns:
        The engine and the document ids of its rows, in row order.

    Raises:
        IndexDamaged: an engine this library does not know, or its data damaged or missing.
        InvalidArgumentType: ``options`` not a dict (an option the engine does not take: ``TypeError``).
        EngineError: the engine refused or failed.
    """
    name = manifest["backend"].get("name")
    if name not in ENGINES:
        raise IndexDamaged(f"the index's manifest names backend {name!r}, which this library does not know")
    if options is not None and not isinstance(options, dict):
        raise InvalidArgumentType(f"backend_options must be a dict, got {type(options).__name__}")
    return ENGINES[name].open(Path(directory), manifest, **(options or {}))


def make_backend(name: str, coarse_dim: int, fine_dim: int, options: dict[str, Any]) -> Backend:
    """Deprecated (a ``DeprecationWarning``, once): :func:`create_engine` with :func:`engine_options`."""
    _warn_renamed("make_backend", "create_engine(engine_options(name, options), coarse_dim, fine_dim)")
    return create_engine(engine_options(name, options), coarse_dim, fine_dim)


def open_backend(
    entry: dict[str, Any], path: Path, manifest: dict[str, Any], options: dict[str, Any]
) -> tuple[Backend, list[DocId]]:
    """Deprecated (a ``DeprecationWarning``, once): :func:`open_engine` (the manifest holds the ``backend``
    entry)."""
    _warn_renamed("open_backend", "open_engine(path, manifest, options)")
    return open_engine(path, {**manifest, "backend": entry}, options)


def _warn_renamed(old: str, new: str) -> None:
    if old not in _LEGACY_WARNED:
        _LEGACY_WARNED.add(old)
        warnings.warn(f"{old}() is deprecated; use {new}", DeprecationWarning, stacklevel=3)


__all__ = [
    "BACKENDS",
    "COMMITS_SUFFIX",
    "ENGINES",
    "Backend",
    "EngineOptions",
    "FaissBackend",
    "FaissOptions",
    "FileWriter",
    "KeyedBackend",
    "MilvusBackend",
    "MilvusOptions",
    "QdrantBackend",
    "QdrantOptions",
    "create_engine",
    "engine_options",
    "make_backend",
    "open_backend",
    "open_engine",
    "point_key",
    "point_uuid",
]
