"""DocStore: the SQLite store of an index, the source of truth for its documents, vectors and settings.

Tables: meta (key -> JSON value), docs (label, id, text, metadata JSON, float32 vector), facets (label, field,
canonical JSON value; numbers also through an expression index on CAST(value AS REAL), for ranges) for metadata
filters. Every write is one transaction (WAL, synchronous=FULL), acknowledged when it returns; a failed write rolls
back and says the store kept its previous state. The schema and the settings are created in one transaction, so a
crash inside create leaves a file with no settings, which open reports as an unfinished create (UnfinishedStore) and
Index.create replaces. A read-only handle holds one read transaction from opening on: a consistent snapshot next to
a writer in another process; on a folder it cannot write (read-only media) it opens the file immutable (no -shm).
"""
from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from ..errors import IndexStoreError, InputError

STORE = "docs.sqlite"
INDEX_FORMAT = 1
SQL_CHUNK = 500  # host parameters per IN (...) query, under SQLite's limit
NUMERIC = "value GLOB '[0-9-]*'"  # a facet holding a JSON number (strings start with '"', bools t/f, null n)
NUMERIC_INDEX = f"CREATE INDEX IF NOT EXISTS facets_numeric ON facets (field, CAST(value AS REAL)) WHERE {NUMERIC}"
RANGE_SQL = {"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}


class UnfinishedStore(IndexStoreError):
    """The store file exists but its create never committed (a crash inside Index.create): no settings, no data."""


def crash_point(name: str) -> None:
    """Test hook: EDGEEMB_CRASH_AT=<name> kills the process here, as a power cut would."""
    if os.environ.get("EDGEEMB_CRASH_AT") == name:
        os._exit(137)


@dataclass
class Hit:
    """One search result (or a stored document, score 0): the document's id, cosine score, text and metadata."""

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class NewDocs:
    """Documents about to be inserted: their labels, ids, texts, metadata and vectors, already checked."""

    labels: np.ndarray  # int64 (n,)
    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, Any]]
    vectors: np.ndarray  # float32 (n, dim)


