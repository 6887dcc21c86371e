"""Helpers shared by the benchmark scripts: data paths, machine description, timing statistics."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import numpy as np
import torch

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def scifact_texts(data_dir: Path, n: int | None = None) -> list[str]:
    """SciFact corpus texts as the retriever indexes them ("title text"), in file order."""
    path = Path(data_dir) / "beir" / "scifact" / "corpus.jsonl"
    if not path.is_file():
        raise SystemExit(f"SciFact not found at {path}; pass --data-dir (the folder holding beir/scifact/)")
    texts = []
    with open(path) as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if n is not None and len(texts) == n:
                break
    return texts


def scifact_queries(data_dir: Path, split: str = "test") -> list[str]:
    """SciFact query texts of one split, in qrels order."""
    root = Path(data_dir) / "beir" / "scifact"
    wanted = []
    with open(root / "qrels" / f"{split}.tsv") as fh:
        next(fh)
        for line in fh:
            qid = line.split("\t")[0]
            if qid not in wanted:
                wanted.append(qid)
    queries = {}
    with open(root / "queries.jsonl") as fh:
        for line in fh:
            q = json.loads(line)
            queries[q["_id"]] = q["text"]
    return [queries[q] for q in wanted]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"


def percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}
