"""Static bundles: a memory-mapped embedding table gathered and pooled in numpy, plus gensim-style word queries.

A static bundle holds vectors.npy (fp32, fp16, or int8 with per-row scales in scales.npy), optional SIF/Zipf
weights (weights.npy), optional fastText n-gram buckets (ngrams.npy, ngram_scales.npy), tokenizer.json and
edgeemb.json. Token id i < options.vocab_size is row i; the unknown id and ids past the table are skipped and
counted. Numpy gather beats an ONNX Gather graph on per-call overhead (docs/results/static.md).
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from .bundle import Manifest
from .errors import BundleError, InputError
from .tokenize import CHARS_PER_TOKEN_CAP, TextTokenizer, Tokenized

VECTORS, SCALES, WEIGHTS = "vectors.npy", "scales.npy", "weights.npy"
NGRAMS, NGRAM_SCALES = "ngrams.npy", "ngram_scales.npy"
WORD_API = ("vector", "most_similar", "most_similar_cosmul", "doesnt_match", "word_similarity", "words",
            "vectors", "has_word", "unknown_tokens", "known_tokens")
OOV_CACHE = 100_000  # fastText out-of-vocabulary vectors kept between encode() calls


class WordNotFound(InputError, KeyError):
    """A word is not in a static bundle's vocabulary (and has no subword n-grams to build it from)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def fasttext_hash(data: bytes) -> int:
    """fastText's 32-bit FNV-1a, with its quirk: bytes are sign-extended (int8) before the xor."""
    h = 2166136261
    for b in data:
        h = ((h ^ (b | 0xFFFFFF00 if b & 0x80 else b)) * 16777619) & 0xFFFFFFFF
    return h


def byte_ngrams(data: bytes, minn: int, maxn: int) -> list[bytes]:
    """UTF-8 n-grams of minn..maxn characters of bracketed bytes, as fastText's computeSubwords makes them."""
    out, size = [], len(data)
    for i in range(size):
        if data[i] & 0xC0 == 0x80:  # a UTF-8 continuation byte never starts an n-gram
            continue
        j, n = i, 1
        while j < size and n <= maxn:
            j += 1
            while j < size and data[j] & 0xC0 == 0x80:
                j += 1
            if n >= minn and not (n == 1 and (i == 0 or j == size)):  # never '<' or '>' alone
                out.append(data[i:j])
            n += 1
    return out


def subword_buckets(word: str | bytes, minn: int, maxn: int, bucket: int) -> list[int]:
    """Bucket rows (0..bucket-1) of the character n-grams of '<word>'; repeats kept, as fastText averages them."""
    raw = word if isinstance(word, bytes) else word.encode("utf-8")
    return [fasttext_hash(g) % bucket for g in byte_ngrams(b"<" + raw + b">", minn, maxn)]


@dataclass
class Subwords:
    """fastText n-gram buckets of a bundle: unknown words get the mean of their n-gram rows."""

    table: np.ndarray  # (bucket, dim) fp32/fp16/int8
    scales: np.ndarray | None  # (bucket,) for int8
    minn: int
    maxn: int

    def vector(self, word: str) -> np.ndarray | None:
        """The word's n-gram mean, or None when it has no n-grams."""
        rows = subword_buckets(word, self.minn, self.maxn, len(self.table))
        if not rows:
            return None
        vecs = self.table[rows].astype(np.float32)
        if self.scales is not None:
            vecs *= self.scales[rows, None]
        return vecs.mean(axis=0)


