"""Kill a process with SIGKILL while it saves an index, again and again; the index must load whole.

    python -m benchmarks.crash_save --kills 50 --out results/crash-save.json

The parent saves an index of 2,000 random unit vectors (``minilm-l6``'s views 2x64 and 6x384); each
child process loads it, then loops: ``add_vectors`` 500 more documents, ``save`` to the same directory,
print the saved count. The parent kills it with SIGKILL after a random delay, then loads the directory
with ``verify="full"`` (every byte hashed) and checks that it holds exactly a count the child had
saved before (or the one it was saving: the new generation is whole once its manifest is in place),
and that its vectors (every coarse row, the last fine ones) are the ones saved under that count. Prints
the kill points and the outcome.
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

from adaptive_retrieval import Encoder, Retriever
from adaptive_retrieval.reporting import settings

COARSE, FINE, START, STEP = (2, 64), (6, 384), 2000, 500


def vectors(first: int, n: int, dim: int, salt: int) -> np.ndarray:
    """Deterministic unit vectors of documents ``first .. first + n`` (so any count can be re-derived)."""
    rows = [
        np.random.default_rng(salt * 10_000_000 + i).standard_normal(dim) for i in range(first, first + n)
    ]
    x = np.asarray(rows, dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


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
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    import shutil

    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.parent.mkdir(parents=True, exist_ok=True)
    encoder = Encoder.from_pretrained("minilm-l6")
    Retriever.from_vectors(
        encoder, COARSE, FINE, list(range(START)), vectors(0, START, 64, 1), vectors(0, START, 384, 2)
    ).save(args.dir)
    rng = random.Random(args.seed)
    outcomes = []
    for kill in range(args.kills):
        proc = subprocess.Popen(
            [sys.executable, "-m", __spec__.name, "--child", str(args.dir)], stdout=subprocess.PIPE, text=True
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
                    r.backend.vectors("coarse", 0, n), vectors(0, n, 64, 1), atol=1e-6
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
                        command=f"python -m benchmarks.crash_save --kills {args.kills} --seed {args.seed} "
                        f"--max-delay {args.max_delay} --out {args.out}",
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
