"""Word vector files (word2vec binary/text, GloVe, fastText .vec/.bin) to static bundles: sniff, read, check, write.

Over 400 lines: four readers and the bundle writer; the split into export/static/ (readers, bundle) is the open
part of issue #12.

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

from edgeemb.bundle import sha256_file
from edgeemb.progress import Progress
from edgeemb.static.backend import NGRAM_SCALES, NGRAMS, SCALES, VECTORS, WEIGHTS

from .bundle_writer import finish_manifest, staging
from .errors import ExportError

FORMATS = ("word2vec-bin", "word2vec-text", "glove", "fasttext-vec", "fasttext-bin")
QUANTIZE_CHOICES = ("none", "fp16", "int8")  # the shared vocabulary (export/quantization.py); fp32 = none
QUANTIZATION_NAMES = {"fp32": "none", "none": "none", "fp16": "fp16", "int8": "int8"}
SIF_A = 1e-4  # SIF's a (Arora et al. 2017); model2vec's default
MAX_LENGTH = 512  # tokens per text; model2vec's default cut
UNK = "[UNK]"
HEADER = re.compile(rb"^\s*(\d+)\s+(\d+)\s*$")
CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")


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
    if lowercase not in ("auto", "yes", "no"):
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


def segmentation_for(words: list[str]) -> str:
    """'longest-match' when at least a fifth of the vocabulary is CJK (no spaces between words), else 'words'."""
    cjk = sum(1 for w in words if CJK.search(w))
    return "longest-match" if cjk * 5 >= len(words) else "words"


def build_tokenizer(words: list[str], segmentation: str, lowercase: bool):
    """A tokenizers.Tokenizer over the vocabulary: id i is words[i], the unknown token is id len(words).

    words: WordLevel after splitting on whitespace and punctuation runs (English and other spaced scripts).
    longest-match: Unigram with equal piece scores after splitting on whitespace and punctuation, i.e. the
    segmentation into the fewest vocabulary pieces (maximal matching; ties go to more frequent pieces). Unlike
    WordPiece's greedy match it never turns a whole phrase into [UNK] for one unknown character: only the
    unknown run is skipped. Single-character vocabularies segment into characters.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    unk = UNK
    taken = set(words)
    while unk in taken:
        unk = f"[{unk}]"
    if segmentation == "words":
        vocab = {w: i for i, w in enumerate(words)}
        vocab[unk] = len(words)
        tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    elif segmentation == "longest-match":
        n = len(words)
        pieces = [(w, -1.0 - 0.01 * i / n) for i, w in enumerate(words)] + [(unk, 0.0)]
        tok = Tokenizer(models.Unigram(pieces, unk_id=n, byte_fallback=False))
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    else:
        raise ExportError(f"unknown segmentation {segmentation!r}; expected words or longest-match")
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    return tok


def quantize_rows(x: np.ndarray, how: str) -> tuple[np.ndarray, np.ndarray | None]:
    """fp32/none: as is; fp16: half floats; int8: symmetric per-row scales (max |v| maps to 127)."""
    how = QUANTIZATION_NAMES.get(how, how)
    if how == "none":
        return np.ascontiguousarray(x, np.float32), None
    if how == "fp16":
        if np.abs(x).max(initial=0) > 65504:
            raise ExportError("vectors exceed the float16 range; use --quantize int8 or fp32")
        return x.astype(np.float16), None
    if how == "int8":
        scales = (np.abs(x).max(axis=1) / 127).astype(np.float32)
        safe = np.where(scales > 0, scales, 1)
        q = np.clip(np.rint(x / safe[:, None]), -127, 127).astype(np.int8)
        return q, scales
    raise ExportError(f"unknown quantization {how!r}; expected one of {', '.join(QUANTIZE_CHOICES)}")


def quantization_parity(x: np.ndarray, q: np.ndarray, scales: np.ndarray | None) -> dict:
    """Row cosine of the stored table against the source vectors (fp32)."""
    deq = q.astype(np.float32) * (scales[:, None] if scales is not None else 1)
    na, nb = np.linalg.norm(x, axis=1), np.linalg.norm(deq, axis=1)
    ok = (na > 0) & (nb > 0)
    cos = (x[ok] * deq[ok]).sum(1) / (na[ok] * nb[ok]) if ok.any() else np.ones(1)
    return {"reference": "source vectors (fp32)", "n": int(ok.sum()), "cosine_min": round(float(cos.min()), 6),
            "cosine_mean": round(float(cos.mean()), 6)}


