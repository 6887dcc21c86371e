from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_retrieval import Encoder, View
from tests.helpers import LayerCounter, make_encoder, random_texts


def test_encode_returns_every_view_keyed_by_view_or_tuple(tiny_encoder):
    texts = random_texts(10)
    out = tiny_encoder.encode(texts, [(4, 16), "4x8", View(12, 32)])
    assert set(out) == {View(4, 8), View(4, 16), View(12, 32)}
    assert out[(4, 16)].shape == (10, 16) and out["12x32"].dtype == np.float32
    assert (4, 8) in out and (5, 8) not in out and "junk" not in out
    np.testing.assert_allclose(np.linalg.norm(out[(4, 8)], axis=1), 1.0, rtol=1e-5)


def test_encode_stops_at_deepest_requested_layer(tiny_encoder):
    with LayerCounter(tiny_encoder) as counter:
        tiny_encoder.encode(random_texts(10), [(2, 8), (5, 32)], batch_size=4)
    assert counter.calls == [3] * 5 + [0] * 7  # 3 batches, layers 1..5 only


def test_encode_matches_one_text_at_a_time_and_restores_order(tiny_encoder):
    texts = random_texts(13, seed=4)  # varied lengths: sorting by length reorders batches
    batched = tiny_encoder.encode(texts, [(3, 32), (12, 32)], batch_size=4)
    for i, text in enumerate(texts):
        single = tiny_encoder.encode(text, [(3, 32), (12, 32)])
        assert single[(3, 32)].shape == (32,)
        np.testing.assert_allclose(batched[(3, 32)][i], single[(3, 32)], atol=1e-5)
        np.testing.assert_allclose(batched[(12, 32)][i], single[(12, 32)], atol=1e-5)


def test_view_equals_pooling_the_models_own_hidden_state(tiny_encoder):
    texts = random_texts(5, seed=8)
    out = tiny_encoder.encode(texts, [(7, 20)])
    with torch.no_grad():
        ids, mask = tiny_encoder._pad(tiny_encoder.tokenize(texts))
        hidden = tiny_encoder.model(
            input_ids=ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states[7]
    m = mask.unsqueeze(-1).float()
    expected = ((hidden * m).sum(1) / m.sum(1))[:, :20]
    expected = expected / expected.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(out[(7, 20)], expected.numpy(), atol=1e-5)


def test_cls_pooling_takes_first_token():
    enc = make_encoder("bert", pooling="cls")
    texts = random_texts(3)
    with torch.no_grad():
        ids, mask = enc._pad(enc.tokenize(texts))
        h = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[12][:, 0]
    np.testing.assert_allclose(
        enc.encode(texts)[(12, 32)], torch.nn.functional.normalize(h).numpy(), atol=1e-5
    )


def test_long_texts_are_truncated_not_an_error(tiny_encoder):
    long = " ".join(["cell"] * 1000)
    out = tiny_encoder.encode([long, long + " protein"], [(12, 32)])
    assert tiny_encoder.max_length == 64
    np.testing.assert_allclose(out[(12, 32)][0], out[(12, 32)][1])  # the difference lies past the cut


def test_default_view_is_full_and_empty_input_is_empty(tiny_encoder):
    assert set(tiny_encoder.encode(["a cell"])) == {View(12, 32)}
    assert tiny_encoder.encode([], [(4, 8)])[(4, 8)].shape == (0, 8)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"texts": ["ok", 3]}, TypeError, r"texts\[1\] must be a str"),
        ({"texts": 5}, TypeError, "texts must be a string or a list"),
        ({"views": [(13, 8)]}, ValueError, "layers 1..12 and dims 1..32"),
        ({"views": [(4, 33)]}, ValueError, "dims 1..32"),
        ({"views": []}, ValueError, "views is empty"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
    ],
)
def test_encode_rejects_bad_input(tiny_encoder, kwargs, error, match):
    args = {"texts": ["a cell"], "views": [(4, 8)], **kwargs}
    with pytest.raises(error, match=match):
        tiny_encoder.encode(args.pop("texts"), args.pop("views"), **args)


def test_advance_refuses_to_go_backwards(tiny_encoder):
    state = tiny_encoder.advance(tiny_encoder.start(["a cell"]), 4)
    with pytest.raises(ValueError, match="between the state's layer"):
        tiny_encoder.advance(state, 3)


def test_fingerprint_identifies_weights():
    a, b, c = make_encoder(seed=0), make_encoder(seed=0), make_encoder(seed=1)
    assert a.fingerprint == b.fingerprint != c.fingerprint


def test_constructor_checks(tiny_encoder):
    with pytest.raises(ValueError, match="pooling='max' is not supported"):
        Encoder(tiny_encoder.model, tiny_encoder.tokenizer, pooling="max")
    with pytest.raises(ValueError, match="max_length must be an int"):
        Encoder(tiny_encoder.model, tiny_encoder.tokenizer, max_length=1)


