"""The library's own exceptions: each is an AdaptiveRetrievalError and still the builtin raised before."""

from __future__ import annotations

import inspect

import pytest

from adaptive_retrieval import Encoder, View, errors, iter_documents
from adaptive_retrieval.errors import (
    AdaptiveRetrievalError,
    CorpusError,
    CorpusTypeError,
    InstallationError,
    InvalidArgument,
    InvalidArgumentType,
    ModelMismatch,
    ModelNotFound,
)


def test_every_exported_class_is_an_adaptive_retrieval_error_and_a_builtin():
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == errors.__name__
    }
    assert set(errors.__all__) == defined
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, AdaptiveRetrievalError), name
        if cls is not AdaptiveRetrievalError:
            assert issubclass(cls, (ValueError, TypeError, RuntimeError)), name


def test_an_unknown_model_name_is_model_not_found_and_a_value_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelNotFound, match="neither a named model") as info:
        Encoder.from_pretrained("no such/model dir")
    assert isinstance(info.value, ValueError)
    with pytest.raises(ModelNotFound, match="could not be read from the Hugging Face cache") as info:
        Encoder.from_pretrained("acme/not-cached")  # a hub id, offline, not in the cache
    assert isinstance(info.value, ValueError)


def test_a_named_model_missing_a_shipped_file_is_an_installation_error(monkeypatch, tmp_path):
    from adaptive_retrieval import models

    gone = models.NamedModel("gone", "test", lambda: tmp_path, adapter=tmp_path / "nowhere")
    monkeypatch.setitem(models.NAMED_MODELS, "gone", gone)
    with pytest.raises(InstallationError, match="missing from this installation") as info:
        Encoder.from_pretrained("gone")
    assert isinstance(info.value, RuntimeError)


def test_texts_of_the_wrong_type_are_a_type_error_of_the_library(tiny_encoder):
    for bad in (12, [b"bytes, not text"], ["fine", None]):
        with pytest.raises(InvalidArgumentType) as info:
            tiny_encoder.encode(bad)
        assert isinstance(info.value, TypeError) and isinstance(info.value, AdaptiveRetrievalError)


def test_bad_options_and_views(tiny_encoder):
    with pytest.raises(InvalidArgument) as info:
        tiny_encoder.encode(["text"], batch_size=0)
    assert isinstance(info.value, ValueError) and not isinstance(info.value, TypeError)
    with pytest.raises(InvalidArgument):
        View.parse("four by sixty-four")
    with pytest.raises(InvalidArgumentType) as type_info:
        View(1, "64")  # type: ignore[arg-type]
    assert isinstance(type_info.value, TypeError)
    # a view the model does not have
    with pytest.raises(ModelMismatch, match="is outside") as mismatch:
        tiny_encoder.check_view((tiny_encoder.n_layers + 1, 8))
    assert isinstance(mismatch.value, ValueError)


def test_bad_corpora_are_corpus_errors():
    with pytest.raises(CorpusError, match="appears twice") as info:
        list(iter_documents([(1, "a"), (1, "b")]))
    assert isinstance(info.value, ValueError)
    with pytest.raises(CorpusError, match="empty"):
        list(iter_documents([]))
    with pytest.raises(CorpusTypeError, match="must be a str or int") as type_info:
        list(iter_documents([(1.5, "a")]))
    assert isinstance(type_info.value, TypeError) and isinstance(type_info.value, CorpusError)