class DocStore:
    """The documents of one index folder, with a small public API; thread-safe (one connection, one lock)."""

    def __init__(self, folder: Path, db: sqlite3.Connection, meta: dict[str, Any], read_only: bool):
        self.folder, self.file, self.read_only = folder, folder / STORE, read_only
        self.meta = meta
        self.dim = int(meta["dim"])
        self._db: sqlite3.Connection | None = db
        self._lock = threading.RLock()

    # -- life cycle ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, folder: Path, meta: dict[str, Any]) -> DocStore:
        """Create the store with its schema and settings in one transaction (an existing unfinished one is
        replaced: it holds nothing)."""
        file = folder / STORE
        for leftover in (file, file.with_name(STORE + "-wal"), file.with_name(STORE + "-shm"),
                         file.with_name(STORE + "-journal")):
            leftover.unlink(missing_ok=True)
        try:
            db = _connect(file, read_only=False)
            with db:
                db.execute("BEGIN")  # sqlite3 runs DDL outside a transaction unless one is open: schema + meta at once
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute("CREATE TABLE docs (label INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,"
                           " metadata TEXT NOT NULL, vector BLOB NOT NULL)")
                db.execute("CREATE TABLE facets (label INTEGER NOT NULL, field TEXT NOT NULL, value TEXT NOT NULL)")
                db.execute("CREATE INDEX facets_field_value ON facets (field, value)")
                db.execute("CREATE INDEX facets_label ON facets (label)")
                db.execute(NUMERIC_INDEX)
                crash_point("store-schema")
                db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        except sqlite3.Error as exc:
            raise IndexStoreError(f"cannot create {file} ({exc})") from None
        return cls(folder, db, dict(meta), read_only=False)

    @classmethod
    def open(cls, folder: Path, read_only: bool) -> DocStore:
        """Connect and read the settings (for read-only handles, inside the snapshot transaction)."""
        file = folder / STORE
        if not file.is_file():
            raise IndexStoreError(f"no index at {folder} ({STORE} missing)")
        db = None
        try:
            db = _connect(file, read_only)
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")} if "meta" in tables else {}
            if not meta and not ("docs" in tables and db.execute("SELECT 1 FROM docs LIMIT 1").fetchone()):
                db.close()
                raise UnfinishedStore(f"{folder}: its Index.create never finished (no settings were committed, no "
                                      f"documents stored); create it again (Index.create replaces it)")
            if not read_only and "facets" in tables:  # indexes made before range filters get the numeric index
                with db:
                    db.execute(NUMERIC_INDEX)
        except sqlite3.DatabaseError as exc:
            if db is not None:
                db.close()
            if read_only and "unable to open" in str(exc):
                raise IndexStoreError(f"{file}: cannot open read-only ({exc}); if the folder is on read-only "
                                      f"media, the index was not closed cleanly ({STORE}-wal holds commits): open it "
                                      f"once with write access, then close it") from None
            raise IndexStoreError(f"{file}: not a readable index store ({exc})") from None
        fmt = meta.get("format")
        if not isinstance(fmt, int) or fmt != INDEX_FORMAT:
            db.close()
            if isinstance(fmt, int) and fmt > INDEX_FORMAT:
                raise IndexStoreError(f"{folder}: index format {fmt} is newer than this edgeemb reads "
                                      f"({INDEX_FORMAT}); upgrade edgeemb")
            raise IndexStoreError(f"{folder}: index format {fmt!r} is not supported (expected {INDEX_FORMAT})")
        return cls(folder, db, meta, read_only)

    @property
    def closed(self) -> bool:
        return self._db is None

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- reading ------------------------------------------------------------------------------------------
    def count(self) -> int:
        """Number of stored documents."""
        row = self._one("SELECT COUNT(*) FROM docs")
        assert row is not None  # an aggregate always returns one row
        return int(row[0])

    def max_label(self) -> int | None:
        """The highest label in use, or None for an empty store."""
        row = self._one("SELECT MAX(label) FROM docs")
        assert row is not None  # an aggregate always returns one row
        top: int | None = row[0]
        return top

    def all_labels(self) -> np.ndarray:
        """Every stored label, ascending (int64)."""
        with self._lock:
            rows = self._conn().execute("SELECT label FROM docs ORDER BY label")
            return np.fromiter((r[0] for r in rows), dtype=np.int64)

    def labels_of(self, ids: Sequence[str]) -> dict[str, int]:
        """id -> label for the ids that are stored."""
        ids = list(ids)
        found: dict[str, int] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            chunk = ids[s:s + SQL_CHUNK]
            found.update(self._all(f"SELECT id, label FROM docs WHERE id IN ({_marks(chunk)})", chunk))
        return found

    def get(self, id: str) -> Hit | None:
        """The stored document with this id (score 1.0), or None."""
        row = self._one("SELECT id, text, metadata FROM docs WHERE id = ?", (id,))
        return Hit(row[0], 1.0, row[1], json.loads(row[2])) if row else None

    def ids(self) -> list[str]:
        """Every stored id, in insertion order."""
        return [r[0] for r in self._all("SELECT id FROM docs ORDER BY label")]

    def documents(self, labels: Sequence[int]) -> dict[int, Hit]:
        """label -> Hit (score 0) for the labels still stored."""
        out: dict[int, Hit] = {}
        labels = [int(x) for x in labels]
        for s in range(0, len(labels), SQL_CHUNK):
            chunk = labels[s:s + SQL_CHUNK]
            for lab, i, text, meta in self._all(
                    f"SELECT label, id, text, metadata FROM docs WHERE label IN ({_marks(chunk)})", chunk):
                out[lab] = Hit(i, 0.0, text, json.loads(meta))
        return out

    def vectors(self, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors (and their labels, ascending for all) of all or some documents."""
        if labels is None:
            rows = self._all("SELECT label, vector FROM docs ORDER BY label")
        else:
            rows = []
            labels = [int(x) for x in labels]
            for s in range(0, len(labels), SQL_CHUNK):
                chunk = labels[s:s + SQL_CHUNK]
                rows += self._all(f"SELECT label, vector FROM docs WHERE label IN ({_marks(chunk)})", chunk)
        return self._unpack(rows)

    def iter_vectors(self, chunk: int = 4096) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(labels, vectors) of every document in label order, chunk rows at a time."""
        last = -1
        while True:
            rows = self._all("SELECT label, vector FROM docs WHERE label > ? ORDER BY label LIMIT ?", (last, chunk))
            if not rows:
                return
            last = rows[-1][0]
            yield self._unpack(rows)

    def has_field(self, name: str) -> bool:
        """Whether any stored document has this metadata field."""
        return self._one("SELECT 1 FROM facets WHERE field = ? LIMIT 1", (name,)) is not None

    def fields(self, limit: int = 20) -> list[str]:
        """Metadata field names present (sorted, at most limit)."""
        return [r[0] for r in self._all("SELECT DISTINCT field FROM facets ORDER BY field LIMIT ?", (limit,))]

    def labels_with(self, name: str, keys: Sequence[str]) -> np.ndarray:
        """Sorted unique labels whose metadata field `name` has one of the canonical values `keys`."""
        keys = list(keys)
        out = []
        for s in range(0, len(keys), SQL_CHUNK):
            chunk = keys[s:s + SQL_CHUNK]
            with self._lock:
                rows = self._conn().execute(
                    f"SELECT label FROM facets WHERE field = ? AND value IN ({_marks(chunk)})", [name, *chunk])
                out.append(np.fromiter((r[0] for r in rows), dtype=np.int64))
        return np.unique(np.concatenate(out)) if out else np.zeros(0, np.int64)

    def labels_in_range(self, name: str, bounds: dict[str, float]) -> np.ndarray:
        """Sorted unique labels whose numeric field `name` satisfies every bound ({"$gt": 1, "$lte": 5})."""
        where = " AND ".join(f"CAST(value AS REAL) {RANGE_SQL[op]} ?" for op in bounds)
        with self._lock:
            rows = self._conn().execute(f"SELECT label FROM facets WHERE field = ? AND {NUMERIC} AND {where}",
                                        [name, *map(float, bounds.values())])
            return np.unique(np.fromiter((r[0] for r in rows), dtype=np.int64))

    def labels_having(self, name: str) -> np.ndarray:
        """Sorted unique labels of documents that have the field `name` at all."""
        with self._lock:
            rows = self._conn().execute("SELECT label FROM facets WHERE field = ?", (name,))
            return np.unique(np.fromiter((r[0] for r in rows), dtype=np.int64))

    def get_many(self, ids: Sequence[str]) -> dict[str, tuple[int, Hit]]:
        """id -> (label, Hit with score 1.0) for the ids that are stored."""
        ids = list(ids)
        out: dict[str, tuple[int, Hit]] = {}
        for s in range(0, len(ids), SQL_CHUNK):
            chunk = ids[s:s + SQL_CHUNK]
            for lab, i, text, meta in self._all(
                    f"SELECT label, id, text, metadata FROM docs WHERE id IN ({_marks(chunk)})", chunk):
                out[i] = (lab, Hit(i, 1.0, text, json.loads(meta)))
        return out

    # -- writing (each call one transaction) --------------------------------------------------------------
    def update_metadata(self, labels: Sequence[int], metadata: list[dict[str, Any]],
                        facets: list[tuple[int, str, str]]) -> None:
        """Replace the metadata (and facets) of stored documents, atomically; vectors and texts are kept."""
        try:
            meta_json = [json.dumps(m, ensure_ascii=False, allow_nan=False) for m in metadata]
        except (TypeError, ValueError, RecursionError) as exc:
            raise InputError(f"metadata must be JSON-serialisable ({exc})") from None
        rows = [(m, int(lab)) for lab, m in zip(labels, meta_json)]

        def write(db: sqlite3.Connection) -> None:
            db.executemany("UPDATE docs SET metadata = ? WHERE label = ?", rows)
            db.executemany("DELETE FROM facets WHERE label = ?", [(int(x),) for x in labels])
            db.executemany("INSERT INTO facets VALUES (?, ?, ?)", facets)

        self.transaction(write)

    def insert(self, docs: NewDocs, facets: list[tuple[int, str, str]], replaced: Sequence[int],
               next_label: int) -> None:
        """Insert documents (deleting the labels they replace) and advance next_label, atomically."""
        try:
            meta_json = [json.dumps(m, ensure_ascii=False, allow_nan=False) for m in docs.metadata]
        except (TypeError, ValueError, RecursionError) as exc:
            raise InputError(f"metadata must be JSON-serialisable ({exc})") from None
        vectors = np.ascontiguousarray(docs.vectors, dtype=np.float32)
        rows = [(int(lab), i, t, m, v.tobytes())
                for lab, i, t, m, v in zip(docs.labels, docs.ids, docs.texts, meta_json, vectors)]

        def write(db: sqlite3.Connection) -> None:
            if replaced:
                _delete_labels(db, replaced)
            db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
            db.executemany("INSERT INTO facets VALUES (?, ?, ?)", facets)
            db.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (json.dumps(next_label),))

        self.transaction(write)
        self.meta["next_label"] = next_label

    def delete(self, labels: Sequence[int]) -> None:
        """Delete documents by label, atomically."""
        self.transaction(lambda db: _delete_labels(db, labels))

    def set_meta(self, items: dict[str, Any]) -> None:
        """Record settings (JSON values), atomically."""
        rows = [(k, json.dumps(v)) for k, v in items.items()]
        self.transaction(lambda db: db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", rows))
        self.meta.update(items)

    def transaction(self, write: Callable[[sqlite3.Connection], Any]) -> None:
        """Run `write` in one transaction; a failure rolls back and says the store kept its previous state."""
        try:
            with self._lock, self._conn() as db:
                write(db)
        except sqlite3.IntegrityError as exc:
            raise InputError(f"{self.file}: {exc} (nothing was written)") from None
        except UnicodeEncodeError as exc:  # a lone surrogate in an id, text or metadata value
            raise InputError(f"an id, text or metadata value is not valid Unicode ({exc.reason}: "
                             f"{exc.object[exc.start:exc.end]!r}); nothing was written") from None
        except sqlite3.Error as exc:
            raise IndexStoreError(f"cannot write {self.file} ({exc}: disk full or read-only?); nothing "
                                  f"from this call was stored, the index keeps its previous state") from None

    def vacuum(self) -> None:
        """Give the pages of deleted documents back to the file system (VACUUM, then truncate the WAL).
        Needs free disk about the size of the store while it runs; readers keep their snapshot meanwhile."""
        with self._lock:
            db = self._conn()
            try:
                db.execute("VACUUM")
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as exc:
                raise IndexStoreError(f"cannot vacuum {self.file} ({exc}); the index is unchanged") from None

    # -- internals ----------------------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise IndexStoreError(f"index {self.folder} is closed")
        return self._db

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn().execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def _unpack(self, rows: list[tuple[Any, ...]]) -> tuple[np.ndarray, np.ndarray]:
        lab = np.array([r[0] for r in rows], dtype=np.int64)
        vec = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return lab, vec


def _marks(chunk: Sequence[Any]) -> str:
    return ",".join("?" * len(chunk))


def _delete_labels(db: sqlite3.Connection, labels: Sequence[int]) -> None:
    labels = list(labels)
    for s in range(0, len(labels), SQL_CHUNK):
        chunk = [(int(x),) for x in labels[s:s + SQL_CHUNK]]
        db.executemany("DELETE FROM docs WHERE label = ?", chunk)
        db.executemany("DELETE FROM facets WHERE label = ?", chunk)


def _connect(path: Path, read_only: bool) -> sqlite3.Connection:
    if read_only:  # autocommit mode; one long read transaction from here on: the snapshot
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{_read_only_mode(path)}", uri=True,
                             isolation_level=None, check_same_thread=False)
        db.execute("BEGIN")
        return db
    db = sqlite3.connect(str(path), isolation_level="DEFERRED", check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _read_only_mode(path: Path) -> str:
    """URI mode for a read-only handle: immutable where nobody can write the folder (read-only media: SQLite
    could not create the -shm file WAL mode needs) and no uncheckpointed WAL is there (immutable would skip it)."""
    wal = path.with_name(STORE + "-wal")
    if not os.access(path.parent, os.W_OK) and not (wal.exists() and wal.stat().st_size > 0):
        return "mode=ro&immutable=1"
    return "mode=ro"
