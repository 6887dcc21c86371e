"""Peak RSS of adding documents to a loaded on-disk index: does ``add`` read the fine store into RAM?

    python -m benchmarks.bench_add_rss --docs 1000000 --add 100000 --out docs/results/add-rss

The parent writes an index of ``--docs`` documents (synthetic unit vectors at ``minilm-l6``'s 2x64 and
6x384 views; float16 fine store streamed to disk; ``--index``: the coarse index, default the library's
SQ8) and saves it. A fresh process loads
it (the fine store memory-mapped), resets its peak-RSS counter (``/proc/self/clear_refs``), adds
``--add`` documents in chunks of ``--chunk`` (``add_vector_batches``: the path every add takes), and
reports its peak RSS above its RSS before the add, beside what must grow: the coarse index (a Flat index:
``add`` x 64 x 4 bytes, the rows going into a new shard, the loaded ones not copied; a coded one, SQ8,
takes the rows in place, FAISS reallocating its code array: the old and the grown array at once, up to
twice the codes after the add), one chunk of input vectors, and
the new documents' ids (measured alone in a second fresh process: the retriever's id checks and map, the
same ids). A third measures FAISS alone adding the same rows to the same coarse index in place, for
comparison: its Flat index grows its code array by allocating a new one and copying, so its peak holds
the old and the new array at once.
Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from adaptive_retrieval import Encoder, FaissOptions, Retriever
from adaptive_retrieval.reporting import settings

COARSE, FINE = (2, 64), (6, 384)


def rows(first: int, n: int, dim: int, salt: int) -> np.ndarray:
    x = np.random.default_rng([salt, first]).standard_normal((n, dim), dtype=np.float32)
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no temporary as large as x: a chunk is x alone
    return x


def batches(first: int, total: int, chunk: int):
    for lo in range(first, first + total, chunk):
        n = min(chunk, first + total - lo)
        yield list(range(lo, lo + n)), rows(lo, n, COARSE[1], 1), rows(lo, n, FINE[1], 2)


def status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def child(index: Path, docs: int, add: int, chunk: int) -> None:
    encoder = Encoder.from_pretrained("minilm-l6")
    r = Retriever.load(index, model=encoder)
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current RSS
    before = status("VmRSS")
    t0 = time.perf_counter()
    r.add_vector_batches(batches(docs, add, chunk))
    seconds = time.perf_counter() - t0
    peak = status("VmHWM")
    print(json.dumps({"rss_before": before, "peak_during_add": peak, "add_s": seconds, "count": len(r)}))


def child_ids(index: Path, docs: int, add: int, chunk: int) -> None:
    """The document ids alone: the same ids, in the same chunks, staged and committed in the retriever's
    own id map (new rows' ids are part of what an index must hold, beside their coarse rows)."""
    r = Retriever.load(index, model=Encoder.from_pretrained("minilm-l6"))
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    for lo in range(docs, docs + add, chunk):
        r.ids.stage(list(range(lo, min(lo + chunk, docs + add))))
    r.ids.commit()
    print(json.dumps({"rss_before": before, "peak_during_add": status("VmHWM")}))


def child_faiss(index: Path, docs: int, add: int) -> None:
    """FAISS alone: the same coarse index, the same rows added, nothing of the library around it."""
    import faiss

    from adaptive_retrieval.storage import read_manifest

    coarse = faiss.read_index(str(index / read_manifest(index)["files"]["coarse"]))
    vectors = rows(docs, add, COARSE[1], 1)
    Path("/proc/self/clear_refs").write_text("5")
    before = status("VmRSS")
    coarse.add(vectors)
    print(json.dumps({"rss_before": before, "peak_during_add": status("VmHWM")}))


def _code_size(index: Path) -> int:
    """Bytes per document of the saved coarse index."""
    import faiss

    from adaptive_retrieval.storage import read_manifest

    return int(faiss.read_index(str(index / read_manifest(index)["files"]["coarse"])).sa_code_size())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--add", type=int, default=100_000)
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--dir", type=Path, default=Path("runs/add-rss"))
    ap.add_argument("--index", default=FaissOptions.index, help="the coarse index (default: the library's)")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-faiss", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-ids", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    index = args.dir / "index"
    if args.child:
        child(index, args.docs, args.add, args.chunk)
        return
    if args.child_faiss:
        child_faiss(index, args.docs, args.add)
        return
    if args.child_ids:
        child_ids(index, args.docs, args.add, args.chunk)
        return
    shutil.rmtree(args.dir, ignore_errors=True)
    args.dir.mkdir(parents=True)
    t0 = time.perf_counter()
    encoder = Encoder.from_pretrained("minilm-l6")
    built = Retriever.from_vector_batches(
        encoder,
        COARSE,
        FINE,
        batches(0, args.docs, 100_000),
        backend=FaissOptions(index=args.index, fine_path=args.dir / "build-fine.npy"),
    )
    built.save(index)
    built.close()
    (args.dir / "build-fine.npy").unlink()
    build_s = time.perf_counter() - t0

    def fresh_process(*flags: str) -> dict:
        common = [
            "--dir",
            str(args.dir),
            "--docs",
            str(args.docs),
            "--add",
            str(args.add),
            "--chunk",
            str(args.chunk),
        ]
        done = subprocess.run(
            [sys.executable, "-m", __spec__.name, *flags, *common], capture_output=True, text=True, check=True
        )
        return json.loads(done.stdout.strip().splitlines()[-1])

    measured = fresh_process("--child")
    faiss_alone = fresh_process("--child-faiss")
    faiss_growth = faiss_alone["peak_during_add"] - faiss_alone["rss_before"]
    ids_alone = fresh_process("--child-ids")
    ids_growth = ids_alone["peak_during_add"] - ids_alone["rss_before"]
    growth = measured["peak_during_add"] - measured["rss_before"]
    flat = args.index == "Flat"
    code_bytes = COARSE[1] * 4 if flat else _code_size(index)
    # a Flat index's new shard; a coded one reallocated in place (old and grown arrays at once)
    coarse_growth = args.add * code_bytes if flat else 2 * (args.docs + args.add) * code_bytes
    chunk_bytes = args.chunk * (COARSE[1] + FINE[1]) * 4
    result = {
        **settings(labels="none (synthetic vectors)", benchmark="bench_add_rss"),
        "index": {
            "docs": args.docs,
            "coarse": f"{args.index}, 64 dims, {code_bytes} B per document",
            "fine": "384 dims float16, memory-mapped",
            "fine_bytes": args.docs * FINE[1] * 2,
            "build_s": round(build_s, 1),
        },
        "rss_before_add": measured["rss_before"],
        "peak_rss_growth_during_add": growth,
        "coarse_index_growth": coarse_growth,
        "one_chunk_of_input": chunk_bytes,
        "bound": coarse_growth + chunk_bytes,
        "within_bound": growth <= coarse_growth + chunk_bytes,
        # the new documents' ids alone (the retriever's checks and id map, same ids, same chunks), in a
        # fresh process: index growth the bound above leaves out
        "ids_alone_peak_growth": ids_growth,
        "within_bound_plus_ids": growth <= coarse_growth + chunk_bytes + ids_growth,
        # for comparison: FAISS's own add of the same rows to the same index, alone in a process: its
        # code array is reallocated (a new array beside the old one while copying); the library no longer
        # adds to a loaded Flat index in place but puts the rows into a new shard
        "faiss_add_alone_peak_growth": faiss_growth,
        "add_s": round(measured["add_s"], 1),
        "count_after": measured["count"],
    }
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
