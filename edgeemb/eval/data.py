"""Loaders for the benchmark data under ../shared/data (formats as in each folder's SOURCE.md)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, overload

import numpy as np

MAX_MALFORMED = 0.01  # above this fraction of malformed rows a file is rejected
STS_LANGS = ("en", "zh")
_R = TypeVar("_R")
_T = TypeVar("_T")
ANALOGY_SETS = ("google_analogy", "ca8")
WORDSIM_SETS = ("wordsim353", "simlex999", "cwe_240", "cwe_297")
_WORDSIM_FILES = {
    "wordsim353": ("word_similarity_en", "wordsim353.tsv"),
    "simlex999": ("word_similarity_en", "simlex999.txt"),
    "cwe_240": ("word_similarity_zh", "cwe_240.txt"),
    "cwe_297": ("word_similarity_zh", "cwe_297.txt"),
}
_CWE_297_DROPPED = ("OPEC", "石油")  # removed in the usual wordsim-296 evaluation (cwe_README.md)


class DataNotFound(FileNotFoundError):
    """A benchmark dataset folder or file is missing."""


@dataclass
class RetrievalSet:
    """A BEIR-style retrieval set: doc id -> text, query id -> text, query id -> {doc id: relevance}."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: data_dir, else $EDGEEMB_DATA, else <repo root>/../shared/data."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("EDGEEMB_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _path(data_dir: str | os.PathLike[str] | None, folder: str, *parts: str) -> Path:
    root = data_root(data_dir)
    for p in (root / folder, root.joinpath(folder, *parts)):
        if not p.exists():
            raise DataNotFound(f"dataset not found: {p} (set EDGEEMB_DATA or pass --data)")
    return p


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(
            f"{path}:{line}: undecodable bytes {data[e.start : e.end]!r} at byte offset {e.start} (expected UTF-8)"
        ) from None


@overload
def _records(path: Path, sep: None = None, header: bool = False) -> Iterator[tuple[int, str]]: ...


@overload
def _records(path: Path, sep: str, header: bool = False) -> Iterator[tuple[int, list[str]]]: ...


def _records(path: Path, sep: str | None = None, header: bool = False) -> Iterator[tuple[int, Any]]:
    """(line number, row) of non-blank rows: sep "," parses RFC-4180 CSV, another sep splits, None keeps the line."""
    text = _read_text(path)
    rows: Iterator[tuple[int, Any]]
    if sep == ",":
        reader = csv.reader(io.StringIO(text))
        rows = ((reader.line_num, f) for f in reader if f)
    else:
        lines = (line.rstrip("\r") for line in text.split("\n"))
        rows = (
            (i, line if sep is None else line.split(sep)) for i, line in enumerate(lines, 1) if line.strip()
        )
    if header:
        next(rows, None)
    return rows


def _parse(path: Path, records: Iterable[tuple[int, _R]], parse: Callable[[_R], _T | None]) -> list[_T]:
    """Parse rows, skipping and counting malformed ones; raise when more than 1% are malformed. None = not a row."""
    rows: list[_T] = []
    bad, first = 0, None
    for line, raw in records:
        try:
            row = parse(raw)
        except (ValueError, IndexError, KeyError, TypeError, AttributeError) as e:
            bad += 1
            first = first or (line, e)
            continue
        if row is not None:
            rows.append(row)
    total = len(rows) + bad
    if bad > MAX_MALFORMED * total:
        assert first is not None  # set with the first malformed row
        raise ValueError(f"{path}:{first[0]}: malformed row ({first[1]}); {bad} of {total} rows malformed")
    if bad:
        assert first is not None
        warnings.warn(
            f"{path}: skipped {bad} malformed rows (first at line {first[0]}: {first[1]})", stacklevel=3
        )
    return rows


def _fields(f: list[str], n: int) -> list[str]:
    if len(f) != n:
        raise ValueError(f"expected {n} fields, got {len(f)}")
    return f


def _text(s: str) -> str:
    s = s.strip()
    if not s:
        raise ValueError("empty text")
    return s


def _score(s: str) -> float:
    v = float(s)
    if not math.isfinite(v):
        raise ValueError(f"non-finite score {s!r}")
    return v


def _pair(f: list[str]) -> tuple[str, str, float]:
    a, b, s = _fields(f, 3)
    return _text(a), _text(b), _score(s)


def load_sts(lang: str, split: str = "test",
             data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str, float]]:
    """STS-B pairs (s1, s2, score 0-5): lang "en" (stsb_en CSV) or "zh" (stsb_zh_cnsd, C-MTEB STSB)."""
    if lang == "en":
        path = _path(data_dir, "stsb_en", f"stsb-en-{split}.csv")
        return _parse(path, _records(path, ","), _pair)
    if lang == "zh":
        path = _path(data_dir, "stsb_zh_cnsd", f"STS-B.{'valid' if split == 'dev' else split}.data")
        return _parse(path, _records(path, "\t"), _pair)
    raise ValueError(f"unknown STS language {lang!r}; expected one of {STS_LANGS}")


