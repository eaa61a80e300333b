"""Index: an hnswlib graph (cosine) plus a SQLite document store; the store is the source of truth.

Durability: every add/upsert/delete is one SQLite transaction (WAL, synchronous=FULL), acknowledged when it
returns. The graph is saved as graph.<generation>.bin (temp file, size checked, fsync, rename), then the store
records the new generation and the file's size in one transaction. On open, the graph named by the store is
loaded and reconciled with the store: labels missing from the graph are re-added from stored vectors, labels
gone from the store are marked deleted; a missing or damaged graph is rebuilt from the store. Labels are never
reused (an upsert gets a fresh label and tombstones the old one), so a stale vector can never hide behind a
live label. A crash at any point leaves a state that opens to exactly the acknowledged documents.

Concurrency: in one process, any number of threads may search while one writes (an RWLock keeps hnswlib
writes away from running queries; a second writer waits). Across processes, one writer at a time (an flock
on `writer.lock`); other processes open with read_only=True and see the snapshot of the moment they opened
(call refresh() to move on).

Metadata filters: `filter={"lang": "zh", "topic": ["a", "b"]}` keeps documents whose field equals the value
(a list means any of them; a list-valued metadata field matches when it contains the value; several fields
must all match). The store keeps a (field, value) table, so the prefilter is an indexed lookup; a selective
filter is answered exactly over the allowed vectors, a broad one by hnswlib with the allowed set as its filter,
so k results come back whenever k documents match. A field that no stored document has is an InputError
naming the field and the known ones (a typo should not look like "no results").
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import hnswlib
import numpy as np

from .bundle import fsync_dir
from .errors import IndexMismatchError, IndexStoreError, InputError
from .locks import RWLock
from .progress import Progress
from .similarity import top_k

try:
    import fcntl
except ImportError:  # Windows: no cross-process writer lock
    fcntl = None

INDEX_FORMAT = 1
STORE = "docs.sqlite"
WRITER_LOCK = "writer.lock"
BRUTE_FORCE_LIMIT = 4096  # filters allowing at most this many documents (or 2% of them) are answered exactly
GRAPH_CHUNK = 256  # documents added to the graph per exclusive-lock hold, so queries interleave with a big add


@dataclass
class Hit:
    """One search result: the document's id, cosine score, text and metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _crash_point(name: str) -> None:
    """Test hook: EDGEEMB_CRASH_AT=<name> kills the process here, as a power cut would."""
    if os.environ.get("EDGEEMB_CRASH_AT") == name:
        os._exit(137)


