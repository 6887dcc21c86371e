"""Peak RSS of building an index, fine store in RAM vs on disk, as the corpus grows.

    python -m benchmarks.bench_build_memory --sizes 100000,1000000 --out docs/results/build-memory/results.json

Each (size, mode) runs in its own process: load the encoder (its RSS is the baseline), then stream
synthetic view vectors (:class:`bench_scale.Synthetic`, 4x64 and 12x768) in chunks of ``--chunk``
documents through :meth:`Retriever.from_vector_batches`, the ingestion path that ``Retriever.build``
feeds with its encodings, and record the peak RSS. Encoding is left out because it does not depend on
the corpus size (one chunk at a time, by construction) and would take hours at these sizes here.

``memory``: the default, fine vectors in RAM. ``disk``: ``fine_path=...``, fine vectors appended to a
float16 ``.npy`` as they arrive. Growth = peak RSS - baseline; the coarse index (the library's default,
SQ8: 64 bytes a document) is resident in both modes, as it must be to be searched.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from adaptive_retrieval import FaissOptions
from adaptive_retrieval.reporting import settings, write_json
from benchmarks.bench_scale import Synthetic


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmRSS:"))


def worker(size: int, mode: str, model: str, chunk: int) -> dict:
    from adaptive_retrieval import Encoder, Retriever

    encoder = Encoder.from_pretrained(model)
    baseline = rss_bytes()
    gen = Synthetic(dim=encoder.hidden_size)
    centres = gen.centres()

    def batches():
        done = 0
        for b in range(0, size, chunk):
            n = min(chunk, size - b)
            coarse, fine = gen.block(1, b // chunk, n, centres)
            yield range(done, done + n), coarse, fine
            done += n

    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:
        t0 = time.time()
        r = Retriever.from_vector_batches(
            encoder,
            (4, 64),
            encoder.full_view,
            batches(),
            backend=FaissOptions(fine_path=Path(tmp) / "fine.npy" if mode == "disk" else None),
        )
        seconds = time.time() - t0
        assert len(r) == size
        coarse_bytes, factory = int(r.backend.nbytes()[0]), r.backend.coarse_index.factory
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "size": size,
        "mode": mode,
        "chunk": chunk,
        "baseline_rss_bytes": baseline,
        "peak_rss_bytes": peak,
        "growth_bytes": peak - baseline,
        "coarse_index": factory,
        "coarse_index_bytes": coarse_bytes,
        "fine_bytes": size * encoder.hidden_size * 2,
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--model", default="mpnet-base")
    ap.add_argument("--chunk", type=int, default=10_000)
    ap.add_argument("--out", type=Path, default=Path("results/build_memory.json"))
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        row = worker(int(args.worker[0]), args.worker[1], args.model, args.chunk)
        print("ROW " + json.dumps(row))
        return [row]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in ("memory", "disk"):
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.bench_build_memory",
                "--worker",
                str(size),
                mode,
                "--model",
                args.model,
            ]
            done = subprocess.run([*cmd, "--chunk", str(args.chunk)], capture_output=True, text=True)
            line = next((x for x in done.stdout.splitlines() if x.startswith("ROW ")), None)
            if done.returncode or line is None:
                raise SystemExit(f"{size} {mode} failed:\n{done.stderr[-2000:]}")
            rows.append(json.loads(line[4:]))
            r = rows[-1]
            print(
                f"{size:>10,} docs  {mode:6}  baseline {r['baseline_rss_bytes'] / 1e6:7.0f} MB  "
                f"peak {r['peak_rss_bytes'] / 1e6:7.0f} MB  growth {r['growth_bytes'] / 1e6:7.0f} MB  "
                f"(coarse index {r['coarse_index_bytes'] / 1e6:.0f} MB, fine {r['fine_bytes'] / 1e6:.0f} MB)  "
                f"{r['seconds']} s"
            )
    write_json(args.out, {**settings(benchmark="bench_build_memory", model=args.model), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
