"""Run the README's Python examples with the real models and record what they print, for the README.

    python -m evals.readme_examples --out docs/results/readme-examples

Every ``python`` block of README.md runs in order in one namespace, as a user would paste them, with the
library's defaults: queries in the precision ``"auto"`` picks on this processor (this script, unlike the
other evals, does not pin float32). Recorded, with the run's header (machine, command, commit, labels):

- the quickstart's printed lines (its first block), the query precision in effect, the same search's
  lines with float32 queries, and the dense funnel's scores (``hybrid=False``);
- the passages example's hit (``hit.doc_id``, ``hit.passage``), how many passages the document became and
  the tokens a passage holds.

``python docs/render_tables.py`` writes them into README.md (the blocks marked ``readme-quickstart`` and
``readme-passages``), so the README shows what the code printed on a named machine.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
from pathlib import Path

from adaptive_retrieval.models import labels_of
from adaptive_retrieval.passages import budget, document_of
from adaptive_retrieval.precision import ENV_DEFAULT
from adaptive_retrieval.reporting import machine_line, settings, write_json

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(text: str) -> list[str]:
    """The README's ``python`` code blocks, in order."""
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def lines_of(hits: list) -> list[str]:
    """A search's hits as the quickstart prints them."""
    return [f"{hit.rank} {hit.doc_id} {round(hit.score, 3)}" for hit in hits]


def run(workdir: Path) -> dict:
    """Every README block run in ``workdir``; what the examples printed and returned."""
    code = blocks(README.read_text())
    if len(code) < 2:
        raise SystemExit(f"{README}: expected the quickstart and more python blocks, found {len(code)}")
    namespace: dict = {}
    previous = Path.cwd()
    os.chdir(workdir)
    try:
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(code[0], "README.md python block 1", "exec"), namespace)
        quick = namespace["retriever"]
        query = "does vitamin D reduce fracture risk?"
        out = {
            "quickstart": printed.getvalue().splitlines(),
            "query_precision": quick.query_precision,
            "dense_scores": [round(h.score, 3) for h in quick.search(query, k=10, hybrid=False)],
        }
        quick.set_query_precision("float32")
        out["quickstart_float32"] = lines_of(quick.search(query, k=10))
        for number, block in enumerate(code[1:], start=2):
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
    finally:
        os.chdir(previous)
    hit, pages = namespace["hit"], namespace["pages"]
    out["passages"] = {
        "doc_id": hit.doc_id,
        "passage": repr(hit.passage),
        "passages_of_document": sum(document_of(r) == hit.doc_id for r in pages.doc_ids if r is not None),
        "tokens_per_passage": budget(pages.encoder),
        "model": pages.encoder.name,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="write results.json here")
    args = ap.parse_args(argv)
    os.environ.pop(ENV_DEFAULT, None)  # the evals pin float32 queries; a user's defaults apply here
    print(machine_line(), flush=True)
    with tempfile.TemporaryDirectory() as workdir:
        out = run(Path(workdir))
    header = settings(
        labels={
            "mpnet-base-2dmse": labels_of("mpnet-base-2dmse"),
            "minilm-l6": labels_of("minilm-l6"),
            "examples": "the README's own three- and four-document corpora; no qrels",
        }
    )
    write_json(args.out / "results.json", {**header, **out})
    for line in out["quickstart"]:
        print(line)
    print(f"queries in {out['query_precision']}; float32: {out['quickstart_float32']}")
    print(f"dense: {out['dense_scores']}; passage hit: {out['passages']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
