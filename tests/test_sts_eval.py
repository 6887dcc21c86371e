"""The STS evaluation on a tiny model and STS files the test writes in the real formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from adaptive_retrieval import View
from adaptive_retrieval.sts import STS_YEARS, read_all, read_sick, read_stsb
from evals.sts_eval import evaluate_model, main
from tests.helpers import make_model, make_tokenizer, random_texts

KNOWN = View(12, 32)


def write_sts(root, encoder):
    """Every task's gold score is the cosine of the KNOWN view, so that view must score 100."""
    texts = random_texts(80, seed=21, min_words=2, max_words=12)
    pairs = list(zip(texts[::2], texts[1::2]))
    vecs = encoder.encode(texts, [KNOWN])[KNOWN]
    gold = [float(vecs[2 * i] @ vecs[2 * i + 1]) for i in range(len(pairs))]
    sts = root / "sts"
    (sts / "stsbenchmark").mkdir(parents=True)
    with open(
        sts / "stsbenchmark" / "sts-test.csv", "w"
    ) as fh:  # tabs, no quoting, some with 2 source fields
        for i, ((a, b), g) in enumerate(zip(pairs, gold)):
            extra = "\tsrc1\tsrc2" if i % 3 == 0 else ""
            fh.write(f"main-captions\tMSRvid\t2012test\t{i:04d}\t{g}\t{a}\t{b}{extra}\n")
    (sts / "sick").mkdir()
    with open(sts / "sick" / "SICK_test_annotated.txt", "w", newline="") as fh:  # CRLF, as released
        fh.write("pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\r\n")
        for i, ((a, b), g) in enumerate(zip(pairs, gold)):
            fh.write(f"{i}\t{a}\t{b}\t{g}\tNEUTRAL\r\n")
    for year, subsets in STS_YEARS.items():
        folder = sts / "sts12-16" / year
        folder.mkdir(parents=True)
        prefix = "STS2016" if year == "STS16" else "STS"
        for n, subset in enumerate(subsets):
            chosen = range(n, len(pairs), 2)
            with (
                open(folder / f"{prefix}.input.{subset}.txt", "w") as fh_in,
                open(folder / f"{prefix}.gs.{subset}.txt", "w") as fh_gs,
            ):
                for i in chosen:
                    fh_in.write(f"{pairs[i][0]}\t{pairs[i][1]}\tsource a\tsource b\n")
                    fh_gs.write(f"{gold[i]}\n")
                fh_in.write("an unscored pair\tleft blank in the gold file\n")  # dropped, as in SentEval
                fh_gs.write("\n")
    return root


def test_parsers_follow_the_file_formats(tiny_encoder, tmp_path):
    root = write_sts(tmp_path, tiny_encoder)
    stsb, sick = read_stsb(root), read_sick(root)
    assert len(stsb) == len(sick) == 40
    assert stsb[0][:2] == sick[0][:2] and not sick[0][1].endswith("\r")
    tasks = read_all(root)
    assert set(tasks) == {"STS12", "STS13", "STS14", "STS15", "STS16", "STSBenchmark", "SICK-R"}
    assert all(p[2] != "" for subsets in tasks.values() for pairs in subsets.values() for p in pairs)
    assert len(tasks["STS12"]["MSRpar"]) == 20  # the blank-gold pair is not there


def test_the_view_the_gold_came_from_scores_100(tiny_encoder, tmp_path):
    tasks = read_all(write_sts(tmp_path, tiny_encoder))
    rows = evaluate_model(
        tiny_encoder, tasks, [View(3, 8), KNOWN, View(12, 16)], cache_dir=tmp_path / "cache"
    )
    known = next(r for r in rows if (r["layer"], r["dim"]) == (12, 32))
    for task in tasks:
        assert known[task] == pytest.approx(100.0, abs=1e-6)
    assert known["avg"] == pytest.approx(100.0, abs=1e-6)
    other = next(r for r in rows if (r["layer"], r["dim"]) == (3, 8))
    assert other["avg"] < 99
    assert set(known["subsets"]) >= {"STS12/MSRpar", "SICK-R/test"}


def test_command_line_end_to_end(tiny_encoder, tmp_path):
    root = write_sts(tmp_path / "data", tiny_encoder)
    model_dir = tmp_path / "model"
    make_model("bert", n_layers=3).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    rows = main(
        [
            "--data-dir",
            str(root),
            "--model",
            str(model_dir),
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert [(r["layer"], r["dim"]) for r in rows] == [(1, 32), (2, 32), (3, 32)]  # full grid of a 3x32 model
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["tasks"]["STSBenchmark"] == 40 and results["command"] and results["labels"]["sts"]
    assert all(np.isfinite(r["avg"]) for r in results["rows"])
    assert (tmp_path / "out" / "heatmap.png").stat().st_size > 5_000
