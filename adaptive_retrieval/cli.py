"""The command line: index a corpus file, search an index, say what an index holds.

    adaptive-retrieval index corpus.jsonl --out my-index [--coarse 4x64] [--calibrate 0.95] [--overwrite]
    adaptive-retrieval search my-index "does vitamin D reduce fracture risk?" ["another query" ...] [-k 10] [--json]
    adaptive-retrieval search my-index - < queries.txt          # one query per line, one model load
    adaptive-retrieval info my-index [--json] [--verify]

A corpus is a JSON-lines file (``.jsonl``, ``.ndjson`` or ``.json``; one document per line: ``_id`` or
``id``, ``text``, optional ``title``; other fields are kept as metadata with ``--store-text``), a BEIR
folder (its ``corpus.jsonl``), or a plain text file (one document per line; ids are line numbers from 0,
blank lines skipped); either may be gzip-compressed (``corpus.jsonl.gz``). ``python -m adaptive_retrieval``
is the same program. Bad input (a missing or undecodable file, an empty query, ``-k 0``, a malformed
view) is refused with exit status 2 before any model loads; Ctrl-C stops with one line and status 130.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import re
import sys
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from .errors import CorpusError, InvalidArgument
from .version import __version__

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
        self.gzipped = path.suffix.lower() == ".gz"
        self.jsonl = Path(path.stem if self.gzipped else path.name).suffix.lower() in JSON_LINES
        self.count = sum(1 for _, line in self._lines() if line.strip())  # reads it all once: errors now

    def _lines(self) -> Iterator[tuple[int, str]]:
        """``(line number from 1, text)``; a line that is not UTF-8 (a binary file, a gzip file not named
        ``.gz``) is refused naming the file and the line."""
        opener = gzip.open if self.gzipped else open
        try:
            with opener(self.path, "rb") as fh:
                for number, raw in enumerate(fh, start=1):
                    try:
                        yield number, raw.decode("utf-8")
                    except UnicodeDecodeError as err:
                        raise CorpusError(
                            f"{self.path}, line {number}: not UTF-8 text ({err.reason} at byte {err.start}); a "
                            "corpus is UTF-8 text: JSON lines or one document per line (gzip: name it .gz)"
                        ) from None
        except (OSError, EOFError, zlib.error) as err:  # e.g. a damaged gzip file
            raise CorpusError(f"{self.path}: cannot be read ({err})") from None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        """``(line number from 0, text)`` for a text file; ``(id, its other fields)`` for JSON lines."""
        for number, line in self._lines():
            if not line.strip():
                continue
            if not self.jsonl:
                yield number - 1, line.rstrip("\r\n")
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


def _loading(args: argparse.Namespace) -> None:
    """Where a command starts loading torch and the model, every instant check done: transformers'
    weight-loading bar off for ``search`` and under ``--quiet`` (ours follow ``--quiet``); :func:`main` puts it
    back. Importing transformers takes most of a second, so no bad input waits for it."""
    from transformers.utils import logging as hf_logging

    if (args.command == "search" or getattr(args, "quiet", False)) and hf_logging.is_progress_bar_enabled():
        hf_logging.disable_progress_bar()
        args.silenced_bars = True


def _index(args: argparse.Namespace) -> int:
    corpus = CorpusFile(args.corpus)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise InvalidArgument(f"--out {out} is a file; give a new or empty folder")
    if out.exists() and any(out.iterdir()) and not (out / "manifest.json").is_file():
        raise InvalidArgument(f"{out} exists and is not an index; give a new or empty folder")
    if args.coarse_bytes is not None and args.index is not None:
        raise InvalidArgument(
            "--coarse-bytes chooses the coarse index, and --index names one: give one of them"
        )
    if (out / "manifest.json").is_file() and not args.overwrite:  # before any encoding
        raise InvalidArgument(
            f"{out} already holds an index; give --overwrite to replace it, or another --out folder"
        )
    from .lexical import LexicalIndex

    if not args.no_hybrid:
        try:
            LexicalIndex(args.language)  # a language without a stemmer: refused before the model loads
        except InvalidArgument as err:
            raise InvalidArgument(f"--language {args.language}: {err}") from None
    _loading(args)
    from .backends import FaissOptions  # the model and torch load from here on: every check above is instant
    from .retriever import Retriever

    retriever = Retriever.build(
        corpus,
        coarse=args.coarse,
        fine=args.fine,
        model=args.model,
        candidates=args.candidates,
        backend=FaissOptions(
            fine_dtype=args.fine_dtype, **({} if args.index is None else {"index": args.index})
        ),
        batch_size=args.batch_size,
        adapt=not args.no_adapt,
        store_text=args.store_text,
        hybrid=not args.no_hybrid,
        language=args.language,
        passages=not args.no_passages,
        coarse_bytes=args.coarse_bytes,
        precision=args.precision,
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
    cal = retriever.calibration
    shortlist = (
        f"{retriever.candidates} candidates (fixed)"
        if cal is None
        else f"{cal.candidates} candidates (calibrated, fixed)"
        if cal.rule == "fixed"
        else f"a patient shortlist (calibrated: patience {cal.patience}, at most {cal.cap})"
    )
    print(
        f"indexed {len(retriever)} documents into {out}: coarse {retriever.coarse}, fine {retriever.fine}, "
        f"{retriever.backend.describe()}, searches re-rank {shortlist}"
        + ("" if retriever.lexical is None else ", fused with BM25")
        + (
            f"; {retriever.truncated} documents were cut to the model's max length"
            if retriever.truncated
            else ""
        )
        + (
            f"; {retriever.ids.count - len(retriever)} rows more than documents: long documents were split "
            f"into passages ({retriever.ids.count} rows in all)"
            if retriever.ids.count > len(retriever)
            else ""
        ),
        file=sys.stderr,
    )
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


def _queries(given: list[str]) -> list[str]:
    """The queries of a ``search`` call: the arguments, or stdin's lines for ``-``; empty ones refused."""
    queries = [line.rstrip("\r\n") for line in sys.stdin] if given == ["-"] else list(given)
    queries = [q for q in queries if q.strip()] if given == ["-"] else queries
    if not queries:
        raise InvalidArgument("no queries: give one or more, or - to read them from stdin, one per line")
    for i, q in enumerate(queries):
        if not q.strip():
            which = "query" if len(queries) == 1 else f"query {i + 1} of {len(queries)}"
            raise InvalidArgument(f"{which} is empty or whitespace only; there is nothing to rank by")
    return queries


