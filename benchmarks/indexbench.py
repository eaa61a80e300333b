"""Index and end-to-end operations run inside a worker (main venv): build, open, query, recall, e2e."""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np


def folder_mb(path: str | Path) -> float:
    """Size of every file under a folder, in MB."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def op_baseline(state: dict) -> dict:
    """Import the runtime (edgeemb, hnswlib, sqlite) so the parent can read the RSS before an index is opened."""
    import edgeemb
    import edgeemb.search.index  # noqa: F401

    return {}


def op_index_build(state: dict, vectors: str, n: int, corpus: str, folder: str, M: int = 16,
                   ef_construction: int = 200, chunk: int = 10_000) -> dict:
    """Build an index folder from the first n cached vectors and their corpus sentences; time and size it."""
    from edgeemb.search.index import Index

    mat = np.load(vectors, mmap_mode="r")
    if mat.shape[0] < n:
        raise ValueError(f"{vectors} holds {mat.shape[0]} vectors, {n} asked")
    texts = _first_sentences(corpus, n)
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with Index.create(folder, dim=int(mat.shape[1]), M=M, ef_construction=ef_construction, capacity=n) as index:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            index.add_vectors(np.array(mat[s:e]), texts[s:e], ids=[f"en-{i}" for i in range(s, e)])
    return {"build_s": time.perf_counter() - start, "disk_mb": folder_mb(folder), "n": n}


def op_index_open(state: dict, folder: str, bundle: str | None = None, threads: int | None = None) -> dict:
    """Open an index (with the bundle's encoder when given, for text queries)."""
    import edgeemb
    from edgeemb.search.index import Index

    start = time.perf_counter()
    enc = edgeemb.load(bundle, threads=threads) if bundle else None
    loaded = time.perf_counter()
    state["index"] = Index.open(folder, enc)
    state["encoder"] = enc
    return {"load_s": loaded - start, "open_s": time.perf_counter() - loaded, "n": len(state["index"])}


def op_search_text(state: dict, texts: list[str], k: int = 10) -> dict:
    """End to end: query text -> top-k hits with documents, ms per query (the first one reported apart)."""
    index = state["index"]
    ms = []
    for text in texts:
        start = time.perf_counter()
        hits = index.search(text, k=k)
        ms.append((time.perf_counter() - start) * 1e3)
        if len(hits) != min(k, len(index)):
            raise RuntimeError(f"search returned {len(hits)} hits, expected {k}")
    return {"ms": ms}


def op_encode_query_file(state: dict, texts: list[str], out: str) -> dict:
    """Embed query texts one by one with the loaded edgeemb engine and save them (recall queries)."""
    enc = state["engine"].enc
    vecs = np.stack([enc.encode_queries(t) for t in texts])
    np.save(out, vecs.astype(np.float32))
    return {"n": len(vecs)}


def op_search_vectors(state: dict, queries: str, k: int = 10) -> dict:
    """Index.search on precomputed query vectors (graph + document fetch), ms per query."""
    index = state["index"]
    ms = []
    for vec in np.load(queries):
        start = time.perf_counter()
        index.search(vec, k=k)
        ms.append((time.perf_counter() - start) * 1e3)
    return {"ms": ms}


def op_recall(state: dict, vectors: str, n: int, queries: str, efs: list[int], k: int = 10) -> dict:
    """recall@k of the HNSW graph against exact cosine search, and graph-only ms per query, at each ef."""
    index = state["index"]
    mat = np.array(np.load(vectors, mmap_mode="r")[:n], dtype=np.float32)
    mat /= np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
    qs = np.load(queries).astype(np.float32)
    qs /= np.maximum(np.linalg.norm(qs, axis=1, keepdims=True), 1e-12)
    scores = qs @ mat.T
    exact = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    labels_to_row = _label_rows(index, n)
    out = {}
    for ef in efs:
        index.graph.set_ef(max(ef, k))
        hits, ms = 0, []
        for q, truth in zip(qs, exact):
            start = time.perf_counter()
            labels, _ = index.graph.knn_query(q[None, :], k=k)
            ms.append((time.perf_counter() - start) * 1e3)
            hits += len(set(labels_to_row[labels[0]].tolist()) & set(truth.tolist()))
        out[str(ef)] = {"recall": hits / (k * len(qs)), "ms": ms}
    index.graph.set_ef(int(index.meta["ef_search"]))
    return {"by_ef": out, "queries": len(qs)}


def _label_rows(index, n: int) -> np.ndarray:
    """Map graph labels to corpus rows (ids are 'en-<row>')."""
    rows = np.full(max(int(index.meta["next_label"]), n), -1, dtype=np.int64)
    for label, doc_id in index.db.execute("SELECT label, id FROM docs"):
        rows[label] = int(doc_id.split("-", 1)[1])
    return rows


def _first_sentences(corpus: str, n: int) -> list[str]:
    out = []
    with open(corpus, encoding="utf-8") as f:
        next(f, None)
        for line in f:
            if len(out) >= n:
                break
            out.append(line.rstrip("\n").partition("\t")[2])
    return out


def op_index_attach(state: dict, folder: str) -> dict:
    """Open an index with the encoder already loaded by the worker's edgeemb engine (no second model)."""
    from edgeemb.search.index import Index

    start = time.perf_counter()
    state["index"] = Index.open(folder, state["engine"].enc)
    return {"open_s": time.perf_counter() - start, "n": len(state["index"])}
