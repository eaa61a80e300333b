"""Word vector files (word2vec binary/text, GloVe, fastText .vec/.bin): sniff the dialect, read, count problems.

Problems in the input either stop the export with a message naming the line or word (ragged rows, a header
that disagrees with the rows, truncated binaries, an empty vocabulary) or are counted, warned about and
recorded in the manifest's source.read (duplicate words, invalid UTF-8, NaN/inf rows, a header word count that
differs from the rows).
"""
from __future__ import annotations

import mmap
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgeemb.progress import Progress

from ..common.errors import ExportError
from .options import FORMATS, LOWERCASE

HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")


class StaticInputWarning(UserWarning):
    """A problem in a vector file that was counted and worked around (duplicates, invalid UTF-8, NaN rows...)."""


@dataclass
class WordVectors:
    """Vectors read from a file, in file order, with what was counted on the way."""

    words: list[str]
    vectors: np.ndarray  # float32 (V, dim)
    counts: np.ndarray | None = None  # word counts when the file has them (fastText .bin)
    ngrams: np.ndarray | None = None  # fastText n-gram buckets (bucket, dim)
    minn: int = 0
    maxn: int = 0
    notes: dict[str, int] = field(default_factory=dict)


class _Collector:
    """Accepts rows one by one: decodes words, drops duplicates and NaN/inf rows, counts each problem."""

    def __init__(self, path: Path, dim: int, max_vocab: int | None):
        self.path, self.dim, self.max_vocab = path, dim, max_vocab
        self.words: list[str] = []
        self.rows: list[np.ndarray] = []
        self.keep: list[int] = []
        self.seen: set[str] = set()
        self.notes: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def note(self, what: str, example: str) -> None:
        self.notes[what] = self.notes.get(what, 0) + 1
        self.examples.setdefault(what, example)

    @property
    def full(self) -> bool:
        return self.max_vocab is not None and len(self.words) >= self.max_vocab

    def add(self, raw: bytes, vec: np.ndarray, where: str, index: int | None = None) -> None:
        try:
            word = raw.decode("utf-8")
        except UnicodeDecodeError:
            word = raw.decode("utf-8", errors="backslashreplace")
            self.note("invalid_utf8", word)
        if not word:
            raise ExportError(f"{self.path}: {where}: empty word")
        if not np.isfinite(vec).all():
            self.note("nonfinite_rows", word)
            return
        if word in self.seen:
            self.note("duplicates", word)
            return
        self.seen.add(word)
        self.words.append(word)
        self.rows.append(vec)
        if index is not None:
            self.keep.append(index)

    def result(self) -> WordVectors:
        if not self.words:
            raise ExportError(f"{self.path}: empty vocabulary (no usable word vectors)")
        return WordVectors(self.words, np.vstack(self.rows).astype(np.float32, copy=False), notes=self.notes)