def test_a_coarse_head_shapes_every_view_of_its_layer():
    enc = make_encoder(seed=0)
    texts = random_texts(6, seed=3)
    plain = enc.encode(texts, [(4, 8), (12, 32)])
    fingerprint = enc.fingerprint
    head = torch.randn(32, 16, generator=torch.Generator().manual_seed(0))
    enc.set_head(4, head)
    headed = enc.encode(texts, [(4, 8), (12, 32)])
    np.testing.assert_array_equal(headed[(12, 32)], plain[(12, 32)])  # other layers untouched
    with torch.no_grad():
        ids, mask = enc._pad(enc.tokenize(texts))
        h = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[4]
    m = mask.unsqueeze(-1).float()
    expected = torch.nn.functional.normalize((((h * m).sum(1) / m.sum(1)) @ head)[:, :8], dim=-1)
    np.testing.assert_allclose(headed[(4, 8)], expected.numpy(), atol=1e-5)
    assert enc.fingerprint != fingerprint and enc.weights_fingerprint == make_encoder(seed=0).fingerprint
    with pytest.raises(ValueError, match="has a coarse head with 16 output dims; choose dim <= 16"):
        enc.encode(texts, [(4, 20)])
    bare = enc.encode(texts, [(4, 8), (4, 32)], apply_heads=False)  # the layer's own state: any dim
    np.testing.assert_allclose(bare[(4, 8)], make_encoder(seed=0).encode(texts, [(4, 8)])[(4, 8)], atol=1e-6)
    assert bare[(4, 32)].shape == (6, 32)
    with pytest.raises(ValueError, match=r"must have shape \(32, out\) or, stacked, \(128, out\)"):
        enc.set_head(4, torch.zeros(16, 8))
    enc.set_head(4, None)
    assert enc.fingerprint == fingerprint


def test_a_stacked_head_reads_every_layer_up_to_its_own():
    enc = make_encoder(seed=0)
    texts = random_texts(6, seed=4)
    head = torch.randn(4 * 32, 16, generator=torch.Generator().manual_seed(1))
    enc.set_head(4, head)
    assert enc.stacked(4) and not enc.stacked(3)
    with torch.no_grad():
        ids, mask = enc._pad(enc.tokenize(texts))
        hidden = enc.model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
    m = mask.unsqueeze(-1).float()
    pooled = [torch.nn.functional.normalize((hidden[i] * m).sum(1) / m.sum(1), dim=-1) for i in (1, 2, 3, 4)]
    expected = torch.nn.functional.normalize((torch.cat(pooled, dim=-1) @ head)[:, :8], dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(texts, [(4, 8)])[(4, 8)], expected, atol=1e-5)
    # the staged path (a query's coarse stage) gives the same view, and resuming it runs on
    with torch.inference_mode():
        state = enc.advance(enc.start(texts), 4)
        assert len(state.pooled) == 4
        np.testing.assert_allclose(enc.view(state, 8).numpy(), expected, atol=1e-5)
        resumed = enc.view(enc.advance(state, 12), 32).numpy()
    np.testing.assert_allclose(resumed, make_encoder(seed=0).encode(texts, [(12, 32)])[(12, 32)], atol=1e-5)
    with pytest.raises(ValueError, match="reads 128 values per row, got 32"):
        enc.project(pooled[3], enc.check_view((4, 8)))
    with pytest.raises(ValueError, match="pooled holds 2 layers; layer 4 needs layers 1..4"):
        enc.head_input(pooled[:2], 4)


def test_long_batches_run_in_parts_below_the_forward_budget(tiny_encoder, monkeypatch, capsys):
    from adaptive_retrieval import encoder as encoder_module

    texts = random_texts(13, seed=4)
    whole = tiny_encoder.encode(texts, [(3, 32), (12, 32)], batch_size=8)
    lengths = sorted((len(t) for t in tiny_encoder.tokenize(texts)), reverse=True)
    width = tiny_encoder.model.config.intermediate_size * 4  # bytes per token, float32
    assert encoder_module.activation_bytes(tiny_encoder.model) == width
    budget = 3 * lengths[0] * width  # three of the longest texts per forward pass
    monkeypatch.setattr(encoder_module, "CPU_FORWARD_BYTES", budget)
    order = np.arange(len(lengths))
    batches = encoder_module.forward_batches(order, lengths, 8, width)
    assert len(batches[0]) == 3 and all(len(b) <= 8 for b in batches)
    assert np.array_equal(np.concatenate(batches), order)  # every text once, in order
    assert all(len(b) * lengths[b[0]] * width <= budget for b in batches)
    assert len(encoder_module.forward_batches(order, lengths, 2, width)[0]) == 2  # batch_size still bounds it
    monkeypatch.setattr(encoder_module, "CPU_FORWARD_BYTES", 1)  # below one text: one text per pass
    assert [len(b) for b in encoder_module.forward_batches(order, lengths, 8, width)] == [1] * 13
    capsys.readouterr()
    tiny_encoder.encode(texts, batch_size=8)  # 13 parts, but 2 batches asked for: no bar by default
    assert "encode" not in capsys.readouterr().err
    tiny_encoder.encode(texts, batch_size=1)  # 13 batches asked for: a bar
    assert "encode" in capsys.readouterr().err
    monkeypatch.setattr(encoder_module, "CPU_FORWARD_BYTES", budget)
    with LayerCounter(tiny_encoder) as counter:
        parts = tiny_encoder.encode(texts, [(3, 32), (12, 32)], batch_size=8)
    assert counter.calls[0] > 2  # more forward passes than the two whole batches of 8
    for view in whole:
        np.testing.assert_allclose(parts[view], whole[view], atol=1e-5)
