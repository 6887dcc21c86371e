"""A small run of benchmarks/bench_first_stage_scale.py: the library's codes beside the users' alternatives."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.test_bench_scale import RUN


def test_bench_first_stage_scale_small(tmp_path):
    out = tmp_path / "fs"
    cmd = [sys.executable, "-m", "benchmarks.bench_first_stage", "--sizes", "10000", "--queries", "12",
           "--shortlists", "10", "10000", "--methods", "proj64-sq8", "proj64-ivf-sq8", "proj128-ivf-pq128x4fs",
           "exact-768", "hnsw-768", "--nprobes", "16", "128", "--out", str(out)]  # fmt: skip
    subprocess.run(cmd, **RUN)
    saved = json.loads((out / "results.json").read_text())
    rows = {(r["method"], r["setting"]): r for r in saved["rows"]}
    assert set(rows) == {
        ("proj64-sq8", "shortlist 10"), ("proj64-sq8", "shortlist 10000"), ("exact-768", "exact"),
        *(("hnsw-768", f"efSearch {ef}") for ef in (64, 128, 256)),
        *((m, f"nprobe {p}, shortlist {s}") for m in ("proj64-ivf-sq8", "proj128-ivf-pq128x4fs")
          for p in (16, 128) for s in (10, 10000)),
    }  # fmt: skip
    for r in rows.values():
        assert 0 <= r["recall@10"] <= 1 and r["p95_ms"] >= r["p50_ms"] > 0 and r["size"] == 10000
        assert r["topics"] == 4096  # at the calibration's size both generators have its 4,096 topics
    assert rows[("exact-768", "exact")]["recall@10"] == 1.0
    assert rows[("exact-768", "exact")]["ram_per_doc"] >= 768 * 4
    # the default's int8 codes: 64 bytes a document in RAM, the float16 fine store on disk
    default = rows[("proj64-sq8", "shortlist 10")]
    assert round(default["ram_per_doc"]) == 64 and round(default["disk_per_doc"]) == 768 * 2
    # 4-bit fast-scan codes over 128 dims: 64 bytes a document, its id, and at 10,000 documents a share of the
    # lists' padding to blocks of 32 codes and of the centroids; every list probed, at a shortlist of the whole
    # corpus, finds the exact top 10
    fast = rows[("proj128-ivf-pq128x4fs", "nprobe 128, shortlist 10000")]
    assert 64 + 8 < fast["ram_per_doc"] < 1.5 * 64 and fast["index"] == "IVF128,PQ128x4fs"
    assert fast["recall@10"] >= 0.97 > rows[("proj128-ivf-pq128x4fs", "nprobe 16, shortlist 10")]["recall@10"]
    # the whole corpus re-ranked by the fine view is exact (up to float16 near-ties); a shortlist of 10 is not
    assert rows[("proj64-sq8", "shortlist 10000")]["recall@10"] >= 0.97 > default["recall@10"]
    # the projection is the library's: the calibration's curves rise with the shortlist and the dimensions
    synthetic = saved["calibration"]["synthetic"]
    assert list(synthetic["proj64-sq8"].values()) == sorted(synthetic["proj64-sq8"].values())
    assert synthetic["proj128-sq8"]["50"] > synthetic["proj64-sq8"]["50"] > synthetic["proj32-sq8"]["50"]
    assert saved["labels"].startswith("none") and "command" in saved
    # a rerun keeps what it measured
    subprocess.run(cmd, **RUN)
    assert json.loads((out / "results.json").read_text())["rows"] == saved["rows"]


def test_topics_grow_with_the_corpus_only_when_asked():
    from benchmarks.bench_first_stage_scale import generator

    assert generator(1_000_000).clusters == generator(10_000, "proportional").clusters == 4096
    assert generator(1_000_000, "proportional").clusters == 409_600
