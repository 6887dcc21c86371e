"""The command line end to end, in subprocesses, on a tiny model saved to a folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import make_model, make_tokenizer, random_texts

from adaptive_retrieval.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "adaptive_retrieval", *args], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    make_model("bert", n_layers=4).save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    return folder


def test_index_search_and_info_from_a_jsonl_corpus(model_dir, tmp_path):
    texts = random_texts(300, seed=31)
    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text}) + "\n")
    out = tmp_path / "idx"
    made = run(
        "index",
        str(corpus),
        "--out",
        str(out),
        "--model",
        str(model_dir),
        "--coarse",
        "2x8",
        "--candidates",
        "20",
        "--calibrate",
        "0.9",
        "--quiet",
    )
    assert made.returncode == 0, made.stderr
    assert "indexed 300 documents" in made.stderr and "calibrated for overlap@10 0.9" in made.stderr
    found = run("search", str(out), texts[7], "-k", "3", "--json", "--model", str(model_dir))
    assert found.returncode == 0, found.stderr
    hits = json.loads(found.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3] and hits[0]["doc_id"] == "d7"  # the text finds itself
    info = json.loads(run("info", str(out)).stdout)
    assert info["count"] == 300 and info["coarse"] == [2, 8] and info["calibration"]["target"] == 0.9
    assert info["adaptation"]["documents"] == 300


def test_plain_text_lines_are_documents_and_bad_input_says_why(model_dir, tmp_path, capsys):
    lines = tmp_path / "docs.txt"
    lines.write_text("\n".join(random_texts(40, seed=32)) + "\n")
    out = tmp_path / "idx"
    assert (
        main(
            ["index", str(lines), "--out", str(out), "--model", str(model_dir), "--coarse", "2x8", "--quiet"]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", str(out), "cell gene", "-k", "2", "--model", str(model_dir)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [r[0] for r in rows] == ["1", "2"] and all(0 <= int(r[1]) < 40 for r in rows)  # ids: line numbers
    texts = random_texts(40, seed=32)
    stored = tmp_path / "stored"
    assert (
        main(
            [
                "index",
                str(lines),
                "--out",
                str(stored),
                "--model",
                str(model_dir),
                "--coarse",
                "2x8",
                "--quiet",
                "--store-text",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["search", str(stored), "cell gene", "-k", "2", "--model", str(model_dir), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert [h["text"] for h in hits] == [texts[h["doc_id"]] for h in hits]
    with pytest.raises(SystemExit, match="does not exist"):
        main(["index", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no id here"}\n')
    assert (
        main(["index", str(bad), "--out", str(tmp_path / "y"), "--model", str(model_dir), "--coarse", "2x8"])
        == 2
    )
    assert "needs an '_id' or 'id'" in capsys.readouterr().err
    assert main(["search", str(out), "   ", "--model", str(model_dir)]) == 2
    assert "query is empty" in capsys.readouterr().err
