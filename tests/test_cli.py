"""The command line end to end on a tiny model saved to a folder: most commands through ``main`` in this
process (its output and exit status captured as a subprocess' would be), the ones that need a process of
their own (standard input, what loads before a model, ``python -m``) in subprocesses."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import subprocess
import sys

import pytest

from adaptive_retrieval.cli import main, parser
from tests.helpers import make_model, make_tokenizer, random_texts


def run(*args: str) -> subprocess.CompletedProcess:
    """``adaptive-retrieval ARGS`` through ``main`` in this process: its exit status (argparse's 2 and
    ``--version``'s 0 included), standard output and error."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
    return subprocess.CompletedProcess(["adaptive-retrieval", *args], code, out.getvalue(), err.getvalue())


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
    info = json.loads(run("info", str(out), "--json").stdout)
    assert info["count"] == 300 and info["coarse"] == [2, 8] and info["calibration"]["target"] == 0.9
    assert info["adaptation"]["documents"] == 300
    shown = run("info", str(out), "--verify")
    assert shown.returncode == 0 and "300 documents" in shown.stdout and "every byte verified" in shown.stdout
    assert "calibrated for overlap@10 0.9" in shown.stdout and "runs in float32" in shown.stdout
    assert (
        "match, the fine view weighted 0.8, falling to 0.3 as one row holds 0.3 to 0.5 of the query "
        "(BM25 over its bound), back as its best score rises from 0.7 to 0.85" in shown.stdout
    )
    both = run("search", str(out), texts[7], texts[9], "-k", "2", "--json", "--model", str(model_dir))
    answers = json.loads(both.stdout)
    assert [a["query"] for a in answers] == [texts[7], texts[9]] and answers[1]["hits"][0]["doc_id"] == "d9"
    piped = subprocess.run(
        [sys.executable, "-m", "adaptive_retrieval", "search", str(out), "-", "-k", "1", "--model", str(model_dir)],
        input=f"{texts[3]}\n\n{texts[4]}\n", capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert piped.returncode == 0 and [
        line.split("\t")[1] for line in piped.stdout.splitlines() if "\t" in line
    ] == [
        "d3",
        "d4",
    ]
    fine = json.loads((out / "manifest.json").read_text())["files"]["fine"]
    with open(out / fine, "r+b") as fh:  # one byte changed: the size stays, the hash does not
        fh.seek(200)
        byte = fh.read(1)
        fh.seek(200)
        fh.write(bytes([byte[0] ^ 1]))
    damaged = run("info", str(out), "--verify")
    assert damaged.returncode == 2 and "does not match its sha256" in damaged.stderr


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
    assert main(["index", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.jsonl does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no id here"}\n')
    assert (
        main(["index", str(bad), "--out", str(tmp_path / "y"), "--model", str(model_dir), "--coarse", "2x8"])
        == 2
    )
    assert "needs an '_id' or 'id'" in capsys.readouterr().err
    assert main(["search", str(out), "   ", "--model", str(model_dir)]) == 2
    assert "query is empty" in capsys.readouterr().err


def test_corpus_files_as_users_have_them(model_dir, tmp_path, capsys):
    """JSON lines named .json keep their extra fields as metadata; text-file ids count blank lines; bad
    input (a line without text, --out a file, a target outside (0, 1]) says why before anything is
    encoded; a calibration that fails still saves the index it was asked for."""
    base = ["--model", str(model_dir), "--coarse", "2x8", "--quiet"]
    docs = tmp_path / "docs.json"
    docs.write_text(
        "\n".join(
            json.dumps({"id": i, "title": f"t{i}", "text": t, "year": 2000 + i})
            for i, t in enumerate(random_texts(6, seed=40))
        )
    )
    assert main(["index", str(docs), "--out", str(tmp_path / "a"), "--store-text", *base]) == 0
    capsys.readouterr()
    assert (
        main(["search", str(tmp_path / "a"), "cell gene", "-k", "6", "--json", "--model", str(model_dir)])
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert sorted(h["doc_id"] for h in hits) == list(range(6))
    assert all(h["metadata"] == {"title": f"t{h['doc_id']}", "year": 2000 + h["doc_id"]} for h in hits)
    assert all(h["text"].startswith(f"t{h['doc_id']} ") for h in hits)  # the title leads the text
    lines = tmp_path / "lines.txt"
    lines.write_text("first\n\n\nfourth line\n")
    assert main(["index", str(lines), "--out", str(tmp_path / "b"), "--store-text", *base]) == 0
    capsys.readouterr()
    assert (
        main(["search", str(tmp_path / "b"), "fourth line", "-k", "2", "--json", "--model", str(model_dir)])
        == 0
    )
    assert {h["doc_id"]: h["text"] for h in json.loads(capsys.readouterr().out)} == {
        0: "first",
        3: "fourth line",
    }
    no_text = tmp_path / "no_text.jsonl"
    no_text.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "body": "y"}\n')
    assert main(["index", str(no_text), "--out", str(tmp_path / "c"), *base]) == 2
    assert "no_text.jsonl, line 2: a document needs a 'text' string" in capsys.readouterr().err
    array = tmp_path / "array.json"
    array.write_text(json.dumps([{"_id": "a", "text": "x"}]))
    assert main(["index", str(array), "--out", str(tmp_path / "f"), *base]) == 2
    assert "array.json, line 1: a JSON list, not an object" in capsys.readouterr().err
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert main(["index", str(lines), "--out", str(a_file), *base]) == 2
    assert "is a file; give a new or empty folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["index", str(lines), "--out", str(tmp_path / "d"), "--calibrate", "2", *base])
    assert exited.value.code == 2 and "must be in (0, 1], got 2.0" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()
    assert main(["index", str(lines), "--out", str(tmp_path / "e"), "--calibrate", "0.9", *base]) == 2
    err = capsys.readouterr().err
    assert "calibration failed: calibration needs at least 20 queries" in err and "saved uncalibrated" in err
    assert (tmp_path / "e" / "manifest.json").is_file()
    from transformers.utils import logging as hf_logging

    assert hf_logging.is_progress_bar_enabled()  # main() silenced it only while it ran


def test_an_existing_index_is_replaced_only_with_overwrite(model_dir, tmp_path, capsys):
    lines = tmp_path / "docs.txt"
    lines.write_text("\n".join(random_texts(12, seed=33)) + "\n")
    out = tmp_path / "idx"
    base = ["--out", str(out), "--model", str(model_dir), "--coarse", "2x8", "--quiet", "--no-adapt"]
    assert main(["index", str(lines), *base]) == 0
    manifest = (out / "manifest.json").read_bytes()
    assert main(["index", str(lines), *base]) == 2
    assert "already holds an index; give --overwrite" in capsys.readouterr().err
    assert (out / "manifest.json").read_bytes() == manifest  # untouched
    assert main(["index", str(lines), *base, "--overwrite"]) == 0
    assert (out / "manifest.json").read_bytes() != manifest


def test_bad_input_is_refused_before_any_model_loads(tmp_path):
    """Each answers with exit 2 and a message naming what is wrong, without importing torch or transformers."""
    binary = tmp_path / "corpus.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    lines = tmp_path / "lines.txt"
    lines.write_text("one document\nanother document\n")
    cases = [
        (["search", str(tmp_path / "none"), "q"], "holds no index"),
        (["search", str(tmp_path), "q", "   "], "query 2 of 2 is empty"),
        (["index", str(tmp_path / "missing.jsonl"), "--out", str(tmp_path / "o")], "does not exist"),
        (["index", str(lines), "--out", str(tmp_path / "o"), "--language", "klingon"], "--language klingon"),
        (
            ["index", str(binary), "--out", str(tmp_path / "o")],
            "line 2: not UTF-8 text",
        ),  # line 1: bytes 0-10
        (
            ["index", str(lines), "--out", str(tmp_path / "o"), "--coarse-bytes", "16", "--index", "Flat"],
            "--coarse-bytes chooses the coarse index",
        ),
    ]
    for argv, message in cases:
        probe = (
            "import sys; from adaptive_retrieval.cli import main; "
            f"rc = main({argv!r}); print(rc, 'torch' in sys.modules or 'transformers' in sys.modules)"
        )
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
        assert done.stdout.split() == ["2", "False"], (argv, done.stdout, done.stderr)
        assert message in done.stderr, (argv, done.stderr)
    damaged = tmp_path / "corpus.jsonl.gz"
    damaged.write_bytes(gzip.compress(b'{"_id": "a", "text": "x"}\n' * 50)[:30] + b"\x00" * 40)
    assert main(["index", str(damaged), "--out", str(tmp_path / "o")]) == 2  # a damaged gzip body
    assert (
        parser().parse_args(["index", "c.txt", "--out", "o", "--coarse", "4X64", "--fine", " 6:384 "]).coarse
        == "4X64"
    )
    assert run("--version").stdout.startswith("adaptive-retrieval ")
    assert run("search", str(tmp_path), "q", "-k", "0").returncode == 2  # argparse: -k must be >= 1


def test_a_gzipped_corpus_is_read_and_ctrl_c_is_one_line(model_dir, tmp_path, capsys, monkeypatch):
    corpus = tmp_path / "docs.jsonl.gz"
    with gzip.open(corpus, "wt") as fh:
        for i, text in enumerate(random_texts(15, seed=34)):
            fh.write(json.dumps({"_id": f"g{i}", "text": text}) + "\n")
    out = tmp_path / "idx"
    base = ["--out", str(out), "--model", str(model_dir), "--coarse", "2x8", "--quiet", "--no-adapt"]
    assert main(["index", str(corpus), *base]) == 0
    assert "indexed 15 documents" in capsys.readouterr().err and (out / "manifest.json").is_file()
    from adaptive_retrieval.retriever import Retriever

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Retriever, "load", classmethod(interrupted))
    assert main(["search", str(out), "a query"]) == 130
    assert capsys.readouterr().err.strip().startswith("interrupted")


def test_filter_delete_and_add_from_the_command_line(model_dir, tmp_path):
    texts = random_texts(60, seed=33)
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"_id": f"d{i}", "text": t, "section": "ab"[i % 2]}) + "\n"
            for i, t in enumerate(texts)
        )
    )
    out, model = tmp_path / "idx", ["--model", str(model_dir)]
    assert run("index", str(corpus), "--out", str(out), "--coarse", "2x8", "--quiet", *model).returncode == 0
    bad = run("search", str(out), "q", "--filter", "{section: a}")
    assert bad.returncode == 2 and "--filter must be JSON" in bad.stderr
    found = run("search", str(out), texts[7], "-k", "60", "--json", "--filter", '{"section": "b"}', *model)
    hits = json.loads(found.stdout)
    assert len(hits) == 30 and hits[0]["doc_id"] == "d7" and {h["metadata"]["section"] for h in hits} == {"b"}
    gone = run("delete", str(out), "d7", "d9", *model)
    assert gone.returncode == 0 and "deleted 2 documents; 58 remain" in gone.stderr
    missing = run("delete", str(out), "nope", *model)
    assert missing.returncode == 2 and "'nope' is not in the index" in missing.stderr
    new = tmp_path / "new.jsonl"
    new.write_text(json.dumps({"_id": "d7", "text": texts[7], "section": "c"}) + "\n")
    assert run("add", str(new), str(out), *model).returncode == 2  # arguments: the index first
    assert run("add", str(out), str(new), "--quiet", *model).returncode == 0  # d7 was deleted: added anew
    twice = run("add", str(out), str(new), "--quiet", *model)
    assert twice.returncode == 2 and "'d7' is already in the index" in twice.stderr
    again = run("add", str(out), str(new), "--upsert", "--quiet", *model)
    assert again.returncode == 0, again.stderr
    hits = json.loads(
        run("search", str(out), texts[7], "-k", "1", "--json", "--filter", '{"section": "c"}', *model).stdout
    )
    assert [h["doc_id"] for h in hits] == ["d7"]


