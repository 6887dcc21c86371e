"""What an index directory's manifest records of a retriever, and how a retriever is saved and reopened.

:mod:`adaptive_retrieval.storage` owns the directory itself (atomic generations of files, their hashes,
the format's schema check); this module owns what goes into it: the :class:`Manifest` (the model's
identity, the views, the engine's entry, the adaptation and calibration records), the files each part
writes (:func:`save_index`), and the checks that a reopened index and its model belong together
(:func:`open_index`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .adapt import Adaptation
from .backends import Backend, open_engine
from .corpus import DocId
from .cpu_linear import bfloat16_faster
from .documents import DocumentStore
from .encoder import Encoder
from .engine_lexical import EngineLexicalIndex
from .errors import CorpusError, IndexDamaged, InvalidArgument, ModelMismatch, ModelNotFound
from .first_stage import FirstStage
from .hybrid import Fusion
from .lexical import LexicalIndex
from .metadata import MetadataStore
from .scratch import sweep
from .shortlist import Calibration
from .storage import (
    check_verify,
    extra_writers,
    manifest_digest,
    read_extras,
    read_manifest,
    verify_files,
    write_index,
)
from .version import __version__
from .views import View

logger = logging.getLogger(__name__)


def model_record(encoder: Encoder) -> dict[str, Any]:
    """The model's identity as a manifest records it: what a model must match to search the index."""
    return {
        "name": encoder.name,
        "fingerprint": encoder.fingerprint,
        "model_type": encoder.model.config.model_type,
        "pooling": encoder.pooling,
        "max_length": encoder.max_length,
        "query_prompt": encoder.query_prompt,
        "document_prompt": encoder.document_prompt,
        "n_layers": encoder.n_layers,
        "hidden_size": encoder.hidden_size,
        "precision": encoder.precision,
    }


@dataclass
class Manifest:
    """The retriever's part of ``manifest.json`` (the directory's part, file names and hashes, is added
    by :func:`adaptive_retrieval.storage.write_index`)."""

    model: dict[str, Any]
    coarse: View
    fine: View
    backend: dict[str, Any]
    index: str
    count: int
    candidates: int
    adaptation: dict[str, Any] | None = None
    calibration: dict[str, Any] | None = None
    metric: str = "inner_product"
    lexical: dict[str, Any] | None = None
    """The lexical index's settings (``None``: none; an index saved before it existed)"""
    fusion: dict[str, Any] | None = None
    """How searches fuse it with the fine view (:class:`adaptive_retrieval.hybrid.Fusion`)"""
    truncated: int = 0
    """Documents longer than the model's max length, indexed cut to it"""
    passages: bool = False
    """Whether adds split long documents into passages (:mod:`adaptive_retrieval.passages`)"""
    documents: int | None = None
    """Documents, where passages make ``count`` (the live rows) larger (``None``: ``count``)"""
    rows: int | None = None
    """Rows the stores hold, those of deleted documents included (``None``: ``count``)"""
    first_stage: dict[str, Any] | None = None
    """What ``build(coarse_bytes=...)`` chose and measured (:class:`adaptive_retrieval.first_stage.FirstStage`)"""
    saved_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    library_version: str = __version__

    def as_dict(self) -> dict[str, Any]:
        """As written to ``manifest.json``."""
        out = asdict(self)
        out["coarse"], out["fine"] = list(self.coarse.as_tuple()), list(self.fine.as_tuple())
        for optional in (
            "rows",
            "lexical",
            "fusion",
            "truncated",
            "passages",
            "documents",
            "first_stage",
        ):  # as older ones wrote it
            if out[optional] is None or (optional in ("truncated", "passages") and not out[optional]):
                del out[optional]
        return out


@dataclass
class OpenedIndex:
    """What :func:`open_index` read: the parts a retriever is made of."""

    encoder: Encoder
    coarse: View
    fine: View
    engine: Backend
    doc_ids: list[DocId]
    candidates: int
    adaptation: Adaptation | None
    calibration: Calibration | None
    documents: DocumentStore | None
    metadata: MetadataStore
    digest: str | None
    lexical: LexicalIndex | EngineLexicalIndex | None = None
    fusion: Fusion | None = None
    truncated: int = 0
    passages: bool = False
    first_stage: FirstStage | None = None


