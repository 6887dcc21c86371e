"""The index writer's transaction, the id map, and engine options given the new and the old way."""

from __future__ import annotations

import warnings

import pytest

from adaptive_retrieval import FaissOptions, Retriever, backends
from adaptive_retrieval.backends import engine_options
from adaptive_retrieval.errors import CorpusError, IndexDamaged, InvalidArgument
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


class InterruptedLock(ReadWriteLock):
    """A lock whose write side is interrupted while waiting (Ctrl-C while searches finish)."""

    def write(self):  # type: ignore[override]
        raise KeyboardInterrupt


def test_an_interrupt_while_waiting_for_the_lock_rolls_back_every_participant():
    log: list = []
    with pytest.raises(KeyboardInterrupt):
        Transaction(InterruptedLock(), [Store(log, "a"), Store(log, "b")]).commit()
    assert log[-2:] == [("a", "rollback"), ("b", "rollback")]


def test_the_id_map_undoes_a_commit_and_a_half_done_one():
    ids = IdMap(["a"], key=str.upper)
    ids.stage(["b", "c"])
    ids.commit()
    ids.rollback(committed=True)  # a later store of the transaction failed
    assert list(ids.ids) == ["a"] and "b" not in ids and ids.row_of_key("B") is None and ids.stage(["b"]) == 1
    ids.rollback()
    ids.stage(["d", "e"])
    ids._row["d"] = 1  # a commit interrupted after its first step
    ids._row_of_key["D"] = 1
    ids.rollback()
    assert list(ids.ids) == ["a"] and "d" not in ids and ids.row_of_key("D") is None
    ids.stage([])  # a write that staged nothing rolls back nothing
    ids.rollback()
    assert list(ids.ids) == ["a"]


def test_an_engine_failing_its_commit_leaves_ids_and_rows_as_they_were(tiny_encoder, monkeypatch):
    texts = random_texts(20, seed=5)
    r = Retriever.build(texts, model=tiny_encoder, coarse=(2, 16), fine=(4, 32), adapt=False)
    before = [h.doc_id for h in r.search(texts[3])]

    def refuse() -> None:
        raise RuntimeError("engine commit failed")

    monkeypatch.setattr(r.backend, "commit", refuse)
    with pytest.raises(RuntimeError, match="engine commit failed"):
        r.add({"new": "a new document about cells"})
    monkeypatch.undo()
    assert len(r) == len(r.backend) == 20 and "new" not in r.ids and len(r.backend.fine_store) == 20
    assert [h.doc_id for h in r.search(texts[3])] == before
    r.add({"new": "a new document about cells"})  # the same id goes in afterwards
    assert len(r) == 21 and r.ids.row("new") == 20


def test_a_saved_index_with_a_repeated_id_is_refused_as_damaged_and_closed(tiny_encoder, tmp_path):
    import json

    r = Retriever.build(
        random_texts(6, seed=6), model=tiny_encoder, coarse=(2, 16), fine=(4, 32), adapt=False
    )
    r.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    ids_file = tmp_path / "idx" / manifest["files"]["ids"]
    ids_file.write_text(json.dumps([0, 1, 2, 3, 4, 4]))  # the same size, so only the ids are wrong
    with pytest.raises(IndexDamaged, match="'4' is already|4 is already"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder, verify=False)
