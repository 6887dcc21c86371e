"""Training data recipes from ../shared/data. Each recipe is a set of pairs, with gold scores or without.

| recipe           | pairs                                              | kind     |
|------------------|----------------------------------------------------|----------|
| `scifact-train`  | SciFact train query -> each abstract it cites      | unscored |
| `scifact-titles` | SciFact corpus title -> its abstract               | unscored (trains on corpus text: unsupervised adaptation) |
| `stsb`           | STS-B train sentence pairs, gold 0..5              | scored   |
| `sick`           | SICK train sentence pairs, relatedness 1..5        | scored   |

SciFact's test queries and test qrels are never read here. ``scifact-train`` holds out a dev split of
its queries (``dev_fraction``, chosen by ``seed``) for model selection; ``evals/beir_eval.py --split dev``
scores models on the same queries (:func:`split_dev` is the one definition of the split).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from adaptive_retrieval.corpus import document_text
from adaptive_retrieval.datasets import split_dev
from adaptive_retrieval.sts import read_sick, read_stsb


@dataclass
class PairSet:
    """Pairs ``(a[i], b[i])``, with ``labels[i]`` for scored pairs (``None`` for unscored ones)."""

    name: str
    a: list[str]
    b: list[str]
    labels: list[float] | None
    source: str
    held_out: dict[str, list[str]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.a)


def _scifact(data_dir: Path) -> Path:
    folder = Path(data_dir) / "beir" / "scifact"
    if not (folder / "corpus.jsonl").is_file():
        raise SystemExit(
            f"SciFact is not in {folder}; pass --data-dir pointing at the folder that holds beir/"
        )
    return folder


def _corpus(folder: Path) -> dict[str, dict[str, str]]:
    with open(folder / "corpus.jsonl") as fh:
        return {d["_id"]: d for d in map(json.loads, fh)}


def _train_qrels(folder: Path) -> dict[str, list[str]]:
    qrels: dict[str, list[str]] = {}
    with open(folder / "qrels" / "train.tsv") as fh:
        next(fh)
        for line in fh:
            qid, did, score = line.rstrip("\n").split("\t")
            if int(score) > 0:
                qrels.setdefault(qid, []).append(did)
    return qrels


def dev_query_ids(data_dir: Path, dev_fraction: float, seed: int) -> list[str]:
    """The SciFact train queries held out for model selection (deterministic in ``seed``)."""
    return split_dev(list(_train_qrels(_scifact(data_dir))), dev_fraction, seed)


def scifact_train(data_dir: Path, dev_fraction: float = 0.1, seed: int = 0) -> PairSet:
    folder = _scifact(data_dir)
    corpus, qrels = _corpus(folder), _train_qrels(folder)
    with open(folder / "queries.jsonl") as fh:
        queries = {q["_id"]: q["text"] for q in map(json.loads, fh) if q["_id"] in qrels}
    dev = set(dev_query_ids(data_dir, dev_fraction, seed))
    a, b = [], []
    for qid in sorted(qrels, key=int):
        if qid not in dev:
            for did in qrels[qid]:
                a.append(queries[qid])
                b.append(document_text(corpus[did]))
    return PairSet(
        "scifact-train",
        a,
        b,
        None,
        f"SciFact train qrels, {len(qrels) - len(dev)} queries ({len(dev)} held out as dev)",
        held_out={"scifact_dev_query_ids": sorted(dev, key=int)},
    )


def scifact_titles(data_dir: Path) -> PairSet:
    corpus = _corpus(_scifact(data_dir))
    docs = [d for d in corpus.values() if d.get("title") and d.get("text")]
    return PairSet(
        "scifact-titles",
        [d["title"] for d in docs],
        [d["text"] for d in docs],
        None,
        f"SciFact corpus title -> abstract, {len(docs)} documents (unsupervised adaptation on corpus text)",
    )


def stsb_train(data_dir: Path) -> PairSet:
    pairs = read_stsb(data_dir, "train")
    return PairSet(
        "stsb",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        [p[2] for p in pairs],
        f"STS-B train, {len(pairs)} scored pairs",
    )


def sick_train(data_dir: Path) -> PairSet:
    pairs = read_sick(data_dir, "train")
    return PairSet(
        "sick",
        [p[0] for p in pairs],
        [p[1] for p in pairs],
        [p[2] for p in pairs],
        f"SICK train, {len(pairs)} scored pairs",
    )


RECIPES = {
    "scifact-train": scifact_train,
    "scifact-titles": scifact_titles,
    "stsb": stsb_train,
    "sick": sick_train,
}


def load_recipes(
    names: Sequence[str], data_dir: Path, *, dev_fraction: float = 0.1, seed: int = 0
) -> list[PairSet]:
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown data recipe(s) {unknown}; known: {', '.join(RECIPES)}")
    sets = []
    for name in names:
        if name == "scifact-train":
            sets.append(scifact_train(data_dir, dev_fraction, seed))
        else:
            sets.append(RECIPES[name](data_dir))
    return sets
