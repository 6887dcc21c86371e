"""The living index's benchmarks on tiny inputs: bench_filters runs and measures what it says; the
churn crash test's replay and its checker (which must fail on an index that is not the state it claims)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from adaptive_retrieval import Retriever
from benchmarks import crash_save
from tests.helpers import make_encoder

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
RUN = dict(check=True, capture_output=True, text=True, env=ENV, cwd=Path(__file__).resolve().parents[1])


def test_bench_filters_tiny(tmp_path):
    out = tmp_path / "filters"
    cmd = [sys.executable, "-m", "benchmarks.bench_filters", "--size", "4000", "--queries", "8"]
    cmd += ["--candidates", "50", "--exact-below", "0", "--workdir", str(tmp_path / "w"), "--out", str(out)]
    subprocess.run(cmd, **RUN)
    data = json.loads((out / "results.json").read_text())
    rows = data["rows"]
    assert data["labels"].startswith("none") and "command" in data and data["machine"]["cpu"]
    assert [r["share"] for r in rows] == [None, 0.5, 0.1, 0.01, 0.001, 0.0001] * 3
    for r in rows:
        assert 0 <= r["overlap@10"] <= 1 and r["p50_ms"] > 0
        assert (
            r["path"] == "funnel"
            if r["share"] is None
            else r["path"] in ("filtered funnel", "filtered exact")
        )
        if r["matched"] <= 50:  # at most the shortlist: always exact
            assert r["path"] == "filtered exact"
        if r["path"] == "filtered exact":
            assert r["overlap@10"] == 1.0  # every matching document scored by the fine view
    flat = [r for r in rows if r["index"] == "Flat"]
    assert flat[1]["matched"] == 2000 or abs(flat[1]["matched"] - 2000) < 200  # a uniform 50% filter
    assert "| Flat |" in (out / "results.md").read_text() and not (tmp_path / "w").exists()


def test_bench_filters_calibrates_ivf_and_filters_milvus_three_ways(tmp_path):
    base = [sys.executable, "-m", "benchmarks.bench_filters", "--size", "2000", "--queries", "4"]
    base += ["--workdir", str(tmp_path / "w")]
    # calibrated: IVF (Milvus' calibration searches through Milvus Lite, ~45 s, and tests nothing more)
    subprocess.run([*base, "--calibrate", "60", "--indexes", "IVF", "--out", str(tmp_path / "ivf")], **RUN)
    rows = json.loads((tmp_path / "ivf" / "results.json").read_text())["rows"]
    ivf = [r for r in rows if r["index"].startswith("IVF")]
    assert ivf and all(r["calibrated"] == ivf[0]["calibration"]["knobs"] for r in ivf)
    assert ivf[0]["calibrated"]["nprobe"] >= 1 and ivf[0]["shortlist"] == ivf[0]["calibration"]["candidates"]
    pytest.importorskip("milvus_lite")
    subprocess.run([*base, "--indexes", "milvus", "--out", str(tmp_path / "milvus")], **RUN)
    milvus = json.loads((tmp_path / "milvus" / "results.json").read_text())["rows"]
    modes = {r["index"] for r in milvus}
    assert modes == {"milvus (library)", "milvus (in engine)", "milvus (answers filtered)"}
    for share in (0.5, 0.1, 0.01):  # the same answers whichever way a filter runs
        assert len({r["overlap@10"] for r in milvus if r["share"] == share}) == 1, share


def test_churn_replay_matches_an_index_put_through_the_steps_and_catches_a_wrong_one():
    encoder = make_encoder("bert", n_layers=6, hidden=384)
    first = list(range(crash_save.START))
    r = Retriever.from_vectors(
        encoder, (2, 64), (6, 384), first,
        crash_save.versioned(first, [0] * len(first), 64, 1), crash_save.versioned(first, [0] * len(first), 384, 2),
    )  # fmt: skip
    r.compact_at = 0.15
    for step in (1, 2, 3):
        added, upserted, deleted = crash_save.churn_step(step)
        zeros, v = [0] * len(added), [step] * len(upserted)
        r.add_vectors(
            added, crash_save.versioned(added, zeros, 64, 1), crash_save.versioned(added, zeros, 384, 2)
        )
        r.writer.add_batches(
            [(upserted, crash_save.versioned(upserted, v, 64, 1), crash_save.versioned(upserted, v, 384, 2))],
            replace=True,
        )
        r.delete(deleted)
    assert crash_save.step_of(r) == 3 and crash_save.churn_whole(r, 3)
    assert not crash_save.churn_whole(r, 2)  # another state: other documents
    row = r.ids.row(crash_save.churn_step(3)[1][0])  # an upserted document, given its old vectors back
    old = crash_save.versioned([r.ids[row]], [0], 384, 2)
    r.backend.fine_store.vectors[row] = old[0].astype(np.float16)
    assert not crash_save.churn_whole(r, 3)


def test_bench_compact_tiny(tmp_path):
    out = tmp_path / "compact"
    cmd = [sys.executable, "-m", "benchmarks.bench_compact", "--docs", "3000", "--delete", "0.3"]
    subprocess.run([*cmd, "--dir", str(tmp_path / "w"), "--out", str(out)], **RUN)
    row = json.loads((out / "results.json").read_text())
    assert row["deleted"] == row["reclaimed_rows"] == 900 and row["documents"] == 2100
    assert row["fine_bytes_after"] == 2100 * 384 * 2  # float16 rows of the live documents only
    assert row["bytes_after"] < row["bytes_before"] - 900 * 384 * 2 * 0.9
    assert row["command"].startswith("python -m benchmarks.bench_compact")


def test_filtered_eval_tiny(tmp_path):
    """evals.filtered_eval on a SciFact-shaped folder of random texts and a tiny model: rows for every
    filter and index, overlap within [0, 1], the exact path exact."""
    from tests.helpers import make_model, make_tokenizer, random_texts

    folder = tmp_path / "data" / "beir" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    texts = random_texts(300, seed=5)
    words = ["cell", "patients", "risk", "mice", "cancer", "protein", "infection"]
    with open(folder / "corpus.jsonl", "w") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"_id": str(i), "title": "", "text": f"{t} {words[i % 7]}"}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for i in range(12):
            fh.write(json.dumps({"_id": f"q{i}", "text": texts[i * 7]}) + "\n")
    (folder / "qrels" / "test.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\t{i}\t1\n" for i in range(12))
    )
    model = tmp_path / "model"
    make_model("bert").save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "evals.filtered_eval",
        "--data-dir",
        str(tmp_path / "data"),
        "--model",
        str(model),
    ]
    subprocess.run([*cmd, "--coarse", "3x16", "--out", str(out)], **RUN)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert len(rows) == 3 * 12 and {r["index"] for r in rows} == {"Flat", "SQ8", "HNSW32"}
    for r in rows:
        assert 0 <= r["overlap@10"] <= 1
        if r["paths"] == {"filtered exact": 12}:
            assert r["overlap@10"] == 1.0
    assert rows[0]["filter"] == "none" and rows[0]["matched"] == 300
