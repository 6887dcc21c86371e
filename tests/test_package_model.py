"""training/package_model.py: the rebuilt training command, and the provenance beside the artifact."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from training import package_model, train


def fake_run(tmp_path: Path, argv: list[str]) -> Path:
    run = tmp_path / "run"
    (run / "adapter").mkdir(parents=True)
    (run / "model").mkdir()
    args = train.parse_args(argv)
    (run / "run_args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}))  # as train.py
    (run / "adapter" / "adapter_config.json").write_text("{}")
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights")
    (run / "model" / "adaptive_retrieval_training.json").write_text(json.dumps({"seed": 7}))
    return run


def test_rebuilt_command_parses_to_the_same_arguments(tmp_path):
    argv = [
        "--base",
        "mpnet-base",
        "--data",
        "scifact-train",
        "scifact-titles",
        "--steps",
        "100",
        "--lora",
        "--layers",
        "2",
        "4",
        "--dims",
        "32",
        "64",
        "--teacher-weight",
        "1.0",
        "--out",
        str(tmp_path / "run"),
    ]
    run = fake_run(tmp_path, argv)
    command = package_model.train_command(run)
    assert command.startswith("python -m training.train ")
    assert vars(train.parse_args(shlex.split(command)[3:])) == vars(train.parse_args(argv))
    assert "--data-dir" not in command  # the default is a path on this machine: left to the default
    other = package_model.train_command(
        fake_run(tmp_path / "b", [*argv, "--data-dir", str(tmp_path / "data")])
    )
    assert f"--data-dir {tmp_path / 'data'}" in other  # any other folder is part of the command


KEYS = ("kind", "coarse", "fine", "candidates", "ndcg@10", "recall@100")
ROWS = [  # an eval's rows: one exact view, the @100 funnel, and an @500 funnel that must not be picked
    dict(zip(KEYS, ("exact", None, [4, 64], None, 0.5, 0.9))),
    dict(zip(KEYS, ("funnel", [4, 64], [12, 768], 100, 0.6, 0.7))),
    dict(zip(KEYS, ("funnel", [4, 64], [12, 768], 500, 0.7, 0.8))),
]


def test_provenance_lists_files_commands_and_scores(tmp_path):
    run = fake_run(tmp_path, ["--out", str(tmp_path / "run"), "--lora"])
    (tmp_path / "results.json").write_text(json.dumps({"rows": ROWS}))
    out = package_model.main(
        ["--run", str(run), "--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "pkg")]
    )
    prov = json.loads((out / "provenance.json").read_text())
    assert set(prov["files"]) == {"adapter_config.json", "adapter_model.safetensors"}
    assert prov["files"]["adapter_model.safetensors"]["bytes"] == len(b"weights")
    assert prov["training"] == {"seed": 7} and prov["commands"][0].startswith("python -m training.train")
    assert [r["ndcg@10"] for r in prov["scifact_test"]["rows"]] == [0.5, 0.6]  # the @100 funnel, not @500


def test_heads_only_package_carries_the_fit_provenance(tmp_path):
    heads = tmp_path / "heads"
    heads.mkdir()
    (heads / package_model.HEADS_FILE).write_bytes(b"heads")
    (heads / "provenance.json").write_text(json.dumps({"command": "python -m training.fit_coarse_head -x"}))
    (tmp_path / "results.json").write_text(json.dumps({"rows": ROWS}))
    argv = [
        "--heads",
        str(heads),
        "--results",
        str(tmp_path / "results.json"),
        "--out",
        str(tmp_path / "pkg"),
    ]
    prov = json.loads((package_model.main(argv) / "provenance.json").read_text())
    assert set(prov["files"]) == {package_model.HEADS_FILE} and "training" not in prov
    assert "notes" not in prov
    note = "trained over 2 sessions: 10 min, then 20 min"
    noted = json.loads((package_model.main([*argv, "--note", note]) / "provenance.json").read_text())
    assert noted["notes"] == [note]
    assert noted["commands"][1].endswith(f" --note '{note}'")  # its command gives the same provenance again
    assert prov["commands"][0] == "python -m training.fit_coarse_head -x"
    assert prov["commands"][1].startswith("python -m training.package_model --heads ")
    with pytest.raises(SystemExit):  # neither an adapter nor heads
        package_model.main(["--results", str(tmp_path / "results.json"), "--out", str(tmp_path / "x")])
    with pytest.raises(SystemExit, match="holds no coarse_heads"):
        package_model.main(["--heads", str(tmp_path), *argv[2:]])
