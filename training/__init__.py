"""Training scripts: run from the repository root as ``python -m training.<name>``."""
