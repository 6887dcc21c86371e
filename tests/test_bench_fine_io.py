from __future__ import annotations

import json

import numpy as np

from benchmarks.bench_fine_io import main


def test_both_maps_rerank_the_same_file_and_are_reported(tmp_path):
    np.save(tmp_path / "fine.npy", np.random.default_rng(0).standard_normal((2000, 32)).astype(np.float16))
    rows = main(
        [
            "--fine",
            str(tmp_path / "fine.npy"),
            "--queries",
            "5",
            "--candidates",
            "50",
            "--warm-only",
            "--out",
            str(tmp_path),
        ]
    )
    assert [r["map"] for r in rows] == ["numpy default map", "FineStore.load (MADV_RANDOM)"]
    assert all(r["cache"] == "warm" and r["p50_ms"] > 0 for r in rows)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows_total"] == 2000 and saved["cold_measured"] is False and len(saved["rows"]) == 2
