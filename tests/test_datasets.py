"""Where data lives, BEIR's download (never over a network here: its helper is replaced), the dev split,
and the one definition of a document's text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptive_retrieval import datasets, document_text
from adaptive_retrieval.datasets import DATA_ENV, default_data_dir, load_beir, load_split, split_dev


def lay_out(root: Path, name: str = "scifact") -> Path:
    folder = root / "beir" / name
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "body"}) + "\n")
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "what"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    return folder


def test_the_default_data_folder_is_the_env_or_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "mine"))
    assert default_data_dir() == tmp_path / "mine"
    monkeypatch.delenv(DATA_ENV)
    monkeypatch.setenv("ADAPTIVE_RETRIEVAL_CACHE", str(tmp_path / "cache"))
    assert default_data_dir() == tmp_path / "cache" / "data"


def test_a_laid_out_copy_is_read_without_downloading(monkeypatch, tmp_path):
    import beir.util

    monkeypatch.setattr(beir.util, "download_and_unzip", lambda *a: pytest.fail("no download wanted"))
    lay_out(tmp_path)
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    corpus, queries, qrels = load_beir(None, "scifact", "test")
    assert corpus["d1"]["text"] == "body" and queries == {"q1": "what"} and qrels == {"q1": {"d1": 1}}


def test_a_missing_public_set_is_downloaded_with_beirs_helper(monkeypatch, tmp_path):
    import beir.util

    calls = []

    def fake_download(url, out_dir):  # what BEIR's helper leaves: <out_dir>/<name>/ unzipped
        calls.append((url, out_dir))
        return str(lay_out(Path(out_dir).parent, "nfcorpus"))

    monkeypatch.setattr(beir.util, "download_and_unzip", fake_download)
    corpus, _, _ = load_beir(tmp_path, "nfcorpus", "test")
    assert len(corpus) == 1 and calls == [
        (datasets.BEIR_DOWNLOAD.format(name="nfcorpus"), str(tmp_path / "beir"))
    ]
    load_beir(tmp_path, "nfcorpus", "test")  # there now: not fetched again
    assert len(calls) == 1


def test_offline_the_error_says_where_to_put_a_copy(monkeypatch, tmp_path):
    import beir.util

    def offline(url, out_dir):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(beir.util, "download_and_unzip", offline)
    with pytest.raises(FileNotFoundError, match=r"(?s)'fiqa' is not in .*could not be downloaded.*Offline\?"):
        load_beir(tmp_path, "fiqa", "test")
    with pytest.raises(FileNotFoundError, match="'mine' .* is not in"):  # not public: never fetched
        load_beir(tmp_path, "mine", "test", download=True)


def test_the_dev_split_is_deterministic_and_order_free():
    ids = [str(i) for i in range(100)]
    dev = split_dev(ids, 0.1, seed=42)
    assert len(dev) == 10 and dev == split_dev(list(reversed(ids)), 0.1, seed=42)
    assert dev != split_dev(ids, 0.1, seed=0)


def test_dev_split_of_a_set_with_train_qrels(tmp_path):
    folder = lay_out(tmp_path)
    rows = "".join(f"t{i}\td1\t1\n" for i in range(20))
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": f"t{i}", "text": f"q{i}"}) + "\n" for i in range(20))
    )
    _, queries, qrels = load_split(tmp_path, "scifact", "dev", dev_fraction=0.25, dev_seed=1)
    assert sorted(queries) == sorted(qrels) == split_dev([f"t{i}" for i in range(20)], 0.25, 1)


def test_a_documents_text_is_title_then_text():
    assert document_text({"title": "Vitamin D", "text": "and bones"}) == "Vitamin D and bones"
    assert document_text({"title": "", "text": " as is "}) == " as is "
    assert document_text({"text": "no title"}) == "no title"
