"""Compaction of a loaded on-disk index after deletes: the bytes it reclaims and the RAM it takes.

    python -m benchmarks.bench_compact --docs 1000000 --delete 0.3 --out docs/results/compact

The parent writes an index of ``--docs`` documents (``bench_add_rss``'s synthetic unit vectors at
``minilm-l6``'s 2x64 and 6x384 views; float16 fine store on disk; Flat coarse index) and saves it. A fresh
process loads it (the fine store memory-mapped), deletes a share ``--delete`` of the documents (every id
whose last digit is below ``10 * delete``; compaction left off), resets its peak-RSS counter, runs
``compact()``, and reports its peak RSS above its RSS before, beside what must be new: the compacted
coarse index (live rows x 64 x 4 bytes) and the id map; then saves the index over itself and reports the
directory's bytes before and after. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from adaptive_retrieval import Encoder, FaissOptions, Retriever
from adaptive_retrieval.reporting import markdown_table, settings, write_json, write_markdown
from benchmarks.bench_add_rss import COARSE, FINE, batches, status


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file())


def child(index: Path, docs: int, share: float) -> None:
    r = Retriever.load(index, model=Encoder.from_pretrained("minilm-l6"))
    r.compact_at = None
    gone = [i for i in range(docs) if i % 10 < round(share * 10)]
    t0 = time.perf_counter()
    r.delete(gone)
    delete_s = time.perf_counter() - t0
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    before = status("VmRSS")
    t0 = time.perf_counter()
    reclaimed = r.compact()
    compact_s = time.perf_counter() - t0
    peak = status("VmHWM")
    fine_after = r.backend.fine_store.nbytes()
    t0 = time.perf_counter()
    r.save(index)
    save_s = time.perf_counter() - t0
    result = {"deleted": len(gone), "reclaimed_rows": reclaimed, "documents": len(r), "delete_s": delete_s}
    result |= {"rss_before": before, "peak_during_compact": peak, "compact_s": compact_s}
    print(json.dumps(result | {"fine_bytes_after": fine_after, "save_s": save_s}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--delete", type=float, default=0.3, help="share of the documents deleted (tenths)")
    ap.add_argument("--dir", type=Path, default=Path("runs/compact"))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    index = args.dir / "index"
    if args.child:
        child(index, args.docs, args.delete)
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    t0 = time.perf_counter()
    built = Retriever.from_vector_batches(
        Encoder.from_pretrained("minilm-l6"), COARSE, FINE, batches(0, args.docs, 100_000),
        backend=FaissOptions(fine_path=args.dir / "build-fine.npy"),
    )  # fmt: skip
    built.save(index)
    built.close()
    (args.dir / "build-fine.npy").unlink()
    build_s = time.perf_counter() - t0
    bytes_before = folder_bytes(index)
    cmd = [sys.executable, "-m", __spec__.name, "--child", "--dir", str(args.dir), "--docs", str(args.docs)]
    out = subprocess.run([*cmd, "--delete", str(args.delete)], check=True, capture_output=True, text=True)
    row = json.loads(out.stdout.strip().splitlines()[-1])
    live = row["documents"]
    row.update(
        build_s=build_s,
        bytes_before=bytes_before,
        bytes_after=folder_bytes(index),
        peak_above_before=row["peak_during_compact"] - row["rss_before"],
        new_coarse_bytes=live * COARSE[1] * 4,
    )
    print(json.dumps(row, indent=2))
    if args.out:
        header = settings(benchmark="bench_compact", docs=args.docs, delete=args.delete, labels="none")
        write_json(args.out / "results.json", {**header, **row})
        mb = {
            k: row[k] / 2**20
            for k in ("bytes_before", "bytes_after", "peak_above_before", "new_coarse_bytes")
        }
        table = markdown_table(
            [{**row, **mb}],
            [
                ("documents", "documents", ","),
                ("deleted", "deleted", ","),
                ("index MB before", "bytes_before", ".0f"),
                ("after compact + save", "bytes_after", ".0f"),
                ("peak RSS above before, MB", "peak_above_before", ".0f"),
                ("new coarse index, MB", "new_coarse_bytes", ".0f"),
                ("compact s", "compact_s", ".1f"),
            ],
        )
        write_markdown(args.out / "results.md", "Compaction", header, table)


if __name__ == "__main__":
    main()
