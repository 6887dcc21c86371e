"""Benchmark scripts: run from the repository root as ``python -m benchmarks.<name>``.

Queries here encode in float32 unless a script asks otherwise (``ADAPTIVE_RETRIEVAL_PRECISION``, which the
queries' default precision ``"auto"`` reads: bfloat16 on processors that have it), so that figures compare
with earlier runs on any processor; ``evals.precision_eval``, ``benchmarks.bench_encode`` and
``benchmarks.bench_latency`` measure bfloat16 beside float32.
"""

import os

os.environ.setdefault("ADAPTIVE_RETRIEVAL_PRECISION", "float32")