def sif_weights(n: int, counts: np.ndarray | None = None, a: float = SIF_A) -> np.ndarray:
    """SIF weights a / (a + p(w)); p from counts, else Zipf's law over the rank (model2vec's estimate)."""
    if counts is not None and counts.sum() > 0:
        p = counts.astype(np.float64) / counts.sum()
    else:
        inv = 1.0 / np.arange(2, n + 2, dtype=np.float64)
        p = inv / inv.sum()
    return (a / (a + p)).astype(np.float32)


def write_static_bundle(folder: Path, vectors: np.ndarray, tokenizer, quantization: str, *, name: str,
                        unk_id: int, pooling: str, weights: np.ndarray | None, options: dict, source: dict,
                        ngrams: np.ndarray | None = None) -> None:
    """Write vectors (+ scales, weights, n-grams), tokenizer.json and edgeemb.json into a staging folder."""
    quant = QUANTIZATION_NAMES.get(quantization)
    if quant is None:
        raise ExportError(f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZE_CHOICES)}")
    q, scales = quantize_rows(vectors, quant)
    np.save(folder / VECTORS, q)
    files = [VECTORS]
    if scales is not None:
        np.save(folder / SCALES, scales)
        files.append(SCALES)
    if weights is not None:
        np.save(folder / WEIGHTS, weights.astype(np.float32))
        files.append(WEIGHTS)
    if ngrams is not None:
        nq, nscales = quantize_rows(ngrams, quant)
        np.save(folder / NGRAMS, nq)
        files.append(NGRAMS)
        if nscales is not None:
            np.save(folder / NGRAM_SCALES, nscales)
            files.append(NGRAM_SCALES)
    tokenizer.no_padding()
    tokenizer.no_truncation()
    tokenizer.save(str(folder / "tokenizer.json"))
    files.append("tokenizer.json")
    dim = int(vectors.shape[1])
    options = {"backend": "numpy", "vocab_size": int(vectors.shape[0]), "unk_id": int(unk_id),
               "sif_a": SIF_A if weights is not None else None, **options}
    finish_manifest(folder, files, name=name, kind="static", dim=dim, max_length=MAX_LENGTH, pooling=pooling,
                    normalize=True, quantization=quant, inputs=["input_ids", "attention_mask"],
                    outputs={"sentence_embedding": ["batch", dim]}, source=source,
                    tokenizer={"file": "tokenizer.json", "pad_id": int(unk_id), "padding_side": "right"},
                    options=options, parity=quantization_parity(vectors, q, scales))


def export_static(src: str | Path, out: str | Path, fmt: str | None = None, quantization: str = "int8",
                  max_vocab: int | None = None, lowercase: str = "auto", name: str | None = None,
                  pooling: str = "sif", segmentation: str = "auto", force: bool = False,
                  show_progress: bool = True) -> Path:
    """Convert a word-vector file to a static bundle (numpy gather backend); returns the bundle folder."""
    src, out = Path(src), Path(out)
    if pooling not in ("sif", "mean"):
        raise ExportError(f"--pooling must be sif or mean, got {pooling!r}")
    if QUANTIZATION_NAMES.get(quantization) is None:
        raise ExportError(f"unknown quantization {quantization!r}; expected one of {', '.join(QUANTIZE_CHOICES)}")
    fmt, wv = read_vectors(src, fmt, max_vocab, show_progress)
    lower = apply_lowercase(wv, lowercase, src)
    seg = segmentation_for(wv.words) if segmentation == "auto" else segmentation
    words = wv.words
    tokenizer = build_tokenizer(words, seg, lower)
    weights = sif_weights(len(words), wv.counts) if pooling == "sif" else None
    options = {"lowercase": lower, "segmentation": seg, "weights_from": None if weights is None else
               ("counts" if wv.counts is not None else "rank")}
    if wv.ngrams is not None:
        options["subwords"] = {"minn": wv.minn, "maxn": wv.maxn, "bucket": len(wv.ngrams)}
    source = {"name": src.name, "format": fmt, "files": {src.name: sha256_file(src)}, "read": wv.notes}
    with staging(out, force) as folder:
        write_static_bundle(folder, wv.vectors, tokenizer, quantization, name=name or f"{src.stem}-{quantization}",
                            unk_id=len(words), pooling=pooling, weights=weights, options=options, source=source,
                            ngrams=wv.ngrams)
    return out
