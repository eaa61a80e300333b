"""BM25 keyword recall for the hybrid retriever: an in-memory inverted index derived from the document store.

A static embedding misses documents that share a rare term with the query but not its overall meaning (names,
numbers, jargon); BM25 finds exactly those, in about a millisecond, so the two first stages complement each other
before the contextual re-rank. The index is derived data: the hybrid retriever keeps it in step with adds and
deletes, saves it as a snapshot, and on open reconciles the snapshot with the store's texts, so a crash cannot
make the two disagree.

Analysis is deliberately simple and language-light: lower case, runs of letters/digits as words, each CJK
character its own term (as BERT tokenizers do), a short English stopword list, and the S-stemmer's plural rules.
Postings live in two CSR segments (a big merged one and a small recent one), numpy arrays of labels and term
frequencies; scoring is one bincount over the postings of the query's terms.
"""
from __future__ import annotations

import json
import math
import re
import threading
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from ..atomic import atomic_writer
from ..errors import IndexStoreError, InputError

K1, B = 0.9, 0.4  # BM25 parameters (the Anserini defaults for BEIR)
MERGE_MIN = 4096  # the recent segment is merged into the main one past max(MERGE_MIN, 10% of main) documents
PENDING_MAX = 16384  # documents buffered before they are sorted into the recent segment
SNAPSHOT_MAGIC = b"EDGEEMB-BM25\x00\x01"  # 14 bytes, then an 8-byte header length, the JSON header, the arrays
_ARRAYS = (("offsets", np.int64), ("labels", np.int32), ("tfs", np.uint16), ("doclen", np.float32), ("used", bool),
           ("alive", bool))
_CJK = re.compile(r"([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af])")
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset((  # Lucene's English list, and a few Chinese function characters
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of",
    "on", "or", "such", "that", "the", "their", "then", "there", "these", "they", "this", "to", "was", "will",
    "with", "的", "了", "是", "在", "和", "就", "也", "都", "而", "与", "着", "或", "之"))


def plural_stem(word: str) -> str:
    """The S-stemmer (Harman 1991): strip English plural endings only, which is safe for names and jargon."""
    if len(word) > 3 and word.endswith("ies") and not word.endswith(("eies", "aies")):
        return word[:-3] + "y"
    if len(word) > 3 and word.endswith("es") and not word.endswith(("aes", "ees", "oes")):
        return word[:-1]
    if len(word) > 2 and word.endswith("s") and not word.endswith(("us", "ss")):
        return word[:-1]
    return word


def analyze(text: str) -> list[str]:
    """Terms of a text for BM25: lower-cased words and single CJK characters, stopwords out, plurals stemmed."""
    return [plural_stem(w) for w in _WORD.findall(_CJK.sub(r" \1 ", text.lower())) if w not in STOPWORDS]


