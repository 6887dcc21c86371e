"""The README's Python snippets run as printed, in order, with a random model of the named models'
shape (12 layers x 768) standing in for every model name (no weights are downloaded in tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from adaptive_retrieval import Encoder
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
