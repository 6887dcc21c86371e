"""training/train.py end to end on a tiny model and tiny data: outputs load, resume is exact, LoRA works."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from adaptive_retrieval import Encoder
from tests.helpers import make_model, make_tokenizer, random_texts
from training.data import dev_query_ids, scifact_train
from training.train import main, schedule


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    sci = root / "data" / "beir" / "scifact"
    (sci / "qrels").mkdir(parents=True)
    texts = random_texts(40, seed=4)
    with open(sci / "corpus.jsonl", "w") as fh:
        for i in range(20):
            fh.write(json.dumps({"_id": str(100 + i), "title": texts[i], "text": texts[20 + i]}) + "\n")
    with open(sci / "queries.jsonl", "w") as fh, open(sci / "qrels" / "train.tsv", "w") as qr:
        qr.write("query-id\tcorpus-id\tscore\n")
        for q in range(1, 11):
            fh.write(json.dumps({"_id": str(q), "text": texts[q]}) + "\n")
            qr.write(f"{q}\t{100 + q}\t1\n")
        fh.write(json.dumps({"_id": "999", "text": "a test query that training must never see"}) + "\n")
    stsb = root / "data" / "sts" / "stsbenchmark"
    stsb.mkdir(parents=True)
    with open(stsb / "sts-train.csv", "w") as fh:
        for i in range(12):
            fh.write(f"g\tf\ty\t{i}\t{i % 5}.0\t{texts[i]}\t{texts[i + 1]}\n")
    model_dir = root / "base"
    make_model("bert", n_layers=4).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    return root, model_dir


def run(setup, out, *extra):
    root, model_dir = setup
    return main(
        [
            "--base",
            str(model_dir),
            "--data",
            "scifact-train",
            "scifact-titles",
            "stsb",
            "--data-dir",
            str(root / "data"),
            "--out",
            str(out),
            "--steps",
            "4",
            "--batch-size",
            "4",
            "--checkpoint-every",
            "2",
            "--warmup",
            "1",
            "--lr",
            "1e-3",
            "--dims",
            "8",
            "16",
            *extra,
        ]
    )


def test_train_saves_a_model_both_libraries_load(setup, tmp_path):
    target = run(setup, tmp_path / "run")
    enc = Encoder.from_pretrained(str(target))
    base = Encoder.from_pretrained(str(setup[1]))
    assert enc.fingerprint != base.fingerprint  # it learned something
    assert (enc.pooling, enc.n_layers) == ("mean", 4)
    meta = json.loads((target / "adaptive_retrieval_training.json").read_text())
    assert (
        meta["objective"] == "2dmse" and meta["steps"] == 4 and meta["base_fingerprint"] == base.fingerprint
    )
    assert meta["scifact_test_used"] is False
    assert meta["data"][0]["scifact_dev_query_ids"] == dev_query_ids(setup[0] / "data", 0.1, seed=42)
    st = pytest.importorskip("sentence_transformers")
    peer = st.SentenceTransformer(str(target), device="cpu")
    texts = random_texts(3, seed=9)
    np.testing.assert_allclose(peer.encode(texts), enc.encode(texts)[(4, 32)], atol=1e-5)
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-2", "step-4"]


def test_resume_continues_exactly(setup, tmp_path):
    first = run(setup, tmp_path / "a")
    resumed_dir = tmp_path / "b"
    shutil.copytree(tmp_path / "a", resumed_dir)
    shutil.rmtree(resumed_dir / "model")
    shutil.rmtree(resumed_dir / "checkpoints" / "step-4")  # as if the run died after step 2
    state = resumed_dir / "checkpoints" / "step-2" / "trainer_state.json"
    assert json.loads(state.read_text())["seconds_total"] > 0
    # say the first 2 steps took 1000 s (as over a session that ended): the total must carry them on
    state.write_text(json.dumps({**json.loads(state.read_text()), "seconds_total": 1000.0}))
    second = run(setup, resumed_dir, "--resume")
    assert Encoder.from_pretrained(str(second)).fingerprint == Encoder.from_pretrained(str(first)).fingerprint
    record = json.loads((second / "adaptive_retrieval_training.json").read_text())
    assert abs(record["wall_seconds_total"] - (1000.0 + record["wall_seconds_last_run"])) < 0.11
    with pytest.raises(SystemExit, match="already holds checkpoints"):
        run(setup, resumed_dir)
    metadata = (second / "adaptive_retrieval_training.json").read_bytes()
    assert run(setup, resumed_dir, "--resume") == second  # a finished run resumed: nothing to do
    assert (second / "adaptive_retrieval_training.json").read_bytes() == metadata  # its record kept as it was


def test_lora_trains_an_adapter(setup, tmp_path):
    target = run(setup, tmp_path / "lora", "--lora", "--lora-r", "4", "--teacher-weight", "0.5")
    assert (tmp_path / "lora" / "adapter" / "adapter_model.safetensors").is_file()
    enc = Encoder.from_pretrained(str(target))
    assert enc.fingerprint != Encoder.from_pretrained(str(setup[1])).fingerprint
    assert json.loads((target / "adaptive_retrieval_training.json").read_text())["lora"]["r"] == 4


def test_schedule_is_deterministic_and_mixes_recipes(setup):
    root, _ = setup
    sets = [scifact_train(root / "data", 0.1, 0), scifact_train(root / "data", 0.1, 0)]
    a, b = schedule(sets, 20, 3, seed=1), schedule(sets, 20, 3, seed=1)
    assert a == b and {r for r, _ in a} == {0, 1} and all(len(rows) == 3 for _, rows in a)


def test_dev_split_is_held_out_and_scored_by_beir_eval(setup, tmp_path):
    root, _ = setup
    dev = dev_query_ids(root / "data", 0.2, seed=0)
    assert len(dev) == 2
    train_queries = set(scifact_train(root / "data", 0.2, 0).a)
    corpus_q = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (root / "data" / "beir" / "scifact" / "queries.jsonl").read_text().splitlines()
    }
    assert not {corpus_q[q] for q in dev} & train_queries
    assert corpus_q["999"] not in train_queries
    from evals.beir_eval import load_split

    _, queries, qrels = load_split(root / "data", "scifact", "dev", dev_fraction=0.2, dev_seed=0)
    assert sorted(queries) == sorted(dev) and sorted(qrels) == sorted(dev)


def test_beir_eval_refuses_a_dev_split_the_model_trained_on(setup, tmp_path):
    from evals.beir_eval import check_dev_split, held_out_ids

    trained = run(setup, tmp_path / "run")  # --seed 42, --dev-fraction 0.1: one of the 10 queries held out
    held = held_out_ids(str(trained))
    assert held == dev_query_ids(setup[0] / "data", 0.1, seed=42)
    check_dev_split([str(trained)], held)  # its own dev split: fine
    other = dev_query_ids(setup[0] / "data", 0.1, seed=7)
    assert other != held
    with pytest.raises(SystemExit, match="has seen some of them"):
        check_dev_split([str(trained)], other)
    check_dev_split([str(setup[1])], other)  # an untrained base has no dev split to clash with


def test_peer_objective_trains_the_same_model_object(setup, tmp_path):
    pytest.importorskip("sentence_transformers")
    root, model_dir = setup
    common = [
        "--base",
        str(model_dir),
        "--data-dir",
        str(root / "data"),
        "--steps",
        "3",
        "--batch-size",
        "4",
        "--checkpoint-every",
        "3",
        "--warmup",
        "1",
        "--lr",
        "1e-3",
        "--dims",
        "8",
        "16",
        "--lora",
    ]
    target = main(
        [
            *common,
            "--data",
            "scifact-train",
            "scifact-titles",
            "--objective",
            "st-matryoshka2d",
            "--out",
            str(tmp_path / "peer"),
        ]
    )
    meta = json.loads((target / "adaptive_retrieval_training.json").read_text())
    assert meta["objective"] == "st-matryoshka2d" and "sentence-transformers" in meta["objective_impl"]
    # the metadata records the peer's own loss settings (its KL temperature), not our objective's
    assert sorted(meta["loss"]["matryoshka_dims"]) == [8, 16, 32] and meta["loss"]["kl_temperature"] == 0.3
    trained, base = Encoder.from_pretrained(target), Encoder.from_pretrained(model_dir)
    texts = random_texts(3, seed=9)
    moved = np.abs(trained.encode(texts, [(4, 32)])[(4, 32)] - base.encode(texts, [(4, 32)])[(4, 32)]).max()
    assert moved > 1e-4  # the LoRA weights the peer's loss trained were merged and saved
    with pytest.raises(SystemExit, match="takes \\(query, positive\\) recipes only; drop stsb"):
        main([*common, "--data", "stsb", "--objective", "st-matryoshka2d", "--out", str(tmp_path / "bad")])
