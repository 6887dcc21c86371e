from __future__ import annotations

import json
import os
import re
import sys

import numpy as np
import pytest

from adaptive_retrieval import FaissOptions, Retriever
from adaptive_retrieval import storage as storage_module
from adaptive_retrieval.index import FineStore, mapping_of
from tests.helpers import make_encoder, random_texts

QUERY = "vitamin bone fracture risk"


@pytest.fixture()
def built(tiny_encoder, corpus):
    return Retriever.build(
        {f"doc{i}": t for i, t in enumerate(corpus)},
        coarse=(3, 8),
        fine=(12, 32),
        model=tiny_encoder,
        candidates=12,
        backend=FaissOptions(index="HNSW16"),
    )


def ranking(r: Retriever) -> list:
    return [(h.doc_id, round(h.score, 6)) for h in r.search(QUERY, k=10)]


def test_round_trip_restores_everything(built, tiny_encoder, tmp_path):
    built.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert ranking(loaded) == ranking(built)
    assert (loaded.coarse, loaded.fine, loaded.candidates) == (built.coarse, built.fine, 12)
    assert loaded.backend.coarse_index.factory == "HNSW16"
    assert (
        mapping_of(loaded.backend.fine_store.vectors) is not None
        and loaded.backend.fine_store.dtype == "float16"
    )
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert (
        manifest["model"]["fingerprint"] == built.encoder.fingerprint
    )  # the model + the head fitted at build
    assert loaded.encoder.fingerprint == built.encoder.fingerprint != tiny_encoder.fingerprint
    assert manifest["coarse"] == [3, 8] and manifest["metric"] == "inner_product" and manifest["count"] == 60
    assert not [p for p in (tmp_path / "idx").iterdir() if p.suffix in (".pkl", ".pickle")]


def test_saving_again_replaces_the_previous_generation(built, tiny_encoder, tmp_path):
    built.save(tmp_path / "idx")
    built.add({"extra": "cell gene protein"})
    built.save(tmp_path / "idx")
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len(names) == 7, names  # manifest + one generation of six files (head, projection, lexical too)
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 61


def test_loaded_index_can_grow_and_be_saved_over_itself(built, tiny_encoder, tmp_path):
    built.save(tmp_path / "idx")
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    loaded.add({"extra": "cell gene protein"})
    loaded.save(tmp_path / "idx")  # its memory-mapped fine file is replaced underneath it
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 61


