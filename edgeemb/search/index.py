"""Index: the facade over a document store (the truth) and a nearest-neighbour graph derived from it.

Over 400 lines because it is the public API: each method is short and delegates (lifecycle, generations,
documents, validate, graph, store); what remains is their signatures and docstrings, kept together on purpose.

Durability: every add/upsert/update/delete is one store transaction, acknowledged when it returns. The graph is
saved as graph.<generation>.bin (temp file, size checked, fsync, rename), then the store records the new generation
and the file's size in one transaction. On open, the graph named by the store is loaded and reconciled with the
store: labels missing from the graph are re-added from stored vectors, labels gone from the store are marked
deleted; a missing or damaged graph is rebuilt from the store. Labels are never reused (an upsert gets a fresh
label and tombstones the old one), so a stale vector can never hide behind a live label. A crash at any point
(inside create too: its schema and settings are one transaction) leaves a state that opens to exactly the
acknowledged documents.

Concurrency: in one process, any number of threads may search while one writes (an RWLock keeps hnswlib
writes away from running queries; a second writer waits). Across processes, one writer at a time (an flock
on `writer.lock`); other processes open with read_only=True and see the snapshot of the moment they opened
(call refresh() to move on). Filters (filters.py) are an indexed lookup in the store; a selective one is answered
exactly (ExactGraph), a broad one by hnswlib with the allowed set, so k results come back whenever k match.

Storage (the `vectors` setting, generations.py): "float32" keeps hnswlib's graph with float vectors in RAM;
"binary" keeps one bit per dimension in RAM, scanned exhaustively, and re-scores with int8 rows read from disk
(codes.py). Both are derived from the store's float vectors the same way, so every promise above holds for both.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence, Sized
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encode.batching import check_texts
from ..errors import IndexStoreError, InputError
from ..progress import Progress
from . import lifecycle
from .documents import check_all, chunks, facet_rows, fill_in, merged_metadata
from .filters import filter_labels
from .generations import Storage, new_graph, reconcile, remove_stale, save_generation, storage_kind
from .graph import CodesGraph, ExactGraph, GraphShort
from .locks import RWLock, release
from .store import INDEX_FORMAT, STORE, DocStore, Hit, NewDocs, UnfinishedStore, crash_point
from .validate import (
    as_matrix,
    check_ef,
    check_id_list,
    check_metadata,
    check_vectors,
    parse_queries,
    positive_int,
)

if TYPE_CHECKING:
    from ..encode.encoder import TextEncoder

BRUTE_FORCE_LIMIT = 4096  # filters allowing at most this many documents (or 2% of them) are answered exactly
GRAPH_CHUNK = 256  # documents added to the graph per exclusive-lock hold, so queries interleave with a big add

__all__ = ["INDEX_FORMAT", "STORE", "Hit", "Index", "check_encoder"]
check_encoder = lifecycle.check_encoder


class Index:
    """Cosine ANN index with documents. Use Index.create / Index.open; thread-safe (many readers, one writer).

    `encoder` encodes texts for add and search; an index opened without one loads the bundle it was built with
    on its first text query or add (`meta["bundle_ref"]`).
    """

    def __init__(self, path: Path, store: DocStore, graph: Storage, encoder: TextEncoder | None = None,
                 read_only: bool = False,
                 threads: int = 1, lock_fd: int | None = None):
        self.path, self.store, self.graph, self._encoder = path, store, graph, encoder
        self.dim = store.dim
        self.read_only, self.threads = read_only, max(1, int(threads))
        self.exact = ExactGraph(store)
        self._wire(graph)
        self.repaired = 0  # documents re-added to the graph from the store when opening
        self._dirty = False
        self._rw = RWLock()
        self._writer = threading.RLock()
        self._lock_fd = lock_fd
        self._count = store.count()

    def _wire(self, graph: Storage) -> None:
        """Binary codes re-score their best `exact_top` (a setting, default 0: int8 scores) with stored floats."""
        if isinstance(graph, CodesGraph):
            graph.codes.float_vectors = lambda labels: self.store.vectors(labels)
            graph.codes.exact_top = int(self.meta.get("exact_top", 0))

    @property
    def vectors_kind(self) -> str:
        """The vector storage: "float32" (hnswlib graph) or "binary" (codes + int8 rows)."""
        return storage_kind(self.meta)

    @property
    def meta(self) -> dict[str, Any]:
        """The index's settings as the store records them."""
        return self.store.meta

    @property
    def closed(self) -> bool:
        return self.store.closed

    # -- life cycle ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, encoder: TextEncoder | None = None, dim: int | None = None, M: int = 16,
               ef_construction: int = 200, ef_search: int = 64, capacity: int = 1024, bundle_ref: str | None = None,
               compact_threshold: float = 0.3, threads: int = 1, extra_meta: dict[str, Any] | None = None,
               exist_ok: bool = False, vectors: str = "float32") -> Index:
        """Create an empty index in a new or empty folder for `encoder`'s vectors (or raw vectors of `dim`).

        vectors: "float32" (an hnswlib graph, float vectors in RAM) or "binary" (bits in RAM, re-scored with
        int8 rows from disk: ~50 bytes of RAM a document at 384 dims; M and ef_construction do not apply).

        exist_ok: open the index already there instead, if it was built with the same bundle (or dim) and
        kind; it keeps its own settings. A folder holding other files, or a bundle, is refused.
        """
        path = Path(path)
        meta = lifecycle.settings(encoder, dim, M, ef_construction, ef_search, bundle_ref, compact_threshold,
                                  capacity, extra_meta, vectors)
        if exist_ok and (path / STORE).is_file():
            try:
                index = cls.open(path, encoder, threads=threads)
            except UnfinishedStore:
                pass  # created below, replacing the unfinished one
            else:
                return lifecycle.same_kind(index, meta)
        store, lock_fd = lifecycle.create_store(path, meta)
        try:
            graph = new_graph(meta, capacity, path)
        except BaseException:
            store.close()
            release(lock_fd)
            raise
        return cls(path, store, graph, encoder, threads=threads, lock_fd=lock_fd)

    @classmethod
    def open(cls, path: str | Path, encoder: TextEncoder | None = None, read_only: bool = False,
             threads: int = 1) -> Index:
        """Open an index folder, check it matches `encoder`, and repair the graph from the store if they differ.

        read_only: never writes (safe next to a writer in another process, or on read-only media); sees the
        store as of opening.
        """
        path = Path(path)
        store, graph, lock_fd = lifecycle.open_store(path, read_only, encoder)
        index = cls(path, store, graph, encoder, read_only=read_only, threads=threads, lock_fd=lock_fd)
        index.repaired, index._dirty = reconcile(store, graph, index.threads)
        if not read_only:
            remove_stale(path, store.meta, graph)
        return index

    def close(self) -> None:
        """Save the graph if it changed (writers) and close the store; the lock is released even if saving fails."""
        if self.store.closed:
            return
        try:
            if self._dirty and not self.read_only:
                self.save()
        finally:
            self.store.close()
            if isinstance(self.graph, CodesGraph):
                self.graph.close()
            release(self._lock_fd)
            self._lock_fd = None

    def refresh(self) -> None:
        """Read-only handles: move to the latest state another process has committed."""
        if not self.read_only:
            return
        fresh = Index.open(self.path, None, read_only=True, threads=self.threads)
        with self._rw.write():
            self.store.close()
            if isinstance(self.graph, CodesGraph):
                self.graph.close()
            self.store, self.graph, self._count = fresh.store, fresh.graph, fresh._count
            self.exact = ExactGraph(self.store)
            self._wire(self.graph)

    def __enter__(self) -> Index:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

    def count(self) -> int:
        """Number of stored documents (chroma's count(), the same as len())."""
        return self._count

    @property
    def encoder(self) -> TextEncoder:
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
    def add(self, texts: Iterable[str], ids: Iterable[str] | None = None,
            metadata: Iterable[dict[str, Any]] | None = None, batch_size: int = 512,
            show_progress: bool = False) -> list[str]:
        """Encode and add documents; each chunk of batch_size is one transaction. Returns their ids.

        texts may be any iterable (a generator streams: only one chunk is held at a time). A list is checked
        whole before anything is written; a stream chunk by chunk (chunks before a bad one stay stored)."""
        return self._encode_and_insert(texts, ids, metadata, batch_size, show_progress, "add", False)

    def upsert(self, texts: Iterable[str], ids: Iterable[str],
               metadata: Iterable[dict[str, Any]] | None = None, must_exist: bool = False,
               batch_size: int = 512) -> list[str]:
        """Encode and add or replace documents by id (must_exist: every id must already be there).
        Without metadata, documents already stored keep theirs."""
        return self._encode_and_insert(texts, ids, metadata, batch_size, False, "upsert", must_exist)

    def add_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str] | None = None,
                    metadata: Sequence[dict[str, Any]] | None = None,
                    before_commit: Callable[[np.ndarray], None] | None = None) -> list[str]:
        """Add precomputed vectors with their documents in one transaction (dimension checked).

        before_commit(labels) runs after labels are chosen and before the store commits: data written durably
        there (e.g. a sidecar vector file) is in place for every acknowledged document.
        """
        with self._writer:
            texts, ids, metas = self.check_documents(texts, ids, metadata, "add", False)
            self._insert(check_vectors(vectors, len(texts), self.dim), texts, ids, metas, False, before_commit)
        return ids

    def upsert_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
                       metadata: Sequence[dict[str, Any]] | None = None, must_exist: bool = False,
                       before_commit: Callable[[np.ndarray], None] | None = None) -> list[str]:
        """Add or replace documents by id with precomputed vectors, in one transaction."""
        with self._writer:
            texts, ids, metas = self.check_documents(texts, ids, metadata, "upsert", must_exist)
            self._insert(check_vectors(vectors, len(texts), self.dim), texts, ids, metas, True, before_commit)
        return ids

    def update(self, ids: Iterable[str], metadata: dict[str, Any] | Sequence[dict[str, Any]]) -> int:
        """Change stored documents' metadata without re-embedding them, in one transaction: each dict (one for all
        ids, or one per id) is merged into the stored metadata; a None value removes that key. Unknown ids are an
        InputError (nothing changed). Returns how many documents changed."""
        self._check_writable()
        ids = list(check_id_list(ids))
        changes = [metadata] * len(ids) if isinstance(metadata, dict) else list(metadata)
        if len(changes) != len(ids):
            raise InputError(f"got {len(ids)} ids and {len(changes)} metadata entries")
        check_metadata(changes)
        with self._writer:
            found = self.store.get_many(ids)
            unknown = [i for i in ids if i not in found]
            if unknown:
                raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown of {len(ids)}); "
                                 f"nothing was updated")
            labels = [found[i][0] for i in ids]
            metas = [merged_metadata(found[i][1].metadata, change) for i, change in zip(ids, changes)]
            self.store.update_metadata(labels, metas, facet_rows(labels, metas))
        return len(ids)

    def delete(self, ids: Iterable[str] | None = None, missing_ok: bool = False, *,
               filter: dict[str, Any] | None = None) -> int:
        """Delete documents by id, or every document matching `filter`, in one transaction; an unknown id is an
        InputError (nothing deleted) unless missing_ok. Returns how many were deleted."""
        self._check_writable()
        with self._writer:
            return self.delete_labels(self.resolve_delete(ids, filter, missing_ok))

    def resolve_delete(self, ids: Iterable[str] | None, filter: dict[str, Any] | None, missing_ok: bool) -> list[int]:
        """The labels a delete(ids | filter) removes (checked: unknown ids raise unless missing_ok)."""
        if (ids is None) == (filter is None):
            raise InputError("delete takes a list of ids or a filter= (one of them)")
        if filter is not None:
            labels: list[int] = self.filter_labels(filter).tolist()
            return labels
        ids = check_id_list(ids)
        found = self.store.labels_of(ids)
        unknown = [i for i in ids if i not in found]
        if unknown and not missing_ok:
            raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown of {len(ids)}); "
                             f"nothing was deleted")
        return list(found.values())

    def delete_labels(self, labels: list[int]) -> int:
        """Delete documents by label in one transaction (callers hold writing())."""
        self._check_writable()
        if not labels:
            return 0
        with self._rw.write():
            self.store.delete(labels)
            self._count -= len(labels)
            crash_point("store-committed")
            self.graph.delete(labels)
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
                save_generation(self.path, self.store, self.graph)
            self._dirty = False

    def compact(self, force: bool = False) -> bool:
        """Rebuild the graph from the live documents (dropping tombstones), save it, and give the store's free
        pages back to the disk (VACUUM), when due or forced. Searches keep running meanwhile. Returns whether
        it rebuilt."""
        self._check_writable()
        with self._writer:
            if not force and not self._compaction_due():
                return False
            self._compact()
            self.store.vacuum()
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
    def search(self, query: str | Sequence[str] | np.ndarray, k: int = 10, ef: int | None = None,
               filter: dict[str, Any] | None = None) -> list[Hit] | list[list[Hit]]:
        """Top-k documents by cosine; k larger than the number of (matching) documents returns them all.

        query: a str or a vector gives a list of hits; a list of str or an (n, dim) matrix gives one list of
        hits per query (like hnswlib's knn_query). An empty query string is an InputError."""
        q = parse_queries(query, self.dim)
        k, ef = positive_int("k", k), check_ef(ef)
        if q.vectors is None and not q.texts:
            return []
        vecs = q.vectors if q.vectors is not None else as_matrix(self.encoder.encode_queries(q.texts or []),
                                                                 "query embeddings")
        with self._rw.read():
            allowed = self.filter_labels(filter) if filter is not None else None
            out = [self._hits(self.candidates(v, k, ef, allowed=allowed)) for v in vecs]
        return out[0] if q.single else out

    def candidates(self, vec: np.ndarray, k: int, ef: int | None = None, filter: dict[str, Any] | None = None,
                   allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """(label, cosine) of the top-k graph neighbours of a query vector; callers hold reading().

        allowed: the labels `filter_labels(filter)` gave, when the caller needs them too (computed once)."""
        k, ef = positive_int("k", k), check_ef(ef)
        vec = as_matrix(vec, "query vector").reshape(-1)
        if vec.shape != (self.dim,):
            raise InputError(f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}")
        if filter is not None and allowed is None:
            allowed = self.filter_labels(filter)
        if allowed is not None and len(allowed) <= max(BRUTE_FORCE_LIMIT, self._count // 50, k):
            return self.exact.search(vec, k, allowed)
        k = min(k, self._count)
        if k == 0:
            return []
        try:
            return self.graph.search(vec, k, allowed, None if ef is None else min(ef, max(k, self._count)))
        except GraphShort:
            return self.exact.search(vec, k, allowed)

    def filter_labels(self, filter: dict[str, Any]) -> np.ndarray:
        """Labels of the documents whose metadata match a filter (grammar in filters.py; InputError for a field
        no document has or an unsupported operator)."""
        return filter_labels(self.store, filter)

    def reading(self) -> AbstractContextManager[None]:
        """Context manager holding the shared lock, for callers combining candidates() with other reads."""
        return self._rw.read()

    def writing(self) -> AbstractContextManager[bool]:
        """Context manager making the caller this index's only writer (re-entrant), e.g. around a multi-step add."""
        return self._writer

    def get(self, ids: str | Iterable[str]) -> Hit | None | list[Hit | None]:
        """The stored document with this id (or None); a list of ids gives a list, None where an id is unknown."""
        if isinstance(ids, str):
            return self.store.get(ids)
        ids = check_id_list(ids)
        found = self.store.get_many(ids)
        return [found[i][1] if i in found else None for i in ids]

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        return self.store.ids()

    def vectors(self, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors (and their labels) of all or some documents, from the store."""
        return self.store.vectors(labels)

    def documents(self, labels: Sequence[int]) -> dict[int, Hit]:
        """label -> Hit (score 0) for the labels still in the store."""
        return self.store.documents(labels)

    def check_documents(self, texts: Iterable[str], ids: Iterable[str] | None,
                        metadata: Iterable[dict[str, Any]] | None, mode: str, must_exist: bool) -> tuple[list[str], list[str], list[dict[str, Any]]]:
        """Validate a write's texts, ids and metadata (ids generated for a plain add; an upsert without metadata
        keeps what is stored); InputError names the item."""
        self._check_writable()
        texts, ids, metas = check_all(self.store, texts, ids, metadata, mode, must_exist)
        return (texts, *fill_in(self.store, texts, ids, metas, mode))

    # -- internals: writing -------------------------------------------------------------------------------
    def _encode_and_insert(self, texts: Iterable[str], ids: Iterable[str] | None,
                           metadata: Iterable[dict[str, Any]] | None, batch_size: int, show_progress: bool,
                           mode: str, must_exist: bool) -> list[str]:
        batch_size = positive_int("batch_size", batch_size)
        with self._writer:
            if isinstance(texts, Sequence) and not isinstance(texts, str):  # checked whole before any write
                self._check_writable()
                texts, ids, metadata = check_all(self.store, texts, ids, metadata, mode, must_exist)
                self.reserve(len(texts))
            elif isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
                check_texts(texts)  # raises, naming the type
            encoder, total = self.encoder, len(texts) if isinstance(texts, Sized) else 0
            done: list[str] = []
            with Progress(total, f"index {self.path.name}", show_progress, "docs") as bar:
                for t, i, m in chunks(texts, ids, metadata, batch_size):
                    t, i, m = self.check_documents(t, i, m, mode, must_exist)
                    vecs = encoder.encode_documents(t, batch_size=32)
                    self._insert(vecs, t, i, m, mode == "upsert", None)
                    done += i
                    bar.update(len(t))
        return done

    def _check_writable(self) -> None:
        if self.store.closed:
            raise IndexStoreError(f"index {self.path} is closed")
        if self.read_only:
            raise IndexStoreError(f"index {self.path} is open read-only")

    def _insert(self, vecs: np.ndarray, texts: list[str], ids: list[str], metas: list[dict[str, Any]],
                replace: bool, before_commit: Callable[[np.ndarray], None] | None) -> None:
        vecs = as_matrix(vecs, "document embeddings")
        start = int(self.meta["next_label"])
        labels = np.arange(start, start + len(texts), dtype=np.int64)
        docs = NewDocs(labels, ids, texts, metas, vecs)
        doc_facets = facet_rows(labels, metas)
        old = list(self.store.labels_of(ids).values()) if replace else []
        if before_commit is not None:
            before_commit(labels)
        crash_point("before-commit")
        with self._rw.write():  # readers never see the store ahead of the graph for deleted labels
            self.store.insert(docs, doc_facets, old, start + len(texts))
            self._count += len(texts) - len(old)
            crash_point("store-committed")
            self.graph.delete(old)
            self._dirty = True
            self.graph.add(vecs[:GRAPH_CHUNK], labels[:GRAPH_CHUNK], self.threads)
        for s in range(GRAPH_CHUNK, len(labels), GRAPH_CHUNK):  # the rest in chunks: queries run in between
            with self._rw.write():
                self.graph.add(vecs[s:s + GRAPH_CHUNK], labels[s:s + GRAPH_CHUNK], self.threads)

    def _compaction_due(self) -> bool:
        tomb = self.tombstones
        return tomb >= 64 and tomb > float(self.meta.get("compact_threshold", 0.3)) * self.graph.element_count

    def _compact(self) -> None:
        """Build a fresh graph from the store (caller holds self._writer), save it, then swap it in. Binary codes
        copy their live rows to a new rows file instead (searches see the old slots or the new, never a mix)."""
        if isinstance(self.graph, CodesGraph):
            self.graph.compact()
            save_generation(self.path, self.store, self.graph)
            self._dirty = False
            return
        graph = new_graph(self.meta, max(1024, self._count + self._count // 4))
        for labels, vecs in self.store.iter_vectors():
            graph.add(vecs, labels, self.threads)
        save_generation(self.path, self.store, graph)
        with self._rw.write():
            self.graph, self._dirty = graph, False

    # -- internals: reading -------------------------------------------------------------------------------
    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        docs = self.store.documents([p[0] for p in pairs])
        return [Hit(docs[lab].id, float(score), docs[lab].text, docs[lab].metadata)
                for lab, score in pairs if lab in docs]