def _index_dir(path: str) -> Path:
    """An index folder, checked (its manifest read) before any model loads."""
    from .storage import read_manifest

    read_manifest(Path(path))
    return Path(path)


def _filter(text: str | None) -> dict | None:
    """``--filter``'s JSON, checked before any model loads."""
    if text is None:
        return None
    from .filters import parse

    try:
        flt = json.loads(text)
    except ValueError as err:
        raise InvalidArgument(f'--filter must be JSON such as \'{{"section": "libs"}}\': {err}') from None
    parse(flt, "--filter")
    return flt


def _search(args: argparse.Namespace) -> int:
    queries = _queries(args.query)
    index_dir = _index_dir(args.index_dir)
    flt = _filter(args.filter)
    _loading(args)
    from .retriever import Retriever

    retriever = Retriever.load(index_dir, model=args.model)
    hybrid = False if args.dense else None
    found = retriever.search_batch(queries, k=args.k, candidates=args.candidates, filter=flt, hybrid=hybrid)
    several = len(queries) > 1 or args.query == ["-"]  # from stdin: always query + hits each
    if args.json:
        rows = [
            [
                {"rank": h.rank, "doc_id": h.doc_id, "score": h.score, "metadata": h.metadata}
                | ({"text": h.text} if retriever.documents is not None else {})
                | ({} if h.passage is None else {"passage": h.passage._asdict()})
                for h in hits
            ]
            for hits in found
        ]
        print(json.dumps([{"query": q, "hits": r} for q, r in zip(queries, rows)] if several else rows[0]))
        return 0
    for q, hits in zip(queries, found):
        if several:
            print(f"# {q}")
        for h in hits:
            text = "" if h.text is None else "\t" + " ".join(h.text.split())[:100]
            where = (
                "" if h.passage is None else f" [passage {h.passage.n}: {h.passage.start}-{h.passage.end}]"
            )
            print(f"{h.rank}\t{h.doc_id}{where}\t{h.score:.4f}{text}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    index_dir = _index_dir(args.index_dir)
    _loading(args)
    from .retriever import Retriever

    retriever = Retriever.load(index_dir, model=args.model)
    ids = [_id_of(d, retriever) for d in args.ids]
    deleted = retriever.delete(ids, missing="ignore" if args.ignore_missing else "raise")
    retriever.save(index_dir)
    print(f"deleted {deleted} documents; {len(retriever)} remain in {index_dir}", file=sys.stderr)
    return 0


def _id_of(text: str, retriever: object) -> object:
    """A command-line id as the index holds it: the string, or the int it spells when only that is there."""
    if text not in retriever and text.lstrip("-").isdigit() and int(text) in retriever:  # type: ignore[operator]
        return int(text)
    return text


def _add(args: argparse.Namespace) -> int:
    corpus = CorpusFile(args.corpus)
    index_dir = _index_dir(args.index_dir)
    _loading(args)
    from .retriever import Retriever

    retriever = Retriever.load(index_dir, model=args.model)
    before = len(retriever)
    (retriever.upsert if args.upsert else retriever.add)(corpus, show_progress=not args.quiet)
    retriever.save(index_dir)
    print(f"{len(retriever) - before:+d} documents; {len(retriever)} in {index_dir}", file=sys.stderr)
    return 0


def _info(args: argparse.Namespace) -> int:
    from .storage import read_manifest, verify_files

    path = Path(args.index_dir)
    manifest = read_manifest(path)
    if args.verify:  # every file's size and sha256 (the whole file, however large)
        verify_files(path, manifest, "full")
    keys = (
        "model",
        "coarse",
        "fine",
        "backend",
        "count",
        "candidates",
        "adaptation",
        "calibration",
        "lexical",
        "fusion",
        "truncated",
        "passages",
        "documents",
        "first_stage",
    )
    summary = {key: manifest.get(key) for key in (*keys, "saved_at", "library_version")}
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    model, backend, cal, adapt = (
        manifest["model"],
        manifest["backend"],
        manifest["calibration"],
        manifest["adaptation"],
    )
    where = {k: v for k, v in backend.items() if k != "name"}
    lines = [
        f"index      {path}: {manifest.get('documents', manifest['count'])} documents, saved "
        f"{manifest['saved_at']} (library {manifest['library_version']})",
        f"passages   {manifest['count']} rows: long documents split into passages of {model['max_length']} tokens"
        if manifest.get("passages")
        else "passages   off: a document longer than the model's max length is cut to it",
        f"truncated  {manifest.get('truncated', 0)} documents longer than {model['max_length']} tokens, cut to it",
        f"model      {model.get('name')} ({model.get('model_type')}, {model['pooling']} pooling, "
        f"max length {model['max_length']}; weights sha256 {model['fingerprint'][:12]}...; runs in "
        f"{model.get('precision', 'float32')})",
        f"views      coarse {manifest['coarse'][0]}x{manifest['coarse'][1]}, fine {manifest['fine'][0]}x{manifest['fine'][1]}",
        f"engine     {backend['name']} {' '.join(f'{k}={v}' for k, v in where.items())}".rstrip(),
        *_first_stage_line(manifest.get("first_stage")),
        "adapted    no"
        if adapt is None
        else f"adapted    {adapt.get('chosen')} head on {adapt.get('documents')} documents",
        f"shortlist  {manifest['candidates']} candidates (fixed)"
        if cal is None
        else f"shortlist  calibrated for overlap@{cal.get('k')} {cal.get('target')}: {cal.get('rule')} "
        f"(fixed {cal.get('candidates')}, patience {cal.get('patience')})",
        "lexical    none (dense search only)"
        if manifest.get("lexical") is None
        else f"lexical    BM25 ({manifest['lexical']['language']}"
        + (", postings in the engine" if manifest["lexical"].get("postings") == "engine" else "")
        + "), fused with the fine view: "
        + _fusion_line(manifest.get("fusion") or {}),
        f"files      {len(manifest['files'])}"
        + (", every byte verified" if args.verify else " (--verify checks them)"),
    ]
    print("\n".join(lines))
    return 0


def _fusion_line(fusion: dict[str, Any]) -> str:
    """``info``'s words for a saved fusion (:class:`adaptive_retrieval.hybrid.Fusion`'s fields)."""
    depth = f"{fusion.get('depth')} candidates a side"
    if fusion.get("rule") in ("match", "lead"):
        ramp = fusion.get("ramp")
        span = f"{ramp[0]} to {ramp[1]}" if isinstance(ramp, list) and len(ramp) == 2 else repr(ramp)
        what = (
            f"one row holds {span} of the query"
            if fusion["rule"] == "match"
            else f"the best document leads the next by {span} of the query"
        )
        confidence = fusion.get("confidence")
        back = (
            f", back as its best score rises from {confidence[0]} to {confidence[1]}"
            if isinstance(confidence, list) and len(confidence) == 2
            else ""
        )
        return (
            f"{fusion['rule']}, the fine view weighted {fusion.get('weight')}, falling to "
            f"{fusion.get('match_weight')} as {what} (BM25 over its bound){back}; {depth}"
        )
    return f"{fusion.get('rule')}, the fine view weighted {fusion.get('weight')}; {depth}"


def _first_stage_line(record: dict[str, Any] | None) -> list[str]:
    if not record:
        return []
    chosen = f"first      {record['index']} over {record['dim']} dims, {record['bytes']} B/document (budget {record['budget']})"
    if record.get("shortlist") is None:
        return [chosen + ": chosen by size (no projection to measure on)"]
    others = ", ".join(f"{r['name']} {r['shortlist'] or '-'}" for r in record.get("frontier", []))
    return [
        chosen
        + f": shortlist {record['shortlist']} for {record['target']:.0%} of the exact top {record['k']} "
        f"on pseudo-queries ({others})"
    ]


def _positive(text: str) -> int:
    """An argument that must be a positive int, checked before anything loads."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _view(text: str) -> str:
    """A view argument, ``LAYERxDIM``, checked for its form before the model loads (its range after)."""
    if not re.fullmatch(r"\s*\d+\s*[xX:,]\s*\d+\s*", text):  # the forms View.parse takes
        raise argparse.ArgumentTypeError(f"{text!r} is not a view; write it as LAYERxDIM, e.g. 4x64")
    return text.strip()


def parser() -> argparse.ArgumentParser:
    from .models import DEFAULT_MODEL

    ap = argparse.ArgumentParser(
        prog="adaptive-retrieval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--version", action="version", version=f"adaptive-retrieval {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)
    index = sub.add_parser("index", help="encode a corpus file and save an index")
    index.add_argument(
        "corpus", help="a .jsonl file, a BEIR folder, or a text file (one document per line); .gz too"
    )
    index.add_argument("--out", required=True, help="the index folder to write")
    index.add_argument(
        "--overwrite", action="store_true", help="replace the index already in --out (refused without it)"
    )
    index.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=f"a model name, Hugging Face id or folder (default {DEFAULT_MODEL})",
    )
    index.add_argument("--coarse", type=_view, default="4x64", help="the recall view, LAYERxDIM")
    index.add_argument(
        "--fine", type=_view, help="the re-rank view (default: the model's last layer, full width)"
    )
    index.add_argument(
        "--candidates", type=_positive, default=100, help="the shortlist the fine view re-ranks"
    )
    index.add_argument(
        "--index",
        help="FAISS factory string of the coarse index (default SQ8: int8 codes, 64 B per document at 64 dims)",
    )
    index.add_argument(
        "--coarse-bytes",
        type=_positive,
        help="a memory budget for the coarse index in bytes per document: the coarse dimensions and code "
        "within it that need the shortest shortlist on the corpus' pseudo-queries (instead of --index)",
    )
    index.add_argument("--fine-dtype", default="float16", choices=("float16", "float32"))
    index.add_argument(
        "--precision",
        default="float32",
        choices=("float32", "bfloat16", "auto"),
        help="what the encoder runs in for the documents: bfloat16 encodes 3.1-4.4x faster where the processor "
        "has AMX, 1.6-1.8x with AVX-512 BF16 alone, keeping 0.988-0.996 of float32's top 10 (auto: bfloat16 "
        "where it has either); "
        "saved with the index",
    )
    index.add_argument("--batch-size", type=_positive, help="texts per forward pass (default: the model's)")
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
    index.add_argument(
        "--no-hybrid",
        action="store_true",
        help="no lexical (BM25) index beside the vectors: dense search only",
    )
    index.add_argument(
        "--language", default="english", help="the lexical index's stemmer and stop words (default english)"
    )
    index.add_argument(
        "--no-passages",
        action="store_true",
        help="cut a document longer than the model's max length to it, instead of indexing it as passages",
    )
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.set_defaults(run=_index)
    search = sub.add_parser("search", help="search a saved index")
    search.add_argument("index_dir", help="a folder written by 'index'")
    search.add_argument(
        "query", nargs="+", help="one or more queries (one model load), or - to read them from stdin"
    )
    search.add_argument("-k", type=_positive, default=10, help="how many hits per query (default 10)")
    search.add_argument("--candidates", type=_positive, help="a fixed shortlist for this search")
    search.add_argument(
        "--filter", help='only documents whose metadata matches, as JSON: \'{"section": "libs"}\''
    )
    search.add_argument("--model", help="the model to load the index with (default: the one it names)")
    search.add_argument("--dense", action="store_true", help="the fine view alone (no fusion with BM25)")
    search.add_argument(
        "--json",
        action="store_true",
        help="print hits as JSON (one query: a list of hits; several, or -: query and hits each)",
    )
    search.set_defaults(run=_search)
    add = sub.add_parser("add", help="encode a corpus file into a saved index (the same formats as index)")
    add.add_argument("index_dir", help="a folder written by 'index'")
    add.add_argument("corpus", help="the documents to add")
    add.add_argument("--upsert", action="store_true", help="replace the documents whose ids the index holds")
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    add.add_argument("--model", help="the model to load the index with (default: the one it names)")
    add.set_defaults(run=_add)
    delete = sub.add_parser("delete", help="delete documents from a saved index by id")
    delete.add_argument("index_dir", help="a folder written by 'index'")
    delete.add_argument("ids", nargs="+", help="the documents' ids")
    delete.add_argument("--ignore-missing", action="store_true", help="skip ids the index does not hold")
    delete.add_argument("--model", help="the model to load the index with (default: the one it names)")
    delete.set_defaults(run=_delete)
    info = sub.add_parser("info", help="what an index's manifest holds")
    info.add_argument("index_dir", help="a folder written by 'index'")
    info.add_argument("--json", action="store_true", help="the manifest's summary as JSON")
    info.add_argument(
        "--verify", action="store_true", help="check every file's sha256; exit 2 if any differs"
    )
    info.set_defaults(run=_info)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; 0 on success, 2 (with a line saying why) on bad input, as argparse does; 130 on
    Ctrl-C (one line)."""
    args = parser().parse_args(argv)
    said = logging.getLogger("adaptive_retrieval.models")  # what is downloaded or assembled, and where
    shown = logging.StreamHandler(sys.stderr)
    shown.setFormatter(logging.Formatter("%(message)s"))
    level, propagate = said.level, said.propagate
    try:
        if not getattr(args, "quiet", False):
            said.setLevel(logging.INFO)
            said.propagate = False  # shown here once, not again by a caller's root handler
            said.addHandler(shown)
        return args.run(args)
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # one line, the shell's status for SIGINT; a save in progress is atomic
        print("interrupted; nothing was saved unless said above", file=sys.stderr)
        return 130
    finally:
        said.removeHandler(shown)
        said.setLevel(level)
        said.propagate = propagate
        if getattr(args, "silenced_bars", False):  # as it was: a caller of main() in-process keeps its own
            from transformers.utils import logging as hf_logging

            hf_logging.enable_progress_bar()


if __name__ == "__main__":
    sys.exit(main())
