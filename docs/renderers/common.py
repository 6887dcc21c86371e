"""What every renderer shares: the results folder, a results file's JSON, a Markdown table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS = ROOT / "docs" / "results"


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name / "results.json").read_text())


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def _knobs(knobs: dict[str, Any]) -> str:
    """Search knobs as the tables print them: ``nprobe 32, efSearch 128``."""
    return ", ".join(f"{k} {v}" for k, v in knobs.items())