class _Segment:
    """Postings in CSR form: for term t, labels[offsets[t]:offsets[t+1]] and their term frequencies."""

    def __init__(self, terms: np.ndarray, labels: np.ndarray, tfs: np.ndarray, vocab_size: int):
        order = np.argsort(terms, kind="stable")
        self.labels = labels[order].astype(np.int32)
        self.tfs = tfs[order].astype(np.uint16)
        self.offsets = np.zeros(vocab_size + 1, np.int64)
        np.cumsum(np.bincount(terms, minlength=vocab_size), out=self.offsets[1:])
        self.vocab_size = vocab_size

    @classmethod
    def empty(cls) -> _Segment:
        return cls(np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.uint16), 0)

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        if term >= self.vocab_size:
            return self.labels[:0], self.tfs[:0]
        lo, hi = self.offsets[term], self.offsets[term + 1]
        return self.labels[lo:hi], self.tfs[lo:hi]

    def triples(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        terms = np.repeat(np.arange(self.vocab_size, dtype=np.int32), np.diff(self.offsets))
        return terms, self.labels, self.tfs


class LexicalIndex:
    """BM25 over documents identified by integer labels (the Index's labels); thread-safe."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self._main = _Segment.empty()
        self._recent = _Segment.empty()
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # not yet in _recent
        self._recent_docs = 0
        self._pending_docs = 0
        self._doclen = np.zeros(1024, np.float32)
        self._alive = np.zeros(1024, bool)
        self._used = np.zeros(1024, bool)
        self._count = 0
        self._total_len = 0.0
        self._lock = threading.RLock()

    def __len__(self) -> int:
        return self._count

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, labels: Iterable[int], texts: Iterable[str]) -> None:
        """Index documents under new labels (labels are never reused, as in Index: a replaced document gets a
        fresh label and the old one is deleted)."""
        labels = [int(x) for x in labels]
        counts = [Counter(analyze(t)) for t in texts]
        if len(counts) != len(labels):
            raise InputError(f"{len(labels)} labels for {len(counts)} texts")
        if not labels:
            return
        with self._lock:
            self._grow(max(labels) + 1)
            if min(labels) < 0 or self._used[labels].any() or len(set(labels)) < len(labels):
                raise InputError("lexical index labels must be new, distinct and non-negative")
            vocab = self.vocab
            terms: list[int] = []
            labs: list[int] = []
            tfs: list[int] = []
            for lab, c in zip(labels, counts):
                ids = [vocab.setdefault(t, len(vocab)) for t in c]
                terms += ids
                labs += [lab] * len(ids)
                tfs += c.values()
                length = float(sum(c.values()))
                self._doclen[lab] = length
                self._alive[lab] = self._used[lab] = True
                self._total_len += length
            self._count += len(labels)
            self._recent_docs += len(labels)
            self._pending.append((np.array(terms, np.int32), np.array(labs, np.int32),
                                  np.minimum(np.array(tfs, np.int64), 65535).astype(np.uint16)))
            self._pending_docs += len(labels)
            if self._pending_docs >= PENDING_MAX:  # bound the memory a bulk add holds in pending arrays
                self._flush()

    def delete(self, labels: Iterable[int]) -> None:
        """Forget documents (their postings stay until the next merge but never score)."""
        with self._lock:
            for lab in labels:
                lab = int(lab)
                if 0 <= lab < len(self._alive) and self._alive[lab]:
                    self._alive[lab] = False
                    self._total_len -= float(self._doclen[lab])
                    self._count -= 1

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, query: str, n: int, allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(labels, BM25 scores) of the top n live documents sharing a term with the query, best first;
        allowed: restrict to these labels (a metadata filter)."""
        with self._lock:
            self._flush()
            terms = sorted({self.vocab[t] for t in analyze(query) if t in self.vocab})
            if not terms or not self._count or n < 1:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            avg = max(self._total_len / self._count, 1e-6)
            labs, weights = [], []
            for t in terms:
                pl = [seg.postings(t) for seg in (self._main, self._recent)]
                lab = np.concatenate([p[0] for p in pl])
                live = self._alive[lab]  # deleted documents' postings wait for the next merge
                lab = lab[live]
                if not len(lab):
                    continue
                tf = np.concatenate([p[1] for p in pl])[live].astype(np.float32)
                df = len(lab)
                idf = math.log(1 + (self._count - df + 0.5) / (df + 0.5))
                labs.append(lab)
                weights.append(idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * self._doclen[lab] / avg)))
            if not labs:
                return np.zeros(0, np.int64), np.zeros(0, np.float32)
            scores = np.bincount(np.concatenate(labs), np.concatenate(weights), minlength=len(self._alive))
            if allowed is not None:
                scores[~_mask(allowed, len(self._alive))] = 0.0
        hits = np.flatnonzero(scores > 0)
        if len(hits) > n:
            hits = hits[np.argpartition(-scores[hits], n - 1)[:n]]
        hits = hits[np.argsort(-scores[hits], kind="stable")]
        return hits.astype(np.int64), scores[hits].astype(np.float32)

    # -- snapshot -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        """Write every posting into one file atomically (temp file, fsync, rename); deleted ones are dropped."""
        path = Path(path)
        with self._lock:
            self._flush(force_merge=True)
            seg, size = self._main, int(np.flatnonzero(self._used).max() + 1) if self._used.any() else 0
            arrays: dict[str, np.ndarray] = {"offsets": seg.offsets, "labels": seg.labels, "tfs": seg.tfs,
                      "doclen": self._doclen[:size], "used": self._used[:size], "alive": self._alive[:size]}
            vocab = sorted(self.vocab, key=self.vocab.__getitem__)
            header = {"version": 1, "vocab": vocab, "k1": K1, "b": B,
                      "arrays": {name: int(arrays[name].size) for name, _ in _ARRAYS}}
            blob = json.dumps(header, ensure_ascii=False).encode()
            blob += b" " * (-(len(SNAPSHOT_MAGIC) + 8 + len(blob)) % 8)
            try:
                with atomic_writer(path) as f:
                    f.write(SNAPSHOT_MAGIC + len(blob).to_bytes(8, "little") + blob)
                    for name, dtype in _ARRAYS:
                        data = np.ascontiguousarray(arrays[name], dtype=dtype).tobytes()
                        f.write(data + b"\0" * (-len(data) % 8))
            except OSError as exc:
                raise IndexStoreError(f"cannot save {path} ({exc.strerror or exc}); the previous keyword index "
                                      f"is intact and every acknowledged document is in the store") from None

    @classmethod
    def load(cls, path: str | Path) -> LexicalIndex:
        """Open a snapshot with its postings memory-mapped read-only (resident only where queries read).

        A caller keeping a store beside it reconciles the two (delete what the store lacks, add what the
        snapshot lacks). A damaged file raises IndexStoreError."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                head = f.read(len(SNAPSHOT_MAGIC) + 8)
                if len(head) < len(SNAPSHOT_MAGIC) + 8 or head[:len(SNAPSHOT_MAGIC)] != SNAPSHOT_MAGIC:
                    raise ValueError("not an edgeemb keyword index")
                header_len = int.from_bytes(head[len(SNAPSHOT_MAGIC):], "little")
                header = json.loads(f.read(header_len))
            pos = len(head) + header_len
            if header.get("version") != 1:
                raise ValueError(f"unknown version {header.get('version')!r}")
            out, total = {}, path.stat().st_size
            for name, dtype in _ARRAYS:
                n = int(header["arrays"][name])
                nbytes = n * np.dtype(dtype).itemsize
                if pos + nbytes > total:
                    raise ValueError("file is truncated")
                out[name] = np.memmap(path, dtype, "r", pos, (n,)) if n else np.zeros(0, dtype)
                pos += nbytes + (-nbytes % 8)
            vocab = header["vocab"]
            if len(out["offsets"]) != len(vocab) + 1 or int(out["offsets"][-1]) != len(out["labels"]) \
                    or len(out["labels"]) != len(out["tfs"]) \
                    or not len(out["doclen"]) == len(out["used"]) == len(out["alive"]):
                raise ValueError("array sizes disagree")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexStoreError(f"keyword index {path} is damaged ({exc})") from None
        lx = cls()
        lx.vocab = {t: i for i, t in enumerate(vocab)}
        seg = _Segment.empty()
        seg.offsets, seg.labels, seg.tfs, seg.vocab_size = out["offsets"], out["labels"], out["tfs"], len(vocab)
        lx._main = seg
        lx._grow(len(out["used"]))
        lx._doclen[:len(out["doclen"])] = out["doclen"]
        lx._used[:len(out["used"])] = out["used"]
        lx._alive[:len(out["alive"])] = out["alive"]
        lx._count = int(lx._alive.sum())
        lx._total_len = float(lx._doclen[lx._alive].sum())
        return lx

    def labels(self) -> np.ndarray:
        """Every label ever added (live or deleted), for reconciling with a store."""
        with self._lock:
            return np.flatnonzero(self._used).astype(np.int64)

    # -- internals ----------------------------------------------------------------------------------------
    def _grow(self, size: int) -> None:
        if size > len(self._alive):
            new = max(size, 2 * len(self._alive))
            self._doclen = np.concatenate([self._doclen, np.zeros(new - len(self._doclen), np.float32)])
            self._alive = np.concatenate([self._alive, np.zeros(new - len(self._alive), bool)])
            self._used = np.concatenate([self._used, np.zeros(new - len(self._used), bool)])

    def _flush(self, force_merge: bool = False) -> None:
        """Fold pending adds into the recent segment, and the recent one into main when it has grown large."""
        if not self._pending and not force_merge:
            return
        parts = [self._recent.triples(), *self._pending]
        self._pending, self._pending_docs = [], 0
        merge = force_merge or self._recent_docs > max(MERGE_MIN, self._count // 10)
        if merge:
            parts.insert(0, self._main.triples())
        terms, labels, tfs = (np.concatenate([p[i] for p in parts]) for i in range(3))
        live = self._alive[labels]  # drop postings of deleted documents while rewriting anyway
        segment = _Segment(terms[live], labels[live], tfs[live], len(self.vocab))
        if merge:
            self._main, self._recent, self._recent_docs = segment, _Segment.empty(), 0
        else:
            self._recent = segment


def _mask(labels: Sequence[int] | np.ndarray, size: int) -> np.ndarray:
    out = np.zeros(size, bool)
    labels = np.asarray(labels, dtype=np.int64)
    out[labels[(labels >= 0) & (labels < size)]] = True
    return out
