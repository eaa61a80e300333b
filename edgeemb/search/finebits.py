"""FineBits: sign bits of the hybrid's fine vectors in RAM, the recall stage that sees paraphrases.

The bits are derived data: the sign of a stored int8 fine row is the sign of the float vector it was quantised
from, so they are rebuilt on open by streaming the hybrid's `fine.i8` with pread (never mapped, so the rows read
do not stay in the process's RSS) for the store's live labels, and kept in step with every committed add, upsert
and delete. Nothing is written to disk: a crash cannot make them disagree with fine.i8 + the store.

Layout and search are BinaryCodes' (signbits.py): one (words, capacity) uint64 array, one bit per dimension
(dim / 8 bytes a document) plus a label and a live flag; Hamming scan, then the asymmetric float-query dot.
Threads: one writer (the caller holds the index's writer lock); searches read one published state throughout.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import IndexStoreError, InputError
from .codes import default_candidates
from .int8rows import HEADER, row_dtype
from .signbits import empty_arrays, grown, sign_words, slots_of, top_by_bits, words_for

OPEN_CHUNK = 8192  # rows per pread when deriving the bits on open (3 MB at 384 dims)
COMPACT_SHARE = 0.3  # tombstones above this share of the slots (and at least 64) are dropped automatically


@dataclass(frozen=True)
class _Bits:
    """What one search reads; writers publish a new one instead of changing the published slot range."""

    n: int  # slots filled (live and deleted)
    codes: np.ndarray  # (words, capacity) uint64
    labels: np.ndarray  # (capacity,) int64
    alive: np.ndarray  # (capacity,) bool
    live: int
    sorted: bool  # labels[:n] strictly increasing (the Index's labels only grow), so lookups bisect


class FineBits:
    """Sign bits of fine vectors by label; `search(q, keep)` gives the labels nearest a unit query, best first."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        if dim < 1:
            raise InputError(f"dim must be positive, got {dim}")
        self.dim, self.words = int(dim), words_for(dim)
        self._state = _empty(self.words, max(16, int(capacity)))

    @classmethod
    def from_rows(cls, file: Path, dim: int, labels: np.ndarray) -> FineBits:
        """Bits of the int8 rows `labels` (ascending) of an Int8Rows file, read in chunks with pread."""
        labels = np.asarray(labels, dtype=np.int64)
        bits = cls(dim, capacity=len(labels) + len(labels) // 4)
        if not len(labels):
            return bits
        dtype = row_dtype(dim)
        size = dtype.itemsize
        s = bits._state
        try:
            fd = os.open(file, os.O_RDONLY)
        except OSError as exc:
            raise IndexStoreError(f"cannot read {file} ({exc.strerror or exc})") from None
        try:
            top, done = int(labels[-1]) + 1, 0
            for lo in range(0, top, OPEN_CHUNK):  # row ranges: a few dead rows are read, never a label twice
                hi = min(top, lo + OPEN_CHUNK)
                a, b = np.searchsorted(labels, [lo, hi])
                if a == b:
                    continue
                want = (hi - lo) * size
                data = os.pread(fd, want, HEADER + lo * size)
                if len(data) != want:
                    raise IndexStoreError(f"{file}: rows {lo}..{hi} are past the end of the file: it was "
                                          f"truncated; rebuild the index from its corpus")
                rows = np.frombuffer(data, dtype=dtype)["q"][labels[a:b] - lo]
                s.codes[:, done:done + b - a] = sign_words(rows, bits.words)
                done += int(b - a)
        except OSError as exc:
            raise IndexStoreError(f"cannot read {file} ({exc.strerror or exc})") from None
        finally:
            os.close(fd)
        s.labels[:len(labels)] = labels
        s.alive[:len(labels)] = True
        bits._state = replace(s, n=len(labels), live=len(labels),
                              sorted=bool(np.all(labels[1:] > labels[:-1])))
        return bits

    # -- figures ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._state.live

    @property
    def tombstones(self) -> int:
        """Deleted slots still held (compact() drops them)."""
        return self._state.n - self._state.live

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM (bits, labels and live flags, at their allocated capacity)."""
        s = self._state
        return int(s.codes.nbytes + s.labels.nbytes + s.alive.nbytes)

    def labels(self) -> np.ndarray:
        """Live labels, in slot order."""
        s = self._state
        out: np.ndarray = s.labels[:s.n][s.alive[:s.n]]
        return out

    def codes_of(self, labels: Iterable[int]) -> np.ndarray:
        """(words, m) bits of some live labels; InputError for one that is not live."""
        s = self._state
        labs = np.asarray(list(labels), dtype=np.int64)
        slots = slots_of(s.labels[:s.n], labs, s.sorted)
        bad = (slots < 0) | ~s.alive[np.maximum(slots, 0)]
        if bad.any():
            raise InputError(f"label {int(labs[bad][0])} has no live bits")
        out: np.ndarray = s.codes[:, slots]
        return out

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, labels: np.ndarray, rows: np.ndarray) -> None:
        """Bits of new labels from their int8 rows (or the float vectors they were quantised from)."""
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        rows = np.asarray(rows)
        if rows.ndim != 2 or rows.shape != (len(labels), self.dim):
            raise InputError(f"rows have shape {rows.shape} for {len(labels)} labels, expected "
                             f"({len(labels)}, {self.dim})")
        if not len(labels):
            return
        s = self._state
        n, m = s.n, len(labels)
        if n + m > s.codes.shape[1]:
            s = _grow(s, max(n + m, 2 * s.codes.shape[1]))
        s.codes[:, n:n + m] = sign_words(rows, self.words)  # past the published count: unseen until published
        s.labels[n:n + m] = labels
        s.alive[n:n + m] = True
        ordered = s.sorted and bool(np.all(labels[1:] > labels[:-1])) and (n == 0 or labels[0] > s.labels[n - 1])
        self._state = replace(s, n=n + m, live=s.live + m, sorted=ordered)

    def mark_deleted(self, labels: Iterable[int]) -> int:
        """Tombstone labels (unknown or dead ones ignored); returns how many were live. Compacts itself when
        tombstones pass COMPACT_SHARE of the slots."""
        s = self._state
        labs = np.asarray(list(labels), dtype=np.int64)
        slots = slots_of(s.labels[:s.n], labs, s.sorted)
        slots = np.unique(slots[slots >= 0])
        slots = slots[s.alive[slots]]
        s.alive[slots] = False
        self._state = replace(s, live=s.live - len(slots))
        if self.tombstones >= 64 and self.tombstones > COMPACT_SHARE * self._state.n:
            self.compact()
        return len(slots)

    def compact(self) -> int:
        """Drop deleted slots from RAM; returns how many."""
        s = self._state
        keep = np.flatnonzero(s.alive[:s.n])
        fresh = _empty(self.words, max(16, len(keep) + len(keep) // 4))
        fresh.codes[:, :len(keep)] = s.codes[:, keep]
        fresh.labels[:len(keep)] = s.labels[keep]
        fresh.alive[:len(keep)] = True
        self._state = replace(fresh, n=len(keep), live=len(keep), sorted=s.sorted)
        return s.n - len(keep)

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, q: np.ndarray, keep: int, scan: int | None = None,
               allowed: np.ndarray | None = None) -> np.ndarray:
        """Labels of the `keep` documents best by the asymmetric dot among the `scan` nearest by Hamming (None:
        codes.default_candidates, at least 4 x keep), best first; allowed: only these labels."""
        s = self._state  # one state for the whole search
        slots = None
        if allowed is not None:
            slots = slots_of(s.labels[:s.n], np.asarray(allowed, dtype=np.int64).reshape(-1), s.sorted)
            slots = slots[slots >= 0]
            slots = slots[s.alive[slots]]
        scan = int(scan or max(default_candidates(s.live), 4 * keep))
        alive = s.alive if s.live < s.n else None
        picked = top_by_bits(np.asarray(q, np.float32).reshape(-1), s.codes, s.n, self.dim, scan, int(keep),
                             slots, alive)
        out: np.ndarray = s.labels[picked]
        return out


def _empty(words: int, capacity: int) -> _Bits:
    return _Bits(0, *empty_arrays(words, capacity), 0, True)


def _grow(s: _Bits, capacity: int) -> _Bits:
    codes, labels, alive = grown(s.codes, s.labels, s.alive, s.n, capacity)
    return replace(s, codes=codes, labels=labels, alive=alive)
