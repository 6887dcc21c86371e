from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from fit_coarse_head import fit_head


def test_head_recovers_a_linear_relation_and_orders_dims_by_energy():
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(400, 16, generator=g), dim=-1).numpy()
    mix = torch.randn(16, 16, generator=g).numpy()
    fine = x @ mix
    head, stats = fit_head(x, fine, ridge=1e-6)
    assert stats["relative_residual"] < 1e-6
    mapped = x @ head.numpy()
    # full-width inner products are preserved ...
    np.testing.assert_allclose(mapped @ mapped.T, fine @ fine.T, atol=1e-3)
    # ... and the leading dims carry the most energy
    energy = (mapped**2).sum(0)
    assert np.all(np.diff(energy) <= 1e-6)


def test_ridge_shrinks_the_head():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(50, 8, generator=g).numpy()
    f = torch.randn(50, 8, generator=g).numpy()
    small, _ = fit_head(x, f, ridge=1e-4)
    big, _ = fit_head(x, f, ridge=10.0)
    assert big.norm() < small.norm()


def test_command_line_writes_heads_an_encoder_loads(tmp_path):
    import json

    from conftest import make_model, make_tokenizer
    from fit_coarse_head import main
    from test_beir_eval import write_dataset

    from adaptive_retrieval import Encoder
    from adaptive_retrieval.models import HEADS_FILE

    data = write_dataset(tmp_path / "data")
    make_model("bert", n_layers=4).save_pretrained(tmp_path / "m")
    make_tokenizer().save_pretrained(tmp_path / "m")
    out = main(
        [
            "--base",
            str(tmp_path / "m"),
            "--layers",
            "1",
            "2",
            "--dataset",
            "tiny",
            "--data-dir",
            str(data),
            "--cache-dir",
            str(tmp_path / "c"),
            "--out",
            str(tmp_path / "m"),
        ]
    )
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["layers"] == [1, 2] and "no queries" in provenance["data"]
    assert (out / HEADS_FILE).is_file()
    enc = Encoder.from_pretrained(tmp_path / "m")  # the heads beside the weights are picked up
    assert set(enc.heads) == {1, 2} and enc.heads[1].dtype == torch.float32
