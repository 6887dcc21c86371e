"""Kill a process with SIGKILL while it saves an index, again and again; the index must load whole.

    python -m benchmarks.crash_save --kills 50 --out results/crash-save.json
    python -m benchmarks.crash_save --churn --kills 50 --out docs/results/crash-save-churn/results.json

The parent saves an index of 2,000 random unit vectors (``minilm-l6``'s views 2x64 and 6x384); each
child process loads it, then loops: ``add_vectors`` 500 more documents, ``save`` to the same directory,
print the saved count. The parent kills it with SIGKILL after a random delay, then loads the directory
with ``verify="full"`` (every byte hashed) and checks that it holds exactly a count the child had
saved before (or the one it was saving: the new generation is whole once its manifest is in place),
and that its vectors (every coarse row, the last fine ones) are the ones saved under that count (``--index``:
the coarse index, default the library's SQ8; ``Flat`` grows in shards, a file each). Prints
the kill points and the outcome.

``--churn``: each step of the child also upserts 100 documents (new vectors for known ids), deletes 50 and
lets compaction run when it is due (dead rows at 15%), then saves (``--engine qdrant``: in a Qdrant
local-mode collection, where every write commits to the engine, so the loaded index must hold the state
after some write, add, upsert or delete, not only after a save; each child reopens it with
``drop_uncommitted``, the only writer); the parent replays the steps (:func:`churn_state`) and
checks that the loaded index holds exactly the documents of a step the child had saved (or was saving),
with that step's vectors (every document the step wrote, 600 others at random).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, FaissOptions, MilvusOptions, QdrantOptions, Retriever
from adaptive_retrieval.reporting import settings

COARSE, FINE, START, STEP = (2, 64), (6, 384), 2000, 500


def vectors(first: int, n: int, dim: int, salt: int) -> np.ndarray:
    """Deterministic unit vectors of documents ``first .. first + n`` (so any count can be re-derived)."""
    rows = [
        np.random.default_rng(salt * 10_000_000 + i).standard_normal(dim) for i in range(first, first + n)
    ]
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


UPSERTS, DELETES = 100, 50


def coarse_atol(r: Retriever) -> float:
    """How far a coarse row read back may be from the one added: float32 rows exactly; an int8 coded
    index (SQ8, the default) within its decoding (half a step of 2/255) and re-normalisation."""
    return 1e-6 if r.backend.coarse_index.is_flat() else 2 / 255


def versioned(doc_ids: list[int], versions: list[int], dim: int, salt: int) -> np.ndarray:
    """Deterministic unit vectors of documents at a version (an upsert's new vectors)."""
    x = np.asarray(
        [np.random.default_rng([salt, d, v]).standard_normal(dim) for d, v in zip(doc_ids, versions)],
        dtype=np.float32,
    )
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def churn_step(step: int) -> tuple[list[int], list[int], list[int]]:
    """Step ``step`` (1, 2, ...) of the churn: the ids it adds, upserts and deletes."""
    added = list(range(START + (step - 1) * STEP, START + step * STEP))
    first = (step * UPSERTS) % START
    upserted = [(first + j) % START for j in range(UPSERTS)]
    return added, upserted, added[:DELETES]


def churn_state(steps: int, writes: int = 3) -> dict[int, int]:
    """The live documents after ``steps`` steps (the last one's first ``writes`` of its three writes: add,
    upsert, delete): id -> the version of its vectors."""
    state = dict.fromkeys(range(START), 0)
    for step in range(1, steps + 1):
        added, upserted, deleted = churn_step(step)
        last = writes if step == steps else 3
        state.update(dict.fromkeys(added, 0))
        if last >= 2:
            state.update(dict.fromkeys(upserted, step))
        if last >= 3:
            for d in deleted:
                del state[d]
    return state


def churn_child(path: Path) -> None:
    engine = json.loads((path / "manifest.json").read_text())["backend"]["name"]
    keyed = engine != "faiss"  # the only writer: a killed one's leftovers go
    options = {"drop_uncommitted": True} if keyed else None
    r = Retriever.load(path, model=Encoder.from_pretrained("minilm-l6"), backend_options=options)
    r.compact_at = 0.15  # compaction comes due every few steps (dead rows reach 15%), and is saved
    step = step_of(r)
    # an engine commits every write: a killed writer may have left its last step part-done (its add, or
    # its add and upsert): finish it first, so that every state is one the replay knows
    done = next((w for w in (3, 2, 1) if churn_whole(r, step, sample=0, writes=w)), 3) if step else 3
    print(f"ready {step}", flush=True)
    while True:
        if done == 3:
            step, done = step + 1, 0
        added, upserted, deleted = churn_step(step)
        if done < 1:
            r.add_vectors(added, versioned(added, [0] * STEP, 64, 1), versioned(added, [0] * STEP, 384, 2))
        if done < 2:
            v = [step] * UPSERTS
            r.writer.add_batches(
                [(upserted, versioned(upserted, v, 64, 1), versioned(upserted, v, 384, 2))], replace=True
            )
        r.delete(deleted)
        done = 3
        print(f"saving {step}", flush=True)
        r.save(path)
        print(f"saved {step}", flush=True)


def step_of(r: Retriever) -> int:
    """The churn steps an index has been through: each adds ``STEP`` ids after the last (its first ones
    deleted), so the largest id says."""
    return (max(r.ids.live_ids()) + 1 - START) // STEP


def churn_whole(r: Retriever, steps: int, sample: int = 600, writes: int = 3) -> bool:
    """Whether ``r`` holds exactly the documents of the state after ``steps`` steps (the last one's first
    ``writes`` writes), and that state's vectors for every document the last step wrote and ``sample``
    others drawn at random."""
    state = churn_state(steps, writes)
    if set(r.ids.live_ids()) != set(state):
        return False
    added, upserted, _ = churn_step(steps) if steps else ([], [], [])
    others = sorted(set(state) - set(added) - set(upserted))
    rng = np.random.default_rng(steps)
    ids = [d for d in added + upserted if d in state]
    ids += [others[i] for i in rng.choice(len(others), min(sample, len(others)), replace=False)]
    rows = np.array([r.ids.row(d) for d in ids])
    versions = [state[d] for d in ids]
    if r.backend.name != "faiss":  # an engine's stored fine vectors, scored by the expected ones: 1.0 each
        expected = versioned(ids, versions, 384, 2)
        scores = np.concatenate(
            [r.backend.fine_scores(e[None], np.array([[row]])) for e, row in zip(expected, rows)]
        )
        return bool(np.allclose(scores, 1.0, atol=1e-4))
    fine = r.backend.vectors("fine", 0, len(r.ids))[rows]
    coarse = r.backend.vectors("coarse", 0, len(r.ids))[rows]
    return bool(
        np.allclose(fine, versioned(ids, versions, 384, 2), atol=1e-3)
        and np.allclose(coarse, versioned(ids, versions, 64, 1), atol=coarse_atol(r))
    )


def child(path: Path) -> None:
    r = Retriever.load(path, model=Encoder.from_pretrained("minilm-l6"))
    print(f"ready {len(r)}", flush=True)
    while True:
        n = len(r)
        r.add_vectors(list(range(n, n + STEP)), vectors(n, STEP, 64, 1), vectors(n, STEP, 384, 2))
        print(f"saving {len(r)}", flush=True)
        r.save(path)
        print(f"saved {len(r)}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=50)
    ap.add_argument("--dir", type=Path, default=Path("runs/crash-save-index"))
    ap.add_argument("--max-delay", type=float, default=2.0, help="seconds after the child is ready, at most")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--churn", action="store_true", help="each step also upserts and deletes (see above)")
    ap.add_argument(
        "--engine", default="faiss", choices=("faiss", "qdrant", "milvus"), help="with --churn: the engine"
    )
    ap.add_argument(
        "--index", default=FaissOptions.index, help="the FAISS engine's coarse index (default: the library's)"
    )
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        (churn_child if args.churn else child)(args.child)
        return
    import shutil

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.parent.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.from_pretrained("minilm-l6")
    first = list(range(START))
    if args.churn:
        coarse, fine = versioned(first, [0] * START, 64, 1), versioned(first, [0] * START, 384, 2)
    else:
        coarse, fine = vectors(0, START, 64, 1), vectors(0, START, 384, 2)
    storage = args.dir.with_name(f"{args.dir.name}-{args.engine}")  # beside the index folder: the engine's
    shutil.rmtree(storage, ignore_errors=True)
    if args.engine == "qdrant":
        options = QdrantOptions(path=str(storage), collection="churn")
    elif args.engine == "milvus":  # Milvus Lite: one file, the engine embedded in each process
        storage.mkdir(parents=True)
        options = MilvusOptions(uri=str(storage / "churn.db"), collection="churn")
    else:
        options = FaissOptions(index=args.index)
    built = Retriever.from_vectors(encoder, COARSE, FINE, first, coarse, fine, backend=options)
    built.save(args.dir)
    built.close()
    rng = random.Random(args.seed)
    outcomes = []
    for kill in range(args.kills):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                __spec__.name,
                "--child",
                str(args.dir),
                *(["--churn"] if args.churn else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        ready = proc.stdout.readline()  # loaded: from here on it adds and saves
        delay = rng.uniform(0.0, args.max_delay)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out = ready + out
        saved = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saved ")]
        saving = [int(line.split()[1]) for line in out.splitlines() if line.startswith("saving ")]
        before = int(ready.split()[1]) if ready.startswith("ready ") else None
        allowed = set(saved) | set(saving[-1:]) | {before}
        outcome = {"kill": kill, "delay_s": round(delay, 2), "saved": saved[-1:], "saving": saving[-1:]}
        try:
            r = Retriever.load(args.dir, model=encoder, verify="full")
            if args.churn and args.engine != "faiss":  # each write commits to the engine: any write's state
                n = step_of(r)
                whole = any(churn_whole(r, n, writes=w) for w in (1, 2, 3))
                outcome.update(step=n, documents=len(r), whole=bool(whole))
                r.close()
                outcomes.append(outcome)
                print(json.dumps(outcome), flush=True)
                continue
            if args.churn:
                n = step_of(r)
                whole = n in allowed and churn_whole(r, n)
                outcome.update(step=n, documents=len(r), dead=r.ids.dead, whole=bool(whole))
                r.close()
                outcomes.append(outcome)
                print(json.dumps(outcome), flush=True)
                continue
            n = len(r)
            whole = (
                n in allowed
                and n >= START
                and np.allclose(
                    r.backend.vectors("fine", n - STEP, n),
                    vectors(n - STEP, STEP, 384, 2),
                    atol=1e-3,
                )
                and np.allclose(  # the coarse rows too: a Flat index grown by adds is saved in shards
                    r.backend.vectors("coarse", 0, n), vectors(0, n, 64, 1), atol=coarse_atol(r)
                )
            )
            outcome.update(count=n, shards=len(r.backend.coarse_index.shards), whole=bool(whole))
            r.close()
        except Exception as err:  # any failure to load is the finding
            outcome.update(error=f"{type(err).__name__}: {err}", whole=False)
        outcomes.append(outcome)
        print(json.dumps(outcome), flush=True)
    bad = [o for o in outcomes if not o["whole"]]
    mid_save = sum(1 for o in outcomes if o["saving"] and (not o["saved"] or o["saving"][0] > o["saved"][0]))
    print(f"{args.kills} kills ({mid_save} while a save was in progress): {len(bad)} indexes not whole")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(
                {
                    **settings(
                        benchmark="crash_save" + (" --churn" if args.churn else ""),
                        model="minilm-l6's views 2x64 and 6x384 (vectors synthetic: random unit vectors)",
                        labels="none",
                    ),
                    "kills": args.kills,
                    "mid_save": mid_save,
                    "not_whole": len(bad),
                    "outcomes": outcomes,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