def sniff_format(path: Path) -> str:
    """Guess the dialect from the first bytes: fastText magic, a `count dim` header, then text or binary rows."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    if not head.strip():
        raise ExportError(f"{path}: empty file")
    if len(head) >= 4 and int.from_bytes(head[:4], "little") == 793712314:
        return "fasttext-bin"
    first, _, rest = head.partition(b"\n")
    if not HEADER.match(first):
        return "glove"
    line = rest.split(b"\n", 1)[0]
    try:
        parts = line.decode("utf-8").split()
        [float(x) for x in parts[1:]]
        text = len(parts) > 1
    except (UnicodeDecodeError, ValueError):
        text = False
    if not text:
        return "word2vec-bin"
    return "fasttext-vec" if path.suffix == ".vec" else "word2vec-text"


def _floats(parts: list[bytes], path: Path, lineno: int) -> np.ndarray:
    try:
        with np.errstate(over="ignore"):  # values past float32 become inf, then the row is dropped and counted
            return np.array([float(x) for x in parts], dtype=np.float32)
    except ValueError:
        bad = next(x for x in parts if not _is_float(x))
        raise ExportError(f"{path}: line {lineno}: value {bad[:40]!r} is not a number") from None


def _is_float(x: bytes) -> bool:
    try:
        float(x)
        return True
    except ValueError:
        return False


def read_text(path: Path, header: bool, max_vocab: int | None = None, show_progress: bool = True) -> WordVectors:
    """word2vec text and fastText .vec (with a `count dim` header) or GloVe (none): `word v1 ... vD` per line."""
    path = Path(path)
    size = path.stat().st_size
    declared = None
    rows: _Collector | None = None
    with open(path, "rb") as f, Progress(size, f"reading {path.name}", show_progress, "B") as bar:
        lineno = 0
        for line in f:
            lineno += 1
            bar.update(len(line))
            parts = line.split()
            if not parts:
                continue
            if header and declared is None:
                m = HEADER.match(line)
                if not m:
                    raise ExportError(f"{path}: line 1 is not a `count dim` header ({line[:60]!r}); "
                                      f"try --format glove")
                declared = (int(m.group(1)), int(m.group(2)))
                if declared[1] <= 0:
                    raise ExportError(f"{path}: header says {declared[1]} dimensions")
                rows = _Collector(path, declared[1], max_vocab)
                continue
            if rows is None:
                first = line
                if len(parts) < 2:
                    raise ExportError(f"{path}: line {lineno} has no vector values")
                rows = _Collector(path, len(parts) - 1, max_vocab)
            dim = rows.dim
            if len(parts) < dim + 1 or (len(parts) > dim + 1 and _is_float(parts[1])):
                expected = f"the header says {dim}" if header else f"line 1 has {dim}"
                hint = " (line 1 looks like a `count dim` header: try --format word2vec-text)" \
                    if not header and lineno == 2 and dim == 1 and HEADER.match(first) else ""
                raise ExportError(f"{path}: line {lineno} has {len(parts) - 1} values but {expected}{hint}")
            word = b" ".join(parts[:-dim])  # GloVe 840B has words with spaces in them
            rows.add(word, _floats(parts[-dim:], path, lineno), f"line {lineno}")
            if rows.full:
                break
    if rows is None:
        raise ExportError(f"{path}: empty vocabulary (no vector lines)")
    out = rows.result()
    if declared is not None and not max_vocab:
        n_rows = len(out.words) + sum(rows.notes.get(k, 0) for k in ("duplicates", "nonfinite_rows"))
        if n_rows != declared[0]:
            out.notes["header_count_mismatch"] = abs(n_rows - declared[0])
            rows.examples["header_count_mismatch"] = f"header says {declared[0]} words, file has {n_rows}"
    _warn(path, out.notes, rows.examples)
    return out


def read_word2vec_bin(path: Path, max_vocab: int | None = None, show_progress: bool = True) -> WordVectors:
    """word2vec binary: `count dim` header line, then per word `word<space>` + dim little-endian float32."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)  # no copy of a multi-GB file in memory
        except ValueError:
            raise ExportError(f"{path}: empty file") from None
    first, nl, _ = bytes(data[:4096]).partition(b"\n")
    m = HEADER.match(first)
    if not nl or not m:
        raise ExportError(f"{path}: line 1 is not a `count dim` header ({first[:60]!r})")
    count, dim = int(m.group(1)), int(m.group(2))
    if dim <= 0:
        raise ExportError(f"{path}: header says {dim} dimensions")
    rows = _Collector(path, dim, max_vocab)
    pos, width = len(first) + 1, dim * 4
    with Progress(count, f"reading {path.name}", show_progress, "words") as bar:
        for i in range(count):
            while pos < len(data) and data[pos] in (10, 13):  # a newline may follow each vector
                pos += 1
            space = data.find(b" ", pos, pos + 10_000)
            if space < 0 or space + 1 + width > len(data):
                raise ExportError(f"{path}: truncated: the header says {count} words but the file ends "
                                  f"inside word {i + 1}")
            vec = np.frombuffer(data, dtype="<f4", count=dim, offset=space + 1).astype(np.float32)
            rows.add(data[pos:space], vec, f"word {i + 1}")
            pos = space + 1 + width
            bar.update()
            if rows.full:
                break
    if not rows.full and bytes(data[pos:pos + 4096]).strip():
        rows.note("header_count_mismatch", f"header says {count} words; bytes follow the last one")
    out = rows.result()
    _warn(path, rows.notes, rows.examples)
    return out