def test_long_documents_become_passages_unless_told(tmp_path):
    model = tmp_path / "model"
    make_model("bert", n_layers=4).save_pretrained(model)
    make_tokenizer().save_pretrained(model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**config, "model_max_length": 16}))
    texts = random_texts(40, seed=33, min_words=20, max_words=40)  # each longer than 16 tokens
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(texts)))
    common = ("--model", str(model), "--coarse", "2x8", "--quiet")
    made = run("index", str(corpus), "--out", str(tmp_path / "split"), *common)
    assert made.returncode == 0, made.stderr
    assert "indexed 40 documents" in made.stderr and "split into passages" in made.stderr
    shown = run("info", str(tmp_path / "split")).stdout
    assert "40 documents" in shown and "long documents split into passages" in shown
    found = json.loads(
        run("search", str(tmp_path / "split"), texts[5], "-k", "3", "--json", *common[:2]).stdout
    )
    assert len({h["doc_id"] for h in found}) == 3 and all(
        h["passage"]["end"] > h["passage"]["start"] for h in found
    )
    plain = run("search", str(tmp_path / "split"), texts[5], "-k", "1", *common[:2]).stdout
    assert "[passage " in plain
    cut = run("index", str(corpus), "--out", str(tmp_path / "cut"), "--no-passages", *common)
    assert cut.returncode == 0 and "40 documents were cut to the model's max length" in cut.stderr
    assert "passages   off" in run("info", str(tmp_path / "cut")).stdout


