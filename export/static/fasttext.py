"""Read a fastText .bin model: vocabulary, counts, word vectors and the character n-gram buckets.

Word vectors are computed as fastText's getWordVector does: the mean of the word's own input row and its
n-gram bucket rows (FNV-1a hash of each UTF-8 n-gram of '<word>', minn..maxn characters, modulo bucket).
"""
from __future__ import annotations

import mmap
import struct
from pathlib import Path

import numpy as np

from edgeemb.progress import Progress
from edgeemb.static.subwords import subword_buckets

from ..common.errors import ExportError

FASTTEXT_MAGIC = 793712314
VERSIONS = (11, 12)
ARGS = struct.Struct("<12id")  # dim ws epoch minCount neg wordNgrams loss model bucket minn maxn lrUpdateRate t


class _Reader:
    """Bounds-checked little-endian reads from a buffer; running past the end is a truncated file."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def need(self, n: int, what: str) -> None:
        if self.pos + n > len(self.buf):
            raise ExportError(f"{self.path}: truncated fastText .bin (ends inside {what}, at byte {self.pos})")

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize(fmt)
        self.need(size, what)
        out = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return out

    def cstring(self, what: str) -> bytes:
        end = self.buf.find(b"\x00", self.pos)
        if end < 0:
            raise ExportError(f"{self.path}: truncated fastText .bin (ends inside {what})")
        out = bytes(self.buf[self.pos:end])
        self.pos = end + 1
        return out

    def matrix(self, what: str) -> np.ndarray:
        rows, cols = self.unpack("<qq", what)
        self.need(rows * cols * 4, what)
        out = np.frombuffer(self.buf, dtype="<f4", count=rows * cols, offset=self.pos).reshape(rows, cols)
        self.pos += rows * cols * 4
        return out


def read_fasttext_bin(path: Path, max_vocab: int | None = None, show_progress: bool = True) -> dict:
    """Parse a fastText .bin: dict(words=[bytes], counts, vectors (V, dim) float32, ngrams (bucket, dim), minn,
    maxn). Words keep file order (fastText sorts by count); labels of supervised models are dropped."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            raise ExportError(f"{path}: empty file") from None
    r = _Reader(buf, path)
    magic, version = r.unpack("<ii", "the header")
    if magic != FASTTEXT_MAGIC:
        raise ExportError(f"{path}: not a fastText .bin (magic number {magic}, expected {FASTTEXT_MAGIC})")
    if version not in VERSIONS:
        raise ExportError(f"{path}: fastText format version {version} is not supported ({VERSIONS})")
    dim, _ws, _epoch, _min_count, _neg, _word_ngrams, _loss, _model, bucket, minn, maxn, _lr, _t = \
        r.unpack(ARGS.format, "the model arguments")
    size, nwords, _nlabels, _ntokens, pruneidx_size = r.unpack("<iiiqq", "the dictionary header")
    if size < 0 or nwords < 0 or nwords > size:
        raise ExportError(f"{path}: dictionary header is inconsistent (size {size}, nwords {nwords})")
    words, counts = [], []
    for i in range(size):
        word = r.cstring(f"dictionary entry {i}")
        count, kind = r.unpack("<qb", f"dictionary entry {i}")
        if kind == 0:
            words.append(word)
            counts.append(count)
    if len(words) != nwords:
        raise ExportError(f"{path}: dictionary lists {len(words)} words but its header says {nwords}")
    if pruneidx_size > 0:
        raise ExportError(f"{path}: pruned (quantized) fastText models are not supported; use the unpruned .bin")
    r.pos += 16 * max(pruneidx_size, 0)
    (quant_input,) = r.unpack("<?", "the input matrix flag")
    if quant_input:
        raise ExportError(f"{path}: quantized fastText models (.ftz) are not supported; use the full .bin")
    matrix = r.matrix("the input matrix")
    if matrix.shape != (nwords + bucket, dim):
        raise ExportError(f"{path}: input matrix is {matrix.shape}, expected ({nwords + bucket}, {dim})")
    keep = nwords if max_vocab is None else min(max_vocab, nwords)
    vectors = np.empty((keep, dim), np.float32)
    with Progress(keep, f"fastText word vectors from {path.name}", show_progress, "words") as bar:
        for i in range(keep):
            rows = [i]
            if words[i] != b"</s>" and bucket > 0:  # hash the raw bytes, as fastText does
                rows += [nwords + h for h in subword_buckets(words[i], minn, maxn, bucket)]
            vectors[i] = matrix[rows].mean(axis=0)
            bar.update()
    ngrams = np.array(matrix[nwords:], dtype=np.float32) if bucket > 0 and maxn > 0 else None
    return {"words": words[:keep], "counts": np.asarray(counts[:keep], np.int64), "vectors": vectors,
            "ngrams": ngrams, "minn": minn, "maxn": maxn, "dim": dim}
