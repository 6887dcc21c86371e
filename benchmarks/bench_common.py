"""Helpers shared by the benchmark scripts: data paths, machine description, timing statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from adaptive_retrieval.corpus import document_text
from adaptive_retrieval.datasets import default_data_dir
from adaptive_retrieval.reporting import percentiles_ms

DEFAULT_DATA_DIR = default_data_dir()  # $ADAPTIVE_RETRIEVAL_DATA or the cache folder


def scifact_texts(data_dir: Path, n: int | None = None) -> list[str]:
    """SciFact corpus texts as the retriever indexes them ("title text"), in file order."""
    path = Path(data_dir) / "beir" / "scifact" / "corpus.jsonl"
    if not path.is_file():
        raise SystemExit(f"SciFact not found at {path}; pass --data-dir (the folder holding beir/scifact/)")
    texts = []
    with open(path) as fh:
        for line in fh:
            doc = json.loads(line)
            texts.append(document_text(doc))
            if n is not None and len(texts) == n:
                break
    return texts


def unit_rows(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random unit vectors of ``dim`` dimensions, float32."""
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def percentiles(seconds: list[float]) -> dict[str, float]:
    p50, p95 = percentiles_ms(seconds)
    return {"p50_ms": p50, "p95_ms": p95}