def test_a_coarse_byte_budget_from_the_command_line(model_dir, tmp_path):
    texts = random_texts(300, seed=33)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "idx"
    made = run(
        "index", str(corpus), "--out", str(out), "--model", str(model_dir), "--coarse", "2x8", "--coarse-bytes",
        "8", "--no-hybrid", "--quiet",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    record = json.loads(run("info", str(out), "--json").stdout)["first_stage"]
    assert record["budget"] == 8 and record["bytes"] <= 8 and record["shortlist"] >= 10
    assert f"{record['index']}" in made.stderr  # the closing line names the index the budget chose
    shown = run("info", str(out)).stdout
    assert (
        f"first      {record['index']} over {record['dim']} dims, {record['bytes']} B/document (budget 8)"
        in shown
    )
    found = run("search", str(out), texts[5], "-k", "1", "--json", "--model", str(model_dir))
    assert json.loads(found.stdout)[0]["doc_id"] == 5


def test_an_index_in_bfloat16_from_the_command_line(model_dir, tmp_path, capsys):
    texts = random_texts(30, seed=35)
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n".join(texts) + "\n")
    out = tmp_path / "idx"
    argv = ["index", str(corpus), "--out", str(out), "--model", str(model_dir), "--coarse", "2x8", "--quiet"]
    assert main([*argv, "--precision", "bfloat16"]) == 0
    assert main(["info", str(out)]) == 0
    assert "runs in bfloat16" in capsys.readouterr().out
    assert main(["search", str(out), texts[4], "-k", "1", "--json", "--model", str(model_dir)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["doc_id"] == 4
    assert json.loads((out / "manifest.json").read_text())["model"]["precision"] == "bfloat16"
