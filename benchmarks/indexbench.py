"""Index and end-to-end operations run inside a worker (main venv): build, open, query, recall, e2e.

Each op is `op_x(state, **args) -> dict`, called by the parent as worker.call(op_x, ...). They use the public
Index / DocStore API only (Index.create/open/search/add_vectors, index.store.labels_of, index.graph.search).
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np


def folder_mb(path: str | Path) -> float:
    """Size of every file under a folder, in MB."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 1e6


def doc_ids(start: int, end: int) -> list[str]:
    """Document ids of corpus rows start..end ("en-<row>": recall maps hits back to rows by them)."""
    return [f"en-{i}" for i in range(start, end)]


def op_baseline(state: dict) -> dict:
    """Import the runtime (edgeemb, hnswlib, sqlite) so the parent can read the RSS before an index is opened."""
    import edgeemb

    edgeemb.Index  # noqa: B018 (the lazy name imports the search modules)
    return {}


def op_index_build(state: dict, vectors: str, n: int, folder: str, M: int = 16, ef_construction: int = 200,
                   chunk: int = 10_000) -> dict:
    """Build an index folder from the first n cached vectors and their en_corpus rows; time and size it."""
    from edgeemb import Index

    from . import data

    mat = np.load(vectors, mmap_mode="r")
    if mat.shape[0] < n:
        raise ValueError(f"{vectors} holds {mat.shape[0]} vectors, {n} asked")
    texts = data.sentences("en_corpus", 0, n)
    shutil.rmtree(folder, ignore_errors=True)
    start = time.perf_counter()
    with Index.create(folder, dim=int(mat.shape[1]), M=M, ef_construction=ef_construction, capacity=n) as index:
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            index.add_vectors(np.array(mat[s:e]), texts[s:e], ids=doc_ids(s, e))
    return {"build_s": time.perf_counter() - start, "disk_mb": folder_mb(folder), "n": n}


def op_index_open(state: dict, folder: str, bundle: str | None = None, threads: int | None = None) -> dict:
    """Open an index (with the bundle's encoder when given, for text queries)."""
    import edgeemb

    start = time.perf_counter()
    enc = edgeemb.load(bundle, threads=threads) if bundle else None
    loaded = time.perf_counter()
    state["index"] = edgeemb.Index.open(folder, enc)
    state["encoder"] = enc
    return {"load_s": loaded - start, "open_s": time.perf_counter() - loaded, "n": len(state["index"])}


def op_index_attach(state: dict, folder: str) -> dict:
    """Open an index with the encoder already loaded by the worker's edgeemb engine (no second model)."""
    import edgeemb

    start = time.perf_counter()
    state["index"] = edgeemb.Index.open(folder, state["engine"].enc)
    return {"open_s": time.perf_counter() - start, "n": len(state["index"])}


def op_search_text(state: dict, texts: list[str], k: int = 10) -> dict:
    """End to end: query text -> top-k hits with documents, ms per query."""
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
    """Index.search on precomputed query vectors in a tight loop (graph + document fetch), ms per query."""
    index = state["index"]
    ms = []
    for vec in np.load(queries):
        start = time.perf_counter()
        index.search(vec, k=k)
        ms.append((time.perf_counter() - start) * 1e3)
    return {"ms": ms}


def op_search_between_encodes(state: dict, texts: list[str], k: int = 10) -> dict:
    """Index.search of each query's vector right after really encoding it (untimed): caches as in real use."""
    index, enc = state["index"], state["engine"].enc
    ms = []
    for text in texts:
        vec = enc.encode_queries(text)
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
    exact = np.argpartition(-(qs @ mat.T), k - 1, axis=1)[:, :k]
    row_of = {label: int(i.split("-", 1)[1]) for i, label in index.store.labels_of(doc_ids(0, n)).items()}
    out = {}
    for ef in efs:
        hits, ms = 0, []
        for q, truth in zip(qs, exact):
            start = time.perf_counter()
            found = index.graph.search(q, k, ef=max(ef, k))
            ms.append((time.perf_counter() - start) * 1e3)
            hits += len({row_of.get(label, -1) for label, _ in found} & set(truth.tolist()))
        out[str(ef)] = {"recall": hits / (k * len(qs)), "ms": ms}
    return {"by_ef": out, "queries": len(qs)}
