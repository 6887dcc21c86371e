"""Where evaluation data lives, how a BEIR dataset is loaded (or downloaded), and the dev split.

- The data folder holds ``beir/<dataset>/`` (BEIR's layout: ``corpus.jsonl``, ``queries.jsonl``,
  ``qrels/<split>.tsv``) and ``sts/``. Scripts take it as ``--data-dir``; its default is
  ``$ADAPTIVE_RETRIEVAL_DATA``, else ``data/`` in the library's cache folder
  (``$ADAPTIVE_RETRIEVAL_CACHE``, default ``~/.cache/adaptive-retrieval``), never a folder outside
  those two.
- :func:`load_beir` reads a dataset with BEIR's own loader. A public BEIR dataset that is missing is
  downloaded into the data folder with BEIR's own ``download_and_unzip`` when the machine is online;
  offline, the error says where to put a copy.
- :func:`split_dev` is the one definition of the dev split: the train queries that training holds
  out and model selection scores on (``evals/beir_eval.py --split dev``).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

from .errors import InvalidArgument
from .models import cache_dir

logger = logging.getLogger(__name__)

DATA_ENV = "ADAPTIVE_RETRIEVAL_DATA"
"""The environment variable that names the data folder (see the module docstring)."""
BEIR_DOWNLOAD = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
BEIR_PUBLIC = (
    "msmarco", "trec-covid", "nfcorpus", "nq", "hotpotqa", "fiqa", "arguana", "webis-touche2020",
    "cqadupstack", "quora", "dbpedia-entity", "scidocs", "fever", "climate-fever", "scifact",
)  # fmt: skip
"""BEIR's public datasets, as ``beir.util.download_and_unzip`` fetches them from ``BEIR_DOWNLOAD``
(BEIR's README lists them)."""


def default_data_dir() -> Path:
    """``$ADAPTIVE_RETRIEVAL_DATA``, else ``<cache>/data`` (see the module docstring)."""
    env = os.environ.get(DATA_ENV)
    return Path(env) if env else cache_dir() / "data"


def _missing(folder: Path, split: str) -> list[Path]:
    needed = [folder / "corpus.jsonl", folder / "queries.jsonl", folder / "qrels" / f"{split}.tsv"]
    return [p for p in needed if not p.is_file()]


def download_beir(data_dir: Path, dataset: str) -> Path:
    """Download and unzip a public BEIR dataset into ``data_dir/beir/`` with BEIR's own helper.

    Args:
        data_dir: the data folder.
        dataset: a name in ``BEIR_PUBLIC``.

    Returns:
        The dataset's folder.

    Raises:
        FileNotFoundError: the download failed (e.g. offline); the message names where to put a copy.
    """
    from beir import util

    target = Path(data_dir) / "beir"
    target.mkdir(parents=True, exist_ok=True)
    url = BEIR_DOWNLOAD.format(name=dataset)
    logger.info("downloading BEIR %s into %s", dataset, target)
    try:
        return Path(util.download_and_unzip(url, str(target)))
    except Exception as err:  # requests' and zipfile's errors alike: the cause goes in the message
        for partial in (target / f"{dataset}.zip",):
            partial.unlink(missing_ok=True)
        raise FileNotFoundError(
            f"BEIR dataset {dataset!r} is not in {target / dataset} and could not be downloaded "
            f"({type(err).__name__}: {err}). Offline? Put a BEIR-format copy there (corpus.jsonl, "
            f"queries.jsonl, qrels/), or set --data-dir / ${DATA_ENV} to the folder holding beir/{dataset}/."
        ) from None


def load_beir(
    data_dir: Path | None, dataset: str, split: str, *, download: bool = True
) -> tuple[dict, dict, dict]:
    """A BEIR dataset by BEIR's own loader; a missing public one is downloaded first.

    Args:
        data_dir: the data folder (``None``: :func:`default_data_dir`); the dataset is in ``beir/<dataset>``.
        dataset: the dataset's folder name.
        split: the qrels split (``"test"``, ``"train"``, ``"dev"``).
        download: ``False``: never download.

    Returns:
        ``(corpus, queries, qrels)`` as BEIR's ``GenericDataLoader`` returns them.

    Raises:
        FileNotFoundError: a file still missing (or a failed download), saying what and where.

    Example:
        >>> corpus, queries, qrels = load_beir(None, "scifact", "test")  # doctest: +SKIP
    """
    from beir.datasets.data_loader import GenericDataLoader

    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    folder = data_dir / "beir" / dataset
    missing = _missing(folder, split)
    if missing and download and dataset in BEIR_PUBLIC and not folder.exists():
        download_beir(data_dir, dataset)
        missing = _missing(folder, split)
    if missing:
        raise FileNotFoundError(
            f"dataset {dataset!r} (split {split!r}) is not in {folder}: missing "
            f"{', '.join(str(p) for p in missing)}. Put a BEIR-format copy there (corpus.jsonl, queries.jsonl, "
            f"qrels/{split}.tsv), or pass --data-dir (or set ${DATA_ENV}) to the folder that holds beir/{dataset}/."
        )
    return GenericDataLoader(data_folder=str(folder)).load(split=split)


def _id_order(qid: str) -> tuple[int, int | str]:
    return (0, int(qid)) if qid.isdigit() else (1, qid)


def split_dev(query_ids: Sequence[str], dev_fraction: float, seed: int) -> list[str]:
    """The query ids held out for model selection.

    Args:
        query_ids: the candidates (train queries); their order does not matter.
        dev_fraction: the share held out.
        seed: the sample's seed.

    Returns:
        A ``dev_fraction`` sample of the ids, deterministic in ``seed``, in id order.

    Example:
        >>> ids = [str(i) for i in range(10)]
        >>> split_dev(ids, 0.2, seed=42) == split_dev(ids[::-1], 0.2, seed=42)
        True
    """
    qids = sorted(set(query_ids), key=_id_order)
    return sorted(random.Random(seed).sample(qids, round(len(qids) * dev_fraction)), key=_id_order)


def load_split(
    data_dir: Path | None, dataset: str, split: str, *, dev_fraction: float = 0.1, dev_seed: int = 42
) -> tuple[dict, dict, dict]:
    """:func:`load_beir`, plus ``split="dev"`` for datasets without a ``qrels/dev.tsv``: the train queries
    (with a relevant document) that training holds out with the same ``dev_fraction`` and seed.

    Args:
        data_dir, dataset, split: as :func:`load_beir` takes them.
        dev_fraction: the share of train queries in the dev split (:func:`split_dev`).
        dev_seed: its seed.

    Returns:
        ``(corpus, queries, qrels)``, the queries and qrels of the split only.

    Raises:
        InvalidArgument: ``dev_fraction`` outside ``(0, 1)``.
        FileNotFoundError: as :func:`load_beir`.
    """
    data_dir = default_data_dir() if data_dir is None else Path(data_dir)
    if split != "dev" or (data_dir / "beir" / dataset / "qrels" / "dev.tsv").is_file():
        return load_beir(data_dir, dataset, split)
    if not 0 < dev_fraction < 1:
        raise InvalidArgument(f"dev_fraction must be in (0, 1), got {dev_fraction}")
    corpus, queries, qrels = load_beir(data_dir, dataset, "train")
    positive = [q for q, docs in qrels.items() if any(s > 0 for s in docs.values())]
    dev = split_dev(positive, dev_fraction, dev_seed)
    return corpus, {q: queries[q] for q in dev if q in queries}, {q: qrels[q] for q in dev}