def save_index(
    path: Path,
    manifest: Manifest,
    engine: Backend,
    *,
    heads: dict[int, Any] | None,
    projection: np.ndarray | None,
    documents: DocumentStore | None,
    metadata: MetadataStore | None = None,
    lexical: LexicalIndex | EngineLexicalIndex | None = None,
    expect: str | None,
) -> str:
    """Write the index directory ``path`` atomically: the engine's files, the fitted head and its
    projection, the texts, then the manifest. ``expect``: the manifest digest this retriever last read
    or wrote there (a save over another writer's is refused; see
    :func:`adaptive_retrieval.storage.write_index`). Returns the new manifest's digest. The caller
    holds the read lock, so no add commits during the save."""
    writers = {**engine.files(), **extra_writers(None, heads, projection)}
    if documents is not None:
        writers["texts"] = ("sqlite", documents.save)
    if metadata is not None and not metadata.empty:
        rows = manifest.rows if manifest.rows is not None else manifest.count
        ids = list(engine.ids.ids[:rows])
        writers["metadata"] = ("jsonl", lambda p: metadata.save(p, ids))
    if lexical is not None:
        ids = list(engine.ids.ids[: len(lexical)])
        writers["lexical"] = ("npz", lambda p: lexical.save(p, ids))
    return write_index(Path(path), manifest.as_dict(), writers, expect)


def guards_directory(manifest: Manifest, documents: DocumentStore | None) -> bool:
    """Whether a save must refuse to replace another writer's manifest: FAISS's rows (and any index's
    texts) live in the directory, and would be dropped; an engine's rows stay in its collection."""
    return manifest.backend["name"] == "faiss" or documents is not None


def _model_for(path: Path, saved: dict[str, Any], model: str | Encoder | None) -> Encoder:
    """The encoder to search the index with: ``model`` (an encoder as given) or the one the manifest names,
    set as the index was encoded (pooling, max length, prompts, precision: bfloat16 only where it pays on
    this processor, else float32, whose vectors bfloat16's approximate)."""
    settings = {
        "pooling": saved["pooling"],
        "max_length": saved["max_length"],
        "query_prompt": saved.get("query_prompt", ""),
        "document_prompt": saved.get("document_prompt", ""),
    }
    if isinstance(model, Encoder):
        return model
    precision = saved.get("precision", "float32")  # an index saved before precisions: float32
    if precision == "bfloat16" and not bfloat16_faster():  # emulated, or measured slower than float32 here
        logger.info("the index's encoder ran in bfloat16, which does not pay on this processor: float32 here")
        precision = "float32"
    if model is not None:
        return Encoder.from_pretrained(model, **settings).with_precision(precision)
    if not saved.get("name"):
        raise ModelNotFound(f"the index at {str(path)!r} records no model name; pass model=... to load it")
    try:
        return Encoder.from_pretrained(saved["name"], **settings).with_precision(precision)
    except ValueError as err:
        raise ModelNotFound(
            f"the index at {str(path)!r} was built with model {saved['name']!r}, which cannot be found "
            f"here ({err}); pass model=... to load it"
        ) from None


def _check_model(path: Path, saved: dict[str, Any], model: Encoder) -> None:
    if model.fingerprint != saved["fingerprint"]:
        raise ModelMismatch(
            f"model {model.name!r} does not match the index at {str(path)!r}, which was built with "
            f"{saved['name']!r} (weights sha256 {saved['fingerprint'][:12]}..., given {model.fingerprint[:12]}...)"
        )
    for key in ("pooling", "max_length", "query_prompt", "document_prompt"):
        value = saved[key] if key in ("pooling", "max_length") else saved.get(key, "")
        if getattr(model, key) != value:
            raise ModelMismatch(
                f"model {key}={getattr(model, key)!r} does not match the index at {str(path)!r} ({value!r})"
            )