class Index:
    """Cosine ANN index with documents. Use Index.create / Index.open; thread-safe (many readers, one writer)."""

    def __init__(self, path: Path, db: sqlite3.Connection, graph: hnswlib.Index, meta: dict[str, Any],
                 encoder=None, read_only: bool = False, threads: int = 1, lock_fd: int | None = None):
        self.path, self.db, self.graph, self.meta, self.encoder = path, db, graph, meta, encoder
        self.dim = int(meta["dim"])
        self.read_only, self.threads = read_only, max(1, int(threads))
        self.repaired = 0  # documents re-added to the graph from the store when opening
        self._dirty = False
        self._rw = RWLock()
        self._writer = threading.RLock()
        self._db_lock = threading.RLock()
        self._lock_fd = lock_fd
        self._ef = None
        self._count = self._query_one("SELECT COUNT(*) FROM docs")[0]

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
        lock_fd = _writer_lock(path)
        try:
            db = _connect(path / STORE, read_only=False)
            with db:
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("CREATE TABLE docs (label INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,"
                           " metadata TEXT NOT NULL, vector BLOB NOT NULL)")
                db.execute("CREATE TABLE facets (label INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL)")
                db.execute("CREATE INDEX facets_field_value ON facets (field, value)")
                db.execute("CREATE INDEX facets_label ON facets (label)")
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        except sqlite3.Error as exc:
            _release(lock_fd)
            raise IndexStoreError(f"cannot create {path / STORE} ({exc})") from None
        return cls(path, db, _new_graph(meta, capacity), meta, encoder, threads=threads, lock_fd=lock_fd)

    @classmethod
    def open(cls, path: str | Path, encoder=None, read_only: bool = False, threads: int = 1) -> Index:
        """Open an index folder, check it matches `encoder`, and repair the graph from the store if they differ.

        read_only: never writes (safe next to a writer in another process); sees the store as of opening.
        """
        path = Path(path)
        if not (path / STORE).is_file():
            raise IndexStoreError(f"no index at {path} ({STORE} missing)")
        lock_fd = None if read_only else _writer_lock(path)
        db = None
        try:
            for attempt in range(5):
                db, meta = _open_store(path, read_only)
                graph = _load_graph(path, meta)
                # a writer may have saved a newer generation and removed ours since we read the store: retry
                if graph is not None or not read_only or int(meta["generation"]) == 0 or attempt == 4:
                    break
                db.close()
            if encoder is not None:
                check_encoder(meta, encoder, path)
        except BaseException:
            if db is not None:
                db.close()
            _release(lock_fd)
            raise
        index = cls(path, db, graph if graph is not None else _new_graph(meta, 1024), meta, encoder,
                    read_only=read_only, threads=threads, lock_fd=lock_fd)
        index._reconcile()
        if not read_only:
            index._remove_stale_files()
        return index

    def close(self) -> None:
        """Save the graph if it changed (writers) and close the store."""
        if self.db is None:
            return
        try:
            if self._dirty and not self.read_only:
                self.save()
        finally:
            with self._db_lock:
                self.db.close()
                self.db = None
            _release(self._lock_fd)
            self._lock_fd = None

    def refresh(self) -> None:
        """Read-only handles: move to the latest state another process has committed."""
        if not self.read_only:
            return
        fresh = Index.open(self.path, None, read_only=True, threads=self.threads)
        with self._rw.write(), self._db_lock:
            self.db.close()
            self.db, self.graph, self.meta, self._count = fresh.db, fresh.graph, fresh.meta, fresh._count
            self._ef = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self._count

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
            texts, ids, metas = self._check_docs(texts, ids, metadata, "add", False)
            self._insert(self._check_vectors(vectors, len(texts)), texts, ids, metas, False, before_commit)
        return ids

    def upsert_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str],
                       metadata: Sequence[dict] | None = None, must_exist: bool = False,
                       before_commit: Callable[[np.ndarray], None] | None = None) -> list[str]:
        """Add or replace documents by id with precomputed vectors, in one transaction."""
        with self._writer:
            texts, ids, metas = self._check_docs(texts, ids, metadata, "upsert", must_exist)
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
            found = self._labels_of(ids)
            unknown = [i for i in ids if i not in found]
            if unknown and not missing_ok:
                raise InputError(f"id {unknown[0]!r} is not in the index ({len(unknown)} unknown of {len(ids)}); "
                                 f"nothing was deleted")
            labels = list(found.values())
            if not labels:
                return 0
            with self._rw.write():
                self._commit(lambda db: _delete_labels(db, labels))
                self._count -= len(labels)
                _crash_point("store-committed")
                for label in labels:
                    self._mark_deleted(label)
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
            need = self.graph.element_count - self.tombstones + int(n)
            if need > self.graph.get_max_elements():
                self.graph.resize_index(need)

    @property
    def tombstones(self) -> int:
        """Deleted documents still occupying graph slots (reused by later adds, dropped by compact)."""
        return max(0, self.graph.element_count - self._count)

    def set_meta(self, **items: Any) -> None:
        """Record extra JSON-serialisable settings in the store (one transaction)."""
        self._check_writable()
        rows = [(k, json.dumps(v)) for k, v in items.items()]
        with self._writer:
            self._commit(lambda db: db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows))
            self.meta.update(items)

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
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"k must be a positive int, got {k!r}")
        vec = np.asarray(vec, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise InputError(f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}")
        if filter is not None and allowed is None:
            allowed = self.filter_labels(filter)
        if allowed is not None and len(allowed) <= max(BRUTE_FORCE_LIMIT, self._count // 50, k):
            return self._exact(vec, k, allowed)
        k = min(int(k), self._count)
        if k == 0:
            return []
        ef = max(int(ef or self.meta["ef_search"]), k)
        if ef != self._ef:
            self.graph.set_ef(ef)
            self._ef = ef
        try:
            if allowed is None:
                labels, dists = self.graph.knn_query(vec[None, :], k=k, num_threads=1)
            else:
                keep = frozenset(allowed.tolist())
                labels, dists = self.graph.knn_query(vec[None, :], k=k, num_threads=1, filter=keep.__contains__)
        except RuntimeError:  # hnswlib cannot fill k results (tombstones, a filter, small ef): exact instead
            return self._exact(vec, k, allowed)
        return list(zip(labels[0].tolist(), (1.0 - dists[0]).tolist()))

    def reading(self):
        """Context manager holding the shared lock, for callers combining candidates() with other reads."""
        return self._rw.read()

    def writing(self):
        """Context manager making the caller this index's only writer (re-entrant), e.g. around a multi-step add."""
        return self._writer

    def get(self, id: str) -> Hit | None:
        """The stored document with this id, or None."""
        row = self._query_one("SELECT id, text, metadata FROM docs WHERE id = ?", (id,))
        return Hit(row[0], 1.0, row[1], json.loads(row[2])) if row else None

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        return [r[0] for r in self._query("SELECT id FROM docs ORDER BY label")]

    def vectors(self, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors (and their labels) of all or some documents, from the store."""
        if labels is None:
            rows = self._query("SELECT label, vector FROM docs ORDER BY label")
        else:
            rows = []
            labels = [int(x) for x in labels]
            for s in range(0, len(labels), 500):
                chunk = labels[s:s + 500]
                q = ",".join("?" * len(chunk))
                rows += self._query(f"SELECT label, vector FROM docs WHERE label IN ({q})", chunk)
        lab = np.array([r[0] for r in rows], dtype=np.int64)
        vec = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return lab, vec

    def documents(self, labels: Sequence[int]) -> dict[int, Hit]:
        """label -> Hit (score 0) for the labels still in the store."""
        out: dict[int, Hit] = {}
        labels = [int(x) for x in labels]
        for s in range(0, len(labels), 500):
            chunk = labels[s:s + 500]
            q = ",".join("?" * len(chunk))
            for lab, i, text, meta in self._query(
                    f"SELECT label, id, text, metadata FROM docs WHERE label IN ({q})", chunk):
                out[lab] = Hit(i, 0.0, text, json.loads(meta))
        return out

    # -- internals: writing -------------------------------------------------------------------------------
    def _encode_and_insert(self, texts, ids, metadata, batch_size, show_progress, mode, must_exist) -> list[str]:
        if self.encoder is None:
            raise InputError("this index was opened without an encoder; pass one to add texts")
        if batch_size < 1:
            raise InputError(f"batch_size must be positive, got {batch_size}")
        with self._writer:
            texts, ids, metas = self._check_docs(texts, ids, metadata, mode, must_exist)
            self.reserve(len(texts))
            with Progress(len(texts), f"index {self.path.name}", show_progress, "docs") as bar:
                for s in range(0, len(texts), batch_size):
                    sl = slice(s, s + batch_size)
                    vecs = self.encoder.encode_documents(texts[sl], batch_size=32)
                    self._insert(vecs, texts[sl], ids[sl], metas[sl], mode == "upsert", None)
                    bar.update(len(texts[sl]))
        return ids

    def _check_writable(self) -> None:
        if self.db is None:
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

    def _check_docs(self, texts, ids, metadata, mode: str, must_exist: bool):
        from .tokenize import check_texts

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
        taken = self._labels_of(ids)
        if mode == "add" and taken:
            raise InputError(f"id {next(iter(taken))!r} is already in the index (use upsert to replace it)")
        if must_exist and len(taken) < n:
            raise InputError(f"id {next(i for i in ids if i not in taken)!r} is not in the index")
        return texts, ids, metas

    def _insert(self, vecs: np.ndarray, texts: list[str], ids: list[str], metas: list[dict], replace: bool,
                before_commit: Callable[[np.ndarray], None] | None) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        try:
            meta_json = [json.dumps(m, ensure_ascii=False, allow_nan=False) for m in metas]
        except (TypeError, ValueError) as exc:
            raise InputError(f"metadata must be JSON-serialisable ({exc})") from None
        start = int(self.meta["next_label"])
        labels = np.arange(start, start + len(texts), dtype=np.int64)
        rows = [(int(lab), i, t, m, v.tobytes()) for lab, i, t, m, v in zip(labels, ids, texts, meta_json, vecs)]
        facets = [(int(lab), f, v) for lab, m in zip(labels, metas) for f, v in _facets(m)]
        old = list(self._labels_of(ids).values()) if replace else []
        if before_commit is not None:
            before_commit(labels)
        _crash_point("before-commit")

        def write(db):
            if old:
                _delete_labels(db, old)
            db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO facets VALUES (?, ?, ?)", facets)
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (json.dumps(start + len(rows)),))

        with self._rw.write():  # readers never see the store ahead of the graph for deleted labels
            self._commit(write)
            self.meta["next_label"] = start + len(rows)
            self._count += len(rows) - len(old)
            _crash_point("store-committed")
            for label in old:
                self._mark_deleted(label)
            self._dirty = True
            self._graph_add(vecs[:GRAPH_CHUNK], labels[:GRAPH_CHUNK])
        for s in range(GRAPH_CHUNK, len(labels), GRAPH_CHUNK):  # the rest in chunks: queries run in between
            with self._rw.write():
                self._graph_add(vecs[s:s + GRAPH_CHUNK], labels[s:s + GRAPH_CHUNK])

    def _commit(self, write: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `write` in one transaction; a failure rolls back and says the index kept its previous state."""
        try:
            with self._db_lock, self.db:
                write(self.db)
        except sqlite3.IntegrityError as exc:
            raise InputError(f"{self.path / STORE}: {exc} (nothing was written)") from None
        except sqlite3.Error as exc:
            raise IndexStoreError(f"cannot write {self.path / STORE} ({exc}: disk full or read-only?); nothing "
                                  f"from this call was stored, the index keeps its previous state") from None

    def _graph_add(self, vecs: np.ndarray, labels: np.ndarray, graph: hnswlib.Index | None = None) -> None:
        graph = self.graph if graph is None else graph
        if not len(labels):
            return
        need = graph.element_count + len(labels)
        if need > graph.get_max_elements():
            graph.resize_index(max(need, 2 * graph.get_max_elements()))
        graph.add_items(vecs, labels, num_threads=self.threads, replace_deleted=True)

    def _mark_deleted(self, label: int) -> bool:
        try:
            self.graph.mark_deleted(int(label))
            return True
        except RuntimeError:  # not in the graph, or already deleted
            return False

    def _compaction_due(self) -> bool:
        tomb = self.tombstones
        return tomb >= 64 and tomb > float(self.meta.get("compact_threshold", 0.3)) * self.graph.element_count

    def _compact(self) -> None:
        """Build a fresh graph from the store (caller holds self._writer), save it, then swap it in."""
        graph = _new_graph(self.meta, max(1024, self._count + self._count // 4))
        for labels, vecs in self._iter_vectors():
            self._graph_add(vecs, labels, graph)
        self._save_graph(graph)
        with self._rw.write():
            self.graph, self._ef = graph, None

    def _save_graph(self, graph: hnswlib.Index) -> None:
        old_gen = int(self.meta["generation"])
        gen = old_gen + 1
        final = self.path / f"graph.{gen}.bin"
        tmp = self.path / f".graph.{gen}.bin.tmp"
        intact = (f"the previous state (generation {old_gen}) is intact and every acknowledged document is in "
                  f"{STORE}")
        try:
            with open(tmp, "wb"):  # hnswlib does not report a failed write: surface the error ourselves
                pass
            graph.save_index(str(tmp))
            size, expected = tmp.stat().st_size, graph.index_file_size()
            if size != expected:
                raise OSError(28, f"wrote {size} of {expected} bytes (disk full?)")
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            _crash_point("graph-written")
            os.replace(tmp, final)
            fsync_dir(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IndexStoreError(f"cannot save the graph of {self.path} ({exc.strerror or exc}); {intact}") from None
        _crash_point("graph-renamed")
        try:
            self._commit(lambda db: db.executemany("UPDATE meta SET value = ? WHERE key = ?", [
                (json.dumps(gen), "generation"), (json.dumps(size), "graph_size")]))
        except IndexStoreError:
            final.unlink(missing_ok=True)
            raise IndexStoreError(f"cannot record the new graph in {self.path / STORE} (disk full or read-only?); "
                                  f"{intact}") from None
        _crash_point("generation-committed")
        self.meta["generation"], self.meta["graph_size"] = gen, size
        self._remove_stale_files()
        self._dirty = False

    def _remove_stale_files(self) -> None:
        keep = f"graph.{self.meta['generation']}.bin"
        for old in list(self.path.glob("graph.*.bin")) + list(self.path.glob(".graph.*.bin.tmp")):
            if old.name != keep:
                old.unlink(missing_ok=True)

    # -- internals: reading -------------------------------------------------------------------------------
    def _query(self, sql: str, params: Sequence = ()) -> list[tuple]:
        if self.db is None:
            raise IndexStoreError(f"index {self.path} is closed")
        with self._db_lock:
            return self.db.execute(sql, params).fetchall()

    def _query_one(self, sql: str, params: Sequence = ()) -> tuple | None:
        rows = self._query(sql, params)
        return rows[0] if rows else None

    def _labels_of(self, ids: list[str]) -> dict[str, int]:
        found: dict[str, int] = {}
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            q = ",".join("?" * len(chunk))
            found.update(self._query(f"SELECT id, label FROM docs WHERE id IN ({q})", chunk))
        return found

    def _iter_vectors(self, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        last = -1
        while True:
            rows = self._query("SELECT label, vector FROM docs WHERE label > ? ORDER BY label LIMIT ?", (last, chunk))
            if not rows:
                return
            last = rows[-1][0]
            yield (np.array([r[0] for r in rows], dtype=np.int64),
                   np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim))

    def _reconcile(self) -> None:
        with self._db_lock:
            in_store = np.fromiter((r[0] for r in self.db.execute("SELECT label FROM docs")), dtype=np.int64)
        in_graph = np.asarray(self.graph.get_ids_list(), dtype=np.int64)
        missing = np.setdiff1d(in_store, in_graph, assume_unique=True)
        extra = np.setdiff1d(in_graph, in_store, assume_unique=True)
        for s in range(0, len(missing), 4096):
            labels, vecs = self.vectors(missing[s:s + 4096].tolist())
            self._graph_add(vecs, labels)
        newly_deleted = sum(self._mark_deleted(label) for label in extra.tolist())
        self.repaired = len(missing)
        self._dirty = self._dirty or bool(len(missing)) or bool(newly_deleted)

    def filter_labels(self, filter: dict[str, Any]) -> np.ndarray:
        """Labels of the documents whose metadata match a filter (InputError for a field no document has)."""
        if not isinstance(filter, dict) or not filter:
            raise InputError(f"filter must be a non-empty dict of metadata field -> value, got {filter!r:.80}")
        result = None
        for name, value in filter.items():
            if not isinstance(name, str):
                raise InputError(f"filter field {name!r} must be a str")
            values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
            if not values:
                raise InputError(f"filter on {name!r} lists no values")
            try:
                keys = sorted({_facet_key(v) for v in values})
            except (TypeError, ValueError) as exc:
                raise InputError(f"filter value for {name!r} is not JSON-serialisable ({exc})") from None
            if self._query_one("SELECT 1 FROM facets WHERE field = ? LIMIT 1", (name,)) is None:
                known = [r[0] for r in self._query("SELECT DISTINCT field FROM facets ORDER BY field LIMIT 20")]
                raise InputError(f"no document has metadata field {name!r} (fields present: "
                                 f"{', '.join(map(repr, known)) or 'none'})")
            q = ",".join("?" * len(keys))
            with self._db_lock:
                labels = np.fromiter((r[0] for r in self.db.execute(
                    f"SELECT label FROM facets WHERE field = ? AND value IN ({q})", [name, *keys])), dtype=np.int64)
            labels = np.unique(labels)
            result = labels if result is None else np.intersect1d(result, labels, assume_unique=True)
        return result

    def _query_vector(self, query) -> np.ndarray:
        if isinstance(query, str):
            if self.encoder is None:
                raise InputError("this index was opened without an encoder; pass one to search by text")
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

    def _exact(self, vec: np.ndarray, k: int, labels: np.ndarray | None) -> list[tuple[int, float]]:
        """Exact top-k by cosine over some labels (None: every document), streaming stored vectors."""
        unit = vec / max(float(np.linalg.norm(vec)), 1e-12)
        best_l, best_s = np.zeros(0, np.int64), np.zeros(0, np.float32)
        if labels is None:
            chunks = self._iter_vectors()
        else:
            chunks = (self.vectors(labels[s:s + 4096].tolist()) for s in range(0, len(labels), 4096))
        for lab, mat in chunks:
            if not len(lab):
                continue
            sims = (mat @ unit) / np.maximum(np.linalg.norm(mat, axis=1), 1e-12)
            all_l, all_s = np.concatenate([best_l, lab]), np.concatenate([best_s, sims.astype(np.float32)])
            idx, _ = top_k(all_s, k)
            best_l, best_s = all_l[idx[0]], all_s[idx[0]]
        return list(zip(best_l.tolist(), best_s.tolist()))

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        docs = self.documents([p[0] for p in pairs])
        return [Hit(docs[lab].id, float(score), docs[lab].text, docs[lab].metadata)
                for lab, score in pairs if lab in docs]


def check_encoder(meta: dict[str, Any], encoder, path: Path) -> None:
    """Refuse an encoder whose vectors are not the ones the index holds."""
    if encoder.dim != int(meta["dim"]) or (meta.get("bundle_id") and encoder.manifest.bundle_id != meta["bundle_id"]):
        raise IndexMismatchError(f"index {path} was built with bundle {meta.get('bundle_name')!r} "
                                 f"(dim {meta['dim']}), not {encoder.manifest.name!r} (dim {encoder.dim})")


def _facet_key(value: Any) -> str:
    """How a metadata value is stored for filtering: canonical JSON (2.0 == 2; True stays distinct from 1)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)


def _facets(meta: dict[str, Any]) -> set[tuple[str, str]]:
    """(field, key) pairs a document can be filtered by; a list value contributes each element."""
    out = set()
    for name, value in meta.items():
        for v in (value if isinstance(value, list) else [value]):
            out.add((name, _facet_key(v)))
    return out


def _delete_labels(db: sqlite3.Connection, labels: list[int]) -> None:
    for s in range(0, len(labels), 500):
        chunk = [(int(x),) for x in labels[s:s + 500]]
        db.executemany("DELETE FROM docs WHERE label = ?", chunk)
        db.executemany("DELETE FROM facets WHERE label = ?", chunk)


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:  # autocommit mode; open() starts one long read transaction: the snapshot
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, isolation_level=None,
                             check_same_thread=False)
        db.execute("BEGIN")
        return db
    db = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _open_store(path: Path, read_only: bool) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """Connect and read the meta table (for read-only handles, inside the snapshot transaction)."""
    db = None
    try:
        db = _connect(path / STORE, read_only)
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except sqlite3.DatabaseError as exc:
        if db is not None:
            db.close()
        raise IndexStoreError(f"{path / STORE}: not a readable index store ({exc})") from None
    fmt = meta.get("format")
    if not isinstance(fmt, int) or fmt != INDEX_FORMAT:
        db.close()
        if isinstance(fmt, int) and fmt > INDEX_FORMAT:
            raise IndexStoreError(f"{path}: index format {fmt} is newer than this edgeemb reads ({INDEX_FORMAT}); "
                                  f"upgrade edgeemb")
        raise IndexStoreError(f"{path}: index format {fmt!r} is not supported (expected {INDEX_FORMAT})")
    return db, meta


def _writer_lock(path: Path) -> int | None:
    """Hold an exclusive flock on writer.lock for this handle's life: one writing process per index."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IndexStoreError(f"cannot open {path / WRITER_LOCK} for writing ({exc.strerror or exc}); "
                              f"open the index with read_only=True") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise IndexStoreError(f"{path} is open for writing by another process; open it with read_only=True "
                              f"or close the other writer") from None
    return fd


def _release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the flock


def _new_graph(meta: dict[str, Any], capacity: int) -> hnswlib.Index:
    graph = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
    graph.init_index(max_elements=max(capacity, 16), M=int(meta["M"]), ef_construction=int(meta["ef_construction"]),
                     allow_replace_deleted=True)
    graph.set_ef(int(meta["ef_search"]))
    return graph


def _load_graph(path: Path, meta: dict[str, Any]) -> hnswlib.Index | None:
    """The graph of the recorded generation; None if it is missing or damaged (then rebuilt from the store)."""
    if int(meta["generation"]) == 0:
        return _new_graph(meta, 1024)
    file = path / f"graph.{meta['generation']}.bin"
    try:
        size = file.stat().st_size
    except OSError:
        return None
    if meta.get("graph_size") and size != int(meta["graph_size"]):
        return None
    graph = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
    try:
        graph.load_index(str(file), allow_replace_deleted=True)
    except (RuntimeError, ValueError, MemoryError):
        return None
    graph.set_ef(int(meta["ef_search"]))  # hnswlib does not save ef
    return graph
