from __future__ import annotations

import pytest
import torch

from adaptive_retrieval import View, pool, view_vector
from adaptive_retrieval.views import check_pair


@pytest.mark.parametrize("value", [(4, 64), [4, 64], "4x64", " 4 X 64 ", View(4, 64)])
def test_parse_forms(value):
    assert View.parse(value) == View(4, 64)


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        ("4-64", ValueError, "LAYERxDIM"),
        ((4,), TypeError, "not a view"),
        ((4.0, 64), TypeError, "must be ints"),
        ((True, 64), TypeError, "must be ints"),
        (None, TypeError, "not a view"),
        ((4, 0), ValueError, "dim must be >= 1"),
        ((-1, 8), ValueError, "layer must be >= 0"),
    ],
)
def test_parse_rejects(value, error, match):
    with pytest.raises(error, match=match):
        View.parse(value, name="coarse")


def test_check_names_model_limits():
    with pytest.raises(
        ValueError, match=r"coarse=\(13, 64\) is outside m, which has layers 1..12 and dims 1..768"
    ):
        View(13, 64).check(12, 768, name="coarse", model="m")
    with pytest.raises(ValueError, match="dims 1..768"):
        View(4, 1024).check(12, 768)
    with pytest.raises(ValueError, match="layers 1..12"):
        View(0, 8).check(12, 768)
    assert View(12, 768).check(12, 768) == View(12, 768)


def test_order_and_str():
    assert sorted([View(12, 768), View(4, 64), View(4, 32)]) == [View(4, 32), View(4, 64), View(12, 768)]
    assert str(View(4, 64)) == "4x64"


def test_coarse_deeper_than_fine_is_an_error():
    with pytest.raises(ValueError, match="deeper than fine"):
        check_pair(View(8, 64), View(4, 768))
    check_pair(View(4, 64), View(4, 768))  # same layer is fine: nothing to resume


def test_mean_pool_ignores_padding_and_cut_commutes():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    pooled = pool(hidden, mask, "mean")
    assert torch.allclose(pooled[0], hidden[0, :3].mean(0))
    assert torch.allclose(pooled[1], hidden[1].mean(0))
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    v = view_vector(pooled, 3)
    assert v.shape == (2, 3)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2))
    # cutting before pooling gives the same view as cutting after
    assert torch.allclose(view_vector(pool(hidden[..., :3], mask, "mean"), 3), v)
    with pytest.raises(ValueError, match="pooling='max'"):
        pool(hidden, mask, "max")