def open_index(
    path: Path,
    model: str | Encoder | None = None,
    *,
    verify: bool | str = True,
    mmap: bool = True,
    backend_options: dict[str, Any] | None = None,
) -> OpenedIndex:
    """Read a saved index (see :meth:`adaptive_retrieval.Retriever.load` for the arguments): its manifest, files and
    model, each checked against the others."""
    path = Path(path)
    check_verify(verify)
    digest = manifest_digest(path)  # before reading: a save meanwhile shows as a change
    manifest = read_manifest(path)
    for stale in sweep(path):  # scratch copies of a process killed while it grew this index
        logger.info("removed %s, left by a process that no longer runs", stale)
    saved = manifest["model"]
    encoder = _model_for(path, saved, model)
    verify_files(path, manifest, verify)
    heads, projection = read_extras(path, manifest)
    if heads:  # the head fitted to this corpus at build time
        encoder = encoder.with_heads(heads)
    _check_model(path, saved, encoder)
    coarse = encoder.check_view(manifest["coarse"], name="coarse")
    fine = encoder.check_view(manifest["fine"], name="fine")
    adaptation, calibration = manifest["adaptation"], manifest["calibration"]
    try:
        adaptation = None if adaptation is None else Adaptation(**adaptation, projection=projection)
        calibration = None if calibration is None else Calibration.from_dict(calibration)
        first_stage = manifest.get("first_stage")
        first_stage = None if first_stage is None else FirstStage.from_dict(first_stage)
    except TypeError as err:
        raise IndexDamaged(f"the index at {str(path)!r} is damaged: its manifest's records: {err}") from None
    options = dict(backend_options or {})
    if manifest["backend"]["name"] == "faiss":
        if options:
            raise InvalidArgument("backend_options apply to indexes whose vectors live in Qdrant or Milvus")
        options = {"verify": False, "mmap": mmap}  # verified above
    documents = None
    if "texts" in manifest["files"]:
        documents = DocumentStore.load(path / manifest["files"]["texts"])
        if len(documents) > manifest["count"]:  # fewer: documents another writer added without texts
            documents.close()
            raise IndexDamaged(
                f"index at {str(path)!r} is inconsistent: its document store holds {len(documents)} texts, "
                f"the manifest {manifest['count']} documents"
            )
    engine = None
    try:
        engine, doc_ids = open_engine(path, manifest, options)
        where = manifest["files"].get("metadata")
        metadata = MetadataStore.load(None if where is None else path / where, doc_ids)
        lexical, fusion = None, None
        if "lexical" in manifest["files"]:  # with its settings and fusion (storage.check_manifest)
            try:
                fusion = Fusion.from_dict(manifest["fusion"])
            except (TypeError, InvalidArgument) as err:
                raise IndexDamaged(f"the index at {str(path)!r} is damaged: its fusion: {err}") from None
            where = path / manifest["files"]["lexical"]
            if manifest["lexical"].get("postings") == "engine":  # the engine holds them
                if not engine.lexical_field:
                    raise IndexDamaged(
                        f"the index at {str(path)!r} keeps its lexical postings in {engine.describe()}, "
                        "which holds none"
                    )
                lexical = EngineLexicalIndex.load(where, doc_ids, engine)
            else:
                lexical = LexicalIndex.load(where, doc_ids, mmap=mmap)
    except BaseException:
        if engine is not None:
            engine.close()
        if documents is not None:
            documents.close()
        raise
    return OpenedIndex(
        encoder=encoder,
        coarse=coarse,
        fine=fine,
        engine=engine,
        doc_ids=doc_ids,
        candidates=manifest["candidates"],
        adaptation=adaptation,
        calibration=calibration,
        documents=documents,
        metadata=metadata,
        digest=digest,
        lexical=lexical,
        fusion=fusion,
        truncated=int(manifest.get("truncated", 0)),
        passages=bool(manifest.get("passages", False)),
        first_stage=first_stage,
    )


# Retriever.save and Retriever.load, defined here with the work they orchestrate (retriever.py
# attaches them).


