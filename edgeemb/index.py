"""Index: an hnswlib graph (cosine) plus a SQLite document store; the store is the source of truth.

Durability: every add/delete is a SQLite transaction (acknowledged when it returns). The graph is saved
as graph.<generation>.bin (temp file, fsync, rename), then the store records the new generation. On open,
the graph named by the store is loaded and reconciled with the store: labels missing from the graph are
re-added from stored vectors, labels deleted in the store are marked deleted. A crash at any point leaves
a state that opens to exactly the acknowledged documents.
"""
from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import hnswlib
import numpy as np

from .bundle import fsync_dir
from .errors import IndexMismatchError, IndexStoreError, InputError
from .progress import Progress
from .similarity import top_k

INDEX_FORMAT = 1
STORE = "docs.sqlite"


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
    """Cosine ANN index with documents. Use Index.create / Index.open; one writer at a time."""

    def __init__(self, path: Path, db: sqlite3.Connection, graph: hnswlib.Index, meta: dict[str, Any], encoder=None):
        self.path, self.db, self.graph, self.meta, self.encoder = path, db, graph, meta, encoder
        self.dim = int(meta["dim"])
        self._dirty = False

    # -- life cycle ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, encoder=None, dim: int | None = None, M: int = 16, ef_construction: int = 200,
               ef_search: int = 64, capacity: int = 1024, bundle_ref: str | None = None) -> "Index":
        """Create an empty index folder for `encoder`'s vectors (or raw vectors of `dim`)."""
        path = Path(path)
        if (path / STORE).exists():
            raise IndexStoreError(f"{path} already holds an index; open it with Index.open")
        if encoder is None and not dim:
            raise InputError("Index.create needs an encoder or a dim")
        path.mkdir(parents=True, exist_ok=True)
        meta = {"format": INDEX_FORMAT, "dim": encoder.dim if encoder is not None else int(dim), "space": "cosine",
                "M": M, "ef_construction": ef_construction, "ef_search": ef_search, "generation": 0,
                "next_label": 0, "bundle_id": encoder.manifest.bundle_id if encoder is not None else "",
                "bundle_name": encoder.manifest.name if encoder is not None else "",
                "bundle_ref": bundle_ref or (str(Path(encoder.path).resolve()) if encoder is not None else "")}
        db = _connect(path / STORE)
        with db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE docs (label INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, text TEXT NOT NULL,"
                       " metadata TEXT NOT NULL, vector BLOB NOT NULL)")
            db.executemany("INSERT INTO meta VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])
        graph = _new_graph(meta, capacity)
        return cls(path, db, graph, meta, encoder)

    @classmethod
    def open(cls, path: str | Path, encoder=None) -> "Index":
        """Open an index folder, check it matches `encoder`, and repair the graph from the store if they differ."""
        path = Path(path)
        if not (path / STORE).is_file():
            raise IndexStoreError(f"no index at {path} ({STORE} missing)")
        try:
            db = _connect(path / STORE)
            meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
        except sqlite3.DatabaseError as exc:
            raise IndexStoreError(f"{path / STORE}: not a readable index store ({exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise IndexStoreError(f"{path}: index format {meta.get('format')} is not supported ({INDEX_FORMAT})")
        if encoder is not None:
            check_encoder(meta, encoder, path)
        index = cls(path, db, _load_graph(path, meta), meta, encoder)
        index._reconcile()
        return index

    def close(self) -> None:
        """Save the graph if it changed and close the store."""
        if self.db is not None:
            if self._dirty:
                self.save()
            self.db.close()
            self.db = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    # -- writing ------------------------------------------------------------------------------------------
    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None, metadata: Sequence[dict] | None = None,
            batch_size: int = 512, show_progress: bool = False) -> list[str]:
        """Encode and add documents; each chunk is committed before the next. Returns their ids."""
        if self.encoder is None:
            raise InputError("this index was opened without an encoder; pass one to add texts")
        texts, ids, metas = self._check_docs(texts, ids, metadata)
        with Progress(len(texts), f"index {self.path.name}", show_progress, "docs") as bar:
            for s in range(0, len(texts), batch_size):
                sl = slice(s, s + batch_size)
                vecs = self.encoder.encode_documents(texts[sl], batch_size=32)
                self._insert(vecs, texts[sl], ids[sl], metas[sl])
                bar.update(len(texts[sl]))
        return ids

    def add_vectors(self, vectors: np.ndarray, texts: Sequence[str], ids: Sequence[str] | None = None,
                    metadata: Sequence[dict] | None = None) -> list[str]:
        """Add precomputed vectors with their documents (dimension checked)."""
        vectors = np.asarray(vectors, dtype=np.float32)
        texts, ids, metas = self._check_docs(texts, ids, metadata)
        if vectors.ndim != 2 or vectors.shape != (len(texts), self.dim):
            raise InputError(f"vectors have shape {vectors.shape}, expected ({len(texts)}, {self.dim})")
        if not np.isfinite(vectors).all():
            raise InputError("vectors contain NaN or infinity")
        self._insert(vectors, texts, ids, metas)
        return ids

    def delete(self, ids: Iterable[str]) -> int:
        """Delete documents by id; unknown ids are ignored. Returns how many were deleted."""
        ids = list(ids)
        rows = self._labels_of(ids)
        with self.db:
            self.db.executemany("DELETE FROM docs WHERE label = ?", [(label,) for label in rows])
        for label in rows:
            self._mark_deleted(label)
        self._dirty = self._dirty or bool(rows)
        return len(rows)

    def save(self) -> None:
        """Write the graph atomically as the next generation, then record it in the store."""
        gen = int(self.meta["generation"]) + 1
        final = self.path / f"graph.{gen}.bin"
        tmp = self.path / f".graph.{gen}.bin.tmp"
        self.graph.save_index(str(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _crash_point("graph-written")
        os.replace(tmp, final)
        fsync_dir(self.path)
        _crash_point("graph-renamed")
        with self.db:
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (json.dumps(gen),))
        _crash_point("generation-committed")
        self.meta["generation"] = gen
        for old in self.path.glob("graph.*.bin"):
            if old != final:
                old.unlink(missing_ok=True)
        self._dirty = False

    # -- reading ------------------------------------------------------------------------------------------
    def search(self, query: str | np.ndarray, k: int = 10, ef: int | None = None) -> list[Hit]:
        """Top-k documents by cosine; k larger than the number of documents returns them all."""
        if k < 1:
            raise InputError(f"k must be positive, got {k}")
        vec = self._query_vector(query)
        live = len(self)
        k = min(k, live)
        if k == 0:
            return []
        self.graph.set_ef(max(ef or int(self.meta["ef_search"]), k))
        try:
            labels, dists = self.graph.knn_query(vec[None, :], k=k)
            pairs = list(zip(labels[0].tolist(), (1.0 - dists[0]).tolist()))
        except RuntimeError:  # hnswlib cannot fill k results (deletions, small ef): exact search instead
            pairs = self._exact(vec, k)
        return self._hits(pairs)

    def get(self, id: str) -> Hit | None:
        """The stored document with this id, or None."""
        row = self.db.execute("SELECT id, text, metadata FROM docs WHERE id = ?", (id,)).fetchone()
        return Hit(row[0], 1.0, row[1], json.loads(row[2])) if row else None

    def vectors(self, labels: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors (and their labels) of all or some documents, from the store."""
        if labels is None:
            rows = self.db.execute("SELECT label, vector FROM docs ORDER BY label").fetchall()
        else:
            q = ",".join("?" * len(labels))
            rows = self.db.execute(f"SELECT label, vector FROM docs WHERE label IN ({q})", list(labels)).fetchall()
        lab = np.array([r[0] for r in rows], dtype=np.int64)
        vec = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return lab, vec

    # -- internals ----------------------------------------------------------------------------------------
    def _check_docs(self, texts, ids, metadata) -> tuple[list[str], list[str], list[dict]]:
        from .tokenize import check_texts

        texts = check_texts(texts)
        n = len(texts)
        if ids is None:
            start = int(self.meta["next_label"])
            ids = [f"doc-{start + i}" for i in range(n)]
        ids = list(ids)
        metas = [{} for _ in range(n)] if metadata is None else list(metadata)
        if len(ids) != n or len(metas) != n:
            raise InputError(f"got {n} texts, {len(ids)} ids and {len(metas)} metadata entries")
        for i, (doc_id, m) in enumerate(zip(ids, metas)):
            if not isinstance(doc_id, str) or not doc_id:
                raise InputError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
            if not isinstance(m, dict):
                raise InputError(f"metadata[{i}] must be a dict, got {type(m).__name__}")
        if len(set(ids)) != n:
            raise InputError("ids repeat within one add")
        taken = self._labels_of(ids, with_ids=True)
        if taken:
            raise InputError(f"id {next(iter(taken))!r} is already in the index (delete it first)")
        return texts, ids, metas

    def _insert(self, vecs: np.ndarray, texts: list[str], ids: list[str], metas: list[dict]) -> None:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        start = int(self.meta["next_label"])
        labels = np.arange(start, start + len(texts), dtype=np.int64)
        try:
            rows = [(int(lab), i, t, json.dumps(m, ensure_ascii=False), v.tobytes())
                    for lab, i, t, m, v in zip(labels, ids, texts, metas, vecs)]
        except TypeError as exc:
            raise InputError(f"metadata must be JSON-serialisable ({exc})") from None
        with self.db:
            self.db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", rows)
            self.db.execute("UPDATE meta SET value = ? WHERE key = 'next_label'", (json.dumps(start + len(rows)),))
        self.meta["next_label"] = start + len(rows)
        self._graph_add(vecs, labels)

    def _graph_add(self, vecs: np.ndarray, labels: np.ndarray) -> None:
        need = self.graph.element_count + len(labels)
        if need > self.graph.get_max_elements():
            self.graph.resize_index(max(need, 2 * self.graph.get_max_elements()))
        self.graph.add_items(vecs, labels, num_threads=1, replace_deleted=True)
        self._dirty = True

    def _mark_deleted(self, label: int) -> None:
        try:
            self.graph.mark_deleted(int(label))
        except RuntimeError:  # not in the graph, or already deleted
            pass

    def _labels_of(self, ids: list[str], with_ids: bool = False):
        found = {}
        for s in range(0, len(ids), 500):
            chunk = ids[s:s + 500]
            q = ",".join("?" * len(chunk))
            found.update(self.db.execute(f"SELECT id, label FROM docs WHERE id IN ({q})", chunk).fetchall())
        return found if with_ids else list(found.values())

    def _reconcile(self) -> None:
        in_store = {r[0] for r in self.db.execute("SELECT label FROM docs")}
        in_graph = set(self.graph.get_ids_list())
        missing = sorted(in_store - in_graph)
        for s in range(0, len(missing), 4096):
            labels, vecs = self.vectors(missing[s:s + 4096])
            self._graph_add(vecs, labels)
        for label in in_graph - in_store:
            self._mark_deleted(label)
        self._dirty = self._dirty or bool(missing) or bool(in_graph - in_store)

    def _query_vector(self, query) -> np.ndarray:
        if isinstance(query, str):
            if self.encoder is None:
                raise InputError("this index was opened without an encoder; pass one to search by text")
            vec = self.encoder.encode_queries([query])[0]
        else:
            vec = np.asarray(query, dtype=np.float32).reshape(-1)
        if vec.shape != (self.dim,):
            raise InputError(f"query vector has dimension {vec.shape[0]}, the index holds {self.dim}")
        return vec

    def _exact(self, vec: np.ndarray, k: int) -> list[tuple[int, float]]:
        labels, mat = self.vectors()
        norms = np.linalg.norm(mat, axis=1) * max(np.linalg.norm(vec), 1e-12)
        idx, scores = top_k((mat @ vec) / np.maximum(norms, 1e-12), k)
        return list(zip(labels[idx[0]].tolist(), scores[0].tolist()))

    def _hits(self, pairs: list[tuple[int, float]]) -> list[Hit]:
        labels = [p[0] for p in pairs]
        q = ",".join("?" * len(labels))
        rows = {r[0]: r[1:] for r in self.db.execute(
            f"SELECT label, id, text, metadata FROM docs WHERE label IN ({q})", labels)}
        return [Hit(rows[lab][0], float(score), rows[lab][1], json.loads(rows[lab][2]))
                for lab, score in pairs if lab in rows]


def check_encoder(meta: dict[str, Any], encoder, path: Path) -> None:
    """Refuse an encoder whose vectors are not the ones the index holds."""
    if encoder.dim != int(meta["dim"]) or (meta.get("bundle_id") and encoder.manifest.bundle_id != meta["bundle_id"]):
        raise IndexMismatchError(f"index {path} was built with bundle {meta.get('bundle_name')!r} "
                                 f"(dim {meta['dim']}), not {encoder.manifest.name!r} (dim {encoder.dim})")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(str(path), isolation_level="DEFERRED")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


def _new_graph(meta: dict[str, Any], capacity: int) -> hnswlib.Index:
    graph = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
    graph.init_index(max_elements=max(capacity, 16), M=int(meta["M"]), ef_construction=int(meta["ef_construction"]),
                     allow_replace_deleted=True)
    graph.set_ef(int(meta["ef_search"]))
    return graph


def _load_graph(path: Path, meta: dict[str, Any]) -> hnswlib.Index:
    """The graph of the recorded generation; an empty graph (rebuilt from the store) if it is missing or bad."""
    file = path / f"graph.{meta['generation']}.bin"
    if int(meta["generation"]) == 0 or not file.is_file():
        return _new_graph(meta, 1024)
    graph = hnswlib.Index(space="cosine", dim=int(meta["dim"]))
    try:
        graph.load_index(str(file), allow_replace_deleted=True)
    except (RuntimeError, ValueError):
        return _new_graph(meta, 1024)
    graph.set_ef(int(meta["ef_search"]))  # hnswlib does not save ef
    return graph
