"""The on-disk index directory: a JSON manifest beside the FAISS file, the fine matrix and the ids.

Layout (no pickle anywhere)::

    manifest.json            format, version, views, model identity, metric, counts, file names, sha256s
    coarse-<gen>.faiss       faiss.write_index of the coarse index          } the FAISS backend's data;
    coarse-<i>-<gen>.faiss   its further shards (a Flat index that grew)    }
    fine-<gen>.npy           the fine matrix (float16 by default), mmapped  } Qdrant and Milvus keep
    ids-<gen>.json           the document ids, in internal-id order         } theirs in the engine
    heads-<gen>.safetensors  the coarse head fitted to this corpus at build time, if one was
    projection-<gen>.npy     that head's projection of fine query vectors into the coarse space

Saving is atomic: each save writes a new generation of data files, then replaces ``manifest.json`` in
one ``os.replace``, and only then deletes the previous generation. A crash at any point leaves either
the old manifest with its files or the new one with its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import IndexConflict, IndexDamaged, InvalidArgument
from .index import CoarseIndex, FineStore
from .models import load_heads, save_heads
from .passages import row_id_of

FORMAT = "adaptive-retrieval-index"
FORMAT_VERSION = 1
SHARDED_FORMAT_VERSION = 2
"""The version of a manifest listing coarse shards (``coarse-1``...): a library that reads only version 1
refuses it by its version, rather than finding the index inconsistent."""
MANIFEST = "manifest.json"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


FULL_HASH_LIMIT = 1 << 26
"""With ``verify=True`` a file larger than this is checked by ``_sample_sha256`` (its first and last
``SAMPLE_BYTES``), not a full hash."""
SAMPLE_BYTES = 1 << 22
"""The bytes at each end of a file that ``_sample_sha256`` hashes."""


def _sample_sha256(path: Path, nbytes: int) -> str:
    """sha256 of a file's size, first and last ``nbytes``: a cheap check (of a 15 GB fine store:
    8 MB read) that catches a truncated, replaced or differently-written file, not a flipped byte in the
    middle; ``verify="full"`` hashes everything."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        digest.update(fh.read(nbytes))
        fh.seek(max(size - nbytes, 0))
        digest.update(fh.read(nbytes))
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_target(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise InvalidArgument(f"path={str(path)!r} is a file; an index is saved as a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / MANIFEST).is_file():
        raise InvalidArgument(
            f"path={str(path)!r} is a non-empty directory that holds no index; choose a new or empty directory"
        )


def manifest_digest(path: Path) -> str | None:
    """The sha256 of the manifest in index directory ``path`` as it is now (``None``: there is none)."""
    try:
        return hashlib.sha256((Path(path) / MANIFEST).read_bytes()).hexdigest()
    except (FileNotFoundError, NotADirectoryError):
        return None


def write_index(
    path: Path,
    manifest: dict[str, Any],
    writers: dict[str, tuple[str, Callable[[Path], None]]],
    expect: str | None = None,
) -> str:
    """Write an index directory atomically (see the module docstring): ``writers`` maps each data
    file's key (``coarse``, ``fine``, ``ids``, ``heads``, ``projection``, ``metadata``, ``lexical``) to its suffix and a function
    that writes it; the files are named ``<key>-<generation>.<suffix>`` and hashed into the manifest.
    An engine that keeps its own data (Qdrant, Milvus) writes none: the manifest says where it is.

    ``expect``: the :func:`manifest_digest` the directory had when the caller loaded or last saved it;
    if another writer has replaced that manifest since, nothing is replaced (``ValueError``): saving
    would silently drop what it saved. Returns the new manifest's digest."""
    path = Path(path)
    _check_target(path)
    changed = IndexConflict(
        f"the index at {str(path)!r} was saved by another writer since this retriever loaded or saved it: "
        "saving here would drop what that writer saved. Load it again (and redo your adds), or save to "
        "another directory"
    )

    def replaced() -> bool:  # no manifest now (the folder emptied or moved): nothing to drop
        now = manifest_digest(path)
        return expect is not None and now is not None and now != expect

    if replaced():
        raise changed  # before anything is written, the folder included
    path.mkdir(parents=True, exist_ok=True)
    with _directory_lock(path):  # two saves into one folder: one after the other, each whole
        if replaced():
            raise changed
        gen = uuid.uuid4().hex[:12]
        files = {key: f"{key}-{gen}.{suffix}" for key, (suffix, _) in writers.items()}
        written: list[Path] = []
        try:
            for key, (_, write) in writers.items():
                written.append(path / files[key])  # listed first, so a half-written file is removed too
                write(path / files[key])
            for f in written:
                _fsync(f)
            full = dict(
                manifest,
                format=FORMAT,
                format_version=SHARDED_FORMAT_VERSION if "coarse-1" in files else FORMAT_VERSION,
                files=files,
                sha256={k: _sha256(path / v) for k, v in files.items()},
                sample_bytes=SAMPLE_BYTES,
                sample_sha256={k: _sample_sha256(path / v, SAMPLE_BYTES) for k, v in files.items()},
                sizes={k: (path / v).stat().st_size for k, v in files.items()},
            )
            tmp = path / f".{MANIFEST}.{gen}.tmp"
            written.append(tmp)
            text = json.dumps(full, indent=2).encode()
            tmp.write_bytes(text)
            _fsync(tmp)
            os.replace(tmp, path / MANIFEST)
        except BaseException:
            for f in written:
                f.unlink(missing_ok=True)
            raise
        try:  # the new index stands from here: what follows only tidies
            dir_fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            keep = set(files.values()) | {MANIFEST}
            for old in path.iterdir():
                if old.name not in keep and old.name.startswith(
                    (
                        "coarse-",
                        "fine-",
                        "ids-",
                        "heads-",
                        "projection-",
                        "texts-",
                        "metadata-",
                        "lexical-",
                        f".{MANIFEST}.",
                    )
                ):
                    old.unlink(missing_ok=True)
        except OSError:  # e.g. a file another process holds open on Windows: the next save removes it
            pass
    return hashlib.sha256(text).hexdigest()


@contextlib.contextmanager
def _directory_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the folder itself (no lock file to leave behind) where the platform and
    file system have one; elsewhere, nothing."""
    try:
        import fcntl

        fd = os.open(path, os.O_RDONLY)
    except (ImportError, OSError):  # Windows: no flock, and folders do not open
        yield
        return
    try:
        with contextlib.suppress(OSError):  # a file system without flock: unlocked
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def extra_writers(doc_ids: list | None, heads: dict[int, Any] | None, projection: Any) -> dict:
    """:func:`write_index` writers for the files beside an engine's data: the document ids (FAISS
    keeps them here; the other engines store them with each document), the coarse heads fitted to the
    corpus (``{layer: (hidden, out) tensor}``) and their ``(fine_dim, coarse_dim)`` projection."""
    writers: dict[str, tuple[str, Callable[[Path], None]]] = {}
    if doc_ids is not None:
        writers["ids"] = ("json", lambda p: p.write_text(json.dumps(doc_ids)))
    if heads:
        writers["heads"] = ("safetensors", lambda p: save_heads(p, heads))
    if projection is not None:
        writers["projection"] = ("npy", lambda p: np.save(p, np.asarray(projection, dtype=np.float32)))
    return writers


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    manifest_file = path / MANIFEST
    if not manifest_file.is_file():
        raise IndexDamaged(f"path={str(path)!r} holds no index ({MANIFEST} is missing)")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise IndexDamaged(f"{manifest_file} is damaged: {err}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise IndexDamaged(f"{manifest_file} is not an adaptive-retrieval index manifest")
    if manifest.get("format_version") not in (FORMAT_VERSION, SHARDED_FORMAT_VERSION):
        raise IndexDamaged(
            f"{manifest_file} has format version {manifest.get('format_version')}; this library reads "
            f"{FORMAT_VERSION} and {SHARDED_FORMAT_VERSION}"
        )
    if "backend" not in manifest and isinstance(
        manifest.get("fine_dtype"), str
    ):  # saved before engines were named
        manifest["backend"] = {
            "name": "faiss",
            "index": manifest.get("index"),
            "fine_dtype": manifest["fine_dtype"],
            "train_size": manifest.get("train_size", 100_000),
        }
    check_manifest(manifest, manifest_file)
    return manifest


def _is_int(x: Any, least: int = 0) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= least


def _is_view(x: Any) -> bool:
    return isinstance(x, list) and len(x) == 2 and _is_int(x[0]) and _is_int(x[1], 1)


def _is_map(x: Any, value: Any) -> bool:
    return isinstance(x, dict) and all(isinstance(k, str) and value(v) for k, v in x.items())


def _is_file_name(x: Any) -> bool:
    return isinstance(x, str) and bool(x) and "/" not in x and "\\" not in x and x not in (".", "..")


#: What every manifest holds, and how each value must look; a manifest missing one, or holding one of
#: another form, is damaged.
_MANIFEST_FIELDS: dict[str, tuple[str, Any]] = {
    "model": (
        "a dict with name, fingerprint, pooling, max_length and (if any) precision float32 or bfloat16",
        lambda x: (
            isinstance(x, dict)
            and isinstance(x.get("fingerprint"), str)
            and isinstance(x.get("pooling"), str)
            and _is_int(x.get("max_length"), 1)
            and (x.get("name") is None or isinstance(x.get("name"), str))
            and x.get("precision", "float32") in ("float32", "bfloat16")
        ),
    ),
    "coarse": ("[layer, dim]", _is_view),
    "fine": ("[layer, dim]", _is_view),
    "index": ("a string", lambda x: isinstance(x, str) and bool(x)),
    "count": ("an int >= 0", _is_int),
    "candidates": ("an int >= 1", lambda x: _is_int(x, 1)),
    "files": ("file names by key", lambda x: _is_map(x, _is_file_name)),
    "sizes": ("sizes by key", lambda x: _is_map(x, _is_int)),
    "sha256": ("hashes by key", lambda x: _is_map(x, lambda v: isinstance(v, str))),
    "backend": (
        "a dict with the engine's name",
        lambda x: isinstance(x, dict) and isinstance(x.get("name"), str),
    ),
    "metric": ("'inner_product'", lambda x: x == "inner_product"),
    "sample_bytes": ("an int >= 1", lambda x: _is_int(x, 1)),
    "sample_sha256": ("hashes by key", lambda x: _is_map(x, lambda v: isinstance(v, str))),
    "saved_at": ("a string", lambda x: isinstance(x, str)),
    "library_version": ("a string", lambda x: isinstance(x, str)),
    "adaptation": ("a dict or null", lambda x: x is None or isinstance(x, dict)),
    "calibration": ("a dict or null", lambda x: x is None or isinstance(x, dict)),
}


def check_manifest(manifest: dict[str, Any], where: Path | str) -> None:
    """Refuse a manifest with a field missing or of the wrong form (``ValueError`` naming it), so that
    nothing downstream meets a ``KeyError`` or a ``None`` where an index's fact should be."""
    for key, (form, ok) in _MANIFEST_FIELDS.items():
        if key not in manifest:
            raise IndexDamaged(f"{where} is damaged: it has no {key!r}")
        if not ok(manifest[key]):
            raise IndexDamaged(f"{where} is damaged: {key!r} must be {form}, got {manifest[key]!r:.80}")
    rows = manifest.get("rows")  # optional: written by a library that deletes
    if rows is not None and not (_is_int(rows) and rows >= manifest["count"]):
        raise IndexDamaged(f"{where} is damaged: 'rows' must be null or an int >= count, got {rows!r:.80}")
    truncated = manifest.get("truncated", 0)  # optional: written when documents were cut
    if not _is_int(truncated):
        raise IndexDamaged(f"{where} is damaged: 'truncated' must be an int >= 0, got {truncated!r:.80}")
    if not isinstance(manifest.get("passages", False), bool):  # optional: written when adds split documents
        raise IndexDamaged(
            f"{where} is damaged: 'passages' must be true or false, got {manifest['passages']!r:.80}"
        )
    documents = manifest.get("documents", 0)  # optional: written when passages make rows outnumber documents
    if not (_is_int(documents) and documents <= manifest["count"]):
        raise IndexDamaged(f"{where} is damaged: 'documents' must be an int <= count, got {documents!r:.80}")
    _check_lexical(manifest, where)
    for key in ("sizes", "sha256", "sample_sha256"):
        if set(manifest[key]) != set(manifest["files"]):
            raise IndexDamaged(f"{where} is damaged: {key!r} does not cover the same files as 'files'")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_lexical(manifest: dict[str, Any], where: Path | str) -> None:
    """An index with a lexical index records it three times, all or none: its settings (``lexical``),
    the fusion searches use (``fusion``) and its file."""
    parts = ("lexical" in manifest, "fusion" in manifest, "lexical" in manifest["files"])
    if not any(parts):
        return  # dense only (or saved before lexical indexes existed)
    lexical, fusion = manifest.get("lexical"), manifest.get("fusion")
    if not all(parts):
        raise IndexDamaged(f"{where} is damaged: 'lexical', 'fusion' and the lexical file go together")
    if not (
        isinstance(lexical, dict)
        and isinstance(lexical.get("language"), str)
        and _is_number(lexical.get("k1"))
        and _is_number(lexical.get("b"))
    ):
        raise IndexDamaged(
            f"{where} is damaged: 'lexical' must be a dict of language, k1 and b, got {lexical!r:.80}"
        )
    if not (
        isinstance(fusion, dict)
        and isinstance(fusion.get("rule"), str)
        and _is_number(fusion.get("weight"))
        and _is_int(fusion.get("depth"), 1)
    ):
        raise IndexDamaged(
            f"{where} is damaged: 'fusion' must be a dict of rule, weight and depth, got {fusion!r:.80}"
        )


def check_verify(verify: object) -> None:
    if verify is not True and verify is not False and verify != "full":
        raise InvalidArgument(f"verify must be True, False or 'full', got {verify!r}")


def verify_files(path: Path, manifest: dict[str, Any], verify: bool | str = True) -> None:
    """Refuse missing, truncated or altered data files. ``verify``: ``True`` hashes every file up to
    ``FULL_HASH_LIMIT`` bytes and samples larger ones (``_sample_sha256``), ``"full"`` hashes every byte, ``False`` checks sizes only."""
    check_verify(verify)
    samples = manifest["sample_sha256"]
    for key, name in manifest["files"].items():
        f = path / name
        if not f.is_file():
            raise IndexDamaged(f"index at {str(path)!r} is damaged: {name} is missing")
        if f.stat().st_size != manifest["sizes"][key]:
            raise IndexDamaged(
                f"index at {str(path)!r} is damaged: {name} has {f.stat().st_size} bytes, "
                f"the manifest says {manifest['sizes'][key]} (truncated or overwritten)"
            )
        if verify is False:
            continue
        sampled = verify is True and f.stat().st_size > FULL_HASH_LIMIT
        if sampled:
            bad = _sample_sha256(f, manifest["sample_bytes"]) != samples[key]
        else:
            bad = _sha256(f) != manifest["sha256"][key]
        if bad:
            raise IndexDamaged(
                f"index at {str(path)!r} is damaged: {name} does not match its sha256 in the manifest"
            )


def read_data_files(
    path: Path, manifest: dict[str, Any], *, verify: bool | str = True, mmap: bool = True
) -> tuple[CoarseIndex, FineStore, list]:
    """The FAISS backend's data: the coarse index, the fine store (memory-mapped with ``mmap``) and
    the document ids, checked (:func:`verify_files`) and consistent with the manifest's count."""
    path = Path(path)
    verify_files(path, manifest, verify)
    files = manifest["files"]
    for key in ("coarse", "fine", "ids"):
        if key not in files:
            raise IndexDamaged(f"index at {str(path)!r} is damaged: its manifest lists no {key} file")
    coarse_dim, fine_dim, count = manifest["coarse"][1], manifest["fine"][1], manifest["count"]
    shards = {key for key in files if key.startswith("coarse-")}
    if shards != {f"coarse-{i}" for i in range(1, len(shards) + 1)}:
        raise IndexDamaged(f"index at {str(path)!r} is damaged: its coarse shards are {sorted(shards)}")
    more = [path / files[f"coarse-{i}"] for i in range(1, len(shards) + 1)]
    coarse = CoarseIndex.load(path / files["coarse"], coarse_dim, manifest["index"], more)
    fine = FineStore.load(path / files["fine"], mmap=mmap)
    try:
        doc_ids = json.loads((path / files["ids"]).read_text())
    except ValueError as err:
        raise IndexDamaged(f"index at {str(path)!r} is damaged: {files['ids']}: {err}") from None
    rows = manifest.get("rows") or count  # rows of deleted documents (null ids) included
    live = sum(d is not None for d in doc_ids) if isinstance(doc_ids, list) else -1
    if (
        len(coarse) != rows
        or len(fine) != rows
        or len(doc_ids) != rows
        or live != count
        or fine.dim != fine_dim
    ):
        raise IndexDamaged(
            f"index at {str(path)!r} is inconsistent: manifest says {count} documents in {rows} rows, the coarse "
            f"index has {len(coarse)}, the fine store {len(fine)} x {fine.dim}, the id list {len(doc_ids)} "
            f"({live} live)"
        )
    return coarse, fine, [row_id_of(d) for d in doc_ids]  # a passage's id is saved as a list


def read_extras(path: Path, manifest: dict[str, Any]) -> tuple[dict[int, Any], np.ndarray | None]:
    """The index's own coarse heads (often none) and their projection (``None`` without one); call
    :func:`verify_files` first."""
    path, files = Path(path), manifest["files"]
    heads = load_heads(path / files["heads"]) if "heads" in files else {}
    projection = None
    if "projection" in files:
        projection = np.load(path / files["projection"], allow_pickle=False)
        want = (manifest["fine"][1], manifest["coarse"][1])
        if projection.shape != want:
            raise IndexDamaged(
                f"index at {str(path)!r} is inconsistent: its projection is {projection.shape}, the views "
                f"need {want}"
            )
    return heads, projection
