"""Nearest-neighbour search over an index's vectors: the hnswlib graph, and its exact twin with the same surface.

Both answer `search(vec, k, allowed=None, ef=None) -> [(label, cosine), ...]`, best first. HnswGraph keeps its own
copy of the vectors in RAM and is saved as one file; ExactGraph streams the store's vectors (nothing extra in
memory) and is what a selective filter, or a query hnswlib cannot fill, is answered with (like hnswlib's BFIndex).
CodesGraph puts BinaryCodes (bits in RAM, int8 rows on disk; codes.py) behind HnswGraph's surface: the storage of
an index created with vectors="binary".
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import hnswlib
import numpy as np

from ..encode.pooling import normalize
from ..similarity import top_k
from .codes import BinaryCodes, CodesDamaged

if TYPE_CHECKING:
    from .store import DocStore


class Neighbours(Protocol):
    """What the Index asks of a vector search structure."""

    def search(self, vec: np.ndarray, k: int, allowed: np.ndarray | None = None,
               ef: int | None = None) -> list[tuple[int, float]]: ...


class GraphShort(Exception):
    """hnswlib could not return k results (tombstones, a filter, a small ef): answer exactly instead."""


class HnswGraph:
    """An hnswlib cosine graph whose slots are reused after deletes and which grows by doubling."""

    kind = "float32"

    def __init__(self, index: hnswlib.Index, ef_search: int):
        self.index, self.ef_search = index, int(ef_search)
        self._ef: int | None = None
        index.set_ef(self.ef_search)  # hnswlib does not save ef

    @classmethod
    def new(cls, dim: int, M: int, ef_construction: int, ef_search: int, capacity: int = 1024) -> HnswGraph:
        index = hnswlib.Index(space="cosine", dim=int(dim))
        index.init_index(max_elements=max(int(capacity), 16), M=int(M), ef_construction=int(ef_construction),
                         allow_replace_deleted=True)
        return cls(index, ef_search)

    @classmethod
    def load(cls, file: Path, dim: int, ef_search: int, expected_size: int | None = None) -> HnswGraph | None:
        """The graph saved in `file`; None if it is missing, of the wrong size, or damaged."""
        try:
            size = file.stat().st_size
        except OSError:
            return None
        if expected_size and size != int(expected_size):
            return None
        index = hnswlib.Index(space="cosine", dim=int(dim))
        try:
            index.load_index(str(file), allow_replace_deleted=True)
        except (RuntimeError, ValueError, MemoryError):
            return None
        return cls(index, ef_search)

    @property
    def element_count(self) -> int:
        """Slots in use, tombstones included."""
        count: int = self.index.element_count
        return count

    def labels(self) -> np.ndarray:
        """Every label in the graph (deleted ones included), int64."""
        return np.asarray(self.index.get_ids_list(), dtype=np.int64)

    def reserve(self, live: int, more: int) -> None:
        """Room for `more` documents beyond `live` ones at once (tombstone slots are reused)."""
        need = live + int(more)
        if need > self.index.get_max_elements():
            self.index.resize_index(need)

    def add(self, vecs: np.ndarray, labels: np.ndarray, threads: int = 1) -> None:
        """Add vectors under their labels, growing by doubling when full."""
        if not len(labels):
            return
        need = self.index.element_count + len(labels)
        if need > self.index.get_max_elements():
            self.index.resize_index(max(need, 2 * self.index.get_max_elements()))
        self.index.add_items(vecs, labels, num_threads=threads, replace_deleted=True)

    def mark_deleted(self, label: int) -> bool:
        """Tombstone a label; False when it is not in the graph or already deleted."""
        try:
            self.index.mark_deleted(int(label))
            return True
        except RuntimeError:
            return False

    def delete(self, labels: Iterable[int]) -> int:
        """Tombstone labels; returns how many were live in the graph."""
        return sum(self.mark_deleted(label) for label in labels)

    def search(self, vec: np.ndarray, k: int, allowed: np.ndarray | None = None,
               ef: int | None = None) -> list[tuple[int, float]]:
        """Top-k (label, cosine); raises GraphShort when hnswlib cannot fill k."""
        ef = max(int(ef or self.ef_search), k)
        if ef != self._ef:
            self.index.set_ef(ef)
            self._ef = ef
        try:
            if allowed is None:
                labels, dists = self.index.knn_query(vec[None, :], k=k, num_threads=1)
            else:
                keep = frozenset(allowed.tolist())
                labels, dists = self.index.knn_query(vec[None, :], k=k, num_threads=1, filter=keep.__contains__)
        except RuntimeError:
            raise GraphShort from None
        return list(zip(labels[0].tolist(), (1.0 - dists[0]).tolist()))

    def save(self, tmp: Path) -> int:
        """Write the graph to `tmp` and fsync it; returns its size. OSError when the write was short."""
        with open(tmp, "wb"):  # hnswlib does not report a failed write: surface the error ourselves
            pass
        self.index.save_index(str(tmp))
        size, expected = tmp.stat().st_size, self.index.index_file_size()
        if size != expected:
            raise OSError(28, f"wrote {size} of {expected} bytes (disk full?)")
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        return size


class CodesGraph:
    """BinaryCodes with HnswGraph's surface. Saved as codes.<generation>.bin beside its rows.<epoch>.i8; built in a
    private temporary folder when a read-only handle has no snapshot to load (its rows file cannot go in the index).

    Read-only codes cannot append rows: documents a read-only handle finds in the store but not in the snapshot
    (added by a writer since its last save) are kept as float vectors in RAM and searched exactly beside the codes.
    """

    kind = "binary"

    def __init__(self, codes: BinaryCodes, tmp: tempfile.TemporaryDirectory[str] | None = None):
        self.codes, self._tmp = codes, tmp
        self._extra_labels = np.zeros(0, np.int64)  # the read-only overlay
        self._extra_vecs = np.zeros((0, codes.dim), np.float32)
        self._extra_alive = np.zeros(0, np.bool_)

    @classmethod
    def new(cls, folder: Path | None, dim: int, capacity: int = 1024, read_only: bool = False) -> CodesGraph:
        """Empty codes with a fresh rows file (epoch 1) in folder, or in a temporary folder when read_only."""
        tmp = tempfile.TemporaryDirectory(prefix="edgeemb-codes-") if read_only or folder is None else None
        where = Path(tmp.name) if tmp else folder
        assert where is not None  # a temporary folder is made whenever folder is None
        return cls(BinaryCodes.create(where, dim, capacity), tmp)

    @classmethod
    def load(cls, folder: Path, generation: int, dim: int, read_only: bool) -> CodesGraph | None:
        """The codes snapshot of a generation; None if it or its rows file is missing or damaged."""
        try:
            return cls(BinaryCodes.load(folder, generation, dim, read_only=read_only))
        except CodesDamaged:
            return None

    @property
    def element_count(self) -> int:
        """Slots in use, tombstones included."""
        return self.codes.element_count + len(self._extra_labels)

    @property
    def epoch(self) -> int | None:
        """The rows file this storage uses, None when it lives outside the index folder."""
        return None if self._tmp is not None else self.codes.epoch

    def labels(self) -> np.ndarray:
        """Every label held (deleted ones included), int64."""
        return np.concatenate([self.codes.labels(include_deleted=True), self._extra_labels])

    def reserve(self, live: int, more: int) -> None:
        """Room for `more` documents beyond the slots in use at once."""
        if not self.codes.read_only:
            self.codes.reserve(self.codes.element_count + int(more))

    def add(self, vecs: np.ndarray, labels: np.ndarray, threads: int = 1) -> None:
        """Add vectors under new labels (bits in RAM, int8 rows appended to the rows file; read-only: RAM)."""
        if not self.codes.read_only:
            self.codes.add(vecs, labels)
            return
        vecs = normalize(np.asarray(vecs, np.float32))
        self._extra_labels = np.concatenate([self._extra_labels, np.asarray(labels, np.int64)])
        self._extra_vecs = np.concatenate([self._extra_vecs, vecs])
        self._extra_alive = np.concatenate([self._extra_alive, np.ones(len(vecs), np.bool_)])

    def mark_deleted(self, label: int) -> bool:
        """Tombstone a label; False when it is not held or already deleted."""
        return self.delete([label]) > 0

    def delete(self, labels: Iterable[int]) -> int:
        """Tombstone labels at once; returns how many were live."""
        labels = list(labels)
        n = self.codes.mark_deleted(labels)
        if len(self._extra_labels) and labels:
            hit = np.isin(self._extra_labels, np.asarray(labels, np.int64)) & self._extra_alive
            self._extra_alive = self._extra_alive & ~hit
            n += int(hit.sum())
        return n

    def search(self, vec: np.ndarray, k: int, allowed: np.ndarray | None = None,
               ef: int | None = None) -> list[tuple[int, float]]:
        """Top-k (label, int8 cosine); `ef` is how many Hamming survivors are re-scored with int8 rows."""
        found = self.codes.search(vec, k, allowed, ef)
        if not self._extra_alive.any():
            return found
        keep = self._extra_alive & (True if allowed is None else np.isin(self._extra_labels, allowed))
        sims = self._extra_vecs[keep] @ normalize(np.asarray(vec, np.float32).reshape(-1))
        pairs = found + list(zip(self._extra_labels[keep].tolist(), sims.tolist()))
        return sorted(pairs, key=lambda p: -p[1])[:k]

    def compact(self) -> None:
        """Drop deleted slots: live rows copied to the next epoch's rows file (in force once saved)."""
        self.codes.compact()

    def write(self, generation: int) -> int:
        """Write snapshot `generation` (rows fsynced first; temp file, fsync, rename); returns its size."""
        return self.codes.save(generation)

    def close(self) -> None:
        self.codes.close()


class ExactGraph:
    """Exact cosine top-k over the store's vectors (all, or the allowed labels), streamed in chunks."""

    def __init__(self, store: DocStore, chunk: int = 4096):
        self.store, self.chunk = store, chunk

    def search(self, vec: np.ndarray, k: int, allowed: np.ndarray | None = None,
               ef: int | None = None) -> list[tuple[int, float]]:
        unit = normalize(np.asarray(vec, dtype=np.float32))
        if allowed is None:
            chunks = self.store.iter_vectors(self.chunk)
        else:
            chunks = (self.store.vectors(allowed[s:s + self.chunk].tolist())
                      for s in range(0, len(allowed), self.chunk))
        best_l, best_s = np.zeros(0, np.int64), np.zeros(0, np.float32)
        for lab, mat in chunks:
            if not len(lab):
                continue
            sims = normalize(mat) @ unit
            all_l, all_s = np.concatenate([best_l, lab]), np.concatenate([best_s, sims.astype(np.float32)])
            idx, _ = top_k(all_s, k)
            best_l, best_s = all_l[idx[0]], all_s[idx[0]]
        return list(zip(best_l.tolist(), best_s.tolist()))