def save(self: Any, path: str | Path) -> None:
    """Save to directory ``path`` atomically: an interrupted save leaves the previous index whole.

    Args:
        path: the index directory: new, empty, or holding an index (which is replaced).

    Raises:
        IndexConflict: another writer saved there since this retriever loaded or saved it.
        InvalidArgument: ``path`` is a file or a non-empty directory holding no index, or the engine
            cannot be reopened (an in-memory Qdrant collection, say).
        RetrieverClosed: the retriever was closed.

    Example:
        >>> retriever.save("my-index")  # doctest: +SKIP
    """
    self._check_open()
    entry = self.backend.manifest()  # an engine that cannot be reopened refuses here, before any write
    with self._lock.read():  # a write commits before or after this save, never during it (a refit too)
        heads = {self.coarse.layer: self.encoder.heads[self.coarse.layer]} if self.fitted_head else None
        manifest = Manifest(
            model=model_record(self.encoder), coarse=self.coarse, fine=self.fine, backend=entry,
            index=self.backend.describe(), count=self.ids.count, candidates=self.candidates,
            rows=len(self.ids) if self.ids.dead else None,
            adaptation=None if self.adaptation is None else self.adaptation.as_dict(),
            calibration=None if self.calibration is None else self.calibration.as_dict(),
            lexical=None if self.lexical is None else self.lexical.settings,
            fusion=None if self.lexical is None else self.fusion.as_dict(), truncated=self.truncated,
            passages=self.passages, documents=len(self) if len(self) < self.ids.count else None,
            first_stage=None if self.first_stage is None else self.first_stage.as_dict(),
        )  # fmt: skip
        where = Path(path).resolve()
        expect = self._manifests.get(where) if guards_directory(manifest, self.documents) else None
        self._manifests[where] = save_index(
            Path(path), manifest, self.backend, heads=heads, projection=self.projection,
            documents=self.documents, metadata=self.metadata, lexical=self.lexical, expect=expect,
        )  # fmt: skip


def load(
    cls: Any,
    path: str | Path,
    model: str | Encoder | None = None,
    *,
    verify: bool | str = True,
    mmap: bool = True,
    backend_options: dict[str, Any] | None = None,
) -> Any:
    """Load a saved index.

    Args:
        path: the index directory.
        model: default the one the manifest names; a model whose weights, pooling, max length or
            prompts differ from the index's is refused.
        verify: ``True`` checks every file's size and sha256 (files over 64 MB: their first and last
            4 MB), ``"full"`` hashes every byte, ``False`` checks sizes only.
        mmap: memory-map the fine matrix and the lexical index's postings.
        backend_options: where a Qdrant or Milvus collection lives now, if not where it was saved
            (``location``/``path``/``client``; ``uri``/``token``/``client``; ``drop_uncommitted``).

    Returns:
        The retriever, as it was saved (its calibration dropped, with a warning, when another writer
        has grown the engine's collection past it).

    Raises:
        IndexDamaged: no index at ``path``, or missing, altered or inconsistent files.
        ModelMismatch: a ``model`` whose weights, pooling, max length or prompts differ from the index's.
        ModelNotFound: the model cannot be resolved here (InstallationError: a named model's parts missing).
        InvalidArgument: a bad ``verify``, or ``backend_options`` for a FAISS index.
        EngineError: the engine (Qdrant, Milvus) refused or failed.

    Example:
        >>> retriever = Retriever.load("my-index", verify="full")  # doctest: +SKIP
    """
    opened = open_index(Path(path), model, verify=verify, mmap=mmap, backend_options=backend_options)
    try:
        retriever = cls(
            opened.encoder, opened.coarse, opened.fine, opened.engine, opened.doc_ids,
            candidates=opened.candidates, adaptation=opened.adaptation, calibration=opened.calibration,
            documents=opened.documents, metadata=opened.metadata, lexical=opened.lexical, fusion=opened.fusion,
            first_stage=opened.first_stage,
        )  # fmt: skip
    except BaseException as err:  # e.g. a repeated id: nothing of the index stays open
        opened.engine.close()
        if opened.documents is not None:
            opened.documents.close()
        if isinstance(err, (CorpusError, InvalidArgument)):
            raise IndexDamaged(f"the index at {str(path)!r} is damaged: {err}") from None
        raise
    retriever.truncated, retriever.passages = opened.truncated, opened.passages
    if opened.digest is not None:
        retriever._manifests[Path(path).resolve()] = opened.digest
    retriever._drop_stale_calibration()  # e.g. an engine's collection that other processes grew
    return retriever