def read_fasttext(path: Path, max_vocab: int | None = None, show_progress: bool = True) -> WordVectors:
    """fastText .bin: word vectors as fastText computes them, plus counts and the n-gram buckets."""
    from .fasttext import read_fasttext_bin

    ft = read_fasttext_bin(path, max_vocab, show_progress)
    rows = _Collector(Path(path), ft["dim"], None)
    for i, (word, vec) in enumerate(zip(ft["words"], ft["vectors"])):
        rows.add(word, vec, f"word {i + 1}", index=i)
    out = rows.result()
    out.counts = ft["counts"][rows.keep]
    out.ngrams, out.minn, out.maxn = ft["ngrams"], ft["minn"], ft["maxn"]
    _warn(path, rows.notes, rows.examples)
    return out


def read_vectors(path: Path, fmt: str | None = None, max_vocab: int | None = None,
                 show_progress: bool = True) -> tuple[str, WordVectors]:
    """Read any supported dialect (sniffed when fmt is None); returns (format, vectors)."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{path}: no such file")
    if max_vocab is not None and max_vocab < 1:
        raise ExportError(f"--max-vocab must be positive, got {max_vocab}")
    fmt = fmt or sniff_format(path)
    if fmt == "word2vec-bin":
        return fmt, read_word2vec_bin(path, max_vocab, show_progress)
    if fmt in ("word2vec-text", "fasttext-vec", "glove"):
        return fmt, read_text(path, fmt != "glove", max_vocab, show_progress)
    if fmt == "fasttext-bin":
        return fmt, read_fasttext(path, max_vocab, show_progress)
    raise ExportError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")


def _warn(path: Path, notes: dict[str, int], examples: dict[str, str]) -> None:
    labels = {"duplicates": "duplicate words (the first kept)", "invalid_utf8": "words not valid UTF-8 (kept "
              "with \\x escapes)", "nonfinite_rows": "rows with NaN or inf (dropped)",
              "header_count_mismatch": "words fewer or more than the header says",
              "case_merged": "words merged by lowercasing (the first kept)"}
    for key, n in notes.items():
        warnings.warn(f"{path.name}: {n} {labels.get(key, key)}, e.g. {examples.get(key, '')!r}",
                      StaticInputWarning, stacklevel=3)


def apply_lowercase(wv: WordVectors, lowercase: str, path: Path) -> bool:
    """auto: lowercase when no word has an uppercase letter; yes: lowercase and merge words that collide."""
    if lowercase not in LOWERCASE:
        raise ExportError(f"--lowercase must be auto, yes or no, got {lowercase!r}")
    has_upper = any(w != w.lower() for w in wv.words)
    if lowercase == "no" or (lowercase == "auto" and has_upper):
        return False
    if has_upper:
        keep, seen, merged = [], set(), []
        for i, w in enumerate(wv.words):
            low = w.lower()
            if low in seen:
                merged.append(w)
                continue
            seen.add(low)
            keep.append(i)
        wv.words = [wv.words[i].lower() for i in keep]
        wv.vectors = wv.vectors[keep]
        wv.counts = None if wv.counts is None else wv.counts[keep]
        if merged:
            wv.notes["case_merged"] = len(merged)
            _warn(path, {"case_merged": len(merged)}, {"case_merged": merged[0]})
    return True
