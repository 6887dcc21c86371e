"""The README's Python snippets run as printed, in order, with a random model of the named models'
shape (12 layers x 768) standing in for every model name (no weights are downloaded in tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adaptive_retrieval import Encoder
from adaptive_retrieval.passages import budget
from tests.helpers import make_encoder

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run_as_printed(tmp_path, monkeypatch, capsys):
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 4
    stand_in = make_encoder("bert", n_layers=12, hidden=768)
    asked: list[str] = []

    def from_pretrained(cls, name, **kwargs):
        asked.append(str(name))
        return stand_in

    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed] == ["1", "2", "3"]  # the quickstart's three hits
    assert {"mpnet-base-2dmse", "minilm-l6"} <= set(asked)
    assert len(namespace["retriever"]) == 3 and (tmp_path / "scifact-index" / "manifest.json").is_file()


def test_readme_examples_records_what_the_examples_print(tmp_path, monkeypatch):
    """``evals.readme_examples`` (what the README's example outputs are rendered from) runs every block and
    records the quickstart's lines as it prints them, float32's, the dense scores and the passage hit."""
    pytest.importorskip("langchain_core")
    pytest.importorskip("llama_index.core")
    from evals import readme_examples

    stand_in = make_encoder("bert", n_layers=12, hidden=768)
    monkeypatch.setattr(Encoder, "from_pretrained", classmethod(lambda cls, name, **kw: stand_in))
    out = readme_examples.run(tmp_path)
    assert [line.split()[:2] for line in out["quickstart"]] == [
        line.split()[:2] for line in out["quickstart_float32"]
    ]
    assert [line.split()[0] for line in out["quickstart"]] == ["1", "2", "3"]
    assert {line.split()[1] for line in out["quickstart"]} == {"d1", "d2", "d3"}
    assert out["query_precision"] in ("float32", "bfloat16") and len(out["dense_scores"]) == 3
    # a random model's hit is any of the pages' documents; the real model's is "tool.1" (the results file)
    assert out["passages"]["doc_id"] in {"ls.1", "printf.3", "tool.1"}
    assert out["passages"]["passages_of_document"] >= 1
    assert out["passages"]["tokens_per_passage"] == budget(stand_in)
