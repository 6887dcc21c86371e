"""The index writer's transaction, the id map, and engine options given the new and the old way."""

from __future__ import annotations

import warnings

import pytest

from adaptive_retrieval import FaissOptions, Retriever, backends
from adaptive_retrieval.backends import engine_options
from adaptive_retrieval.errors import CorpusError, InvalidArgument
from adaptive_retrieval.ids import IdMap
from adaptive_retrieval.locks import ReadWriteLock
from adaptive_retrieval.writer import Transaction
from tests.helpers import random_texts


class Store:
    """A participant that records what the transaction asked of it, and can be made to fail."""

    def __init__(self, log: list, name: str, fail: str | None = None) -> None:
        self.log, self.name, self.fail = log, name, fail

    def _step(self, step: str) -> None:
        self.log.append((self.name, step))
        if self.fail == step:
            raise RuntimeError(f"{self.name} failed to {step}")

    def prepare(self) -> None:
        self._step("prepare")

    def commit(self) -> None:
        self._step("commit")

    def rollback(self, committed: bool) -> None:
        self.log.append((self.name, "undo commit" if committed else "rollback"))


@pytest.mark.parametrize(
    ("fail", "undone"),
    [
        ("prepare", ["rollback", "rollback", "rollback"]),
        ("commit", ["undo commit", "rollback", "rollback"]),  # b fails: a had committed, c had not
    ],
)
def test_a_failing_participant_rolls_back_every_one_committed_or_not(fail, undone):
    log: list = []
    stores = [Store(log, "a"), Store(log, "b", fail), Store(log, "c")]
    after = []
    with pytest.raises(RuntimeError, match=f"b failed to {fail}"):
        Transaction(ReadWriteLock(), stores, after=lambda: after.append(1)).commit()
    assert [step for _, step in log[-3:]] == undone and [n for n, _ in log[-3:]] == ["a", "b", "c"]
    assert not after  # nothing runs after a failed commit


def test_a_transaction_commits_every_participant_in_order_then_runs_after():
    log: list = []
    after = []
    Transaction(ReadWriteLock(), [Store(log, "a"), Store(log, "b")], after=lambda: after.append(1)).commit()
    assert log == [("a", "prepare"), ("b", "prepare"), ("a", "commit"), ("b", "commit")] and after == [1]


def test_the_id_map_stages_commits_and_rolls_back():
    ids = IdMap(["a", "b"])
    assert len(ids) == 2 and ids.row("b") == 1 and ids.row("z") is None and ids[0] == "a"
    assert ids.stage(["c", "d"]) == 2 and "c" not in ids  # staged: not visible
    with pytest.raises(CorpusError, match="'c' is already in the index"):
        ids.stage(["e", "c"])
    assert list(ids.staged) == ["c", "d"]
    ids.commit()
    assert list(ids.ids) == ["a", "b", "c", "d"] and ids.row("d") == 3 and not ids.staged
    ids.stage(["e"])
    ids.rollback()
    assert len(ids) == 4 and "e" not in ids and ids.stage(["e"]) == 4


def test_engine_options_new_and_deprecated_spellings_build_the_same_index(tiny_encoder, monkeypatch):
    texts = random_texts(30, seed=3)
    views = {"coarse": (2, 16), "fine": (4, 32)}
    new = Retriever.build(
        texts, model=tiny_encoder, backend=FaissOptions(index="HNSW16"), adapt=False, **views
    )
    monkeypatch.setattr(backends, "_LEGACY_WARNED", set())  # warned once per name and process
    with pytest.warns(DeprecationWarning, match="index= is deprecated"):
        engine_options("faiss", None, {"index": "HNSW16"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = Retriever.build(texts, model=tiny_encoder, index="HNSW16", adapt=False, **views)
    assert new.backend.describe() == old.backend.describe() == "HNSW16"
    assert [h.doc_id for h in new.search(texts[0])] == [h.doc_id for h in old.search(texts[0])]
    dict_form = Retriever.build(
        texts, model=tiny_encoder, backend_options={"index": "HNSW16"}, adapt=False, **views
    )
    assert dict_form.backend.describe() == "HNSW16"
    with pytest.raises(InvalidArgument, match="fine_dtype='float8' is not supported"):
        FaissOptions(fine_dtype="float8")


def test_a_dropped_retriever_is_freed_at_once(tiny_encoder):
    """No reference cycle holds a retriever (and its engine's files or client) past its last use."""
    import weakref

    r = Retriever.build(random_texts(10, seed=4), model=tiny_encoder, coarse=(2, 16), fine=(4, 32))
    gone = weakref.ref(r)
    del r
    assert gone() is None
