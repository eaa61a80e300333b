"""fastText subword n-grams: the hash, the byte n-grams of a word, and vectors built from n-gram buckets."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
        return np.asarray(vecs.mean(axis=0))
