"""Int8 vectors with a float32 scale per row in one file, read through a memory map (not held in RAM).

Layout: a 64-byte header (magic, format, dim), then row i at HEADER + i * (4 + dim): little-endian float32
scale followed by dim int8 values; vector ≈ scale * int8 row. Rows are addressed by the index's labels, so a
writer puts a batch at its labels' offsets and fsyncs *before* the document store commits those labels: a
crash can leave bytes past the last committed label (overwritten by the next add), never a committed label
without its row.
"""
from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..errors import IndexStoreError, InputError

MAGIC = b"EDGEEMB-I8ROWS\x00\x00"
FORMAT = 1
HEADER = 64


def row_dtype(dim: int) -> np.dtype:
    """One stored row: a float32 scale and dim int8 values (4 + dim bytes, no padding)."""
    return np.dtype([("scale", "<f4"), ("q", "i1", (dim,))])


def quantize(vectors: np.ndarray) -> np.ndarray:
    """Symmetric int8 per row: scale = max|x| / 127, so each row keeps its own range."""
    x = np.asarray(vectors, dtype=np.float32)
    scale = np.abs(x).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    rows = np.empty(len(x), dtype=row_dtype(x.shape[1]))
    rows["scale"] = scale
    rows["q"] = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return rows


class Int8Rows:
    """A file of int8 rows addressed by integer row number; `scores` reads only the rows it needs."""

    def __init__(self, path: Path, dim: int, read_only: bool):
        self.path, self.dim, self.read_only = Path(path), dim, read_only
        self.dtype = row_dtype(dim)
        self._mm: np.ndarray | None = None
        self._capacity = 0
        self._map()

    @classmethod
    def create(cls, path: str | Path, dim: int) -> Int8Rows:
        """Write an empty file with its header (fsynced, then the folder)."""
        path = Path(path)
        header = MAGIC + struct.pack("<II", FORMAT, dim)
        try:
            atomic_write_bytes(path, header.ljust(HEADER, b"\x00"))
        except OSError as exc:
            raise IndexStoreError(f"cannot create {path} ({exc.strerror or exc})") from None
        return cls(path, dim, read_only=False)

    @classmethod
    def open(cls, path: str | Path, dim: int, read_only: bool = False) -> Int8Rows:
        """Open an existing file and check its header against the expected dimension."""
        path = Path(path)
        try:
            with open(path, "rb") as f:
                header = f.read(HEADER)
        except OSError as exc:
            raise IndexStoreError(f"cannot read {path} ({exc.strerror or exc})") from None
        if len(header) < HEADER or not header.startswith(MAGIC):
            raise IndexStoreError(f"{path}: not an edgeemb int8 vector file")
        fmt, file_dim = struct.unpack_from("<II", header, len(MAGIC))
        if fmt > FORMAT:
            raise IndexStoreError(f"{path}: vector file format {fmt} is newer than this edgeemb reads ({FORMAT}); "
                                  f"upgrade edgeemb")
        if file_dim != dim:
            raise IndexStoreError(f"{path}: holds {file_dim}-dimensional vectors, expected {dim}")
        return cls(path, dim, read_only)

    @property
    def rows(self) -> int:
        """Rows the file has room for (complete or not)."""
        return self._capacity

    def reserve(self, rows: int) -> None:
        """Grow the file to hold `rows` rows at once (writes otherwise grow it by doubling)."""
        if self.read_only or rows <= self._capacity:
            return
        try:
            os.truncate(self.path, HEADER + rows * self.dtype.itemsize)
        except OSError as exc:
            raise IndexStoreError(f"cannot grow {self.path} ({exc.strerror or exc})") from None
        self._map()

    def write(self, start: int, vectors: np.ndarray) -> None:
        """Quantize and write vectors as rows start.. (growing the file), then fsync: durable on return."""
        if self.read_only:
            raise IndexStoreError(f"{self.path} is open read-only")
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise InputError(f"vectors have shape {vectors.shape}, expected (n, {self.dim})")
        data = quantize(vectors).tobytes()
        need = start + len(vectors)
        try:
            fd = os.open(self.path, os.O_RDWR)
            try:
                if need > self._capacity:
                    os.ftruncate(fd, HEADER + max(need, 2 * self._capacity, 1024) * self.dtype.itemsize)
                done = 0
                while done < len(data):
                    done += os.pwrite(fd, data[done:], HEADER + start * self.dtype.itemsize + done)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise IndexStoreError(f"cannot write {self.path} ({exc.strerror or exc}); nothing from this batch "
                                  f"was stored, the index keeps its previous state") from None
        if need > self._capacity:
            self._map()

    def vectors(self, rows: np.ndarray) -> np.ndarray:
        """Dequantized float32 vectors of some rows."""
        got = self._rows(rows)
        out: np.ndarray = got["q"].astype(np.float32) * got["scale"][:, None]
        return out

    def scores(self, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Dot products of a float32 query with some rows (cosine when both sides were unit vectors)."""
        got = self._rows(rows)
        out: np.ndarray = (got["q"].astype(np.float32) @ np.asarray(query, np.float32)) * got["scale"]
        return out

    def check_rows(self, needed: int) -> None:
        """Raise if the file is shorter than `needed` rows (truncated or replaced)."""
        if needed > self._capacity:
            raise IndexStoreError(f"{self.path} holds {self._capacity} rows but the store needs {needed}: the file "
                                  f"was truncated or replaced; rebuild the index from its corpus")

    def close(self) -> None:
        """Drop the memory map."""
        self._mm = None

    def _rows(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= self._capacity):
            raise IndexStoreError(f"{self.path}: row {int(rows.max())} is past the end of the file")
        if not len(rows):
            return np.empty(0, self.dtype)
        if self._mm is None:
            raise IndexStoreError(f"{self.path} is closed")
        got: np.ndarray = self._mm[rows]
        return got

    def _map(self) -> None:
        """Map the file read-only; MADV_RANDOM keeps the kernel from mapping neighbouring pages on each fault,
        so resident memory grows only with the rows queries actually read."""
        with open(self.path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            self._capacity = max(0, (size - HEADER) // self.dtype.itemsize)
            if not self._capacity:
                self._mm = np.empty(0, self.dtype)
                return
            mm = mmap.mmap(f.fileno(), HEADER + self._capacity * self.dtype.itemsize, access=mmap.ACCESS_READ)
        if hasattr(mm, "madvise") and hasattr(mmap, "MADV_RANDOM"):
            mm.madvise(mmap.MADV_RANDOM)
        self._mm = np.frombuffer(mm, dtype=self.dtype, count=self._capacity, offset=HEADER)
