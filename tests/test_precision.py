"""bfloat16 encoding: the encoder's copy, oneDNN's bfloat16 product, an index built and reopened in it, and
queries in a precision of their own."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adaptive_retrieval import Retriever, cpu_linear
from adaptive_retrieval.encoding_cache import cache_key
from adaptive_retrieval.errors import IndexDamaged, InvalidArgument
from tests.helpers import random_texts

VIEWS = ["3x16", "12x32"]


@pytest.mark.parametrize("kind", ["bert", "mpnet"])
def test_a_bfloat16_copy_approximates_the_float32_encoder_and_leaves_it_as_it_was(
    kind, tiny_encoder, tiny_mpnet
):
    encoder = tiny_encoder if kind == "bert" else tiny_mpnet
    texts = random_texts(12, seed=3)
    before = encoder.encode(texts, VIEWS)
    half = encoder.bfloat16()
    assert (encoder.precision, half.precision) == ("float32", "bfloat16")
    assert half.bfloat16() is half and encoder.with_precision("float32") is encoder
    assert half.weights_fingerprint == encoder.weights_fingerprint  # an index in either accepts the other
    got = half.encode(texts, VIEWS)
    after = encoder.encode(texts, VIEWS)
    for view in before:
        assert got[view].dtype == np.float32
        np.testing.assert_array_equal(after[view], before[view])  # the float32 encoder is untouched
        cosines = (got[view] * before[view]).sum(axis=1)
        assert cosines.min() > 0.99, cosines  # bfloat16 states: close, not equal
        assert np.abs(got[view] - before[view]).max() > 0  # it did run in bfloat16
    with pytest.raises(InvalidArgument, match="float32 weights are gone"):
        half.with_precision("float32")
    with pytest.raises(InvalidArgument, match="choose one of float32, bfloat16"):
        encoder.with_precision("float16")
    int8 = half.quantized()  # from the rounded weights, its other layers in float32
    assert int8.precision == "float32" and half.precision == "bfloat16"
    cosines = (int8.encode(texts, VIEWS)["12x32"] * before["12x32"]).sum(axis=1)
    assert cosines.min() > 0.9, cosines


@pytest.mark.skipif(
    not cpu_linear.available("none", torch.bfloat16), reason="no oneDNN bfloat16 linear in this torch build"
)
@pytest.mark.parametrize("post", ["none", "gelu"])
def test_onednn_linear_runs_bfloat16_within_its_precision(post):
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 48)
    cpu_linear.use_onednn(layer)
    layer = layer.to(torch.bfloat16)
    x = torch.randn(2, 7, 64).to(torch.bfloat16)
    with torch.no_grad():
        assert layer.fast(x, post)
        got = layer.onednn(x, post).float()
        want = F.linear(x.float(), layer.weight.float(), layer.bias.float())
        want = F.gelu(want) if post == "gelu" else want
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2 * want.abs().max().item())
    with torch.no_grad():
        assert not layer.fast(x.float(), post)  # float32 inputs to bfloat16 weights: nn.Linear's path


def test_cache_keys_tell_precisions_apart_and_float32_keeps_its_key(tiny_encoder):
    ids, texts = ["a", "b"], ["one text", "another"]
    full, half = cache_key(tiny_encoder, ids, texts), cache_key(tiny_encoder.bfloat16(), ids, texts)
    assert "precision" not in full  # the keys of caches written before precisions still match
    assert half == {**full, "precision": "bfloat16"}


def test_an_index_built_in_bfloat16_saves_and_reopens_in_it(tiny_encoder, tmp_path):
    texts = random_texts(40, seed=5)
    r = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, precision="bfloat16")
    assert r.encoder.precision == "bfloat16" and r.query_precision == "bfloat16"
    assert tiny_encoder.precision == "float32"  # the given encoder is copied, not converted
    hits = r.search(texts[7], k=3)
    assert hits[0].doc_id == 7
    r.save(tmp_path / "ix")
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["model"]["precision"] == "bfloat16"
    again = Retriever.load(tmp_path / "ix", model=tiny_encoder.bfloat16())
    assert [h.doc_id for h in again.search(texts[7], k=3)] == [h.doc_id for h in hits]
    with pytest.raises(InvalidArgument, match="encoder runs in bfloat16"):
        again.query_precision = "float32"


def test_a_manifest_with_an_unknown_precision_is_damaged(tiny_encoder, tmp_path):
    r = Retriever.build(random_texts(20, seed=6), coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    r.save(tmp_path / "ix")
    path = tmp_path / "ix" / "manifest.json"
    manifest = json.loads(path.read_text())
    assert manifest["model"]["precision"] == "float32"
    manifest["model"]["precision"] = "float8"
    path.write_text(json.dumps(manifest))
    with pytest.raises(IndexDamaged, match="precision"):
        Retriever.load(tmp_path / "ix", model=tiny_encoder, verify=False)


def test_a_bad_precision_is_refused_before_the_model_loads():
    with pytest.raises(InvalidArgument, match="precision='half'"):
        Retriever.build(["a text"], model="no/such-model-anywhere", precision="half")


def test_queries_in_bfloat16_over_a_float32_index(tiny_encoder):
    texts = random_texts(40, seed=8)
    r = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder)
    assert r.query_precision == "float32" and r.query_encoder is r.encoder
    exact = [h.doc_id for h in r.search(texts[11], k=5)]
    r.query_precision = "bfloat16"
    assert r.query_encoder.precision == "bfloat16" and r.query_encoder is r.query_encoder  # made once
    assert r.encoder.precision == "float32"  # documents stay as they were encoded
    half = [h.doc_id for h in r.search(texts[11], k=5)]
    assert half[0] == exact[0] == 11 and len(set(half) & set(exact)) >= 3
    r.query_precision = None  # back to the documents' precision
    assert r.query_precision == "float32" and r.query_encoder is r.encoder
    with pytest.raises(InvalidArgument, match="choose one of auto, float32, bfloat16, int8"):
        r.query_precision = "float16"


def test_a_bfloat16_index_opens_in_float32_where_the_processor_lacks_bfloat16(
    tiny_encoder, tmp_path, monkeypatch
):
    from adaptive_retrieval import manifest

    folder = tmp_path / "model"
    tiny_encoder.model.save_pretrained(folder)
    tiny_encoder.tokenizer.save_pretrained(folder)
    texts = random_texts(30, seed=9)
    r = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=str(folder), precision="bfloat16")
    r.save(tmp_path / "ix")
    assert Retriever.load(tmp_path / "ix").encoder.precision == "bfloat16" or not manifest.bfloat16_faster()
    monkeypatch.setattr(manifest, "bfloat16_faster", lambda: False)
    again = Retriever.load(tmp_path / "ix")  # by the name it saved: converted as the processor allows
    assert again.encoder.precision == "float32" and again.query_precision == "float32"
    assert again.search(texts[5], k=1)[0].doc_id == 5


def test_auto_means_bfloat16_where_it_pays_on_the_processor(tiny_encoder, monkeypatch):
    from adaptive_retrieval import precision

    monkeypatch.delenv(precision.ENV_DEFAULT, raising=False)
    monkeypatch.setattr(precision, "bfloat16_faster", lambda: True)
    assert precision.resolve("auto") == "bfloat16" and precision.resolve("auto", "cuda:0") == "float32"
    assert precision.resolve("float32") == "float32"
    texts = random_texts(20, seed=10)
    built = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder)  # documents: float32
    assert built.encoder.precision == "float32" and built.query_precision == "bfloat16"  # queries: auto
    assert built.query_encoder.precision == "bfloat16"
    assert built.search(texts[4], k=1)[0].doc_id == 4
    fast = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, precision="auto")
    assert fast.encoder.precision == "bfloat16"
    monkeypatch.setattr(precision, "bfloat16_faster", lambda: False)
    assert precision.resolve("auto") == "float32" and built.query_precision == "float32"
    built.query_precision = "bfloat16"  # asked for: whatever the processor
    assert built.query_precision == "bfloat16"
    built.query_precision = "auto"
    assert built.query_precision == "float32"
    monkeypatch.setenv(precision.ENV_DEFAULT, "bfloat16")
    assert precision.resolve("auto") == "bfloat16" and precision.resolve("float32") == "float32"
    assert built.query_precision == "bfloat16"
    monkeypatch.setenv(precision.ENV_DEFAULT, "half")
    with pytest.raises(InvalidArgument, match="ADAPTIVE_RETRIEVAL_PRECISION='half'"):
        precision.resolve("auto")
    with pytest.raises(InvalidArgument, match="choose auto, float32, bfloat16"):
        precision.check_precision("fp16")


@pytest.fixture
def fresh_probe():
    cpu_linear.bfloat16_faster.cache_clear()
    yield
    cpu_linear.bfloat16_faster.cache_clear()


def test_bfloat16_pays_only_where_native_and_measured_faster(monkeypatch, fresh_probe):
    timed = []

    def speedup(rounds=7):
        timed.append(rounds)
        return ratio

    monkeypatch.setattr(cpu_linear, "bfloat16_speedup", speedup)
    monkeypatch.setattr(cpu_linear, "bfloat16_native", lambda: False)
    ratio = 3.0
    assert not cpu_linear.bfloat16_faster() and timed == []  # emulated: not even timed
    monkeypatch.setattr(cpu_linear, "bfloat16_native", lambda: True)
    for ratio, pays in ((0.86, False), (1.05, False), (1.8, True)):
        cpu_linear.bfloat16_faster.cache_clear()
        assert cpu_linear.bfloat16_faster() is pays, ratio
    assert cpu_linear.bfloat16_faster() is True and len(timed) == 3  # measured once per process


@pytest.mark.skipif(
    not cpu_linear.available("none", torch.bfloat16), reason="no oneDNN bfloat16 linear in this torch build"
)
def test_the_bfloat16_probe_times_both_products():
    speedup = cpu_linear.bfloat16_speedup(rounds=2)
    assert np.isfinite(speedup) and 0.05 < speedup < 50, speedup


def test_a_new_langchain_store_takes_a_precision(tiny_encoder):
    pytest.importorskip("langchain_core")
    from adaptive_retrieval.integrations.langchain_store import AdaptiveRetrievalVectorStore

    views = {"coarse": (3, 8), "fine": (12, 32)}
    store = AdaptiveRetrievalVectorStore(model=tiny_encoder, precision="bfloat16", **views)
    assert store.retriever.encoder.precision == "bfloat16" and tiny_encoder.precision == "float32"
    plain = AdaptiveRetrievalVectorStore(model=tiny_encoder, **views)  # the default: float32
    assert plain.retriever.encoder.precision == "float32"
    with pytest.raises(InvalidArgument, match="precision='fp8'"):
        AdaptiveRetrievalVectorStore(model=tiny_encoder, precision="fp8", **views)
