"""BinaryCodes: one bit per dimension in RAM, scanned exhaustively, re-scored with int8 rows read from disk.

Over 400 lines because one on-disk format (snapshot, rows file, CRCs) and the three-stage search that reads it
are one job: split, each half would need the other's layout constants and invariants.

A search runs three stages, each on fewer documents: (1) the Hamming distance of the query's bits to every
document's bits (`np.bitwise_count` on XOR; 48 bytes a document at 384 dims, the only per-document RAM besides
the label), keeping `candidates`; (2) the float query against those documents' bits as +-1 (asymmetric, no
I/O), keeping `rescore`; (3) the float query against their int8 rows (a float32 scale and dim int8 values per
row), read with pread from `rows.<epoch>.i8`, so they never count in the process's RSS. Optionally (4) the best
`exact_top` are scored again with float vectors from a callback (e.g. DocStore.vectors) for exact cosines.
Stages 1 and 2 are signbits.py's kernels, which the hybrid retriever's fine bits (finebits.py) share.

Files, inside the index folder:
  codes.<generation>.bin  snapshot, written whole (temp file, fsync, rename, fsync of the folder): header, labels,
                          live flags, bits, a CRC32 per block of rows of the rows file, and a CRC32 of itself.
  rows.<epoch>.i8         int8 rows by slot, append-only within an epoch; compact() writes the next epoch.
A snapshot names the epoch and slot count it covers; rows past that count (appended after the snapshot, before a
crash) are ignored and overwritten by the next add. save() fsyncs the rows file before writing the snapshot, so a
snapshot never names rows that are not durable. A damaged snapshot or rows file raises CodesDamaged on load.

Threads: one writer at a time (the caller serialises add, mark_deleted, compact and save); any number of
searches may run meanwhile. Writers fill slots past the published count and then publish a new state object in
one assignment; a search reads one state from start to end, so it sees a batch whole or not at all.
"""
from __future__ import annotations

import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import cast

import numpy as np

from ..atomic import atomic_writer, fsync_dir
from ..errors import IndexStoreError, InputError
from .int8rows import quantize, row_dtype
from .signbits import (
    SCAN_BLOCK,  # noqa: F401  (re-exported: the scan's block size lives with the scan)
    asymmetric_dots,
    empty_arrays,
    grown,
    hamming_nearest,
    sign_words,
    slots_of,
)
from .store import crash_point

CODES_MAGIC = b"EDGEEMB-BCODES\x00\x00"
ROWS_MAGIC = b"EDGEEMB-BROWS\x00\x00\x00"
FORMAT = 1
HEADER = 64
BLOCK = 1024  # rows per CRC32 block of the rows file
_CODES_HEAD = struct.Struct("<IIQQII")  # format, dim, slots, epoch, block, flags
_ROWS_HEAD = struct.Struct("<IIQ")  # format, dim, epoch

FloatVectors = Callable[[Sequence[int]], tuple[np.ndarray, np.ndarray]]


class CodesDamaged(IndexStoreError):
    """A codes snapshot or its rows file is missing, truncated or fails its checksum: rebuild from the store."""


