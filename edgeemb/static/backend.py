"""Static bundles' backend: a memory-mapped embedding table gathered and pooled in numpy.

A static bundle holds vectors.npy (fp32, fp16, or int8 with per-row scales in scales.npy), optional SIF/Zipf
weights (weights.npy), optional fastText n-gram buckets (ngrams.npy, ngram_scales.npy), tokenizer.json and
edgeemb.json. Token id i < options.vocab_size is row i; the unknown id and ids past the table are skipped and
counted. Numpy gather beats an ONNX Gather graph on per-call overhead (docs/results/static.md).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..bundle import Manifest
from ..errors import BundleError
from .subwords import Subwords
from .tokenizer import StaticTokenizer
from .words import WordVectors

VECTORS, SCALES, WEIGHTS = "vectors.npy", "scales.npy", "weights.npy"
NGRAMS, NGRAM_SCALES = "ngrams.npy", "ngram_scales.npy"


def load_npy(folder: Path, name: str, manifest: Manifest, mmap: bool = True) -> np.ndarray | None:
    """A bundle's .npy file (memory-mapped), or None when the manifest does not list it."""
    if name not in manifest.files:
        return None
    try:
        return np.asarray(np.load(folder / name, mmap_mode="r" if mmap else None, allow_pickle=False))
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder / name}: unreadable ({str(exc).splitlines()[0][:200]})") from None


class StaticModel:
    """The Encoder's backend for static bundles (`run(output_names, feeds)`): a memory-mapped table, SIF weights,
    fastText n-gram vectors for unknown words; `words` is the bundle's WordVectors (the word-level API).
    """

    normalized = False  # the Encoder normalises (encode.pooling), as for graphs that do not fuse it

    def __init__(self, folder: Path, manifest: Manifest):
        opts = manifest.options
        self.folder, self.manifest = Path(folder), manifest
        try:
            self.vocab_size = int(opts["vocab_size"])
            self.unk_id = int(opts["unk_id"]) if opts.get("unk_id") is not None else -1
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{folder / 'edgeemb.json'}: static bundles need options.vocab_size and "
                              f"options.unk_id") from None
        self.lowercase = bool(opts.get("lowercase", False))
        table = load_npy(self.folder, VECTORS, manifest)
        if table is None or table.shape != (self.vocab_size, manifest.dim):
            shape = None if table is None else table.shape
            raise BundleError(f"{folder / VECTORS}: shape {shape} differs from the manifest's "
                              f"({self.vocab_size}, {manifest.dim})")
        self.table: np.ndarray = table
        self.scales = self._row_array(SCALES, manifest)
        weights = self._row_array(WEIGHTS, manifest)
        factor = np.ones(self.vocab_size, np.float32)
        for part in (self.scales, weights):
            if part is not None:
                factor = factor * part
        self.factor = np.ascontiguousarray(factor, dtype=np.float32)
        self.subwords = None
        ngrams = load_npy(self.folder, NGRAMS, manifest)
        if ngrams is not None:
            sub = opts.get("subwords") or {}
            if ngrams.ndim != 2 or ngrams.shape[1] != manifest.dim or "minn" not in sub or "maxn" not in sub:
                raise BundleError(f"{folder / NGRAMS}: needs shape (bucket, {manifest.dim}) and options.subwords")
            self.subwords = Subwords(ngrams, load_npy(self.folder, NGRAM_SCALES, manifest, mmap=False),
                                     int(sub["minn"]), int(sub["maxn"]))
        self.unknown_tokens = self.known_tokens = 0
        self.tokenizer: StaticTokenizer | None = None
        self.words = WordVectors(self)
        self.reset_oov()

    def _row_array(self, name: str, manifest: Manifest) -> np.ndarray | None:
        arr = load_npy(self.folder, name, manifest, mmap=False)
        if arr is not None and arr.shape != (self.vocab_size,):
            raise BundleError(f"{self.folder / name}: shape {arr.shape} differs from ({self.vocab_size},)")
        return None if arr is None else arr.astype(np.float32, copy=False)

    def run(self, output_names: list[str], feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Weighted mean of the known token rows of each padded row; unknown tokens are skipped and counted."""
        for name in output_names:
            if name != "sentence_embedding":
                raise BundleError(f"static bundle {self.manifest.name} has no output {name!r}")
        ids, mask = feeds["input_ids"], feeds["attention_mask"] != 0
        safe = np.minimum(ids, self.vocab_size - 1)
        known = mask & (ids < self.vocab_size)
        if self.unk_id < self.vocab_size:
            known &= ids != self.unk_id
        w = self.factor[safe] * known  # (b, seq) float32: SIF weight x int8 scale, 0 where skipped
        rows = self.table[safe]  # (b, seq, dim): a padded gather, cheap because batches are length-sorted
        rows = rows if rows.dtype == np.float32 else rows.astype(np.float32)
        counts = known.sum(axis=1)
        if self.oov_words:  # fastText: unknown words built from n-grams carry ids past unk_id
            oov = mask & (ids > self.unk_id) & (ids >= self.vocab_size) & (ids - self.unk_id - 1 < len(self.oov_words))
            if oov.any():
                rows[oov] = self.oov_matrix()[ids[oov] - self.unk_id - 1]
                w = np.where(oov, np.float32(1), w)
                counts = counts + oov.sum(axis=1)
        n_known = int(counts.sum())
        self.known_tokens += n_known
        self.unknown_tokens += int(mask.sum()) - n_known
        # einsum sums each row's tokens in order, so padding adds exact zeros: a text's vector is bit-identical
        # alone and in any batch (a batched matmul's blocking changed with the padded width: 1e-7 differences)
        out = np.einsum("bs,bsd->bd", w, rows)
        out /= np.maximum(counts, 1)[:, None].astype(np.float32)
        return [out]

    def reset_oov(self) -> None:
        """Forget the n-gram vectors built for unknown words so far."""
        self.oov_words: dict[str, int] = {}
        self._oov_rows: list[np.ndarray] = []
        self._oov_matrix: np.ndarray | None = None

    def oov_id(self, word: str) -> int:
        """Token id for an unknown word: past unk_id when it has n-grams, else unk_id (skipped)."""
        if word not in self.oov_words:
            vec = self.subwords.vector(word) if self.subwords is not None else None
            if vec is None:
                return self.unk_id
            self.oov_words[word] = len(self._oov_rows)
            self._oov_rows.append(vec)
            self._oov_matrix = None
        return self.unk_id + 1 + self.oov_words[word]

    def oov_matrix(self) -> np.ndarray:
        if self._oov_matrix is None:
            self._oov_matrix = np.stack(self._oov_rows).astype(np.float32)
        return self._oov_matrix

    def normal_word(self, word: str) -> str:
        """A word as the vocabulary spells it (lowercased when the bundle lowercases)."""
        return word.lower() if self.lowercase else word


def load_static(folder: Path, manifest: Manifest) -> tuple[StaticModel, StaticTokenizer]:
    """The backend and tokenizer of a static bundle (no onnxruntime session)."""
    model = StaticModel(folder, manifest)
    tok = manifest.tokenizer
    model.tokenizer = StaticTokenizer(folder / tok.get("file", "tokenizer.json"), manifest.max_length,
                                      tok.get("pad_id", 0), model)
    return model, model.tokenizer
