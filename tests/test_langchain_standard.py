"""LangChain's own standard test suites (langchain-tests), run on our LangChain retriever and vector store."""

from __future__ import annotations

import functools

import pytest

pytest.importorskip("langchain_core")
integration = pytest.importorskip("langchain_tests.integration_tests")

from adaptive_retrieval import Retriever  # noqa: E402
from adaptive_retrieval.integrations.langchain import LangChainRetriever  # noqa: E402
from adaptive_retrieval.integrations.langchain_store import AdaptiveRetrievalVectorStore  # noqa: E402
from tests.helpers import QUERIES, make_encoder, random_texts  # noqa: E402


@functools.cache
def stored_retriever() -> Retriever:
    """One small index that stores texts, built once for the suite (the standard tests construct the
    LangChain retriever anew for each test, around it)."""
    corpus = {f"d{i}": {"title": f"doc {i}", "text": t} for i, t in enumerate(random_texts(40, seed=21))}
    return Retriever.build(
        corpus, coarse=(2, 16), fine=(4, 32), model=make_encoder(), store_text=True, adapt=False
    )


class TestLangChainRetrieverStandard(integration.RetrieversIntegrationTests):
    @property
    def retriever_constructor(self) -> type[LangChainRetriever]:
        return LangChainRetriever

    @property
    def retriever_constructor_params(self) -> dict:
        return {"retriever": stored_retriever(), "k": 4}

    @property
    def retriever_query_example(self) -> str:
        return QUERIES[0]


def test_per_call_arguments_are_honoured_or_refused():
    lc = stored_retriever().as_langchain(k=4)
    assert len(lc.invoke(QUERIES[1], k=2)) == 2 and len(lc.invoke(QUERIES[1])) == 4
    assert len(lc.invoke(QUERIES[1], k=3, candidates=5)) == 3
    assert len(lc.invoke(QUERIES[1], verbose=True)) == 4  # LangChain's own keyword, not a search's
    only = lc.invoke(QUERIES[1], k=10, filter={"title": "doc 1"})  # the document's own fields
    assert [d.metadata["title"] for d in only] == ["doc 1"]
    with pytest.raises(ValueError, match="filter field 'colour': no document has it"):
        lc.invoke(QUERIES[1], filter={"colour": "red"})
    with pytest.raises(ValueError, match="unknown search parameter 'colour'|takes no search parameters"):
        lc.invoke(QUERIES[1], colour="blue")
    with pytest.raises(ValueError, match="k must be a positive int"):
        lc.invoke(QUERIES[1], k=0)


@pytest.fixture(scope="module")
def minilm():
    from adaptive_retrieval import Encoder

    return Encoder.from_pretrained("minilm-l6")


class TestLangChainVectorStoreStandard(integration.VectorStoreIntegrationTests):
    @pytest.fixture
    def vectorstore(self, minilm):  # an empty store per test, made in one call
        return AdaptiveRetrievalVectorStore(model=minilm, coarse=(3, 64))


def test_the_vector_store_filters_and_refuses_what_it_cannot_honour(minilm):
    store = AdaptiveRetrievalVectorStore.from_texts(
        ["ls lists directory contents", "cp copies files", "ssh logs in remotely"],
        metadatas=[{"section": 1}, {"section": 1}, {"section": 8}],
        ids=["ls", "cp", "ssh"],
        model=minilm,
        coarse=(3, 64),
    )
    found = store.similarity_search_with_score("list the files in a folder", k=3, filter={"section": 1})
    assert found[0][0].id == "ls" and {d.id for d, _ in found} == {"ls", "cp"}
    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"section": 8}})
    assert [d.id for d in retriever.invoke("remote login")] == ["ssh"]
    with pytest.raises(ValueError, match="embeds with its own model"):
        AdaptiveRetrievalVectorStore.from_texts(
            ["a"], embedding=integration.VectorStoreIntegrationTests.get_embeddings()
        )
    with pytest.raises(ValueError, match="takes no option 'colour'"):
        store.add_texts(["x"], colour="red")
    with pytest.raises(ValueError, match="ids has 1 entries for 2 texts"):
        store.add_texts(["x", "y"], ids=["x"])
    with pytest.raises(ValueError, match="filter field 'colour'"):
        store.similarity_search("x", filter={"colour": "red"})
    assert store.get_by_ids(["ssh", "nope"])[0].metadata == {"section": 8}