def _label(f: list[str]) -> tuple[str, str, int]:
    a, b, s = _pair(f)
    if s not in (0, 1):
        raise ValueError(f"label {s!r} is not 0/1")
    return a, b, int(s)


def load_lcqmc(split: str = "test",
               data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str, int]]:
    """LCQMC question pairs (s1, s2, label 0/1)."""
    path = _path(data_dir, "lcqmc", f"{split}.txt")
    return _parse(path, _records(path, "\t"), _label)


def load_zh_retrieval(split: str = "test", distractors: int = 20_000,
                      data_dir: str | os.PathLike[str] | None = None) -> RetrievalSet:
    """A Chinese retrieval set built from LCQMC: each paraphrase pair's first question is a query and its second
    the relevant document, among every second question of the split and the first `distractors` sentences of
    zh_corpus (reviews and news). Questions that recur keep all their positives; a query whose document is
    identical to it is dropped."""
    pairs = load_lcqmc(split, data_dir)
    texts: dict[str, str] = {}  # text -> doc id
    for _, b, _ in pairs:
        texts.setdefault(b, f"lcqmc-{len(texts)}")
    path = _path(data_dir, "zh_corpus", "zh_sentences.tsv")
    added = 0
    for _, rec in _records(path, "\t", header=True):
        if added >= distractors:
            break
        if len(rec) >= 2 and rec[1].strip() and rec[1] not in texts:
            texts[rec[1]] = f"zh-{added}"
            added += 1
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    qid_of: dict[str, str] = {}
    for a, b, label in pairs:
        if label != 1 or a == b:
            continue
        qid = qid_of.setdefault(a, f"q{len(qid_of)}")
        queries[qid] = a
        qrels.setdefault(qid, {})[texts[b]] = 1
    return RetrievalSet({doc: text for text, doc in texts.items()}, queries, qrels)


def _jsonl(path: Path, parse: Callable[[Any], tuple[str, str]]) -> dict[str, str]:
    return dict(_parse(path, _records(path), lambda line: parse(json.loads(line))))


def load_scifact(split: str = "test", data_dir: str | os.PathLike[str] | None = None) -> RetrievalSet:
    """BEIR SciFact: corpus (title + " " + text), the queries that have qrels in the split, and the qrels."""
    return load_beir(_path(data_dir, "beir_scifact"), split)


def _analogy_file(path: Path, prefix: str = "") -> list[tuple[str, str, str, str, str]]:
    section: str | None = None

    def parse(line: str) -> tuple[str, str, str, str, str] | None:
        nonlocal section
        if line.startswith(":"):
            section = prefix + line[1:].strip()
            return None
        words = line.split()
        if len(words) != 4 or section is None:
            raise ValueError(f"expected 4 words after a ': section' line, got {line!r}")
        a, b, c, d = words
        return (section, a, b, c, d)

    return _parse(path, _records(path), parse)


def load_analogy(name: str,
                 data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str, str, str, str]]:
    """Analogy questions (section, a, b, c, d): "google_analogy" or "ca8" (semantic + morphological)."""
    if name == "google_analogy":
        return _analogy_file(_path(data_dir, "google_analogy", "questions-words.txt"))
    if name == "ca8":
        return [
            q
            for part in ("semantic", "morphological")
            for q in _analogy_file(_path(data_dir, "ca8_zh_analogy", f"{part}.txt"), f"{part}/")
        ]
    raise ValueError(f"unknown analogy set {name!r}; expected one of {ANALOGY_SETS}")


def load_wordsim(name: str, data_dir: str | os.PathLike[str] | None = None) -> list[tuple[str, str, float]]:
    """Word-similarity pairs (w1, w2, score); cwe_297 drops the OPEC pair as usual (296 pairs)."""
    if name not in _WORDSIM_FILES:
        raise ValueError(f"unknown word-similarity set {name!r}; expected one of {WORDSIM_SETS}")
    path = _path(data_dir, *_WORDSIM_FILES[name])
    rows = _parse(path, _records(path), lambda line: None if line.startswith("#") else _pair(line.split()))
    return [r for r in rows if name != "cwe_297" or r[:2] != _CWE_297_DROPPED]


def load_cluster_set(max_per_label: int = 500, seed: int = 0,
                     data_dir: str | os.PathLike[str] | None = None) -> tuple[list[str], list[str]]:
    """Balanced sample of en_corpus sentences labelled by source: min(max_per_label, smallest source) each."""
    path = _path(data_dir, "en_corpus", "en_sentences.tsv")
    rows = _parse(path, _records(path, "\t", header=True), lambda f: (_text(_fields(f, 2)[0]), _text(f[1])))
    by_label: dict[str, list[str]] = {}
    for label, sentence in rows:
        by_label.setdefault(label, []).append(sentence)
    if not by_label:
        raise ValueError(f"{path}: no rows")
    n = min(max_per_label, *(len(v) for v in by_label.values()))
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label in sorted(by_label):
        pick = np.sort(rng.choice(len(by_label[label]), size=n, replace=False))
        texts += [by_label[label][i] for i in pick]
        labels += [label] * n
    return texts, labels


