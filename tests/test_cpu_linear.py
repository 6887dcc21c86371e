"""Linear layers through oneDNN at inference: the same results as nn.Linear's own path, taken only where
meant (CPU, float32, no gradients), and switchable off."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from adaptive_retrieval import cpu_linear
from adaptive_retrieval.cpu_linear import OneDNNLinear, use_onednn
from tests.helpers import make_encoder, random_texts

needs_onednn = pytest.mark.skipif(not cpu_linear.available(), reason="no oneDNN linear in this torch build")


@pytest.fixture
def counted(monkeypatch):
    calls = []
    original = cpu_linear._onednn_linear
    cpu_linear.available(), cpu_linear.available("gelu")  # probe first: its calls are not the layers'

    def counting(x, weight, bias, post="none"):
        calls.append(tuple(x.shape) if post == "none" else (*x.shape, post))
        return original(x, weight, bias, post)

    monkeypatch.setattr(cpu_linear, "_onednn_linear", counting)
    return calls


class _Int8Like(nn.Linear):
    pass


def test_plain_linears_converted_subclasses_and_state_dict_kept():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), _Int8Like(8, 8), nn.Linear(8, 2, bias=False))
    keys = list(model.state_dict())
    assert use_onednn(model) == 2
    assert [type(m) for m in model] == [OneDNNLinear, nn.ReLU, _Int8Like, OneDNNLinear]
    assert list(model.state_dict()) == keys
    assert use_onednn(model) == 0  # idempotent


@needs_onednn
@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_inference_runs_onednn_and_equals_the_default_path(kind, counted):
    enc = make_encoder(kind, n_layers=4, hidden=64)
    token_ids = enc.tokenize(random_texts(7, seed=3, max_words=50))
    input_ids, mask = enc._pad(token_ids)
    with torch.enable_grad():  # gradients on: every linear takes nn.Linear's own (MKL) path
        reference = enc.model(
            input_ids=input_ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states
    assert counted == []
    with torch.inference_mode():
        state = enc.advance(enc.start(token_ids=token_ids), 4)
    assert len(counted) == 4 * 6  # q, k, v, output, intermediate, output per layer
    assert sum(call[-1] == "gelu" for call in counted) == 4  # the intermediate's GELU fused, per layer
    torch.testing.assert_close(state.hidden, reference[4].detach(), rtol=1e-5, atol=1e-5)
    assert not torch.equal(state.hidden, torch.zeros_like(state.hidden))


@needs_onednn
def test_training_keeps_nn_linear_and_its_gradients(counted):
    layer = OneDNNLinear(16, 4)
    x = torch.randn(3, 16, requires_grad=True)
    layer(x).sum().backward()
    assert counted == [] and layer.weight.grad is not None and x.grad is not None
    with torch.no_grad():
        got = layer(x)
    assert counted == [(3, 16)]
    torch.testing.assert_close(got, nn.functional.linear(x, layer.weight, layer.bias), rtol=1e-5, atol=1e-5)
    layer.double()
    with torch.no_grad():
        layer(x.double())  # float64: nn.Linear's path
    assert len(counted) == 1


def test_switched_off_by_the_environment(monkeypatch, counted):
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "0")
    cpu_linear._probe.cache_clear()
    try:
        assert not cpu_linear.available()
        with torch.no_grad():
            OneDNNLinear(8, 2)(torch.randn(2, 8))
        assert counted == []
    finally:
        cpu_linear._probe.cache_clear()  # the environment is restored by monkeypatch


def test_set_enabled_switches_the_path(counted):
    layer, x = OneDNNLinear(8, 2), torch.randn(2, 8)
    try:
        cpu_linear.set_enabled(False)
        with torch.no_grad():
            layer(x)
        assert counted == []
    finally:
        cpu_linear.set_enabled(True)
    with torch.no_grad():
        layer(x)
    assert len(counted) == int(cpu_linear.available())


def test_a_failing_op_falls_back(monkeypatch):
    def broken(x, weight, bias, post="none"):
        raise RuntimeError("no such op")

    monkeypatch.setattr(cpu_linear, "_onednn_linear", broken)
    cpu_linear._probe.cache_clear()
    try:
        assert not cpu_linear.available()
        layer = OneDNNLinear(8, 2)
        x = torch.randn(2, 8)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
    finally:
        cpu_linear._probe.cache_clear()


@needs_onednn
def test_a_strided_bias_and_autocast_and_tracing_give_nn_linears_results(counted):
    layer = OneDNNLinear(8, 6)
    with torch.no_grad():
        wide = torch.randn(12)
        layer.bias = nn.Parameter(wide[::2], requires_grad=False)  # a view: not contiguous
        assert not layer.bias.is_contiguous()
        x = torch.randn(5, 8)
        torch.testing.assert_close(layer(x), nn.functional.linear(x, layer.weight, layer.bias))
        assert len(counted) == 1
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert layer(x).dtype == torch.bfloat16  # autocast's cast, as nn.Linear gives
        traced = torch.jit.trace(layer, x, check_trace=False)  # the check reruns it untraced
        torch.testing.assert_close(traced(x), nn.functional.linear(x, layer.weight, layer.bias))
    assert len(counted) == 1  # neither autocast nor tracing took oneDNN's path


@needs_onednn
def test_a_hooked_linear_is_called_as_a_module_so_its_hooks_run():
    """int8 calibration records every linear's inputs by forward hooks: the fused GELU may not skip them."""
    from adaptive_retrieval.quantization import input_maxima

    enc = make_encoder("bert", n_layers=2, hidden=32)
    texts = random_texts(4, seed=1, max_words=20)
    maxima = input_maxima(enc.model, lambda: enc.encode(texts, show_progress=False))
    in_layers = {
        name for name, m in enc.model.named_modules() if isinstance(m, nn.Linear) and ".layer." in name
    }
    assert len(in_layers) == 2 * 6 and in_layers <= set(maxima)  # q, k, v, output, intermediate, output