def load_npy(folder: Path, name: str, manifest: Manifest, mmap: bool = True) -> np.ndarray | None:
    """A bundle's .npy file (memory-mapped), or None when the manifest does not list it."""
    if name not in manifest.files:
        return None
    try:
        return np.load(folder / name, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise BundleError(f"{folder / name}: unreadable ({str(exc).splitlines()[0][:200]})") from None


# Pre-tokenizers whose effect on printable ASCII a regex reproduces exactly (BERT: words and single ASCII
# punctuation marks; Whitespace: runs of word characters and runs of other non-space characters).
ASCII_SPLITS = {"BertPreTokenizer": re.compile(r"[^\s!-/:-@\[-`{-~]+|[!-/:-@\[-`{-~]"),
                "Whitespace": re.compile(r"\w+|[^\w\s]+")}
NOT_PLAIN_ASCII = re.compile(r"[^\t\n\r\x20-\x7e]")
WORD_CACHE = 200_000  # words remembered by the ASCII fast path before it starts over


def ascii_fast_path(tok: Tokenizer) -> tuple[re.Pattern, bool] | None:
    """(split regex, lowercase) when the tokenizer's pipeline on printable ASCII is a regex split plus a
    per-word lookup (WordLevel/WordPiece after BertPreTokenizer or Whitespace), else None."""
    spec = json.loads(tok.to_str())
    norm, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if spec.get("post_processor") or model.get("type") not in ("WordLevel", "WordPiece"):
        return None
    if pre.get("type") not in ASCII_SPLITS:
        return None
    if norm is None:
        lowercase = False
    elif norm.get("type") == "Lowercase":
        lowercase = True
    elif norm.get("type") == "BertNormalizer":
        lowercase = bool(norm.get("lowercase"))
    else:
        return None
    return ASCII_SPLITS[pre["type"]], lowercase


class StaticTokenizer(TextTokenizer):
    """TextTokenizer with a word-cache fast path for printable-ASCII texts (same ids as the tokenizers pipeline,
    several times faster: tokenising dominates a static model's cost), and fastText n-gram ids for unknown words.
    """

    def __init__(self, path: Path, max_length: int, pad_id: int, model: StaticModel):
        super().__init__(path, max_length, pad_id, "right")
        self.model = model
        self.fast = ascii_fast_path(self.tokenizer)
        added = [re.escape(t.content) for t in self.tokenizer.get_added_tokens_decoder().values() if t.content]
        self.added = re.compile("|".join(added), re.IGNORECASE) if added else None  # texts with one go the slow way
        self.cache: dict[str, list[int]] = {}

    def tokenize(self, texts: list[str]) -> Tokenized:
        """Token ids per text; with subwords, each unknown word becomes an id past the unknown id."""
        m = self.model
        if m.subwords is not None and len(m.oov_words) > OOV_CACHE:
            m.reset_oov()
            self.cache.clear()
        if len(self.cache) > WORD_CACHE:
            self.cache.clear()
        cap, limit = self.max_length * CHARS_PER_TOKEN_CAP, self.max_length
        ids: list[list[int] | None] = [None] * len(texts)
        truncated = 0
        slow = []
        for i, text in enumerate(texts):
            text = text[:cap]
            if self.fast is None or NOT_PLAIN_ASCII.search(text) or (self.added and self.added.search(text)):
                slow.append(i)
                continue
            row = self._fast_ids(text)
            if len(row) > limit or len(texts[i]) > cap:
                truncated += 1
                row = row[:limit]
            ids[i] = row
        if slow:
            encs = self.tokenizer.encode_batch([texts[i][:cap] for i in slow])
            for i, enc in zip(slow, encs):
                row = list(enc.ids)
                if m.subwords is not None:
                    for j, tid in enumerate(row):
                        if tid == m.unk_id:
                            start, end = enc.offsets[j]
                            row[j] = m.oov_id(m.normal_word(texts[i][start:end]))
                ids[i] = row
                truncated += bool(enc.overflowing or len(texts[i]) > cap)
        return Tokenized(ids, [0] * len(ids), truncated)  # type ids: a scalar 0 per text, broadcast when padding

    def _fast_ids(self, text: str) -> list[int]:
        split, lowercase = self.fast
        cache, out = self.cache, []
        for word in split.findall(text.lower() if lowercase else text):
            hit = cache.get(word)
            if hit is None:
                hit = cache[word] = self._word_ids(word)
            out += hit
        return out

    def _word_ids(self, word: str) -> list[int]:
        enc = self.tokenizer.encode(word, add_special_tokens=False)
        m = self.model
        if m.subwords is None:
            return list(enc.ids)
        return [m.oov_id(m.normal_word(word)) if t == m.unk_id else t for t in enc.ids]


class StaticModel:
    """The Encoder's backend for static bundles (`run(output_names, feeds)`) and the word-level API.

    Word queries mirror gensim's KeyedVectors: vector, most_similar (3CosAdd), most_similar_cosmul,
    word_similarity, doesnt_match; `words` (bundle order, usually by frequency) and `vectors` (float32, V x dim).
    """

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
        self.table = load_npy(self.folder, VECTORS, manifest)
        if self.table is None or self.table.shape != (self.vocab_size, manifest.dim):
            shape = None if self.table is None else self.table.shape
            raise BundleError(f"{folder / VECTORS}: shape {shape} differs from the manifest's "
                              f"({self.vocab_size}, {manifest.dim})")
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
        self._words: list[str] | None = None
        self._index: dict[str, int] | None = None
        self._dense: np.ndarray | None = None
        self._norms: np.ndarray | None = None
        self.tokenizer: StaticTokenizer | None = None
        self.reset_oov()

    def _row_array(self, name: str, manifest: Manifest) -> np.ndarray | None:
        arr = load_npy(self.folder, name, manifest, mmap=False)
        if arr is not None and arr.shape != (self.vocab_size,):
            raise BundleError(f"{self.folder / name}: shape {arr.shape} differs from ({self.vocab_size},)")
        return None if arr is None else arr.astype(np.float32, copy=False)

    # ---- the Encoder's backend -------------------------------------------------------------------------

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
        out = np.matmul(w[:, None, :], rows)[:, 0, :]
        out /= np.maximum(counts, 1)[:, None].astype(np.float32)
        if self.manifest.normalize:
            norms = np.linalg.norm(out, axis=1, keepdims=True)
            np.divide(out, norms, out=out, where=norms > 0)
        return [out]

    # ---- fastText out-of-vocabulary words -------------------------------------------------------------

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

    # ---- word-level API (gensim KeyedVectors semantics) -----------------------------------------------

    @property
    def words(self) -> list[str]:
        """The vocabulary in table order (frequency order for word2vec, GloVe and fastText files)."""
        if self._words is None:
            words = [""] * self.vocab_size
            for word, i in self.tokenizer.tokenizer.get_vocab(with_added_tokens=True).items():
                if 0 <= i < self.vocab_size:
                    words[i] = word
            self._words = words
        return self._words

    @property
    def vectors(self) -> np.ndarray:
        """The table as float32 (V, dim), dequantised, without SIF weights; computed once."""
        if self._dense is None:
            dense = np.asarray(self.table, dtype=np.float32)
            self._dense = dense * self.scales[:, None] if self.scales is not None else dense
        return self._dense

    def _word_index(self) -> dict[str, int]:
        if self._index is None:
            index: dict[str, int] = {}
            for i, w in enumerate(self.words):
                if i != self.unk_id and w:
                    index.setdefault(w, i)
            self._index = index
        return self._index

    def _row(self, word: str) -> int | None:
        index = self._word_index()
        i = index.get(word)
        return index.get(self.normal_word(word)) if i is None else i

    def has_word(self, word: str) -> bool:
        """True when the word has its own row (not counting fastText n-gram vectors)."""
        return self._row(word) is not None

    def vector(self, word: str, norm: bool = False) -> np.ndarray:
        """The word's float32 vector (fastText bundles build unknown words from n-grams); KeyError if none."""
        i = self._row(word)
        if i is not None:
            vec = self.vectors[i]
        else:
            vec = self.subwords.vector(self.normal_word(word)) if self.subwords is not None else None
            if vec is None:
                raise WordNotFound(f"word {word!r} is not in the vocabulary of {self.manifest.name}")
        if norm:
            n = float(np.linalg.norm(vec))
            return vec / n if n > 0 else vec.copy()
        return vec.copy()

    def _norm_rows(self) -> np.ndarray:
        if self._norms is None:
            self._norms = np.linalg.norm(self.vectors, axis=1)
        return self._norms

    def _weighted_keys(self, positive, negative) -> tuple[list, list[float]]:
        positive, negative = _as_list(positive), _as_list(negative)
        keys, weights = [], []
        for item, default in [(p, 1.0) for p in positive] + [(n, -1.0) for n in negative]:
            if isinstance(item, tuple):
                keys.append(item[0])
                weights.append(float(item[1]))
            else:
                keys.append(item)
                weights.append(default)
        return keys, weights

    def _scores(self, mean: np.ndarray, restrict_vocab: int | None) -> np.ndarray:
        end = min(restrict_vocab or self.vocab_size, self.vocab_size)
        with np.errstate(divide="ignore", invalid="ignore"):
            dists = self.vectors[:end] @ mean / self._norm_rows()[:end]
        return np.nan_to_num(dists, nan=-np.inf)

    def _exclude(self, keys) -> set[int]:
        return {i for k in keys if isinstance(k, str) and (i := self._row(k)) is not None}

    def most_similar(self, positive=None, negative=None, topn: int | None = 10,
                     restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """Words nearest to the mean of unit vectors (+positive, -negative): 3CosAdd, as gensim computes it."""
        if topn is not None and topn < 1:
            return []
        keys, weights = self._weighted_keys(positive, negative)
        if not keys:
            raise InputError("most_similar needs at least one positive or negative word")
        mean = np.zeros(self.manifest.dim, np.float32)
        for key, w in zip(keys, weights):
            vec = np.asarray(key, np.float32) if isinstance(key, np.ndarray) else self.vector(key, norm=True)
            mean += np.float32(w) * vec
        mean /= np.float32(sum(abs(w) for w in weights))
        n = float(np.linalg.norm(mean))
        mean = mean / n if n > 0 else mean
        return self._top(self._scores(mean, restrict_vocab), topn, self._exclude(keys))

    def most_similar_cosmul(self, positive=None, negative=None, topn: int | None = 10,
                            restrict_vocab: int | None = None) -> list[tuple[str, float]] | np.ndarray:
        """3CosMul (Levy & Goldberg 2014, cosines shifted to [0, 1]), as gensim computes it."""
        if topn is not None and topn < 1:
            return []
        positive, negative = _as_list(positive), _as_list(negative)
        if not positive:
            raise InputError("most_similar_cosmul needs at least one positive word")

        def shifted(terms):
            return [(1 + self._scores(t if isinstance(t, np.ndarray) else self.vector(t, norm=True),
                                      restrict_vocab)) / 2 for t in terms]

        neg = shifted(negative)
        dists = np.prod(shifted(positive), axis=0) / ((np.prod(neg, axis=0) if neg else 1.0) + 1e-6)
        return self._top(dists, topn, self._exclude(positive + negative))

    def _top(self, dists: np.ndarray, topn: int | None, exclude: set[int]) -> list[tuple[str, float]] | np.ndarray:
        if not topn:
            return dists
        k = min(topn + len(exclude), len(dists))
        best = np.argpartition(-dists, k - 1)[:k] if k < len(dists) else np.arange(len(dists))
        best = best[np.argsort(-dists[best], kind="stable")]
        words = self.words
        return [(words[i], float(dists[i])) for i in best if i not in exclude][:topn]

    def word_similarity(self, w1: str, w2: str) -> float:
        """Cosine of two words' vectors (gensim's similarity); KeyError for a word with no vector."""
        return float(self.vector(w1, norm=True) @ self.vector(w2, norm=True))

    def doesnt_match(self, words: Sequence[str]) -> str:
        """The word furthest from the mean of the given words' unit vectors; words with no vector are ignored."""
        used = [w for w in _as_list(words) if self._row(w) is not None or self.subwords is not None]
        if not used:
            raise InputError("doesnt_match needs at least one word with a vector")
        vecs = np.vstack([self.vector(w, norm=True) for w in used]).astype(np.float32)
        mean = vecs.mean(axis=0)
        n = float(np.linalg.norm(mean))
        dists = vecs @ (mean / n if n > 0 else mean)
        return min(zip(dists.tolist(), used))[1]


def _as_list(x) -> list:
    if x is None:
        return []
    if isinstance(x, (str, np.ndarray, tuple)):
        return [x]
    return list(x)


def load_static(folder: Path, manifest: Manifest) -> tuple[StaticModel, StaticTokenizer]:
    """The backend and tokenizer of a static bundle (no onnxruntime session)."""
    model = StaticModel(folder, manifest)
    tok = manifest.tokenizer
    model.tokenizer = StaticTokenizer(folder / tok.get("file", "tokenizer.json"), manifest.max_length,
                                      tok.get("pad_id", 0), model)
    return model, model.tokenizer
