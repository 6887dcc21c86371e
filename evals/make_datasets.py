"""Build out-of-domain retrieval sets in BEIR's layout from data at hand (nothing is downloaded).

    python -m evals.make_datasets --data-dir ../shared/data --out runs/data          # all five
    python -m evals.make_datasets --data-dir ../shared/data --out runs/data --only manpages
    python -m evals.make_datasets --data-dir ../shared/data --out runs/data --only stsb-para sick-para \
        sts12-16-para --max-queries 100 --max-docs 300 --suffix=-small     # a few hundred documents

Each set is written to ``<out>/beir/<name>/`` as ``corpus.jsonl``, ``queries.jsonl``, ``qrels/dev.tsv``
and ``qrels/test.tsv`` (the queries split in two halves by a seeded draw: choose on dev, report on
test), plus ``README.md`` saying how it was made. The sets are never committed; this script is how to
make them again.

Paraphrase retrieval (short sentences; a query's relevant documents are its high-scored partners):

- ``stsb-para``: STS Benchmark, all three splits. A query is the first sentence of a pair scored
  >= 4 (of 5), its relevant document the second; the corpus is every sentence of every pair (scored
  high or not) except the queries' own.
- ``sick-para``: SICK (train, trial, test), relatedness >= 4 (of 1..5), likewise.
- ``sts12-16-para``: the SemEval STS 2012-2016 subsets, score >= 4 (of 5), likewise.

Real longer text:

- ``manpages``: the Linux programmer's manual (sections 2 and 3: system calls and library functions,
  Debian's ``manpages-dev`` package: ``apt-get install manpages-dev``), rendered by ``man``. A document
  is a page after its NAME section (synopsis, description, ...), cut to its first 250 words; its
  query is the one-line description of the NAME section ("open and possibly create a file"), which
  names no function. Pages sharing a description share one query (every such page is relevant).
- ``manpages-long``: the same pages whole (COLOPHON left out): long documents, most past the model's 384
  tokens. A query is the first words (at most 12) of a sentence starting past word 500 of its page, kept
  when no other page holds them: its answer lies past what a truncated page's vectors hold. Verbatim, so
  lexical by construction (BM25's ground); it measures what truncation loses and what recovers it.

Queries are drawn at random (``--seed``) up to ``--max-queries`` per set; a corpus keeps every
relevant document and at most ``--max-docs`` documents in all (the rest drawn at random).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

from adaptive_retrieval.sts import STS_YEARS, Pairs, read_sick, read_sts_subset, read_stsb

WORDS_PER_PAGE = 250
DEEP_WORDS = 500  # manpages-long: a query's sentence starts past this many words (past 384 tokens, whatever the tokenizer)
QUERY_WORDS = 12
TRIES = 5  # manpages-long: sentences tried per page (each checked against every page)
SKIPPED_SECTIONS = ("NAME", "COLOPHON", "SEE ALSO")  # manpages-long: no query from these (shared boilerplate)
SETS = ("stsb-para", "sick-para", "sts12-16-para", "manpages", "manpages-long")


# ------------------------------------------------------------------------------------ paraphrases


def paraphrase_set(pairs: Pairs, threshold: float) -> tuple[list[str], dict[str, set[str]]]:
    """``(corpus sentences, {query: relevant sentences})`` from scored pairs.

    A pair scored ``>= threshold`` makes its first sentence a query and its second a relevant
    document, unless the first is already some query's relevant document or the second some query
    (a query never sits in the corpus, and every relevant document does). Identical sentences pair
    nothing. The corpus is every sentence of every pair, less the queries."""
    queries: dict[str, set[str]] = {}
    relevant: set[str] = set()
    for a, b, score in pairs:
        a, b = a.strip(), b.strip()
        if score < threshold or not a or not b or a == b or a in relevant or b in queries:
            continue
        queries.setdefault(a, set()).add(b)
        relevant.add(b)
    sentences = dict.fromkeys(s.strip() for a, b, _ in pairs for s in (a, b) if s.strip())
    return [s for s in sentences if s not in queries], queries


# --------------------------------------------------------------------------------------- man pages

_SECTION_HEADING = re.compile(r"^[A-Z][A-Z0-9 ,/()-]*$")


def parse_page(rendered: str, max_words: int | None = WORDS_PER_PAGE) -> tuple[str, str] | None:
    """``(description, body)`` of a rendered man page: the NAME line's text after its " - ", and the
    sections after NAME as one line of words (at most ``max_words``; ``None``: the whole page, its
    COLOPHON left out); ``None`` when the page has no such NAME line."""
    sections: dict[str, list[str]] = {}
    order: list[str] = []
    current = None
    for line in rendered.splitlines()[1:]:  # the first line is the running header
        if _SECTION_HEADING.match(line) and not line.startswith(" "):
            current = line.strip()
            order.append(current)
            sections[current] = []
        elif current is not None:
            sections[current].append(line)
    name = " ".join(" ".join(sections.get("NAME", [])).split())
    if " - " not in name:
        return None
    description = name.split(" - ", 1)[1].strip()
    kept = [s for s in order if s != "NAME" and (max_words is not None or s != "COLOPHON")]
    words = " ".join(" ".join(sections[s]) for s in kept).split()
    body = " ".join(words if max_words is None else words[:max_words])
    return (description, body) if description and body else None


def is_link(page: Path) -> bool:
    """A page that only points at another (``.so man2/other.2``)."""
    opener = gzip.open if page.suffix == ".gz" else open
    with opener(page, "rt", errors="replace") as fh:
        head = fh.read(200).lstrip()
    return head.startswith(".so ")


def render(page: Path) -> str:
    """The page as ``man`` shows it, plain text, lines unwrapped."""
    out = subprocess.run(
        ["man", "-l", "-E", "utf-8", str(page)],
        capture_output=True,
        text=True,
        env={"MANWIDTH": "2000", "MAN_KEEP_FORMATTING": "0", "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        check=False,
    )
    return re.sub(r".\x08", "", out.stdout)  # overstrike bold/underline, should any remain


def man_pages(
    man_dir: Path, sections: Iterable[str] = ("2", "3"), max_words: int | None = WORDS_PER_PAGE
) -> list[tuple[str, str, str]]:
    """``(page id, description, body)`` of every page in ``man_dir/man<section>`` that is not a link
    (``max_words``: as :func:`parse_page`)."""
    pages = sorted(p for s in sections for p in (Path(man_dir) / f"man{s}").glob("*") if p.is_file())
    if not pages:
        raise SystemExit(
            f"no manual pages in {man_dir}/man{{{','.join(sections)}}}: install Debian's manpages-dev "
            "(apt-get install manpages-dev) or pass --man-dir"
        )
    out = []
    from tqdm.auto import tqdm

    for page in tqdm(pages, desc="man pages", unit="page"):
        if is_link(page):
            continue
        parsed = parse_page(render(page), max_words)
        if parsed:
            page_id = page.name.removesuffix(".gz")
            out.append((page_id, *parsed))
    return out


# ------------------------------------------------------------------------------------------ output


def write_beir(
    folder: Path,
    docs: dict[str, str],
    queries: dict[str, str],
    qrels: dict[str, set[str]],
    *,
    max_queries: int,
    max_docs: int,
    seed: int,
    about: str,
) -> dict[str, int]:
    """Write one BEIR-format set: ``max_queries`` queries drawn with ``seed`` and split in halves into
    qrels/dev.tsv and qrels/test.tsv; every relevant document and at most ``max_docs`` documents."""
    rng = random.Random(seed)
    qids = sorted(qrels)
    picked = sorted(rng.sample(qids, min(max_queries, len(qids))))
    dev = set(rng.sample(picked, len(picked) // 2))
    needed = {d for q in picked for d in qrels[q]}
    others = sorted(set(docs) - needed)
    keep = needed | set(rng.sample(others, max(0, min(len(others), max_docs - len(needed)))))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "qrels").mkdir(exist_ok=True)
    with open(folder / "corpus.jsonl", "w") as fh:
        for d in sorted(keep):
            fh.write(json.dumps({"_id": d, "title": "", "text": docs[d]}) + "\n")
    with open(folder / "queries.jsonl", "w") as fh:
        for q in picked:
            fh.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    for split, members in (
        ("dev", [q for q in picked if q in dev]),
        ("test", [q for q in picked if q not in dev]),
    ):
        with open(folder / "qrels" / f"{split}.tsv", "w") as fh:
            fh.write("query-id\tcorpus-id\tscore\n")
            for q in members:
                for d in sorted(qrels[q]):
                    fh.write(f"{q}\t{d}\t1\n")
    counts = {"documents": len(keep), "queries_dev": len(dev), "queries_test": len(picked) - len(dev)}
    (folder / "README.md").write_text(
        f"{about}\n\nMade by `python -m evals.make_datasets` (seed {seed}, --max-queries {max_queries}, "
        f"--max-docs {max_docs}): {json.dumps(counts)}\n"
    )
    return counts


def paraphrase_beir(
    pairs: Pairs, threshold: float
) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    """:func:`paraphrase_set` with ids: documents ``d<n>``, queries ``q<n>``."""
    sentences, by_query = paraphrase_set(pairs, threshold)
    doc_id = {s: f"d{i}" for i, s in enumerate(sentences)}
    docs = {v: k for k, v in doc_id.items()}
    queries = {f"q{i}": q for i, q in enumerate(by_query)}
    qrels = {f"q{i}": {doc_id[s] for s in by_query[q]} for i, q in enumerate(by_query)}
    return docs, queries, qrels


def manpages_beir(man_dir: Path) -> tuple[dict[str, str], dict[str, str], dict[str, set[str]]]:
    pages = man_pages(man_dir)
    docs = {page_id: body for page_id, _, body in pages}
    by_description: dict[str, set[str]] = {}
    for page_id, description, _ in pages:
        by_description.setdefault(description, set()).add(page_id)
    queries = {f"q{i}": d for i, d in enumerate(by_description)}
    qrels = {f"q{i}": by_description[d] for i, d in enumerate(by_description)}
    return docs, queries, qrels


def deep_queries(docs: dict[str, str], seed: int) -> tuple[dict[str, str], dict[str, set[str]]]:
    """manpages-long's queries: for each page longer than :data:`DEEP_WORDS` words, the first
    :data:`QUERY_WORDS` words of a sentence (of at least 6 words) drawn among those starting past word
    :data:`DEEP_WORDS` (up to :data:`TRIES` of them), kept when no other page holds the same words (its only
    relevant page is its own)."""
    rng = random.Random(seed)
    queries, qrels = {}, {}
    texts = list(docs.values())
    for page_id, body in sorted(docs.items()):
        words = body.split()
        if len(words) <= DEEP_WORDS + QUERY_WORDS:
            continue
        starts = [i + 1 for i in range(DEEP_WORDS - 1, len(words) - 6) if words[i].endswith(".")]
        rng.shuffle(starts)
        for start in starts[:TRIES]:
            fragment = " ".join(words[start : start + QUERY_WORDS])
            sentence = fragment.split(". ")[0]
            if len(sentence.split()) >= 6 and sum(sentence in t for t in texts) == 1:
                queries[f"q{len(queries)}"] = sentence
                qrels[f"q{len(qrels)}"] = {page_id}
                break
    return queries, qrels


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, required=True, help="the folder that holds sts/")
    ap.add_argument("--out", type=Path, required=True, help="the sets go to <out>/beir/<name>/")
    ap.add_argument("--only", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--man-dir", type=Path, default=Path("/usr/share/man"))
    ap.add_argument("--max-queries", type=int, default=500)
    ap.add_argument("--max-docs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--suffix", default="", help="appended to each set's name (e.g. -small for a smaller copy)"
    )
    args = ap.parse_args(argv)
    if args.max_queries < 2 or args.max_docs < 1:
        ap.error("--max-queries must be >= 2 (dev and test) and --max-docs >= 1")
    for name in args.only:
        if name == "stsb-para":
            pairs = [p for split in ("train", "dev", "test") for p in read_stsb(args.data_dir, split)]
            made, about = paraphrase_beir(pairs, 4.0), "STS Benchmark paraphrase retrieval (score >= 4 of 5)."
        elif name == "sick-para":
            pairs = [p for split in ("train", "trial", "test") for p in read_sick(args.data_dir, split)]
            made, about = paraphrase_beir(pairs, 4.0), "SICK paraphrase retrieval (relatedness >= 4 of 1..5)."
        elif name == "sts12-16-para":
            pairs = [
                p
                for year, subsets in STS_YEARS.items()
                for s in subsets
                for p in read_sts_subset(args.data_dir, year, s)
            ]
            made, about = (
                paraphrase_beir(pairs, 4.0),
                "SemEval STS 2012-2016 paraphrase retrieval (score >= 4 of 5).",
            )
        elif name == "manpages-long":
            docs = {page_id: body for page_id, _, body in man_pages(args.man_dir, max_words=None)}
            made = (docs, *deep_queries(docs, args.seed))
            about = (
                "Linux man pages, sections 2 and 3, whole (COLOPHON left out): long documents. A query is the "
                f"first words (<= {QUERY_WORDS}) of a sentence starting past word {DEEP_WORDS} of its page, "
                "verbatim (found in no other page): an answer past the first 384 tokens, lexical by construction."
            )
        else:
            made = manpages_beir(args.man_dir)
            about = (
                f"Linux man pages, sections 2 and 3 (Debian manpages-dev), rendered by man; query: the NAME "
                f"description; document: the rest of the page, first {WORDS_PER_PAGE} words."
            )
        counts = write_beir(
            args.out / "beir" / f"{name}{args.suffix}",
            *made,
            max_queries=args.max_queries,
            max_docs=args.max_docs,
            seed=args.seed,
            about=about,
        )
        print(f"{name}{args.suffix}: {counts}", file=sys.stderr)


if __name__ == "__main__":
    main()
