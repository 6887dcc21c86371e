"""Readers for the STS data in ../shared/data/sts, parsed as its SOURCES.md describes.

Every reader returns a list of ``(sentence1, sentence2, gold score)``.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidArgument

Pairs = list[tuple[str, str, float]]

# SemEval STS 2012-2016 subsets, as SentEval evaluates them (STS13's licensed SMT subset is absent).
STS_YEARS: dict[str, tuple[str, ...]] = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        raise SystemExit(f"{path} is missing; pass --data-dir pointing at the folder that holds sts/")
    return path.read_text(encoding="utf-8").splitlines()  # also strips SICK test's CRLF endings


def read_stsb(data_dir: Path, split: str = "test") -> Pairs:
    """STS Benchmark: tab-separated without quoting; fields genre, file, year, id, score, s1, s2 (+ sources)."""
    pairs = []
    for line in _lines(Path(data_dir) / "sts" / "stsbenchmark" / f"sts-{split}.csv"):
        fields = line.split("\t")
        pairs.append((fields[5], fields[6], float(fields[4])))
    return pairs


def read_sick(data_dir: Path, split: str = "test") -> Pairs:
    """SICK relatedness (1-5); a header line, then pair_ID, sentence_A, sentence_B, relatedness, entailment."""
    name = {"test": "SICK_test_annotated.txt", "train": "SICK_train.txt", "trial": "SICK_trial.txt"}[split]
    pairs = []
    for line in _lines(Path(data_dir) / "sts" / "sick" / name)[1:]:
        fields = line.split("\t")
        pairs.append((fields[1], fields[2], float(fields[3])))
    return pairs


def read_sts_subset(data_dir: Path, year: str, subset: str) -> Pairs:
    """One SemEval subset: ``STS.input.*`` (first two tab fields) beside ``STS.gs.*`` (gold; pairs whose gold
    line is empty are not scored, as in SentEval)."""
    folder = Path(data_dir) / "sts" / "sts12-16" / year
    prefix = "STS2016" if year == "STS16" else "STS"
    inputs = _lines(folder / f"{prefix}.input.{subset}.txt")
    gold = _lines(folder / f"{prefix}.gs.{subset}.txt")
    if len(inputs) != len(gold):
        raise InvalidArgument(f"{year} {subset}: {len(inputs)} input lines but {len(gold)} gold lines")
    pairs = []
    for text, score in zip(inputs, gold):
        if score.strip():
            s1, s2 = text.split("\t")[:2]
            pairs.append((s1, s2, float(score)))
    return pairs


def read_all(data_dir: Path) -> dict[str, dict[str, Pairs]]:
    """``{task: {subset: pairs}}`` for STS12..STS16 (their subsets), STSBenchmark and SICK-R (test)."""
    tasks = {
        year: {s: read_sts_subset(data_dir, year, s) for s in subsets} for year, subsets in STS_YEARS.items()
    }
    tasks["STSBenchmark"] = {"test": read_stsb(data_dir, "test")}
    tasks["SICK-R"] = {"test": read_sick(data_dir, "test")}
    return tasks
