"""sentence-transformers export of any view: the exported model's vectors equal the view's."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.helpers import make_encoder, random_texts

pytest.importorskip("sentence_transformers")
from sentence_transformers import SentenceTransformer


def cosine_gap(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.max(1 - np.sum(a * b, axis=1)))


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_every_kind_of_view_round_trips(tmp_path, pooling):
    enc = make_encoder("bert", n_layers=6, pooling=pooling, max_length=48, query_prompt="query: ")
    torch.manual_seed(0)
    enc.set_head(3, torch.randn(32, 16))  # a head on one layer's state
    enc.set_head(4, torch.randn(4 * 32, 24))  # a stacked head: layers 1..4 side by side
    texts = random_texts(12, seed=50)
    for view in [(2, 8), (3, 12), (4, 16), (6, 32)]:
        folder = enc.export_sentence_transformers(tmp_path / f"{pooling}-{view[0]}x{view[1]}", view=view)
        stacked = view[0] == 4  # a module of this library: sentence-transformers asks for consent to load it
        if stacked:
            with pytest.raises(ValueError, match="StackedPooling"):
                SentenceTransformer(str(folder), device="cpu")
        model = SentenceTransformer(str(folder), device="cpu", trust_remote_code=stacked)
        theirs = model.encode(texts, convert_to_numpy=True, batch_size=5)
        ours = enc.encode(texts, [view])[view]
        assert theirs.shape == ours.shape == (len(texts), view[1])
        assert cosine_gap(theirs, ours) < 1e-5, view
        assert model.prompts.get("query") == "query: "
        assert json.loads((folder / "adaptive_retrieval_view.json").read_text())["view"] == list(view)
    assert (
        len(SentenceTransformer(str(tmp_path / f"{pooling}-2x8"), device="cpu")[0].auto_model.encoder.layer)
        == 2
    )


def test_export_refuses_a_used_folder_and_a_bad_view(tmp_path):
    enc = make_encoder("bert", n_layers=4)
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    with pytest.raises(ValueError, match="not an empty folder"):
        enc.export_sentence_transformers(tmp_path / "used", view=(2, 8))
    with pytest.raises(ValueError, match="layer"):
        enc.export_sentence_transformers(tmp_path / "new", view=(9, 8))
