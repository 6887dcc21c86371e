"""A tiny run of benchmarks/bench_scale.py: every method, a row per shortlist, recall against exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

# one FAISS thread: OpenMP's spinning threads slow training tenfold when the machine is busy (CI)
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
SCRIPT = [sys.executable, "-m", "benchmarks.bench_scale"]
RUN = dict(check=True, capture_output=True, text=True, env=ENV, cwd=Path(__file__).resolve().parents[1])


def test_bench_scale_tiny(tmp_path):
    out = tmp_path / "scale"
    cmd = [*SCRIPT, "--sizes", "2000", "--queries", "12", "--candidates", "10,2000"]
    subprocess.run([*cmd, "--out", str(out)], **RUN)
    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {(r["method"], r.get("candidates")): r for r in rows}
    assert set(by) == {
        ("exact-768", None),
        ("ivfpq-768", None),
        *((m, c) for m in ("funnel-flat", "funnel-hnsw", "funnel-ivfpq") for c in (10, 2000)),
    }
    for r in rows:
        assert {"size", "method", "ram_bytes", "p50_ms", "p95_ms", "qps", "recall@10"} <= set(r)
        assert r["size"] == 2000 and 0 <= r["recall@10"] <= 1 and r["p95_ms"] >= r["p50_ms"] > 0
    assert by[("exact-768", None)]["recall@10"] == 1.0
    # each row names the search knobs it ran with, as the docs' tables print them
    assert by[("funnel-hnsw", 10)]["knobs"] == {"efSearch": 128} and by[("exact-768", None)]["knobs"] == {}
    assert by[("ivfpq-768", None)]["knobs"] == by[("funnel-ivfpq", 10)]["knobs"] == {"nprobe": 32}
    assert by[("exact-768", None)]["ram_bytes"] >= 2000 * 768 * 4
    # a shortlist of the whole corpus re-ranked by the fine view is exact (up to float16 near-ties)
    assert by[("funnel-flat", 2000)]["recall@10"] >= 0.97
    assert by[("funnel-flat", 10)]["recall@10"] < by[("funnel-flat", 2000)]["recall@10"]
    assert by[("funnel-flat", 10)]["ram_bytes"] == 2000 * 64 * 4 + 45  # a 64-dim float32 flat index
    # the prepared fine store is the library's on-disk float16 .npy, and a rerun reuses everything
    assert np.load(out / "data" / "n2000" / "fine.npy", mmap_mode="r").shape == (2000, 768)
    first = json.loads((out / "results.json").read_text())
    assert "earlier_runs" not in first and first["labels"].startswith("none")
    again = subprocess.run([*cmd, "--out", str(out)], **RUN)
    assert json.loads((out / "results.json").read_text()) == first  # nothing new: the file as it was
    # a run adding rows keeps the first run's, and its provenance beside its own
    more = [*SCRIPT, "--sizes", "2500", "--queries", "12", "--methods", "exact-768", "--out", str(out)]
    subprocess.run(more, **RUN)
    saved = json.loads((out / "results.json").read_text())
    assert saved["rows"][: len(rows)] == rows and saved["rows"][-1]["size"] == 2500
    assert saved["earlier_runs"] == [
        {k: first[k] for k in ("command", "date", "source", "load_average", "machine")}
    ]  # the machine too: a file's rows may come from several
    assert "--sizes 2500" in saved["command"]
    assert "funnel-flat" in (out / "table.md").read_text() and again.returncode == 0


def test_bench_scale_calibrated_rows(tmp_path):
    out = tmp_path / "calibrated"
    cmd = [
        *SCRIPT,
        "--sizes",
        "2000",
        "--methods",
        "funnel-flat",
        "--candidates",
        "10,400",
        "--out",
        str(out),
    ]
    # too few queries to fit a rule on half of them: refused before any vector is made
    refused = subprocess.run([*cmd, "--queries", "20", "--target", "0.9"], **{**RUN, "check": False})
    assert refused.returncode == 2 and "at least 20 queries" in refused.stderr and not out.exists()
    subprocess.run([*cmd, "--queries", "40", "--target", "0.9"], **RUN)
    rows = json.loads((out / "results.json").read_text())["rows"]
    halves = [r for r in rows if r.get("half") == "test"]
    # each fixed shortlist, then the calibrated rule, on the same second half of the queries
    assert [r["candidates"] for r in halves][:2] == ["fixed 10", "fixed 400"]
    chosen = halves[-1]
    assert chosen["candidates"].startswith("calibrated 0.9: ") and chosen["target"] == 0.9
    assert chosen["calibrated"]["rule"] in ("fixed", "patient") and chosen["calibrated"]["cap"] == 400
    assert 10 <= chosen["calibrated"]["candidates"] <= 400 and 0 < chosen["mean_read"] <= 400
    assert chosen["knobs"] == {} and 0 <= chosen["recall@10"] <= 1


def test_large_topic_centres_spill_to_a_memory_map_with_the_same_values(tmp_path, monkeypatch):
    import numpy as np

    from benchmarks import bench_scale

    gen = bench_scale.Synthetic(
        dim=16, coarse_dim=8, clusters=70_000
    )  # more rows than a block: written in two
    in_ram = gen.centres()
    assert gen.centres(spill=tmp_path) is not None and not list(tmp_path.iterdir())  # small: kept in RAM
    monkeypatch.setattr(bench_scale, "CENTRES_IN_RAM", 1024)
    spilled = gen.centres(spill=tmp_path)
    assert isinstance(spilled, np.memmap) and not spilled.flags.writeable
    assert np.array_equal(np.asarray(spilled), in_ram)
    (written,) = tmp_path.iterdir()
    assert written.suffix == ".npy"  # renamed from its .part name once whole
    stamp = written.stat().st_mtime_ns
    assert (
        np.array_equal(gen.centres(spill=tmp_path), in_ram) and written.stat().st_mtime_ns == stamp
    )  # reused
    # a document block reads its centres from the map as from the array
    for a, b in zip(gen.block(1, 0, 100, in_ram), gen.block(1, 0, 100, spilled)):
        assert np.array_equal(a, b)
