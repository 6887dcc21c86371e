"""Reporting for the evaluation and benchmark scripts: the machine and run settings, markdown tables,
results.json, latency percentiles, process memory, Pareto fronts."""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch


def machine() -> dict[str, Any]:
    cpu = platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
    }


def machine_line() -> str:
    """One line for a script's output, from the same facts results.json files record."""
    m = machine()
    return f"{m['cpu']}, {m['cores']} cores, torch {torch.__version__} ({m['torch_threads']} threads)"


def versions() -> dict[str, str]:
    out = {}
    for dist in (
        "adaptive-retrieval",
        "torch",
        "transformers",
        "faiss-cpu",
        "numpy",
        "beir",
        "bm25s",
        "PyStemmer",
    ):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def source(folder: str | Path | None = None) -> dict[str, Any]:
    """The code a result came from: the git commit of ``folder`` (default: the working directory) and
    whether its tree had uncommitted changes (``None`` each outside a git checkout)."""
    import subprocess

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=folder)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


_STARTED: dict[str, Any] = {}


def source_of_run() -> dict[str, Any]:
    """:func:`source` as it was when this process first imported this module (a script's start), so that a
    results file names the code that ran even where the tree changed while it ran; ``at_write`` is added,
    with the commit and dirtiness when written, where they differ."""
    now = source()
    start = _STARTED.get("source", now)
    return start if now == start else {**start, "at_write": now}


def command_line() -> str:
    """How this process was started, as a user types it: ``python -m package.module ARGS`` for a module
    run (``sys.argv[0]`` is then the file's path), else ``python SCRIPT ARGS``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    head = (
        f"python -m {spec.name}" if spec is not None and spec.name != "__main__" else f"python {sys.argv[0]}"
    )
    return " ".join([head, *(shlex.quote(a) for a in sys.argv[1:])])


def settings(**extra: Any) -> dict[str, Any]:
    """A results file's header: the command that ran (``extra`` may state it instead), the date, the
    machine (CPU model, cores), the load average when written, the library versions, the git commit, and
    ``extra`` (the labels the model saw, ...)."""
    return {
        "command": command_line(),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "versions": versions(),
        "source": source_of_run(),
        **extra,
    }


def earlier_runs(saved: dict[str, Any]) -> list[dict[str, Any]]:
    """The provenance of every run whose rows a results file ``saved`` keeps, for the header of the run that
    adds to it (``earlier_runs``): each one's command, date, commit, load and machine; empty for a new file."""
    if not saved:
        return []
    return [
        *saved.get("earlier_runs", []),
        {k: saved.get(k) for k in ("command", "date", "source", "load_average", "machine")},
    ]


def model_info(encoder: Any) -> dict[str, Any]:
    """What a results file records about a model: hashes and shape."""
    return {
        "fingerprint": encoder.fingerprint,
        "weights_fingerprint": encoder.weights_fingerprint,
        "coarse_head_layers": sorted(encoder.heads),
        "n_layers": encoder.n_layers,
        "hidden_size": encoder.hidden_size,
        "pooling": encoder.pooling,
        "max_length": encoder.max_length,
    }


def process_memory() -> dict[str, int]:
    """This process's memory from ``/proc/self/status``, in bytes: ``rss_anon`` (its own heap: indexes,
    arrays), ``rss_file`` (pages of memory-mapped files: page cache the kernel can drop and re-read) and
    ``rss_peak`` (the peak of their sum). Empty where there is no such file."""
    fields = {"RssAnon": "rss_anon", "RssFile": "rss_file", "VmHWM": "rss_peak"}
    try:
        with open("/proc/self/status") as fh:
            return {
                fields[k]: int(v.split()[0]) * 1024 for k, v in (x.split(":", 1) for x in fh) if k in fields
            }
    except OSError:
        return {}


def percentiles_ms(seconds: Sequence[float]) -> tuple[float, float]:
    ms = np.asarray(seconds, dtype=np.float64) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """``columns``: (header, row key, format spec); ``None`` values print as ``-``."""
    lines = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for _, key, spec in columns:
            value = row.get(key)
            if value is None:
                cells.append("-")
            elif isinstance(value, (list, tuple)):
                cells.append("x".join(str(v) for v in value))
            else:
                cells.append(format(value, spec))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_markdown(path: Path, title: str, header: dict[str, Any], table: str) -> None:
    """A results table as markdown: ``# title (CPU)``, the command that wrote it (both from ``header``,
    what :func:`settings` returned), then ``table``."""
    Path(path).write_text(
        f"# {title} ({header['machine']['cpu']})\n\nCommand: `{header['command']}`\n\n{table}\n"
    )


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def pareto_front(costs: Sequence[float], qualities: Sequence[float]) -> list[int]:
    """Indices of the configurations no other beats on both cost (lower) and quality (higher)."""
    order = sorted(range(len(costs)), key=lambda i: (costs[i], -qualities[i]))
    front, best = [], -np.inf
    for i in order:
        if qualities[i] > best:
            front.append(i)
            best = qualities[i]
    return front


_STARTED["source"] = source()  # at import: a script imports this module as it starts
