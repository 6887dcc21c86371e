"""Package a trained LoRA adapter and/or coarse heads as a small artifact with its provenance.

    python -m training.package_model --run runs/mpnet-2dmse-lora --heads runs/mpnet-2dmse-heads \
        --results results/scifact-2dmse-heads/results.json --out adaptive_retrieval/trained/mpnet-base-2dmse
    python -m training.package_model --heads runs/mpnet-base-heads-distil \
        --results results/scifact-heads-distil/results.json --out adaptive_retrieval/trained/mpnet-base-heads

Copies ``adapter_config.json`` and ``adapter_model.safetensors`` from ``RUN/adapter`` and
``coarse_heads.safetensors`` from ``--heads`` (either may be left out, not both) into ``--out``, and
writes ``provenance.json`` beside them:
the commands that reproduce every file, the training metadata (base model hash, objective, data with the
held-out dev query ids, steps, seed, git commit, machine, wall time), each file's size and sha256, and
the SciFact test numbers the packaged model scored (from ``--results``, an ``evals/beir_eval.py`` output),
and any ``--note`` (a fact those records cannot hold).
Nothing but these small files is written: the full model never enters the repository.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import shlex
import shutil
from pathlib import Path

from training.train import DEFAULT_DATA_DIR

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
HEADS_FILE = "coarse_heads.safetensors"
KEY_ROWS = (
    ("exact", None, (4, 64)),
    ("exact", None, (6, 128)),
    ("exact", None, (8, 256)),
    ("exact", None, (12, 768)),
    ("funnel", (4, 64), (12, 768)),
)


def train_command(run: Path) -> str:
    """The ``training/train.py`` command of a run, rebuilt from its ``run_args.json``."""
    args = json.loads((run / "run_args.json").read_text())
    parts = ["python -m training.train"]
    for key, value in args.items():
        flag = "--" + key.replace("_", "-")
        if key in ("resume",) or value in ("None", "False"):
            continue
        if key == "data_dir" and Path(value) == DEFAULT_DATA_DIR:
            continue  # the default (../shared/data beside the checkout) is this machine's absolute path
        if value == "True":
            parts.append(flag)
            continue
        try:
            parsed = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            parsed = value
        parts.append(
            f"{flag} {' '.join(map(str, parsed))}" if isinstance(parsed, list) else f"{flag} {value}"
        )
    return " ".join(parts)


def key_numbers(results: Path) -> list[dict]:
    rows = json.loads(results.read_text())["rows"]
    out = []
    for kind, coarse, fine in KEY_ROWS:
        for r in rows:
            r_coarse = tuple(r["coarse"]) if r["coarse"] else None
            same = r["kind"] == kind and r_coarse == coarse and tuple(r["fine"]) == fine
            if same and (kind == "exact" or r["candidates"] == 100):
                out.append(
                    {k: r[k] for k in ("kind", "coarse", "fine", "candidates", "ndcg@10", "recall@100")}
                )
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a training/train.py --lora output folder")
    ap.add_argument("--heads", type=Path, help="a training/fit_coarse_head.py output folder")
    ap.add_argument(
        "--results", type=Path, required=True, help="evals/beir_eval.py results.json of this model"
    )
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--note",
        action="append",
        default=[],
        help="a fact the records above cannot hold (e.g. the training time of a run resumed over sessions "
        "before checkpoints counted it); repeatable, kept under 'notes'",
    )
    args = ap.parse_args(argv)
    if args.run is None and args.heads is None:
        ap.error("give --run (a LoRA adapter), --heads (coarse heads), or both")
    if args.heads and not (args.heads / HEADS_FILE).is_file():
        raise SystemExit(
            f"{args.heads} holds no {HEADS_FILE}; fit it with python -m training.fit_coarse_head"
        )
    if args.run:
        adapter = args.run / "adapter"
        missing = [str(adapter / f) for f in ADAPTER_FILES if not (adapter / f).is_file()]
        if missing:
            raise SystemExit(
                f"{args.run} holds no LoRA adapter (missing {', '.join(missing)}); train with --lora"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    files, provenance = [], {"commands": []}
    if args.run:
        files += [shutil.copy2(args.run / "adapter" / f, args.out / f) for f in ADAPTER_FILES]
        provenance["commands"].append(train_command(args.run))
        provenance["training"] = json.loads(
            (args.run / "model" / "adaptive_retrieval_training.json").read_text()
        )
    if args.heads:
        files.append(shutil.copy2(args.heads / HEADS_FILE, args.out / HEADS_FILE))
        heads = json.loads((args.heads / "provenance.json").read_text())
        provenance["commands"].append(heads["command"])
        provenance["heads"] = heads
    provenance["commands"].append(
        "python -m training.package_model"
        + (f" --run {args.run}" if args.run else "")
        + (f" --heads {args.heads}" if args.heads else "")
        + f" --results {args.results} --out {args.out}"
        + "".join(f" --note {shlex.quote(n)}" for n in args.note)
    )
    provenance["files"] = {
        Path(f).name: {"bytes": Path(f).stat().st_size, "sha256": sha256(Path(f))} for f in files
    }
    provenance["scifact_test"] = {
        "results": str(args.results),
        "note": "SciFact test queries and qrels were not used in training, fitting or selection. What was: "
        "the data listed under 'training' (its dev split held out) and under 'heads', whichever this package "
        "has; where that includes the corpus text (title -> abstract pairs, the heads' fit), it is "
        "unsupervised adaptation on the corpus these numbers are measured on",
        "rows": key_numbers(args.results),
    }
    if args.note:
        provenance["notes"] = args.note
    (args.out / "provenance.json").write_text(json.dumps(provenance, indent=2))
    total = sum(v["bytes"] for v in provenance["files"].values())
    print(f"packaged {len(files)} files, {total / 1e6:.1f} MB, into {args.out}")
    return args.out


if __name__ == "__main__":
    main()
