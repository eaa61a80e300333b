"""Sign bits of vectors and the two searches over them: the one home of the binary-code kernels.

Both `BinaryCodes` (an Index's `vectors="binary"` storage) and the hybrid retriever's fine recall stage
(`finebits.FineBits`) keep one bit per dimension as a (words, n) uint64 array, one row per 64 dimensions so each
word scans contiguously, and search it the same way: (1) Hamming distance of the query's bits to every document's
(`np.bitwise_count` on XOR, in cache-sized blocks), keeping the nearest; (2) the float query against those
documents' bits taken as +-1 (asymmetric: no I/O), which ranks them far better than Hamming alone.
"""
from __future__ import annotations

import numpy as np

SCAN_BLOCK = 16384  # documents per block of the Hamming scan (its uint64 temporary is 128 KiB: stays in L2)

_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(np.float32)  # (256, 8)
_BYTE_OFFSETS = np.arange(1024, dtype=np.intp) * 256


def words_for(dim: int) -> int:
    """uint64 words per document for dim sign bits."""
    return -(-int(dim) // 64)


def sign_words(vectors: np.ndarray, words: int) -> np.ndarray:
    """Sign bits (x > 0) of each row as (words, n) uint64 (bits past dim are zero); float or int8 rows alike,
    so the bits of a stored int8 row equal those of the float vector it was quantised from wherever it is
    non-zero."""
    packed = np.packbits(np.asarray(vectors) > 0, axis=1)
    pad = words * 8 - packed.shape[1]
    if pad:
        packed = np.pad(packed, ((0, 0), (0, pad)))
    out: np.ndarray = np.ascontiguousarray(packed).view(np.uint64).T
    return out


def hamming_nearest(codes: np.ndarray, n: int, qwords: np.ndarray, dim: int, keep: int,
                    slots: np.ndarray | None = None, alive: np.ndarray | None = None) -> np.ndarray:
    """Columns of codes[:, :n] (or of `slots`) whose Hamming distance to qwords is among the `keep` smallest,
    ties at the cut included.

    slots: scan only these columns (returned as slot numbers); alive: (n,) bool, dead columns are never picked
    (only read when slots is None: callers pass live slots)."""
    words = codes.shape[0]
    width = n if slots is None else len(slots)
    dist = np.zeros(width, np.uint16)
    step = min(width, SCAN_BLOCK)
    word = np.empty(step, np.uint64)
    count = np.empty(step, np.uint8)
    for lo in range(0, width, SCAN_BLOCK):  # blocks whose temporaries stay in the CPU cache
        hi = min(width, lo + SCAN_BLOCK)
        m, d = hi - lo, dist[lo:hi]
        for w in range(words):  # word by word: contiguous passes, no (n, words) temporaries
            src = codes[w, lo:hi] if slots is None else codes[w, slots[lo:hi]]
            np.bitwise_xor(src, qwords[w], out=word[:m])
            np.bitwise_count(word[:m], out=count[:m])
            np.add(d, count[:m], out=d)
    if slots is None and alive is not None:
        dist[~alive[:n]] = dim + 1  # deleted: never selected
    cum = np.cumsum(np.bincount(dist, minlength=dim + 2))
    cut = int(np.searchsorted(cum, keep))  # smallest distance whose cumulative count reaches keep
    picked = np.flatnonzero(dist <= min(cut, dim))
    return picked if slots is None else slots[picked]


def asymmetric_dots(q: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    """q . bits for each column of codes (words, m), through a per-query table of every byte's partial dot
    product: one gather of m x bytes instead of unpacking m x dim bits. Ranks like q . (2 bits - 1)."""
    nbytes = codes.shape[0] * 8
    qpad = np.zeros(nbytes * 8, np.float32)
    qpad[:dim] = q
    table = (_BYTE_BITS @ qpad.reshape(nbytes, 8).T).T.ravel()  # [j * 256 + b] = bits(b) . q[8j:8j+8]
    byte_codes = np.ascontiguousarray(codes.T).view(np.uint8)  # (m, nbytes)
    dots: np.ndarray = table[byte_codes + _BYTE_OFFSETS[:nbytes]].sum(axis=1)
    return dots


def top_by_bits(q: np.ndarray, codes: np.ndarray, n: int, dim: int, scan: int, keep: int,
                slots: np.ndarray | None = None, alive: np.ndarray | None = None) -> np.ndarray:
    """Both stages: the `scan` nearest by Hamming, then the `keep` best of those by the asymmetric dot, best
    first (slot numbers). q is a unit float query."""
    pool = n if slots is None else len(slots)
    if keep < 1 or pool == 0:
        return np.zeros(0, np.int64)
    if pool > scan:
        cand = hamming_nearest(codes, n, sign_words(q[None, :], codes.shape[0])[:, 0], dim, scan, slots, alive)
    else:
        cand = np.arange(n) if slots is None else slots
        if slots is None and alive is not None:
            cand = cand[alive[:n]]
    approx = asymmetric_dots(q, codes[:, cand], dim)
    if len(cand) > keep:
        part = np.argpartition(-approx, keep - 1)[:keep]
        cand, approx = cand[part], approx[part]
    out: np.ndarray = cand[np.argsort(-approx, kind="stable")].astype(np.int64)
    return out


def empty_arrays(words: int, capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(codes, labels, alive) with room for `capacity` documents: zero bits, label -1, not alive."""
    return (np.zeros((words, capacity), np.uint64), np.full(capacity, -1, np.int64),
            np.zeros(capacity, np.bool_))


def grown(codes: np.ndarray, labels: np.ndarray, alive: np.ndarray, n: int,
          capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies of the first n documents' arrays with room for `capacity` (searches keep reading the old ones)."""
    out = empty_arrays(codes.shape[0], capacity)
    out[0][:, :n], out[1][:n], out[2][:n] = codes[:, :n], labels[:n], alive[:n]
    return out


def slots_of(have: np.ndarray, labels: np.ndarray, is_sorted: bool) -> np.ndarray:
    """Slot of each label in `have` (the labels by slot), -1 where absent; bisects when have is increasing."""
    if not len(have) or not len(labels):
        return np.full(len(labels), -1, np.int64)
    if is_sorted:
        pos = np.searchsorted(have, labels)
        pos_c = np.minimum(pos, len(have) - 1)
        out: np.ndarray = np.where(have[pos_c] == labels, pos_c, -1)
        return out
    order = np.argsort(have, kind="stable")
    pos = np.minimum(np.searchsorted(have, labels, sorter=order), len(have) - 1)
    slots = order[pos]
    found: np.ndarray = np.where(have[slots] == labels, slots, -1)
    return found