@pytest.fixture
def measured(monkeypatch):
    """The environment as a user's: each model's path timed (conftest pins oneDNN's for the other tests)."""
    monkeypatch.delenv(cpu_linear.ENV_SWITCH, raising=False)
    monkeypatch.setattr(cpu_linear, "_chosen", {})


@needs_onednn
@pytest.mark.parametrize("slower", ["onednn", "mkl"])
def test_the_path_that_runs_a_layer_faster_is_chosen_once_per_shape(slower, measured, counted):
    import time

    enc = make_encoder("bert", n_layers=2, hidden=32)
    runs = []

    def run_layer():
        runs.append(cpu_linear.path_of(enc.model))
        time.sleep(0.02 if runs[-1] == slower else 0.001)

    faster = "mkl" if slower == "onednn" else "onednn"
    assert cpu_linear.choose_path(enc.model, "shape", run_layer) == faster == cpu_linear.path_of(enc.model)
    assert sorted(set(runs)) == ["mkl", "onednn"] and len(runs) == 2 * 4  # a first call, then 3 rounds each
    other = make_encoder("bert", n_layers=2, hidden=32, seed=1)
    assert cpu_linear.choose_path(other.model, "shape", run_layer) == faster and len(runs) == 8  # cached
    texts = random_texts(5, seed=2)
    counted.clear()
    got = enc.encode(texts, show_progress=False)
    assert (counted == []) is (faster == "mkl")  # MKL's path: no float32 call reaches oneDNN
    cpu_linear.set_path(enc.model, slower)
    again = enc.encode(texts, show_progress=False)
    for view in got:
        np.testing.assert_allclose(got[view], again[view], rtol=1e-5, atol=1e-5)
    if faster == "mkl":  # a bfloat16 copy still multiplies on oneDNN (MKL has no bfloat16 product)
        cpu_linear.set_path(enc.model, "mkl")
        counted.clear()
        enc.bfloat16().encode(texts, show_progress=False)
        assert counted and cpu_linear.available("none", torch.bfloat16)


@needs_onednn
def test_an_encoder_measures_its_path_at_first_use_unless_the_environment_says(measured, monkeypatch):
    enc = make_encoder("mpnet", n_layers=2, hidden=32)
    assert cpu_linear.path_of(enc.model) in ("onednn", "mkl")
    assert list(cpu_linear._chosen.values()) == [cpu_linear.path_of(enc.model)]
    monkeypatch.setenv(cpu_linear.ENV_SWITCH, "1")  # pinned: oneDNN's, nothing timed
    monkeypatch.setattr(cpu_linear, "_chosen", {})
    pinned = make_encoder("mpnet", n_layers=2, hidden=32)
    assert cpu_linear.path_of(pinned.model) == "onednn" and cpu_linear._chosen == {}
    with pytest.raises(ValueError, match="choose onednn or mkl"):
        cpu_linear.set_path(pinned.model, "fast")
