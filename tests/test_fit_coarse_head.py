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
