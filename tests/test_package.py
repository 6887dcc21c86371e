"""The package's front: its names load on first use, and every one of them resolves."""

from __future__ import annotations

import subprocess
import sys

import pytest

import adaptive_retrieval


def test_importing_the_package_loads_no_torch_and_every_public_name_resolves():
    probe = "import sys, adaptive_retrieval; print('torch' in sys.modules, adaptive_retrieval.__version__)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["False", adaptive_retrieval.__version__], done.stderr
    for name in adaptive_retrieval.__all__:
        assert getattr(adaptive_retrieval, name) is not None, name
    assert set(dir(adaptive_retrieval)) >= set(adaptive_retrieval.__all__)
    from adaptive_retrieval import Retriever
    from adaptive_retrieval.retriever import Retriever as Defined

    assert Retriever is Defined
    try:
        adaptive_retrieval.not_a_name  # noqa: B018
    except AttributeError as err:
        assert "not_a_name" in str(err)
    else:
        raise AssertionError("an unknown name resolved")


def test_an_engines_client_library_loads_only_when_the_engine_is_used():
    """pymilvus and qdrant-client take 1.5 s to import: a FAISS retriever, or a filter unasked, pays none."""
    pytest.importorskip("qdrant_client")
    probe = (
        "import sys, adaptive_retrieval.backends as b, adaptive_retrieval.retriever; "
        "print('pymilvus' in sys.modules, 'qdrant_client' in sys.modules); "
        "b.QdrantBackend.create(4, 8, b.QdrantOptions(location=':memory:')).close(); "
        "print('qdrant_client' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False", "True"], done.stderr


def test_a_missing_client_library_says_what_to_install_and_a_broken_one_says_why(monkeypatch):
    from adaptive_retrieval.backends.keyed import client_library

    with pytest.raises(ImportError, match="pip install this"):
        client_library("no_such_client_library", "pip install this")
    from adaptive_retrieval.backends import keyed

    def broken(name):  # an installed library one of whose own imports fails (no sys.path edit)
        raise ModuleNotFoundError("No module named 'a_dependency_it_lacks'", name="a_dependency_it_lacks")

    monkeypatch.setattr(keyed.importlib, "import_module", broken)
    with pytest.raises(ModuleNotFoundError, match="a_dependency_it_lacks"):  # its own error, not the hint
        client_library("broken_client", "pip install this")
