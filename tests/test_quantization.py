"""int8 linear layers: each token keeps its own precision, even beside a token with huge activations."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptive_retrieval.quantization import Int8Linear, input_maxima, quantize_linears, smoothing_factors


def relative_errors(got: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    return (got - want).norm(dim=-1) / want.norm(dim=-1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")  # torch.ao, the baseline
def test_each_token_is_quantized_on_its_own_scale():
    torch.manual_seed(0)
    linear = nn.Linear(256, 96)
    x = torch.randn(2, 9, 256)
    x[0, 0] *= 200  # an outlier token, as special tokens are in these encoders
    with torch.inference_mode():
        want, got = linear(x), Int8Linear(linear)(x)
        one_scale = torch.ao.nn.quantized.dynamic.Linear.from_float(  # one scale for the batch: torch's
            _with_qconfig(linear)
        )(x.reshape(-1, 256)).reshape(2, 9, 96)
    assert got.shape == want.shape and got.dtype == torch.float32
    errors = relative_errors(got, want)
    assert errors.max() < 0.02, errors.max()  # every token, the outlier and its neighbours alike
    assert relative_errors(one_scale, want)[0, 1:].mean() > 5 * errors[0, 1:].mean()  # what it replaces


def _with_qconfig(linear: nn.Linear) -> nn.Linear:
    from torch.ao.quantization import default_dynamic_qconfig

    linear.qconfig = default_dynamic_qconfig
    return linear


def test_quantize_linears_copies_and_leaves_the_original_alone():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 8, bias=False))
    before = [p.clone() for p in model.parameters()]
    quantized = quantize_linears(model)
    assert [type(m) for m in quantized] == [Int8Linear, nn.GELU, Int8Linear]
    assert all(isinstance(m, nn.Linear) for m in (model[0], model[2]))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    x = torch.randn(5, 32)
    with torch.inference_mode():
        assert relative_errors(quantized(x), model(x)).max() < 0.05  # 8 outputs: a coarse check
        assert quantized[2].bias is None and quantized[2].weight_int8.dtype == torch.int8


def test_smoothing_moves_an_outlier_channel_into_the_weights():
    torch.manual_seed(2)
    linear = nn.Linear(128, 64)
    x = torch.randn(40, 128)
    x[:, 7] *= 60  # one channel far larger than the rest in every token
    maxima = input_maxima(linear, lambda: linear(x))
    assert set(maxima) == {""} and torch.allclose(maxima[""], x.abs().amax(0))
    smooth = smoothing_factors(linear, maxima[""])
    with torch.inference_mode():
        want = linear(x)
        plain = relative_errors(Int8Linear(linear)(x), want).mean()
        smoothed = relative_errors(Int8Linear(linear, smooth)(x), want).mean()
    assert smoothed < plain / 2, (smoothed, plain)
    with pytest.raises(ValueError, match="128 positive factors"):
        Int8Linear(linear, -smooth)


def test_quantize_linears_smooths_the_layers_it_has_maxima_for():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 16), nn.Linear(16, 4))
    maxima = input_maxima(model, lambda: model(torch.randn(8, 16)))
    assert set(maxima) == {"0", "1"}
    quantized = quantize_linears(model, {"1": maxima["1"]})
    assert quantized[0].inverse_smooth is None and quantized[1].inverse_smooth.shape == (16,)
