"""Index: the facade over a document store (the truth) and a nearest-neighbour graph derived from it.

Durability: every add/upsert/delete is one store transaction, acknowledged when it returns. The graph is saved
as graph.<generation>.bin (temp file, size checked, fsync, rename), then the store records the new generation and
the file's size in one transaction. On open, the graph named by the store is loaded and reconciled with the
store: labels missing from the graph are re-added from stored vectors, labels gone from the store are marked
deleted; a missing or damaged graph is rebuilt from the store. Labels are never reused (an upsert gets a fresh
label and tombstones the old one), so a stale vector can never hide behind a live label. A crash at any point
leaves a state that opens to exactly the acknowledged documents.

Concurrency: in one process, any number of threads may search while one writes (an RWLock keeps hnswlib
writes away from running queries; a second writer waits). Across processes, one writer at a time (an flock
on `writer.lock`); other processes open with read_only=True and see the snapshot of the moment they opened
(call refresh() to move on).

Filters (search/filters.py) are an indexed lookup in the store; a selective filter is answered exactly over the
allowed vectors (ExactGraph), a broad one by hnswlib with the allowed set as its filter, so k results come back
whenever k documents match.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import fsync_dir
from ..encode.batching import check_texts
from ..errors import IndexMismatchError, IndexStoreError, InputError
from ..progress import Progress
from .filters import facets, filter_labels
from .graph import ExactGraph, GraphShort, HnswGraph
from .locks import RWLock, release, writer_lock
from .store import INDEX_FORMAT, STORE, DocStore, Hit, NewDocs

BRUTE_FORCE_LIMIT = 4096  # filters allowing at most this many documents (or 2% of them) are answered exactly
GRAPH_CHUNK = 256  # documents added to the graph per exclusive-lock hold, so queries interleave with a big add

__all__ = ["INDEX_FORMAT", "STORE", "Hit", "Index", "check_encoder"]


def _crash_point(name: str) -> None:
    """Test hook: EDGEEMB_CRASH_AT=<name> kills the process here, as a power cut would."""
    if os.environ.get("EDGEEMB_CRASH_AT") == name:
        os._exit(137)


class Index:
    """Cosine ANN index with documents. Use Index.create / Index.open; thread-safe (many readers, one writer).

    `encoder` encodes texts for add and search; an index opened without one loads the bundle it was built with
    on its first text query or add (`meta["bundle_ref"]`).
    """

    def __init__(self, path: Path, store: DocStore, graph: HnswGraph, encoder=None, read_only: bool = False,
                 threads: int = 1, lock_fd: int | None = None):
        self.path, self.store, self.graph, self._encoder = path, store, graph, encoder
        self.dim = store.dim
        self.read_only, self.threads = read_only, max(1, int(threads))
        self.exact = ExactGraph(store)
        self.repaired = 0  # documents re-added to the graph from the store when opening
        self._dirty = False
        self._rw = RWLock()
        self._writer = threading.RLock()
        self._lock_fd = lock_fd
        self._count = store.count()

    @property
    def meta(self) -> dict[str, Any]:
        """The index's settings as the store records them."""
        return self.store.meta

    @property
    def closed(self) -> bool:
        return self.store.closed

    # -- life cycle ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, encoder=None, dim: int | None = None, M: int = 16, ef_construction: int = 200,
               ef_search: int = 64, capacity: int = 1024, bundle_ref: str | None = None,
               compact_threshold: float = 0.3, threads: int = 1, extra_meta: dict[str, Any] | None = None) -> Index:
        """Create an empty index folder for `encoder`'s vectors (or raw vectors of `dim`)."""
        path = Path(path)
        if (path / STORE).exists():
            raise IndexStoreError(f"{path} already holds an index; open it with Index.open")
        if encoder is None and not dim:
            raise InputError("Index.create needs an encoder or a dim")
        if not 0 < compact_threshold <= 1:
            raise InputError(f"compact_threshold must be in (0, 1], got {compact_threshold}")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexStoreError(f"cannot create index folder {path} ({exc.strerror or exc})") from None
        meta = {"format": INDEX_FORMAT, "dim": encoder.dim if encoder is not None else int(dim), "space": "cosine",
                "M": M, "ef_construction": ef_construction, "ef_search": ef_search, "generation": 0,
                "graph_size": 0, "next_label": 0, "compact_threshold": compact_threshold,
                "bundle_id": encoder.manifest.bundle_id if encoder is not None else "",
                "bundle_name": encoder.manifest.name if encoder is not None else "",
                "bundle_ref": bundle_ref or (str(Path(encoder.path).resolve()) if encoder is not None else "")}
        meta.update(extra_meta or {})
        lock_fd = writer_lock(path)
        try:
            store = DocStore.create(path, meta)
        except BaseException:
            release(lock_fd)
            raise
        graph = HnswGraph.new(meta["dim"], M, ef_construction, ef_search, capacity)
        return cls(path, store, graph, encoder, threads=threads, lock_fd=lock_fd)

    @classmethod
    def open(cls, path: str | Path, encoder=None, read_only: bool = False, threads: int = 1) -> Index:
        """Open an index folder, check it matches `encoder`, and repair the graph from the store if they differ.

        read_only: never writes (safe next to a writer in another process); sees the store as of opening.
        """
        path = Path(path)
        if not (path / STORE).is_file():
            raise IndexStoreError(f"no index at {path} ({STORE} missing)")
        lock_fd = None if read_only else writer_lock(path)
        store = None
        try:
            for attempt in range(5):
                store = DocStore.open(path, read_only)
                graph = _load_graph(path, store.meta)
                # a writer may have saved a newer generation and removed ours since we read the store: retry
                if graph is not None or not read_only or int(store.meta["generation"]) == 0 or attempt == 4:
                    break
                store.close()
            if encoder is not None:
                check_encoder(store.meta, encoder, path)
        except BaseException:
            if store is not None:
                store.close()
            release(lock_fd)
            raise
        if graph is None:
            graph = _new_graph(store.meta, 1024)
        index = cls(path, store, graph, encoder, read_only=read_only, threads=threads, lock_fd=lock_fd)
        index._reconcile()
        if not read_only:
            index._remove_stale_files()
        return index

    def close(self) -> None:
        """Save the graph if it changed (writers) and close the store."""
        if self.store.closed:
            return
        try:
            if self._dirty and not self.read_only:
                self.save()
        finally:
            self.store.close()
            release(self._lock_fd)
            self._lock_fd = None

    def refresh(self) -> None:
        """Read-only handles: move to the latest state another process has committed."""
        if not self.read_only:
            return
        fresh = Index.open(self.path, None, read_only=True, threads=self.threads)
        with self._rw.write():
            self.store.close()
            self.store, self.graph, self._count = fresh.store, fresh.graph, fresh._count
            self.exact = ExactGraph(self.store)

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    @property
    def encoder(self):
        """The encoder for texts: the one given, else the bundle this index records (loaded once, checked)."""
        if self._encoder is None:
            ref = self.meta.get("bundle_ref")
            if not ref:
                raise InputError("this index was opened without an encoder and records no bundle; pass one to "
                                 "Index.open to add or search by text")
            from ..encode.encoder import load

            encoder = load(ref, threads=self.threads)
            check_encoder(self.meta, encoder, self.path)
            self._encoder = encoder
        return self._encoder

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict] | None = None,
            batch_size: int = 512, show_progress: bool = False) -> list[str]:
        """Encode and add documents; each chunk of batch_size is one transaction. Returns their ids."""
        return self._encode_and_insert(texts, ids, metadata, batch_size, show_progress, "add", False)

    def upsert(self, texts: Sequence[str], ids: Sequence[str], metadata: Sequence[dict] | None = None,
               must_exist: bool = False, batch_size: int = 512) -> list[str]:
        """Encode and add or replace documents by id (must_exist: every id must already be there)."""
        return self._encode_and_insert(texts, ids, metadata, batch_size, False, "upsert", must_exist)

    def add_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str] | None = None,
                    metadata: Sequence[dict] | None = None,
                    before_commit: Callable[[np.ndarray], None] | None = None) -> list[str]:
        """Add precomputed vectors with their documents in one transaction (dimension checked).

        before_commit(labels) runs after labels are chosen and before the store commits: data written durably
        there (e.g. a sidecar vector file) is in place for every acknowledged document.
        """
        with self._writer:
            texts, ids, metas = self.check_documents(texts, ids, metadata, "add", False)
            self._insert(self._check_vectors(vectors, len(texts)), texts, ids, metas, False, before_commit)
        return ids

    def upsert_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
                       metadata: Sequence[dict] | None = None, must_exist: bool = False,
                       before_commit: Callable[[np.ndarray], None] | None = None) -> list[str]:
        """Add or replace documents by id with precomputed vectors, in one transaction."""
        with self._writer:
            texts, ids, metas = self.check_documents(texts, ids, metadata, "upsert", must_exist)
            self._insert(self._check_vectors(vectors, len(texts)), texts, ids, metas, True, before_commit)
        return ids

    def delete(self, ids: Iterable[str], missing_ok: bool = False) -> int:
        """Delete documents by id in one transaction; an unknown id is an InputError (nothing deleted) unless
        missing_ok. Returns how many were deleted."""
        self._check_writable()
        if isinstance(ids, str):
            raise InputError("delete takes a list of ids, not one str")
        ids = list(dict.fromkeys(ids))
        with self._writer:
            found = self.store.labels_of(ids)
            unknown = [i for i in ids if i not in found]
            if unknown and not missing_ok:
                raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown of {len(ids)}); "
                                 f"nothing was deleted")
            labels = list(found.values())
            if not labels:
                return 0
            with self._rw.write():
                self.store.delete(labels)
                self._count -= len(labels)
                _crash_point("store-committed")
                for label in labels:
                    self.graph.mark_deleted(label)
                self._dirty = True
        return len(labels)

    def save(self) -> None:
        """Write the graph atomically as the next generation and record it; compacts first when tombstones
        (deleted documents still in the graph) pass compact_threshold of the graph."""
        self._check_writable()
        with self._writer:
            if self._compaction_due():
                self._compact()
                return
            with self._rw.read():  # saving only reads the graph; writers are held off by self._writer
                self._save_graph(self.graph)

    def compact(self, force: bool = False) -> bool:
        """Rebuild the graph from the live documents (dropping tombstones) and save it, when due or forced.
        Searches keep running on the old graph meanwhile. Returns whether it rebuilt."""
        self._check_writable()
        with self._writer:
            if not force and not self._compaction_due():
                return False
            self._compact()
            return True

    def reserve(self, n: int) -> None:
        """Make room in the graph for n more documents at once (adds grow it by doubling otherwise)."""
        self._check_writable()
        with self._writer, self._rw.write():
            self.graph.reserve(self.graph.element_count - self.tombstones, n)

    @property
    def tombstones(self) -> int:
        """Deleted documents still occupying graph slots (reused by later adds, dropped by compact)."""
        return max(0, self.graph.element_count - self._count)

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, query: str | np.ndarray, k: int = 10, ef: int | None = None,
               filter: dict[str, Any] | None = None) -> list[Hit]:
        """Top-k documents by cosine; k larger than the number of (matching) documents returns them all."""
        vec = self._query_vector(query)
        with self._rw.read():
            return self._hits(self.candidates(vec, k, ef, filter))

    def candidates(self, vec: np.ndarray, k: int, ef: int | None = None, filter: dict[str, Any] | None = None,
                   allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(label, cosine) of the top-k graph neighbours of a query vector; callers hold reading().

        allowed: the labels `filter_labels(filter)` gave, when the caller needs them too (computed once)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise InputError(f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}")
        if filter is not None and allowed is None:
            allowed = self.filter_labels(filter)
        if allowed is not None and len(allowed) <= max(BRUTE_FORCE_LIMIT, self._count // 50, k):
            return self.exact.search(vec, k, allowed)
        k = min(int(k), self._count)
        if k == 0:
            return []
        try:
            return self.graph.search(vec, k, allowed, ef)
        except GraphShort:
            return self.exact.search(vec, k, allowed)

    def filter_labels(self, filter: dict[str, Any]) -> np.ndarray:
        """Labels of the documents whose metadata match a filter (InputError for a field no document has)."""
        return filter_labels(self.store, filter)

    def reading(self):
        """Context manager holding the shared lock, for callers combining candidates() with other reads."""
        return self._rw.read()

    def writing(self):
        """Context manager making the caller this index's only writer (re-entrant), e.g. around a multi-step add."""
        return self._writer

    def get(self, id: str) -> Hit | None:
        """The stored document with this id, or None."""
        return self.store.get(id)

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        return self.store.ids()

    def vectors(self, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors (and their labels) of all or some documents, from the store."""
        return self.store.vectors(labels)

    def documents(self, labels: Sequence[int]) -> dict[int, Hit]:
        """label -> Hit (score 0) for the labels still in the store."""
        return self.store.documents(labels)

    def check_documents(self, texts: Sequence[str], ids: Sequence[str] | None, metadata: Sequence[dict] | None,
                        mode: str, must_exist: bool) -> tuple[list[str], list[str], list[dict]]:
        """Validate a write's texts, ids and metadata (ids generated for a plain add); InputError names the item."""
        self._check_writable()
        texts = check_texts(texts)
        n = len(texts)
        if ids is None:
            if mode != "add":
                raise InputError("upsert needs the ids of the documents it replaces or adds")
            start = int(self.meta["next_label"])
            ids = [f"doc-{start + i}" for i in range(n)]
        if isinstance(ids, str):
            raise InputError("ids must be a list of str, not one str")
        ids = list(ids)
        metas = [{} for _ in range(n)] if metadata is None else list(metadata)
        if len(ids) != n or len(metas) != n:
            raise InputError(f"got {n} texts, {len(ids)} ids and {len(metas)} metadata entries")
        for i, (doc_id, m) in enumerate(zip(ids, metas)):
            if not isinstance(doc_id, str) or not doc_id:
                raise InputError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
            if not isinstance(m, dict) or not all(isinstance(key, str) for key in m):
                raise InputError(f"metadata[{i}] must be a dict with str keys, got {m!r:.80}")
        if len(set(ids)) != n:
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputError(f"id {dup!r} appears more than once in one call")
        taken = self.store.labels_of(ids)
        if mode == "add" and taken:
            raise InputError(f"id {next(iter(taken))!r} is already in the index (use upsert to replace it)")
        if must_exist and len(taken) < n:
            raise InputError(f"id {next(i for i in ids if i not in taken)!r} is not in the index")
        return texts, ids, metas

    # -- internals: writing -------------------------------------------------------------------------------
    def _encode_and_insert(self, texts, ids, metadata, batch_size, show_progress, mode, must_exist) -> list[str]:
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        with self._writer:
            texts, ids, metas = self.check_documents(texts, ids, metadata, mode, must_exist)
            encoder = self.encoder
            self.reserve(len(texts))
            with Progress(len(texts), f"index {self.path.name}", show_progress, "docs") as bar:
                for s in range(0, len(texts), batch_size):
                    sl = slice(s, s + batch_size)
                    vecs = encoder.encode_documents(texts[sl], batch_size=32)
                    self._insert(vecs, texts[sl], ids[sl], metas[sl], mode == "upsert", None)
                    bar.update(len(texts[sl]))
        return ids

    def _check_writable(self) -> None:
        if self.store.closed:
            raise IndexStoreError(f"index {self.path} is closed")
        if self.read_only:
            raise IndexStoreError(f"index {self.path} is open read-only")

    def _check_vectors(self, vectors, n: int) -> np.ndarray:
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape != (n, self.dim):
            raise InputError(f"vectors have shape {vectors.shape}, expected ({n}, {self.dim})")
        if not np.isfinite(vectors).all():
            raise InputError("vectors contain NaN or infinity")
        return vectors

    def _insert(self, vecs: np.ndarray, texts: list[str], ids: list[str], metas: list[dict], replace: bool,
                before_commit: Callable[[np.ndarray], None] | None) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        start = int(self.meta["next_label"])
        labels = np.arange(start, start + len(texts), dtype=np.int64)
        docs = NewDocs(labels, ids, texts, metas, vecs)
        try:
            doc_facets = [(int(lab), f, v) for lab, m in zip(labels, metas) for f, v in facets(m)]
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata must be JSON-serialisable ({exc})") from None
        old = list(self.store.labels_of(ids).values()) if replace else []
        if before_commit is not None:
            before_commit(labels)
        _crash_point("before-commit")
        with self._rw.write():  # readers never see the store ahead of the graph for deleted labels
            self.store.insert(docs, doc_facets, old, start + len(texts))
            self._count += len(texts) - len(old)
            _crash_point("store-committed")
            for label in old:
                self.graph.mark_deleted(label)
            self._dirty = True
            self.graph.add(vecs[:GRAPH_CHUNK], labels[:GRAPH_CHUNK], self.threads)
        for s in range(GRAPH_CHUNK, len(labels), GRAPH_CHUNK):  # the rest in chunks: queries run in between
            with self._rw.write():
                self.graph.add(vecs[s:s + GRAPH_CHUNK], labels[s:s + GRAPH_CHUNK], self.threads)

    def _compaction_due(self) -> bool:
        tomb = self.tombstones
        return tomb >= 64 and tomb > float(self.meta.get("compact_threshold", 0.3)) * self.graph.element_count

    def _compact(self) -> None:
        """Build a fresh graph from the store (caller holds self._writer), save it, then swap it in."""
        graph = _new_graph(self.meta, max(1024, self._count + self._count // 4))
        for labels, vecs in self.store.iter_vectors():
            graph.add(vecs, labels, self.threads)
        self._save_graph(graph)
        with self._rw.write():
            self.graph = graph

    def _save_graph(self, graph: HnswGraph) -> None:
        old_gen = int(self.meta["generation"])
        gen = old_gen + 1
        final = self.path / f"graph.{gen}.bin"
        tmp = self.path / f".graph.{gen}.bin.tmp"
        intact = (f"the previous state (generation {old_gen}) is intact and every acknowledged document is in "
                  f"{STORE}")
        try:
            size = graph.save(tmp)
            _crash_point("graph-written")
            os.replace(tmp, final)
            fsync_dir(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IndexStoreError(f"cannot save the graph of {self.path} ({exc.strerror or exc}); {intact}") from None
        _crash_point("graph-renamed")
        try:
            self.store.set_meta({"generation": gen, "graph_size": size})
        except IndexStoreError:
            final.unlink(missing_ok=True)
            raise IndexStoreError(f"cannot record the new graph in {self.path / STORE} (disk full or read-only?); "
                                  f"{intact}") from None
        _crash_point("generation-committed")
        self._remove_stale_files()
        self._dirty = False

    def _remove_stale_files(self) -> None:
        keep = f"graph.{self.meta['generation']}.bin"
        for old in list(self.path.glob("graph.*.bin")) + list(self.path.glob(".graph.*.bin.tmp")):
            if old.name != keep:
                old.unlink(missing_ok=True)

    # -- internals: reading -------------------------------------------------------------------------------
    def _reconcile(self) -> None:
        in_store = self.store.all_labels()
        in_graph = self.graph.labels()
        missing = np.setdiff1d(in_store, in_graph, assume_unique=True)
        extra = np.setdiff1d(in_graph, in_store, assume_unique=True)
        for s in range(0, len(missing), 4096):
            labels, vecs = self.store.vectors(missing[s:s + 4096].tolist())
            self.graph.add(vecs, labels, self.threads)
        newly_deleted = sum(self.graph.mark_deleted(label) for label in extra.tolist())
        self.repaired = len(missing)
        self._dirty = self._dirty or bool(len(missing)) or bool(newly_deleted)

    def _query_vector(self, query) -> np.ndarray:
        if isinstance(query, str):
            vec = self.encoder.encode_queries([query])[0]
        elif query is None:
            raise InputError("query is None; pass a str or a vector")
        else:
            vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise InputError(f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}")
        if not np.isfinite(vec).all():
            raise InputError("query vector contains NaN or infinity")
        return vec

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        docs = self.store.documents([p[0] for p in pairs])
        return [Hit(docs[lab].id, float(score), docs[lab].text, docs[lab].metadata)
                for lab, score in pairs if lab in docs]


def check_encoder(meta: dict[str, Any], encoder, path: Path) -> None:
    """Refuse an encoder whose vectors are not the ones the index holds."""
    if encoder.dim != int(meta["dim"]) or (meta.get("bundle_id") and encoder.manifest.bundle_id != meta["bundle_id"]):
        raise IndexMismatchError(f"index {path} was built with bundle {meta.get('bundle_name')!r} "
                                 f"(dim {meta['dim']}), not {encoder.manifest.name!r} (dim {encoder.dim})")


def _new_graph(meta: dict[str, Any], capacity: int) -> HnswGraph:
    return HnswGraph.new(meta["dim"], meta["M"], meta["ef_construction"], meta["ef_search"], capacity)


def _load_graph(path: Path, meta: dict[str, Any]) -> HnswGraph | None:
    """The graph of the recorded generation; None if it is missing or damaged (then rebuilt from the store)."""
    if int(meta["generation"]) == 0:
        return _new_graph(meta, 1024)
    return HnswGraph.load(path / f"graph.{meta['generation']}.bin", meta["dim"], meta["ef_search"],
                          meta.get("graph_size"))