def default_candidates(n: int) -> int:
    """Stage-1 (Hamming) survivors for n documents: measured to keep recall@10 >= 0.95 up to ~540k."""
    return int(min(n, max(1000, n // 100)))


def default_rescore(n: int) -> int:
    """Stage-2 (asymmetric bits) survivors that are re-scored with int8 rows."""
    return int(min(n, 100 if n <= 200_000 else 200))


@dataclass(frozen=True)
class _State:
    """What one search reads; writers publish a new one instead of changing the published slot range."""

    n: int  # slots filled (live and deleted)
    codes: np.ndarray  # (words, capacity) uint64, one row per 64 dimensions: each word scans contiguously
    labels: np.ndarray  # (capacity,) int64
    alive: np.ndarray  # (capacity,) bool
    rows: RowFile
    live: int
    sorted: bool  # labels[:n] strictly increasing (the Index's labels only grow), so lookups bisect


class RowFile:
    """int8 rows by slot in one file, written with pwrite and read with pread (never mapped)."""

    def __init__(self, path: Path, dim: int, epoch: int, fd: int):
        self.path, self.dim, self.epoch, self.fd = path, dim, epoch, fd
        self.dtype = row_dtype(dim)
        self.size = self.dtype.itemsize

    @classmethod
    def create(cls, path: Path, dim: int, epoch: int) -> RowFile:
        """A new, empty rows file with its header (fsynced)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.pwrite(fd, (ROWS_MAGIC + _ROWS_HEAD.pack(FORMAT, dim, epoch)).ljust(HEADER, b"\x00"), 0)
            os.fsync(fd)
        except OSError as exc:
            raise IndexStoreError(f"cannot create {path} ({exc.strerror or exc})") from None
        return cls(path, dim, epoch, fd)

    @classmethod
    def open(cls, path: Path, dim: int, epoch: int, slots: int, writable: bool) -> RowFile:
        """Open a rows file and check its header and that it holds `slots` rows."""
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except OSError as exc:
            raise CodesDamaged(f"cannot open {path} ({exc.strerror or exc})") from None
        rows = cls(path, dim, epoch, fd)
        head = os.pread(fd, HEADER, 0)
        if len(head) < HEADER or not head.startswith(ROWS_MAGIC):
            rows.close()
            raise CodesDamaged(f"{path}: not an edgeemb rows file")
        fmt, file_dim, file_epoch = _ROWS_HEAD.unpack_from(head, len(ROWS_MAGIC))
        if (fmt, file_dim, file_epoch) != (FORMAT, dim, epoch):
            rows.close()
            raise CodesDamaged(f"{path}: format {fmt}, dim {file_dim}, epoch {file_epoch}; expected "
                               f"{FORMAT}, {dim}, {epoch}")
        have = (os.fstat(fd).st_size - HEADER) // rows.size
        if have < slots:
            rows.close()
            raise CodesDamaged(f"{path} holds {have} rows, the snapshot needs {slots}: truncated")
        return rows

    def write(self, start: int, rows: np.ndarray) -> None:
        """Write quantised rows at slots start.. (not fsynced: sync() before a snapshot names them)."""
        data = rows.tobytes()
        offset = HEADER + start * self.size
        try:
            done = 0
            while done < len(data):
                done += os.pwrite(self.fd, data[done:], offset + done)
        except OSError as exc:
            raise IndexStoreError(f"cannot write {self.path} ({exc.strerror or exc})") from None

    def read(self, slots: np.ndarray) -> np.ndarray:
        """Rows of some slots (one pread each, in slot order so neighbours share a page read)."""
        order = np.argsort(slots, kind="stable")
        buf = bytearray(len(slots) * self.size)
        view = memoryview(buf)
        base, size, fd = HEADER, self.size, self.fd
        for i, s in zip(order.tolist(), slots[order].tolist()):
            got = os.preadv(fd, [view[i * size:(i + 1) * size]], base + s * size)
            if got != size:
                raise CodesDamaged(f"{self.path}: row {s} is past the end of the file")
        return np.frombuffer(buf, dtype=self.dtype)

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop as one read."""
        want = (stop - start) * self.size
        data = os.pread(self.fd, want, HEADER + start * self.size) if want else b""
        if len(data) != want:
            raise CodesDamaged(f"{self.path}: rows {start}..{stop} are past the end of the file")
        return np.frombuffer(data, dtype=self.dtype)

    def block_crcs(self, first_block: int, slots: int) -> list[int]:
        """CRC32 of each block of BLOCK rows from first_block on, the last one covering only rows < slots."""
        out = []
        for b in range(first_block, -(-slots // BLOCK)):
            out.append(zlib.crc32(self.read_range(b * BLOCK, min(slots, (b + 1) * BLOCK)).data))
        return out

    def sync(self) -> None:
        try:
            os.fsync(self.fd)
        except OSError as exc:
            raise IndexStoreError(f"cannot write {self.path} ({exc.strerror or exc})") from None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:  # a replaced file stays open while a search still reads it
        self.close()


class BinaryCodes:
    """Binary codes + int8 re-scoring for one index folder; `search(vec, k, allowed, ef)` like HnswGraph.

    candidates / rescore: survivors of stage 1 and 2 (None: by size, default_candidates / default_rescore); a
    search's `ef` overrides rescore. float_vectors(labels) -> (labels, float32 vectors) and exact_top: re-score
    the best exact_top with float vectors (0: return the int8 scores).
    """

    def __init__(self, folder: Path, dim: int, state: _State, generation: int, crcs: list[int],
                 candidates: int | None, rescore: int | None, float_vectors: FloatVectors | None,
                 exact_top: int, read_only: bool):
        self.folder, self.dim, self.read_only = Path(folder), int(dim), read_only
        self.words = -(-self.dim // 64)
        self.candidates, self.rescore = candidates, rescore
        self.float_vectors, self.exact_top = float_vectors, int(exact_top)
        self.generation = generation  # of the last snapshot written or loaded
        self._state = state
        self._crcs = crcs  # CRC32 per rows block, as of the last snapshot
        self._saved_slots = state.n if generation else 0

    # -- life cycle ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: str | Path, dim: int, capacity: int = 1024, candidates: int | None = None,
               rescore: int | None = None, float_vectors: FloatVectors | None = None,
               exact_top: int = 0) -> BinaryCodes:
        """Empty codes for `dim`-dimensional vectors, with a fresh rows file (epoch 1) in folder."""
        folder = Path(folder)
        if dim < 1:
            raise InputError(f"dim must be positive, got {dim}")
        rows = RowFile.create(folder / rows_name(1), dim, 1)
        state = _empty_state(dim, max(16, capacity), rows)
        return cls(folder, dim, state, 0, [], candidates, rescore, float_vectors, exact_top, read_only=False)

    @classmethod
    def load(cls, folder: str | Path, generation: int, dim: int, read_only: bool = False, verify: bool = True,
             candidates: int | None = None, rescore: int | None = None,
             float_vectors: FloatVectors | None = None, exact_top: int = 0) -> BinaryCodes:
        """Open snapshot `generation` and its rows file; CodesDamaged if either is missing, short or damaged.

        verify: also check every rows block's CRC32 (reads the rows file once, through the page cache)."""
        folder = Path(folder)
        file = folder / codes_name(generation)
        try:
            with open(file, "rb") as f:  # read straight into the arrays: no second copy of the snapshot in RAM
                head = f.read(HEADER)
                if len(head) < HEADER or not head.startswith(CODES_MAGIC):
                    raise CodesDamaged(f"{file}: not an edgeemb codes snapshot")
                fmt, file_dim, n, epoch, block, _ = _CODES_HEAD.unpack_from(head, len(CODES_MAGIC))
                if fmt > FORMAT:
                    raise IndexStoreError(f"{file}: codes format {fmt} is newer than this edgeemb reads ({FORMAT})")
                if file_dim != dim or block != BLOCK:
                    raise CodesDamaged(f"{file}: {file_dim}-dimensional codes in blocks of {block}, expected "
                                       f"{dim}, {BLOCK}")
                words, nblocks = -(-dim // 64), -(-n // BLOCK)
                size = HEADER + 9 * n + 8 * words * n + 4 * nblocks + 4
                if os.fstat(f.fileno()).st_size != size:
                    raise CodesDamaged(f"{file}: size {os.fstat(f.fileno()).st_size} does not match its header "
                                       f"({size})")
                capacity = n if read_only else max(16, n + n // 4)
                codes = np.zeros((words, capacity), np.uint64)
                labels = np.full(capacity, -1, np.int64)
                alive = np.zeros(capacity, np.bool_)
                crc_arr = np.zeros(nblocks, np.uint32)
                crc = zlib.crc32(head)
                for part in (labels[:n], alive[:n], *(codes[w, :n] for w in range(words)), crc_arr):
                    view = part.data.cast("B")
                    if f.readinto(view) != len(view):
                        raise CodesDamaged(f"{file}: truncated")
                    crc = zlib.crc32(view, crc)
                if crc != struct.unpack("<I", f.read(4))[0]:
                    raise CodesDamaged(f"{file}: checksum mismatch (damaged)")
        except OSError as exc:
            raise CodesDamaged(f"cannot read {file} ({exc.strerror or exc})") from None
        if sys.byteorder == "big":  # the file is little-endian
            for arr in (labels, codes, crc_arr):
                arr.byteswap(inplace=True)
        crcs = crc_arr.tolist()
        rows = RowFile.open(folder / rows_name(epoch), dim, epoch, n, writable=not read_only)
        if verify and rows.block_crcs(0, n) != crcs:
            rows.close()
            raise CodesDamaged(f"{rows.path}: checksum mismatch (damaged); rebuild the vectors from the store")
        have = labels[:n]
        state = _State(n, codes, labels, alive, rows, int(alive[:n].sum()), bool(np.all(have[1:] > have[:-1])))
        return cls(folder, dim, state, generation, crcs, candidates, rescore, float_vectors, exact_top,
                   read_only)

    def close(self) -> None:
        """Close the rows file (a search still running keeps its own reference)."""
        self._state.rows.close()

    # -- figures ------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self._state.live

    @property
    def element_count(self) -> int:
        """Slots in use, deleted ones included (compact() drops those)."""
        return self._state.n

    @property
    def tombstones(self) -> int:
        return self._state.n - self._state.live

    @property
    def nbytes(self) -> int:
        """Bytes held in RAM (codes, labels and live flags, at their allocated capacity)."""
        s = self._state
        return int(s.codes.nbytes + s.labels.nbytes + s.alive.nbytes)

    def disk_bytes(self) -> int:
        """Bytes on disk: the rows file and the last snapshot."""
        total = 0
        for f in (self._state.rows.path, self.folder / codes_name(self.generation)):
            try:
                total += f.stat().st_size
            except OSError:
                pass
        return total

    @property
    def epoch(self) -> int:
        """The rows file in use (rows.<epoch>.i8); compact() moves to the next."""
        return self._state.rows.epoch

    def labels(self, include_deleted: bool = False) -> np.ndarray:
        """Live labels (int64, slot order), or every label with include_deleted."""
        s = self._state
        return s.labels[:s.n].copy() if include_deleted else s.labels[:s.n][s.alive[:s.n]]

    # -- writing ------------------------------------------------------------------------------------------
    def reserve(self, slots: int) -> None:
        """Room in RAM for `slots` slots at once (adds otherwise grow it by doubling)."""
        self._check_writable()
        s = self._state
        if slots > s.codes.shape[1]:
            self._state = _grow(s, int(slots))

    def add(self, vectors: np.ndarray, labels: np.ndarray) -> None:
        """Add vectors (cosine: normalised here) under new labels; InputError for NaN, shape or a label in use."""
        self._check_writable()
        vecs = np.asarray(vectors, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if vecs.ndim != 2 or vecs.shape[1] != self.dim or len(vecs) != len(labels):
            raise InputError(f"vectors have shape {vecs.shape} for {len(labels)} labels, expected "
                             f"({len(labels)}, {self.dim})")
        if not np.isfinite(vecs).all():
            raise InputError("vectors contain NaN or infinity")
        if not len(labels):
            return
        if len(np.unique(labels)) != len(labels):
            raise InputError("labels repeat within one add")
        s = self._state
        taken = self._slots_of(labels, s)
        if (taken >= 0).any():
            raise InputError(f"label {int(labels[taken >= 0][0])} is already in the codes")
        unit = _unit(vecs)
        rows = quantize(unit)
        n, m = s.n, len(labels)
        s.rows.write(n, rows)  # past the published count: invisible to searches until the state below
        if n + m > s.codes.shape[1]:
            s = _grow(s, max(n + m, 2 * s.codes.shape[1]))
        s.codes[:, n:n + m] = self._encode(unit)
        s.labels[n:n + m] = labels
        s.alive[n:n + m] = True
        ordered = s.sorted and bool(np.all(labels[1:] > labels[:-1])) and (n == 0 or labels[0] > s.labels[n - 1])
        self._state = replace(s, n=n + m, live=s.live + m, sorted=ordered)

    def mark_deleted(self, labels: int | Iterable[int]) -> int:
        """Tombstone labels; returns how many were live (unknown or already deleted ones are ignored). Allowed on
        read-only codes too: it changes only RAM."""
        items = [labels] if np.isscalar(labels) else list(cast(Iterable[int], labels))
        labs = np.asarray(items, dtype=np.int64)
        s = self._state
        slots = self._slots_of(labs, s)
        slots = np.unique(slots[slots >= 0])
        slots = slots[s.alive[slots]]
        s.alive[slots] = False
        self._state = replace(s, live=s.live - len(slots))
        return len(slots)

    def compact(self) -> int:
        """Copy the live rows into the next epoch's rows file and drop deleted slots from RAM; returns the slots
        dropped. Takes effect on disk with the next save() (the old files stay until remove_stale)."""
        self._check_writable()
        s = self._state
        keep = np.flatnonzero(s.alive[:s.n])
        epoch = s.rows.epoch + 1
        rows = RowFile.create(self.folder / rows_name(epoch), self.dim, epoch)
        try:
            for lo in range(0, len(keep), 8192):
                part = keep[lo:lo + 8192]
                contiguous = part[-1] - part[0] + 1 == len(part)
                got = s.rows.read_range(int(part[0]), int(part[-1]) + 1) if contiguous else s.rows.read(part)
                rows.write(lo, got)
            rows.sync()
        except BaseException:
            rows.close()
            rows.path.unlink(missing_ok=True)
            raise
        fresh = _empty_state(self.dim, max(16, len(keep) + len(keep) // 4), rows)
        fresh.codes[:, :len(keep)] = s.codes[:, keep]
        fresh.labels[:len(keep)] = s.labels[keep]
        fresh.alive[:len(keep)] = True
        self._state = replace(fresh, n=len(keep), live=len(keep), sorted=s.sorted)
        self._crcs, self._saved_slots = [], 0
        return s.n - len(keep)

    def save(self, generation: int) -> int:
        """Write snapshot `generation` (rows fsynced first; temp file, fsync, rename); returns its size."""
        self._check_writable()
        s = self._state
        s.rows.sync()
        crash_point("graph-written")  # rows durable, snapshot not yet written
        first = self._saved_slots // BLOCK  # blocks before it are full and unchanged since the last snapshot
        crcs = self._crcs[:first] + s.rows.block_crcs(first, s.n)
        head = (CODES_MAGIC + _CODES_HEAD.pack(FORMAT, self.dim, s.n, s.rows.epoch, BLOCK, 0)).ljust(HEADER, b"\0")
        parts = [head, s.labels[:s.n].astype("<i8").tobytes(), s.alive[:s.n].tobytes(),
                 np.ascontiguousarray(s.codes[:, :s.n]).astype("<u8").tobytes(), np.asarray(crcs, "<u4").tobytes()]
        crc = 0
        for p in parts:
            crc = zlib.crc32(p, crc)
        file = self.folder / codes_name(generation)
        try:
            with atomic_writer(file) as f:
                for p in parts:
                    f.write(p)
                f.write(struct.pack("<I", crc))
        except OSError as exc:
            raise IndexStoreError(f"cannot write {file} ({exc.strerror or exc}); the previous snapshot is "
                                  f"intact") from None
        self.generation, self._crcs, self._saved_slots = generation, crcs, s.n
        return file.stat().st_size

    def remove_stale(self) -> None:
        """Delete snapshots other than the current generation's and rows files of other epochs."""
        keep = {codes_name(self.generation), rows_name(self._state.rows.epoch)}
        for f in list(self.folder.glob("codes.*.bin")) + list(self.folder.glob("rows.*.i8")):
            if f.name not in keep:
                f.unlink(missing_ok=True)
        for f in self.folder.glob(".codes.*.bin.tmp-*"):
            f.unlink(missing_ok=True)
        fsync_dir(self.folder)

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, vec: np.ndarray, k: int, allowed: np.ndarray | None = None,
               ef: int | None = None) -> list[tuple[int, float]]:
        """Top-k (label, cosine) best first; fewer when fewer (allowed) documents are live."""
        q = np.asarray(vec, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise InputError(f"query vector has dimension {q.shape[0]}, the codes hold {self.dim}")
        if not np.isfinite(q).all():
            raise InputError("query vector contains NaN or infinity")
        q = _unit(q[None, :])[0]
        s = self._state  # one snapshot for the whole search
        k = int(k)
        if allowed is None:
            slots = None
            pool = s.live
        else:
            slots = self._slots_of(np.asarray(allowed, dtype=np.int64).reshape(-1), s)
            slots = slots[slots >= 0]
            slots = slots[s.alive[slots]]
            pool = len(slots)
        if k < 1 or pool == 0:
            return []
        n_cand = self.candidates or default_candidates(s.live)
        n_resc = max(k, int(ef or self.rescore or default_rescore(s.live)))
        cand = self._hamming_stage(q, s, slots, n_cand) if pool > n_cand else (
            np.flatnonzero(s.alive[:s.n]) if slots is None else slots)
        if len(cand) > n_resc:  # stage 2: the float query against the candidates' bits as +-1
            approx = self._asymmetric(q, s.codes[:, cand])
            cand = cand[np.argpartition(-approx, n_resc - 1)[:n_resc]]
        rows = s.rows.read(cand)  # stage 3: int8 rows
        scores = (rows["q"].astype(np.float32) @ q) * rows["scale"]
        labels = s.labels[cand]
        top = np.argsort(-scores, kind="stable")
        if self.exact_top and self.float_vectors is not None:  # stage 4: exact cosines for the best few
            best = labels[top[:max(k, self.exact_top)]]
            got_labels, got = self.float_vectors(best.tolist())
            if len(got_labels):
                exact = _unit(np.asarray(got, np.float32)) @ q
                order = np.argsort(-exact, kind="stable")[:k]
                return list(zip(np.asarray(got_labels)[order].tolist(), exact[order].tolist()))
        top = top[:k]
        return list(zip(labels[top].tolist(), scores[top].tolist()))

    def scores(self, labels: Sequence[int], vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels found, int8 cosine to vec) for some labels: the fine re-scoring a hybrid retriever needs."""
        s = self._state
        labs = np.asarray(labels, dtype=np.int64).reshape(-1)
        slots = self._slots_of(labs, s)
        found = (slots >= 0) & s.alive[np.maximum(slots, 0)]
        slots = slots[found]
        if not len(slots):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = s.rows.read(slots)
        q = _unit(np.asarray(vec, np.float32).reshape(1, -1))[0]
        return labs[found], (rows["q"].astype(np.float32) @ q) * rows["scale"]

    # -- internals ----------------------------------------------------------------------------------------
    def _hamming_stage(self, q: np.ndarray, s: _State, slots: np.ndarray | None, n_cand: int) -> np.ndarray:
        """Slots of the n_cand live documents (ties at the cut included) nearest the query's bits in Hamming."""
        alive = s.alive if slots is None and s.live < s.n else None
        return hamming_nearest(s.codes, s.n, self._encode(q[None, :])[:, 0], self.dim, n_cand, slots, alive)

    def _asymmetric(self, q: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """q . bits for each column of codes (words, m) (signbits.asymmetric_dots)."""
        return asymmetric_dots(q, codes, self.dim)

    def _encode(self, unit: np.ndarray) -> np.ndarray:
        """Sign bits of unit vectors as (words, n) uint64 (bits past dim are zero)."""
        return sign_words(unit, self.words)

    def _slots_of(self, labels: np.ndarray, s: _State) -> np.ndarray:
        """Slot of each label, -1 where absent (deleted slots included)."""
        return slots_of(s.labels[:s.n], labels, s.sorted)

    def _check_writable(self) -> None:
        if self.read_only:
            raise IndexStoreError(f"the codes in {self.folder} are open read-only")


def codes_name(generation: int) -> str:
    return f"codes.{int(generation)}.bin"


def rows_name(epoch: int) -> str:
    return f"rows.{int(epoch)}.i8"


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def _empty_state(dim: int, capacity: int, rows: RowFile) -> _State:
    return _State(0, *empty_arrays(-(-dim // 64), capacity), rows, 0, True)


def _grow(s: _State, capacity: int) -> _State:
    """Copies of the arrays with room for `capacity` slots (searches keep reading the old ones)."""
    codes, labels, alive = grown(s.codes, s.labels, s.alive, s.n, capacity)
    return replace(s, codes=codes, labels=labels, alive=alive)
