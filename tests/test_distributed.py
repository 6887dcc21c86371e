"""Corpus encoding through Ray Data on a local Ray cluster, with a tiny model saved to disk."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_retrieval import Encoder, FaissOptions, Retriever
from tests.helpers import make_model, make_tokenizer, random_texts

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray():
    # Ray gives its node 30 s to start (hard-coded); on a loaded 2-core CI machine that has run out once
    # ("The current node timed out during startup"), so a second start is tried before the tests fail
    for attempt in range(2):
        try:
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
            break
        except Exception:
            ray.shutdown()
            if attempt:
                raise
    yield
    ray.shutdown()


def test_ray_encoding_builds_the_same_index_as_build(local_ray, tmp_path):
    from adaptive_retrieval.distributed import column, encode_with_ray, vector_batches

    make_model("bert", n_layers=4).save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    encoder = Encoder.from_pretrained(tmp_path / "model")
    texts = random_texts(40, seed=5)
    ids = [f"doc{i}" for i in range(len(texts))]
    ds = ray.data.from_items([{"doc_id": d, "text": t} for d, t in zip(ids, texts)])
    encoded = encode_with_ray(
        ds, tmp_path / "model", (2, 8), (4, 32), batch_size=16, fingerprint=encoder.fingerprint
    )
    assert set(encoded.columns()) == {"doc_id", column(encoder.check_view((2, 8))), "view_4x32"}
    via_ray = Retriever.from_vector_batches(
        encoder,
        (2, 8),
        (4, 32),
        vector_batches(encoded, (2, 8), (4, 32), batch_size=7),
        backend=FaissOptions(fine_dtype="float32"),
    )
    direct = Retriever.build(
        dict(zip(ids, texts)),
        coarse=(2, 8),
        fine=(4, 32),
        model=encoder,
        backend=FaissOptions(fine_dtype="float32"),
        hybrid=False,
    )
    order = [via_ray.ids.row(d) for d in direct.doc_ids]  # Ray may hand batches back in any order
    np.testing.assert_allclose(
        via_ray.backend.fine_store.vectors[order], direct.backend.fine_store.vectors, atol=1e-5
    )
    for q in texts[:3]:
        assert [h.doc_id for h in via_ray.search(q, k=5)] == [h.doc_id for h in direct.search(q, k=5)]


def test_ray_workers_with_other_weights_are_refused(local_ray, tmp_path):
    from adaptive_retrieval.distributed import encode_with_ray

    make_model("bert", n_layers=2).save_pretrained(tmp_path / "model")
    make_tokenizer().save_pretrained(tmp_path / "model")
    ds = ray.data.from_items([{"doc_id": "a", "text": "some text"}])
    with pytest.raises(Exception, match="not the 000000000000"):
        encode_with_ray(ds, tmp_path / "model", (1, 8), (2, 32), fingerprint="0" * 64).materialize()
    with pytest.raises(ValueError, match="no column 'body'"):
        encode_with_ray(ds, tmp_path / "model", (1, 8), (2, 32), text_column="body")
