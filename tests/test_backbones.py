"""Every adapter's staged forward equals the model's own forward, layer by layer."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2Model

from adaptive_retrieval.backbones import SUPPORTED_MODEL_TYPES, backbone_for
from tests.helpers import make_encoder, random_texts


@pytest.mark.parametrize("kind", ["bert", "roberta", "xlm-roberta", "electra", "mpnet"])
def test_staged_forward_equals_output_hidden_states(kind):
    enc = make_encoder(kind, n_layers=12)
    token_ids = enc.tokenize(random_texts(6, seed=5))  # different lengths: padding is exercised
    with torch.no_grad():
        input_ids, mask = enc._pad(token_ids)
        reference = enc.model(
            input_ids=input_ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states
        state = enc.start(token_ids=token_ids)
        assert torch.allclose(state.hidden, reference[0], atol=1e-5)
        for layer in range(1, 13):
            state = enc.advance(state, layer)  # one layer at a time: every stop/resume boundary
            assert state.layer == layer
            assert torch.allclose(state.hidden, reference[layer], atol=1e-5), f"layer {layer}"


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_jumping_several_layers_equals_one_at_a_time(kind):
    enc = make_encoder(kind)
    with torch.no_grad():
        ids = enc.tokenize(random_texts(3, seed=2))
        a = enc.advance(enc.advance(enc.start(token_ids=ids), 4), 12)
        b = enc.start(token_ids=ids)
        for layer in range(1, 13):
            b = enc.advance(b, layer)
    assert torch.equal(a.hidden, b.hidden)


def test_unsupported_architecture_lists_supported():
    model = GPT2Model(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(ValueError, match="model type 'gpt2' is not supported; supported model types: bert"):
        backbone_for(model)
    assert "mpnet" in SUPPORTED_MODEL_TYPES


def test_mpnet_staged_training_forward_equals_the_models_with_gradients():
    """The fused attention keeps training's path: with dropout off, the same outputs and gradients."""
    enc = make_encoder("mpnet", n_layers=4)
    for m in enc.model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    enc.model.train()
    token_ids = enc.tokenize(random_texts(4, seed=7))
    input_ids, mask = enc._pad(token_ids)
    reference = enc.model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    reference.sum().backward()
    want = {n: p.grad.clone() for n, p in enc.model.named_parameters() if p.grad is not None}
    enc.model.zero_grad()
    staged = enc.advance(enc.start(token_ids=token_ids), 4).hidden
    assert torch.allclose(staged, reference, atol=1e-5)
    staged.sum().backward()
    for name, grad in want.items():
        got = dict(enc.model.named_parameters())[name].grad
        assert got is not None and torch.allclose(got, grad, atol=1e-4), name
    enc.model.eval()


def test_mpnet_takes_a_boolean_mask_as_an_additive_one(monkeypatch):
    """transformers hands sdpa-style models a boolean mask (True: attend); the fused path reads it right."""
    enc = make_encoder("mpnet", n_layers=2)
    token_ids = enc.tokenize(random_texts(4, seed=9))
    with torch.no_grad():
        want = enc.advance(enc.start(token_ids=token_ids), 2).hidden
        _, mask = enc._pad(token_ids)
        boolean = mask.bool()[:, None, None, :].expand(-1, 1, mask.shape[1], -1)
        monkeypatch.setattr(type(enc.backbone), "_mask", lambda self, hidden, attention_mask: boolean)
        got = enc.advance(enc.start(token_ids=token_ids), 2).hidden
    real = mask.bool()
    assert torch.allclose(got[real], want[real], atol=1e-5)  # padded positions aside