def test_a_crash_mid_save_leaves_the_previous_index_whole(built, tiny_encoder, tmp_path, monkeypatch):
    built.save(tmp_path / "idx")
    expected = ranking(built)
    built.add({"extra": "cell gene protein"})

    def crash(self, path, rows=None):
        with open(path, "wb") as fh:
            fh.write(b"half a file")
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(FineStore, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        built.save(tmp_path / "idx")
    monkeypatch.undo()
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(loaded) == 60 and ranking(loaded) == expected
    assert len(list((tmp_path / "idx").iterdir())) == 7  # the half-written file was removed


def test_a_crash_before_the_manifest_swap_leaves_the_previous_index(
    built, tiny_encoder, tmp_path, monkeypatch
):
    built.save(tmp_path / "idx")
    built.add({"extra": "cell gene protein"})
    real_replace = storage_module.os.replace

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(storage_module.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        built.save(tmp_path / "idx")
    monkeypatch.setattr(storage_module.os, "replace", real_replace)
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 60


def test_a_different_model_is_refused(built, tmp_path):
    built.save(tmp_path / "idx")
    with pytest.raises(ValueError, match="does not match the index"):
        Retriever.load(tmp_path / "idx", model=make_encoder(seed=7))
    with pytest.raises(ValueError, match="max_length=32 does not match"):
        Retriever.load(tmp_path / "idx", model=make_encoder(seed=0, max_length=32))


def test_an_unnamed_model_must_be_passed(built, tmp_path):
    built.save(tmp_path / "idx")
    with pytest.raises(ValueError, match="built with model 'tiny-bert', which cannot be found here"):
        Retriever.load(tmp_path / "idx")


def _files(path):
    return json.loads((path / "manifest.json").read_text())["files"]


@pytest.mark.parametrize("which", ["coarse", "fine", "ids", "heads"])
def test_truncated_files_are_refused(built, tiny_encoder, tmp_path, which):
    built.save(tmp_path / "idx")
    f = tmp_path / "idx" / _files(tmp_path / "idx")[which]
    f.write_bytes(f.read_bytes()[:-7])
    with pytest.raises(ValueError, match="damaged.*truncated"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder)


@pytest.mark.parametrize("which", ["coarse", "fine", "ids", "heads"])
def test_altered_files_are_refused(built, tiny_encoder, tmp_path, which):
    built.save(tmp_path / "idx")
    f = tmp_path / "idx" / _files(tmp_path / "idx")[which]
    data = bytearray(f.read_bytes())
    data[-3] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder)


def test_damaged_or_missing_manifest_and_files_are_refused(built, tiny_encoder, tmp_path):
    with pytest.raises(ValueError, match="holds no index"):
        Retriever.load(tmp_path, model=tiny_encoder)
    built.save(tmp_path / "idx")
    (tmp_path / "idx" / _files(tmp_path / "idx")["ids"]).unlink()
    with pytest.raises(ValueError, match="is missing"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder)
    (tmp_path / "idx" / "manifest.json").write_text("{not json")
    with pytest.raises(ValueError, match="manifest.json is damaged"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder)


def test_refuses_to_write_into_a_foreign_directory(built, tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="non-empty directory that holds no index"):
        built.save(tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        built.save(tmp_path / "file")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def _vm_flags(path) -> list[list[str]]:
    """The kernel's VmFlags of each of this process's mappings of ``path`` (Linux)."""
    flags, current = [], None
    with open("/proc/self/smaps") as fh:
        for line in fh:
            if re.match(
                r"^[0-9a-f]+-[0-9a-f]+ ", line
            ):  # a mapping's header: range perms offset dev inode path
                fields = line.split(maxsplit=5)
                current = fields[5].strip() if len(fields) == 6 else None
            elif line.startswith("VmFlags:") and current == str(path):
                flags.append(line.split(":", 1)[1].split())
    return flags


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="reads Linux's /proc/self/smaps")
def test_memory_mapped_fine_vectors_are_advised_for_random_reads(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((3000, 48)).astype(np.float16)
    np.save(tmp_path / "fine.npy", vectors)
    store = FineStore.load(tmp_path / "fine.npy")
    assert mapping_of(store.vectors) is not None and np.array_equal(store.vectors, vectors)
    flags = _vm_flags((tmp_path / "fine.npy").resolve())
    assert flags and all("rr" in f for f in flags)  # rr: MADV_RANDOM, no read-ahead on a fault
    in_ram = FineStore.load(tmp_path / "fine.npy", mmap=False)
    assert mapping_of(in_ram.vectors) is None
    queries = np.random.default_rng(1).standard_normal((3, 48)).astype(np.float32)
    # the exact scan prefetches its blocks of the map; the result equals the in-RAM store's
    for a, b in zip(store.search_exact(queries, 5, block=700), in_ram.search_exact(queries, 5)):
        np.testing.assert_array_equal(a, b)


def test_two_writers_of_one_directory_the_second_save_is_refused_and_its_add_still_works(
    built, tiny_encoder, tmp_path
):
    """Two retrievers load one index; the first adds and saves. The second's add still works (its fine
    rows come from its own map of the replaced generation), and its save is refused rather than
    silently dropping the first one's document; saved elsewhere, or after loading again, it is fine."""
    built.save(tmp_path / "idx")
    first = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    second = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    first.add({"from first": "cell gene protein"})
    first.save(tmp_path / "idx")
    second.add({"from second": "bone risk fracture"})
    assert len(second) == 61 and second.search("bone risk fracture", k=1)[0].doc_id == "from second"
    with pytest.raises(ValueError, match="saved by another writer since this retriever loaded or saved it"):
        second.save(tmp_path / "idx")
    again = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert "from first" in again.doc_ids and len(again) == 61  # nothing of the first writer's lost
    second.save(tmp_path / "elsewhere")
    assert "from second" in Retriever.load(tmp_path / "elsewhere", model=tiny_encoder).doc_ids
    first.add({"more": "virus"})
    first.save(tmp_path / "idx")  # its own last save: no other writer since
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 62
    import shutil

    built.save(tmp_path / "gone")
    shutil.rmtree(tmp_path / "gone")
    built.save(tmp_path / "gone")  # no manifest there now: nothing of anyone's to drop
    assert len(Retriever.load(tmp_path / "gone", model=tiny_encoder)) == 60


def test_a_calibration_outgrown_while_saved_is_dropped_at_load(built, tiny_encoder, tmp_path, caplog):
    cal = built.calibrate(documents=random_texts(60, seed=5), target=0.8)
    built.save(tmp_path / "idx")
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["calibration"]["measured"]["index_documents"] == 60 == cal.documents
    assert Retriever.load(tmp_path / "idx", model=tiny_encoder).calibration == cal
    manifest["calibration"]["measured"]["index_documents"] = 20  # as if other writers had tripled it
    (tmp_path / "idx" / "manifest.json").write_text(json.dumps(manifest))
    with caplog.at_level("WARNING", logger="adaptive_retrieval.calibration"):
        assert Retriever.load(tmp_path / "idx", model=tiny_encoder).calibration is None
    assert "grown from 20 to 60 documents" in caplog.text


def test_add_after_load_grows_on_disk_and_leaves_the_saved_index_alone(tmp_path, tiny_encoder):
    import hashlib

    texts = random_texts(80, seed=21)
    r = Retriever.build(texts[:60], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False)
    r.save(tmp_path / "idx")

    def digests() -> dict[str, str]:
        return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in (tmp_path / "idx").iterdir()}

    saved = digests()
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    loaded.add(texts[60:])
    grow = loaded.backend.fine_store.path
    assert grow is not None and grow.parent == tmp_path / "idx" and grow.name.startswith("grow-")
    assert {k: v for k, v in digests().items() if not k.startswith("grow-")} == saved  # never written
    whole = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False)
    np.testing.assert_allclose(  # two encodings of the same texts: equal to float16 rounding (BLAS
        np.asarray(loaded.backend.fine_store.vectors, np.float32),  # threads vary with the load)
        np.asarray(whole.backend.fine_store.vectors, np.float32),
        atol=1e-3,
    )
    for q in ("cell gene", "bone risk"):
        assert [h.doc_id for h in loaded.search(q, k=5)] == [h.doc_id for h in whole.search(q, k=5)]
    loaded.save(tmp_path / "idx")  # the new generation holds all 80
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 80
    del loaded
    import gc

    gc.collect()
    assert not grow.exists()  # the scratch copy goes with its store


