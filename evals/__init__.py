"""Evaluation scripts: run from the repository root as ``python -m evals.<name>``."""
