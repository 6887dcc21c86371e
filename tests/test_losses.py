from __future__ import annotations

import math

import pytest
import torch

from adaptive_retrieval.losses import (
    OBJECTIVES,
    Draw,
    TwoDMatryoshkaLoss,
    angle,
    cosent,
    default_dims,
    info_nce,
    similarity_kl,
    starbucks_pairs,
)
from adaptive_retrieval.views import view_vector
from tests.helpers import make_encoder, random_texts


def pooled(batch=8, layers=12, hidden=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(layers, batch, hidden, generator=g), torch.randn(layers, batch, hidden, generator=g)


def test_default_dims_and_starbucks_pairs():
    assert default_dims(768) == (8, 16, 32, 64, 128, 256, 512)
    assert default_dims(384) == (8, 16, 32, 64, 128, 256)
    assert starbucks_pairs(12, 768) == ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
    assert starbucks_pairs(6, 384)[-1] == (6, 384)


def test_kl_is_zero_when_the_drawn_layer_is_the_last():
    a, b = pooled()
    va, vb = view_vector(a[-1], 32), view_vector(b[-1], 32)
    assert similarity_kl((va, vb), (va, vb), 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert similarity_kl((view_vector(a[0], 32), view_vector(b[0], 32)), (va, vb), 1.0).item() > 1e-3


def test_base_losses_prefer_the_right_answer():
    a = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    assert info_nce(a, a, 20.0) < info_nce(a, a.roll(1, 0), 20.0)
    labels = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    b = torch.nn.functional.normalize(torch.randn(6, 16), dim=-1)
    cos = (a * b).sum(-1)
    aligned = labels[cos.argsort().argsort()]  # labels ranked as the cosines are
    assert cosent(a, b, aligned, 20.0) < cosent(a, b, aligned.flip(0), 20.0)
    assert torch.isfinite(angle(a, b, labels, 20.0))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_loss_is_invariant_to_batch_order(objective):
    a, b = pooled()
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(1))
    for labels in (None, torch.arange(8, dtype=torch.float32)):
        loss = TwoDMatryoshkaLoss(12, 32, objective=objective, seed=3, dims=[4, 8, 16])
        other = TwoDMatryoshkaLoss(12, 32, objective=objective, seed=3, dims=[4, 8, 16])
        x, _ = loss(a, b, labels)
        y, _ = other(a[:, perm], b[:, perm], None if labels is None else labels[perm])
        assert x.item() == pytest.approx(y.item(), rel=1e-5)


def test_ablations_use_the_terms_they_name():
    a, b = pooled()
    terms = {o: set(TwoDMatryoshkaLoss(12, 32, objective=o, dims=[8])(a, b)[1]) for o in OBJECTIVES}
    assert terms["2dmse"] == {"last_full", "last_dim", "layer", "kl"}
    assert terms["mrl"] == {"last_full", "last_dim"}
    assert terms["adaptive"] == {"last_full", "layer", "kl"}
    assert terms["angle"] == {"last_full"}
    assert terms["starbucks"] == {"starbucks", "kl"}


def test_2dmse_terms_follow_the_definition():
    a, b = pooled()
    loss = TwoDMatryoshkaLoss(12, 32, dims=[8], kl_weight=0.5, angle_weight=0.0)
    total, terms = loss(a, b, draw=Draw(layer=3, dim=8))
    v = lambda layer, dim: (view_vector(a[layer - 1], dim), view_vector(b[layer - 1], dim))  # noqa: E731
    assert terms["last_full"] == pytest.approx(info_nce(*v(12, 32), 20.0).item(), rel=1e-5)
    assert terms["last_dim"] == pytest.approx(info_nce(*v(12, 8), 20.0).item(), rel=1e-5)
    expected_layer = (info_nce(*v(3, 32), 20.0) + info_nce(*v(3, 8), 20.0)) / (1 + math.log(4))
    assert terms["layer"] == pytest.approx(expected_layer.item(), rel=1e-5)
    assert terms["kl"] == pytest.approx(0.5 * similarity_kl(v(3, 32), v(12, 32), 1.0).item(), rel=1e-5)
    assert total.item() == pytest.approx(sum(terms.values()), rel=1e-5)


def test_draws_cover_layers_below_the_last_and_the_dims():
    loss = TwoDMatryoshkaLoss(12, 32, dims=[4, 8, 16], seed=0)
    draws = [loss.draw() for _ in range(400)]
    assert {d.layer for d in draws} == set(range(1, 12))
    assert {d.dim for d in draws} == {4, 8, 16}


def test_layers_restricts_the_draw_to_a_set():
    loss = TwoDMatryoshkaLoss(12, 32, dims=[8], layers=[4, 2, 4], seed=0)
    assert loss.layers == (2, 4)
    assert {loss.draw().layer for _ in range(200)} == {2, 4}


def test_gradients_reach_layer_one_through_a_real_forward():
    enc = make_encoder("bert", n_layers=4)
    enc.model.train()
    texts = random_texts(8, seed=2)
    ids = enc.tokenize(texts)
    pa, pb = enc.pooled_layers(token_ids=ids[:4]), enc.pooled_layers(token_ids=ids[4:])
    assert pa.shape == (4, 4, 32) and pa.requires_grad
    total, _ = TwoDMatryoshkaLoss(4, 32, dims=[8])(pa, pb, draw=Draw(layer=1, dim=8))
    total.backward()
    grad = enc.backbone.layers[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    enc.model.eval()


def test_teacher_term_is_zero_for_a_teacher_equal_to_the_student():
    a, b = pooled()
    loss = TwoDMatryoshkaLoss(12, 32, objective="angle", teacher_weight=1.0)
    _, terms = loss(a, b, teacher_a=a[-1], teacher_b=b[-1])
    assert terms["teacher"] == pytest.approx(0.0, abs=1e-6)
    _, terms = loss(a, b, teacher_a=a[0], teacher_b=b[0])
    assert terms["teacher"] > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "simcse"}, "objective='simcse' is not known; choose one of 2dmse, mrl"),
        ({"dims": []}, "dims is empty"),
        ({"dims": [8, 64]}, r"dims must be ints in 1..32 \(the hidden size\), got \[64\]"),
        ({"kl_temperature": 0}, "kl_temperature must be a positive number, got 0"),
        ({"ibn_weight": -1}, "ibn_weight must be a non-negative number, got -1"),
        ({"n_layers": 1}, "so n_layers must be >= 2"),
        ({"layers": [4, 12]}, r"layers must be a non-empty set of ints in 1..11 .*got \[4, 12\]"),
        ({"layers": []}, "layers must be a non-empty set"),
    ],
)
def test_arguments_are_checked_up_front(kwargs, match):
    args = {"n_layers": 12, "hidden_size": 32, **kwargs}
    with pytest.raises(ValueError, match=match):
        TwoDMatryoshkaLoss(args.pop("n_layers"), args.pop("hidden_size"), **args)


def test_inputs_are_checked():
    loss = TwoDMatryoshkaLoss(12, 32)
    a, b = pooled()
    with pytest.raises(ValueError, match=r"pooled_a must have shape \(12, batch, 32\), got \(11, 8, 32\)"):
        loss(a[:11], b)
    with pytest.raises(ValueError, match="at least 2 pairs"):
        loss(a[:, :1], b[:, :1])
    with pytest.raises(ValueError, match=r"labels must have shape \(8,\)"):
        loss(a, b, torch.zeros(7))
    with pytest.raises(ValueError, match="give both teacher_a and teacher_b"):
        loss(a, b, teacher_a=a[-1])