@pytest.mark.skipif(sys.platform == "win32", reason="no liveness check of a process id on Windows")
def test_load_sweeps_the_scratch_copies_of_a_killed_writer(tmp_path, tiny_encoder):
    """A process SIGKILLed while it grew a loaded index leaves its grow-* copies behind; the next load
    removes those of dead processes of this host and leaves the live's, other hosts' and unknown names."""
    import signal
    import subprocess

    from adaptive_retrieval.scratch import scratch_path

    texts = random_texts(40, seed=22)
    Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False).save(
        tmp_path / "idx"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "up"
    fine, kept = scratch_path(tmp_path / "idx" / "x", ".npy"), scratch_path(tmp_path / "idx" / "x", ".npy")
    fine = fine.with_name(fine.name.replace(f"-{os.getpid()}-", f"-{child.pid}-"))
    texts_db = fine.with_name(fine.name.replace("grow-", "grow-texts-").replace(".npy", ".sqlite"))
    pending = fine.with_name(fine.name + ".pending")  # its add's coarse vectors
    other_host = tmp_path / "idx" / f"grow-otherhost-{child.pid}-0123456789ab.npy"
    old_style = tmp_path / "idx" / "grow-0123456789ab.npy"
    for f in (fine, texts_db, pending, kept, other_host, old_style):
        f.write_bytes(b"scratch")
    Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert all(f.exists() for f in (fine, texts_db, pending))  # the writer still runs
    child.send_signal(signal.SIGKILL)
    child.wait()
    loaded = Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert not fine.exists() and not texts_db.exists() and not pending.exists()
    assert kept.exists() and other_host.exists() and old_style.exists()  # this process's; unknown
    loaded.add(random_texts(3, seed=23))
    grow = loaded.backend.fine_store.path
    assert grow.name.startswith("grow-") and f"-{os.getpid()}-" in grow.name


def test_the_default_check_samples_large_files_and_full_hashes_everything(
    tmp_path, tiny_encoder, monkeypatch
):
    texts = random_texts(60, seed=22)
    r = Retriever.build(texts, coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False)
    monkeypatch.setattr(storage_module, "SAMPLE_BYTES", 256)  # recorded in the manifest at save
    r.save(tmp_path / "idx")
    monkeypatch.setattr(storage_module, "SAMPLE_BYTES", 1 << 22)  # a later default does not matter
    manifest = json.loads((tmp_path / "idx" / "manifest.json").read_text())
    assert manifest["sample_bytes"] == 256
    fine = tmp_path / "idx" / manifest["files"]["fine"]
    monkeypatch.setattr(storage_module, "FULL_HASH_LIMIT", 1024)  # the fine store counts as large
    data = bytearray(fine.read_bytes())
    middle = len(data) // 2
    data[middle] ^= 0xFF  # one byte in the middle, outside both samples
    fine.write_bytes(bytes(data))
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder)) == 60  # the sample misses it
    with pytest.raises(ValueError, match="does not match its sha256"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder, verify="full")
    data[middle] ^= 0xFF
    data[-1] ^= 0xFF  # the last vector: inside the sample
    fine.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its sha256"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder)
    assert len(Retriever.load(tmp_path / "idx", model=tiny_encoder, verify=False)) == 60
    with pytest.raises(ValueError, match="verify must be True, False or 'full', got 'fast'"):
        Retriever.load(tmp_path / "idx", model=tiny_encoder, verify="fast")


def test_close_releases_the_maps_and_the_scratch_copy(tmp_path, tiny_encoder):
    texts = random_texts(50, seed=23)
    Retriever.build(texts[:40], coarse=(3, 8), fine=(12, 32), model=tiny_encoder, adapt=False).save(
        tmp_path / "i"
    )
    with Retriever.load(tmp_path / "i", model=tiny_encoder) as r:
        r.add(texts[40:])
        grow = r.backend.fine_store.path
        assert grow.exists() and len(r.search("cell gene", k=3)) == 3
    assert not grow.exists() and mapping_of(r.backend.fine_store.vectors) is None
    for call in (lambda: r.search("cell"), lambda: r.add(["more"]), lambda: r.save(tmp_path / "j")):
        with pytest.raises(RuntimeError, match="this retriever is closed"):
            call()
    r.close()  # twice is harmless
    assert len(Retriever.load(tmp_path / "i", model=tiny_encoder)) == 40  # the saved index is untouched
