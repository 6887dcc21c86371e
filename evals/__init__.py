"""Evaluation scripts: run from the repository root as ``python -m evals.<name>``.

Builds here encode in float32 unless a script asks otherwise (``ADAPTIVE_RETRIEVAL_PRECISION``, which
``Retriever.build``'s default ``precision="auto"`` reads), so that figures compare with earlier runs on any
processor; ``evals.precision_eval`` and ``benchmarks.bench_encode`` measure bfloat16 beside float32.
"""

import os

os.environ.setdefault("ADAPTIVE_RETRIEVAL_PRECISION", "float32")