# -- which datasets each task runs --------------------------------------------------------------------------
# task -> dataset name -> loader(data_dir). `edgeemb eval` runs the ones present and notes the absent ones.
BUILTIN: dict[str, dict[str, Callable[[Any], Any] | None]] = {
    "sts": {"stsb_en": lambda d: load_sts("en", data_dir=d), "stsb_zh_cnsd": lambda d: load_sts("zh", data_dir=d)},
    "pair": {"lcqmc": lambda d: load_lcqmc(data_dir=d)},
    "retrieval": {"beir_scifact": lambda d: load_scifact(data_dir=d),
                  "lcqmc_retrieval": lambda d: load_zh_retrieval(data_dir=d)},
    "cluster": {"en_corpus": None},  # sampled by the task (load_cluster_set)
    "analogy": {name: partial(load_analogy, name) for name in ANALOGY_SETS},
    "wordsim": {name: partial(load_wordsim, name) for name in WORDSIM_SETS},
}

# The generic formats a user's own dataset can take (`edgeemb eval BUNDLE --task T --data FILE_OR_DIR`).
FORMATS = {
    "sts": "CSV or TSV: sentence1, sentence2, score (any scale; a header row is optional)",
    "pair": "CSV or TSV: sentence1, sentence2, label (0/1; a header row is optional)",
    "retrieval": "a BEIR folder: corpus.jsonl (_id, title, text), queries.jsonl (_id, text), qrels/test.tsv",
    "cluster": "CSV or TSV: text, label (a header row is optional)",
    "analogy": "word2vec questions (': section' lines, then 'a b c d') or CSV/TSV a, b, c, d",
    "wordsim": "CSV, TSV or space-separated: word1, word2, score (lines starting with # are skipped)",
}


def user_dataset(task: str, path: str | os.PathLike[str]) -> tuple[str, Any]:
    """(name, data) of a user's own dataset for a task, read in the task's generic format (FORMATS)."""
    path = Path(path)
    if not path.exists():
        raise DataNotFound(f"dataset not found: {path}")
    name = path.stem if path.is_file() else path.name
    if task == "retrieval":
        if not path.is_dir():
            raise ValueError(f"{path}: a retrieval dataset is a BEIR folder ({FORMATS['retrieval']})")
        return name, load_beir(path)
    if path.is_dir():
        raise ValueError(f"{path}: a {task} dataset is one file ({FORMATS[task]})")
    if task in ("sts", "pair", "cluster", "wordsim"):
        rows = _table(path, 2 if task == "cluster" else 3, space=task == "wordsim")
        if task == "cluster":
            return name, ([_text(r[0]) for r in rows], [_text(r[1]) for r in rows])
        parse = _label if task == "pair" else _pair
        return name, [parse(r) for r in rows]
    if task == "analogy":
        text = _read_text(path)
        if any(line.startswith(":") for line in text.splitlines()):
            return name, _analogy_file(path)
        return name, [("all", *_fields(r, 4)) for r in _table(path, 4)]
    raise ValueError(f"unknown task {task!r}")


def load_beir(folder: Path, split: str = "test") -> RetrievalSet:
    """A BEIR-layout folder: corpus (title + " " + text), the split's queries with qrels, and the qrels."""
    corpus = _jsonl(_path(folder, "", "corpus.jsonl"),
                    lambda d: (str(d["_id"]), _text(f"{d.get('title') or ''} {d['text']}")))
    queries = _jsonl(_path(folder, "", "queries.jsonl"), lambda d: (str(d["_id"]), _text(d["text"])))
    qrels_path = _path(folder, "qrels", f"{split}.tsv")
    qrels: dict[str, dict[str, int]] = {}
    rows = _parse(qrels_path, _records(qrels_path, "\t", header=True),
                  lambda f: (_fields(f, 3)[0], f[1], int(f[2])))
    for q, d, rel in rows:
        qrels.setdefault(q, {})[d] = int(rel)
    qrels = {q: rels for q, rels in qrels.items() if q in queries}
    return RetrievalSet(corpus, {q: queries[q] for q in qrels}, qrels)


def _table(path: Path, n: int, space: bool = False) -> list[list[str]]:
    """Rows of n columns from a CSV (by extension) or TSV file, or, with space, any whitespace-separated file;
    comment lines (#) are skipped, and so is a first row that names the columns or has no number where a score is.
    """
    sep = "," if path.suffix.lower() == ".csv" else "\t"
    recs = list(_records(path, sep))
    if space and recs and len(recs[0][1]) < n:  # not tab-separated: split on any whitespace
        recs = [(i, str(line).split()) for i, line in _records(path)]
    recs = [(i, r) for i, r in recs if not r[0].lstrip().startswith("#")]
    if recs and _is_header(recs[0][1], n):
        recs = recs[1:]
    return _parse(path, iter(recs), lambda f: _fields([x.strip() for x in f], n))


def _is_header(row: list[str], n: int) -> bool:
    names = {"sentence1", "sentence2", "score", "label", "text", "word1", "word2", "a", "b", "c", "d", "s1", "s2"}
    if any(x.strip().lower() in names for x in row):
        return True
    if n == 3:
        try:
            float(row[-1])
        except (ValueError, IndexError):
            return True
    return False
