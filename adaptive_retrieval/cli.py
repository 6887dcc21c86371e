"""The command line: index a corpus file, search an index, say what an index holds.

    adaptive-retrieval index corpus.jsonl --out my-index [--coarse 4x64] [--calibrate 0.95]
    adaptive-retrieval search my-index "does vitamin D reduce fracture risk?" [-k 10] [--json]
    adaptive-retrieval info my-index

A corpus is a JSON-lines file (``.jsonl``, ``.ndjson`` or ``.json``; one document per line: ``_id`` or
``id``, ``text``, optional ``title``; other fields are kept as metadata with ``--store-text``), a BEIR
folder (its ``corpus.jsonl``), or a plain text file (one document per line; ids are line numbers from 0,
blank lines skipped). ``python -m adaptive_retrieval`` is the same program.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .backends import FaissOptions
from .errors import CorpusError, InvalidArgument

JSON_LINES = (".jsonl", ".ndjson", ".json")


class CorpusFile:
    """The documents of a corpus file as ``(id, text)`` pairs, read lazily (a build streams them); its
    length is the number of documents, so a build shows one progress bar for the whole corpus."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if path.is_dir():
            if not (path / "corpus.jsonl").is_file():
                raise FileNotFoundError(f"{path} is a folder without corpus.jsonl (a BEIR folder holds one)")
            path = path / "corpus.jsonl"
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist")
        self.path = path
        self.jsonl = path.suffix.lower() in JSON_LINES
        with open(path, encoding="utf-8") as fh:
            self.count = sum(1 for line in fh if line.strip())

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """``(line number from 0, text)`` for a text file; ``(id, its other fields)`` for JSON lines."""
        with open(self.path, encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                if not self.jsonl:
                    yield number - 1, line.rstrip("\n")
                    continue
                try:
                    doc = json.loads(line)
                except ValueError as err:
                    raise CorpusError(
                        f"{self.path}, line {number}: not JSON ({err}); a {self.path.suffix} corpus holds "
                        "one JSON object per line"
                    ) from None
                if not isinstance(doc, dict):
                    raise CorpusError(
                        f"{self.path}, line {number}: a JSON {type(doc).__name__}, not an object; a "
                        f"{self.path.suffix} corpus holds one JSON object per line (JSON lines)"
                    )
                doc_id = doc.get("_id", doc.get("id"))
                if doc_id is None:
                    raise CorpusError(f"{self.path}, line {number}: a document needs an '_id' or 'id'")
                if not isinstance(doc.get("text"), str):
                    raise CorpusError(f"{self.path}, line {number}: a document needs a 'text' string")
                yield doc_id, {k: v for k, v in doc.items() if k not in ("_id", "id")}


def _index(args: argparse.Namespace) -> int:
    from .retriever import Retriever

    corpus = CorpusFile(args.corpus)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise InvalidArgument(f"{out} exists and is not an index; give a new or empty folder")
    if (out / "manifest.json").is_file() and not args.overwrite:  # before any encoding
        raise InvalidArgument(
            f"{out} already holds an index; give --overwrite to replace it, or another --out folder"
        )
    retriever = Retriever.build(
        corpus,
        coarse=args.coarse,
        fine=args.fine,
        model=args.model,
        candidates=args.candidates,
        backend=FaissOptions(index=args.index, fine_dtype=args.fine_dtype),
        batch_size=args.batch_size,
        adapt=not args.no_adapt,
        store_text=args.store_text,
        show_progress=not args.quiet,
    )
    failed = None
    if args.calibrate is not None:
        try:
            cal = retriever.calibrate(documents=corpus, target=args.calibrate)
        except ValueError as err:  # e.g. too few documents to draw queries from: the index is kept
            failed = err
        else:
            measured = cal.measured
            print(
                f"calibrated for overlap@{cal.k} {cal.target}: {cal.rule} shortlist (fixed {cal.candidates}, "
                f"patience {cal.patience}); on held-out pseudo-queries: fixed {measured['fixed_overlap']:.3f}, "
                f"patient {measured['patient_overlap']:.3f} reading {measured['patient_mean_shortlist']:.0f} on average",
                file=sys.stderr,
            )
    retriever.save(out)
    print(f"indexed {len(retriever)} documents into {out} ({retriever!r})", file=sys.stderr)
    if failed is not None:
        print(f"error: calibration failed: {failed}; the index was saved uncalibrated", file=sys.stderr)
        return 2
    return 0


def _target(text: str) -> float:
    """``--calibrate``'s value, checked before anything is encoded."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"an overlap target must be in (0, 1], got {value}")
    return value


def _search(args: argparse.Namespace) -> int:
    from .retriever import Retriever

    retriever = Retriever.load(args.index_dir, model=args.model)
    hits = retriever.search(args.query, k=args.k, candidates=args.candidates)
    if args.json:
        rows = [{"rank": h.rank, "doc_id": h.doc_id, "score": h.score} for h in hits]
        if retriever.documents is not None:
            rows = [{**row, "text": h.text, "metadata": h.metadata} for row, h in zip(rows, hits)]
        print(json.dumps(rows))
    else:
        for h in hits:
            text = "" if h.text is None else "\t" + " ".join(h.text.split())[:100]
            print(f"{h.rank}\t{h.doc_id}\t{h.score:.4f}{text}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .storage import read_manifest

    manifest = read_manifest(Path(args.index_dir))
    keys = (
        "model",
        "coarse",
        "fine",
        "backend",
        "count",
        "candidates",
        "adaptation",
        "calibration",
    )
    summary = {key: manifest.get(key) for key in keys}
    summary["saved_at"], summary["library_version"] = (
        manifest.get("saved_at"),
        manifest.get("library_version"),
    )
    print(json.dumps(summary, indent=2))
    return 0


def parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(
        prog="adaptive-retrieval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="encode a corpus file and save an index")
    index.add_argument("corpus", help="a .jsonl file, a BEIR folder, or a text file (one document per line)")
    index.add_argument("--out", required=True, help="the index folder to write")
    index.add_argument(
        "--overwrite", action="store_true", help="replace the index already in --out (refused without it)"
    )
    index.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a model name, Hugging Face id or folder (default {DEFAULT_MODEL})",
    )
    index.add_argument("--coarse", default="4x64", help="the recall view, LAYERxDIM")
    index.add_argument("--fine", help="the re-rank view (default: the model's last layer, full width)")
    index.add_argument("--candidates", type=int, default=100, help="the shortlist the fine view re-ranks")
    index.add_argument("--index", default="Flat", help="FAISS factory string of the coarse index")
    index.add_argument("--fine-dtype", default="float16", choices=("float16", "float32"))
    index.add_argument("--batch-size", type=int, help="texts per forward pass (default: the model's)")
    index.add_argument(
        "--no-adapt", action="store_true", help="keep the model's coarse head (no fit to the corpus)"
    )
    index.add_argument(
        "--calibrate",
        type=_target,
        metavar="TARGET",
        help="choose the shortlist for this overlap@10 target (e.g. 0.95), on pseudo-queries from the corpus",
    )
    index.add_argument(
        "--store-text", action="store_true", help="keep the texts with the index: search shows them"
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(run=_index)
    search = sub.add_parser("search", help="search a saved index")
    search.add_argument("index_dir", help="a folder written by 'index'")
    search.add_argument("query", help="the query text")
    search.add_argument("-k", type=int, default=10, help="how many hits (default 10)")
    search.add_argument("--candidates", type=int, help="a fixed shortlist for this search")
    search.add_argument("--model", help="the model to load the index with (default: the one it names)")
    search.add_argument("--json", action="store_true", help="print hits as a JSON list")
    search.set_defaults(run=_search)
    info = sub.add_parser("info", help="what an index's manifest holds")
    info.add_argument("index_dir", help="a folder written by 'index'")
    info.set_defaults(run=_info)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 (with a line saying why) on bad input, as argparse does."""
    args = parser().parse_args(argv)
    from transformers.utils import logging as hf_logging

    bars = hf_logging.is_progress_bar_enabled()
    if args.command == "search" or getattr(args, "quiet", False):
        hf_logging.disable_progress_bar()  # its weight-loading bar; ours follow --quiet
    try:
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        if bars:  # as it was: a caller of main() in-process keeps its own setting
            hf_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
