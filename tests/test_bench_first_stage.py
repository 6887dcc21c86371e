"""The first stage's frontier benchmark, end to end on tiny data and a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from adaptive_retrieval.first_stage import shortlist_curve as overlap_curve
from benchmarks.bench_first_stage import needed
from tests.test_bench_hybrid import RUN, tiny_model, tiny_set


def test_overlap_curve_counts_the_exact_top_10_in_each_shortlist():
    exact = np.array([list(range(10))])
    rows = np.array([[0, 1, 2, 3, 4, 50, 51, 52, 53, 54, 5, 6, 7, 8, 9, 60]])
    curve = overlap_curve(rows, exact, [5, 10, 15, 16])
    assert curve == {5: 0.5, 10: 0.5, 15: 1.0, 16: 1.0}
    assert needed(curve, 0.95) == "15" and needed({5: 0.5}, 0.95) == ">5"


def test_bench_first_stage_tiny(tmp_path):
    folder = tiny_set(tmp_path / "data", "tiny", n_docs=300)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_first_stage", "--datasets", str(folder), "--model",
         str(tiny_model(tmp_path)), "--cache-dir", str(tmp_path / "cache"), "--representations", "proj32-f32",
         "proj16-sq8", "bits32", "bits64", "--out", str(out)],
        **RUN,
    )  # fmt: skip
    saved = json.loads((out / "results.json").read_text())
    rows = {r["representation"]: r for r in saved["rows"]}
    assert set(rows) == {"proj32-f32", "proj16-sq8", "bits32"}  # 64 bits: more than the tiny model's 32 dims
    assert [rows[r]["bytes"] for r in ("proj32-f32", "proj16-sq8", "bits32")] == [128, 16, 4]
    # every direction kept in float32: the first stage ranks as the fine view does
    assert rows["proj32-f32"]["shortlist@0.99"] == "10"
    assert all(0 <= v <= 1 for r in rows.values() for v in r["overlap"].values())
    assert "command" in saved and saved["labels"].startswith("none")


def test_bench_first_stage_budgets_tiny(tmp_path):
    """--budgets: the library's choice on its pseudo-queries, beside every candidate on the test queries."""
    folder = tiny_set(tmp_path / "data", "tiny", n_docs=300)
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_first_stage", "--datasets", str(folder), "--model",
         str(tiny_model(tmp_path)), "--cache-dir", str(tmp_path / "cache"), "--budgets", "8", "--coarse", "3x8",
         "--out", str(out)],
        **RUN,
    )  # fmt: skip
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    assert row["budget"] == 8 and row["chosen"] in row["test_shortlists"]
    assert set(row["test_shortlists"]) == {"proj8-SQ8", "proj16-SQ4", "proj32-OPQ8,PQ8"}
    assert row["chosen_test"] == row["test_shortlists"][row["chosen"]]
    assert row["met"] == ("yes" if row["chosen_test"] == row["best_test"] else "no")
    assert "| tiny | 8 |" in (out / "results.md").read_text()
