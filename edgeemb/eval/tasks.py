"""Evaluation tasks over a duck-typed model: `encode` (and `encode_queries`/`encode_documents` where the model has
prompts), and `wv` (index_to_key + vectors) for word tasks. Each task runs over built-in datasets (those present
are run, the absent ones skipped with a DatasetSkipped warning) or over one dataset of the user's (data.FORMATS).

Prompts: queries and symmetric tasks (STS, pairs, clustering) use the query side, retrieval documents the
document side, as E5 and BGE are evaluated (MTEB); models without prompts encode both sides the same way."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..encode.pooling import normalize
from . import data
from .metrics import (
    analogy_3cosadd,
    analogy_3cosmul,
    average_precision,
    best_threshold_accuracy,
    kmeans,
    mrr_at_k,
    ndcg_at_k,
    pearson,
    recall_at_k,
    spearman,
    v_measure,
)

# A model is duck-typed (an edgeemb Encoder, a sentence-transformers model, a stand-in): Any at this seam.
Model = Any
SENTENCE_TASKS = ("sts", "pair", "retrieval", "cluster")
WORD_TASKS = ("analogy", "wordsim")
TASKS = SENTENCE_TASKS + WORD_TASKS


@dataclass
class TaskResult:
    """Scores of one task on one dataset (metrics in percent, coverage as a fraction)."""

    task: str
    dataset: str
    metrics: dict[str, float]
    n: int
    coverage: float | None = None
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


class DatasetSkipped(UserWarning):
    """A built-in dataset of a task is not on this machine; the task ran the others."""


def _embed(model: Model, texts: Sequence[str], batch_size: int, show_progress: bool,
           side: str = "query") -> np.ndarray:
    """Unit-normalised embeddings of texts (query or document side), encoding each distinct text once."""
    uniq = list(dict.fromkeys(texts))
    encode = getattr(model, "encode_documents" if side == "document" else "encode_queries", model.encode)
    E = np.asarray(encode(uniq, batch_size=batch_size, show_progress=show_progress), dtype=np.float32)
    if E.ndim != 2 or len(E) != len(uniq):
        raise ValueError(f"model.encode returned shape {E.shape} for {len(uniq)} texts")
    pos = {t: i for i, t in enumerate(uniq)}
    return normalize(E)[[pos[t] for t in texts]]


def _pair_cosines(model: Model, a: list[str], b: list[str], batch_size: int,
                  show_progress: bool) -> np.ndarray:
    E = _embed(model, a + b, batch_size, show_progress)
    cos: np.ndarray = (E[: len(a)] * E[len(a) :]).sum(1)
    return cos


def _pct(x: float) -> float:
    return 100.0 * float(x)


def sts(model: Model, sets: list[tuple[str, list[tuple[str, str, float]]]], limit: int | None = None,
        batch_size: int = 64, show_progress: bool = False) -> list[TaskResult]:
    """STS: Spearman (and Pearson) x100 of cosine similarity vs gold score, per dataset of (s1, s2, score)."""
    results = []
    for name, pairs in sets:
        t0 = time.perf_counter()
        pairs = pairs[:limit]
        a, b, gold = zip(*pairs)
        cos = _pair_cosines(model, list(a), list(b), batch_size, show_progress)
        metrics = {"spearman": _pct(spearman(cos, gold)), "pearson": _pct(pearson(cos, gold))}
        results.append(TaskResult("sts", name, metrics, len(pairs), seconds=time.perf_counter() - t0))
    return results


def pair(model: Model, sets: list[tuple[str, list[tuple[str, str, int]]]], limit: int | None = None,
         batch_size: int = 64, show_progress: bool = False) -> list[TaskResult]:
    """Pair classification (s1, s2, 0/1): Spearman x100 of cosine vs label (C-MTEB), best-threshold accuracy and
    AP x100. An accuracy no better than always answering the majority class is flagged `degenerate`."""
    results = []
    for name, pairs in sets:
        t0 = time.perf_counter()
        pairs = pairs[:limit]
        a, b, labels = zip(*pairs)
        cos = _pair_cosines(model, list(a), list(b), batch_size, show_progress)
        accuracy, threshold = best_threshold_accuracy(cos, labels)
        majority = max(np.mean(labels), 1 - np.mean(labels))
        metrics = {"spearman": _pct(spearman(cos, labels)), "accuracy": _pct(accuracy),
                   "ap": _pct(average_precision(cos, labels))}
        details: dict[str, Any] = {"threshold": threshold, "majority_rate": _pct(majority)}
        if accuracy <= majority + 1e-9:
            details["degenerate"] = "best-threshold accuracy equals the majority-class rate"
        results.append(TaskResult("pair", name, metrics, len(pairs), seconds=time.perf_counter() - t0,
                                  details=details))
    return results


def _exact_topk(Q: np.ndarray, D: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Row indices of the k highest inner products per query, best first."""
    out = np.empty((len(Q), k), dtype=np.int64)
    for lo in range(0, len(Q), chunk):
        s = Q[lo : lo + chunk] @ D.T
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, part, 1), axis=1, kind="stable")
        out[lo : lo + chunk] = np.take_along_axis(part, order, 1)
    return out


def _ir_metrics(runs: list[list[str]], qrels: list[dict[str, int]], prefix: str = "") -> dict[str, float]:
    def mean(f: Callable[[list[str], dict[str, int], int], float], k: int) -> float:
        return _pct(float(np.mean([f(r, q, k) for r, q in zip(runs, qrels)])))

    return {
        f"{prefix}ndcg@10": mean(ndcg_at_k, 10),
        f"{prefix}recall@100": mean(recall_at_k, 100),
        f"{prefix}mrr@10": mean(mrr_at_k, 10),
    }


def retrieval(model: Model, sets: list[tuple[str, data.RetrievalSet]], limit: int | None = None,
              batch_size: int = 32, show_progress: bool = False,
              index_factory: Callable[[int], Any] | None = None) -> list[TaskResult]:
    """Retrieval (BEIR sets): nDCG@10, Recall@100, MRR@10 x100 by exact cosine search, and by index_factory
    (ann_*)."""
    return [_retrieval_one(model, name, ds, limit, batch_size, show_progress, index_factory) for name, ds in sets]


def _retrieval_one(model: Model, name: str, ds: data.RetrievalSet, limit: int | None, batch_size: int,
                   show_progress: bool, index_factory: Callable[[int], Any] | None) -> TaskResult:
    t0 = time.perf_counter()
    qids = list(ds.queries)[:limit]
    doc_ids = list(ds.corpus)
    if limit:  # the queries' relevant documents plus the first `limit` others
        keep = {d for q in qids for d in ds.qrels[q]} | set(doc_ids[:limit])
        doc_ids = [d for d in doc_ids if d in keep]
    D = _embed(model, [ds.corpus[d] for d in doc_ids], batch_size, show_progress, side="document")
    Q = _embed(model, [ds.queries[q] for q in qids], batch_size, show_progress)
    k = min(100, len(doc_ids))
    qrels = [ds.qrels[q] for q in qids]
    runs = [[doc_ids[i] for i in row] for row in _exact_topk(Q, D, k)]
    details: dict[str, Any]
    metrics, details = _ir_metrics(runs, qrels), {"corpus": len(doc_ids)}
    if index_factory is not None:
        t1 = time.perf_counter()
        index = index_factory(D.shape[1])
        index.add(D, np.arange(len(doc_ids), dtype=np.int64))
        t2 = time.perf_counter()
        ids, _ = index.search(Q, k)
        details.update(ann_build_seconds=t2 - t1, ann_search_seconds=time.perf_counter() - t2)
        ann_runs = [[doc_ids[int(i)] for i in row if int(i) >= 0] for row in np.asarray(ids)]
        metrics.update(_ir_metrics(ann_runs, qrels, "ann_"))
    return TaskResult("retrieval", name, metrics, len(qids), seconds=time.perf_counter() - t0, details=details)


def word_vectors(model: Model) -> Any:
    """The model's word vectors (a static bundle's `wv`: index_to_key and vectors), or None."""
    try:
        return model.wv
    except (AttributeError, ValueError):  # InputError (a ValueError) for bundles that are not static
        return None


def _vocab(model: Model, task: str, restrict_vocab: int) -> tuple[np.ndarray, dict[str, int]]:
    """Unit vectors of the candidate words and a case-insensitive word -> row lookup (gensim-style)."""
    wv = word_vectors(model)
    if wv is None:
        raise ValueError(f"task {task} needs a static bundle with a vocabulary (model.wv)")
    words, vectors = wv.index_to_key, wv.vectors
    lookup: dict[str, int] = {}
    rows: list[int] = []
    for i, w in enumerate(words[:restrict_vocab]):
        if lookup.setdefault(w.lower(), len(rows)) == len(rows):  # the most frequent casing wins
            rows.append(i)
    return normalize(np.asarray(vectors)[rows]), lookup


def analogy(model: Model, sets: list[tuple[str, list[tuple[str, str, str, str, str]]]],
            limit: int | None = None, restrict_vocab: int = 300_000) -> list[TaskResult]:
    """Analogy accuracy x100 (3CosAdd, 3CosMul) over answerable questions among the first restrict_vocab words."""
    E, lookup = _vocab(model, "analogy", restrict_vocab)
    results = []
    for name, questions in sets:
        t0 = time.perf_counter()
        questions = questions[:limit]
        ok = [q for q in questions if all(w.lower() in lookup for w in q[1:])]
        a, b, c, d = (np.array([lookup[q[j].lower()] for q in ok], dtype=np.int64) for j in range(1, 5))
        hits = {"3cosadd": analogy_3cosadd(E, a, b, c) == d, "3cosmul": analogy_3cosmul(E, a, b, c) == d}
        sections: dict[str, dict[str, Any]] = {}
        for q in questions:
            sections.setdefault(q[0], {"n": 0, "answerable": 0})["n"] += 1
        sec = np.array([q[0] for q in ok])
        for s, info in sections.items():
            mask = sec == s
            info["answerable"] = int(mask.sum())
            info.update({m: _pct(h[mask].mean()) if mask.any() else math.nan for m, h in hits.items()})
        metrics = {m: _pct(h.mean()) if len(ok) else math.nan for m, h in hits.items()}
        results.append(
            TaskResult(
                "analogy",
                name,
                metrics,
                len(questions),
                len(ok) / max(len(questions), 1),
                time.perf_counter() - t0,
                {"sections": sections},
            )
        )
    return results


def wordsim(model: Model, sets: list[tuple[str, list[tuple[str, str, float]]]], limit: int | None = None,
            restrict_vocab: int = 300_000) -> list[TaskResult]:
    """Word similarity: Spearman (and Pearson) x100 of cosine vs human score over the covered pairs."""
    E, lookup = _vocab(model, "wordsim", restrict_vocab)
    results = []
    for name, pairs in sets:
        t0 = time.perf_counter()
        pairs = pairs[:limit]
        ok = [
            (lookup[a.lower()], lookup[b.lower()], s)
            for a, b, s in pairs
            if a.lower() in lookup and b.lower() in lookup
        ]
        cos = [float(E[i] @ E[j]) for i, j, _ in ok]
        gold = [s for *_, s in ok]
        metrics = {"spearman": _pct(spearman(cos, gold)), "pearson": _pct(pearson(cos, gold))}
        results.append(
            TaskResult(
                "wordsim",
                name,
                metrics,
                len(pairs),
                len(ok) / max(len(pairs), 1),
                time.perf_counter() - t0,
                {"covered": len(ok)},
            )
        )
    return results


def cluster(model: Model, sets: list[tuple[str, tuple[list[str], list[str]]]],
            seeds: Sequence[int] = (0, 1, 2), batch_size: int = 64,
            show_progress: bool = False) -> list[TaskResult]:
    """Clustering (texts, labels): V-measure x100 of k-means (k = number of labels), averaged over seeds.

    (`limit` is applied when the datasets are selected: sources sampled `limit` each, or a user's first rows.)"""
    results = []
    for name, (texts, labels) in sets:
        t0 = time.perf_counter()
        E = _embed(model, texts, batch_size, show_progress)
        k = len(set(labels))
        per_seed = [_pct(v_measure(labels, kmeans(E, k, seed=s))) for s in seeds]
        results.append(TaskResult("cluster", name, {"v_measure": float(np.mean(per_seed))}, len(texts),
                                  seconds=time.perf_counter() - t0, details={"k": k, "per_seed": per_seed}))
    return results


_FUNCS: dict[str, Callable[..., list[TaskResult]]] = {
    "sts": sts,
    "pair": pair,
    "retrieval": retrieval,
    "cluster": cluster,
    "analogy": analogy,
    "wordsim": wordsim,
}
_LANG_SETS = {"en": "stsb_en", "zh": "stsb_zh_cnsd"}


def select(task: str, data_dir: str | os.PathLike[str] | None = None, names: Sequence[str] | None = None,
           user: str | os.PathLike[str] | None = None, limit: int | None = None) -> list[tuple[str, Any]]:
    """The datasets a task runs: the user's one (`user`: a file or BEIR folder), else the built-in ones present
    (absent ones are skipped with a DatasetSkipped warning; DataNotFound when none is present)."""
    if user is not None:
        name, ds = data.user_dataset(task, user)
        if task == "cluster" and limit:
            ds = (ds[0][:limit], ds[1][:limit])
        return [(name, ds)]
    chosen: list[tuple[str, Any]] = []
    missing: list[str] = []
    for name, loader in data.BUILTIN[task].items():
        if names is not None and name not in names:
            continue
        try:
            if task == "cluster":  # a balanced sample of the sources, `limit` (default 500) each
                chosen.append((name, data.load_cluster_set(limit or 500, seed=0, data_dir=data_dir)))
            else:
                assert loader is not None  # only cluster's loader is None
                chosen.append((name, loader(data_dir)))
        except data.DataNotFound as exc:
            missing.append(str(exc))
    if not chosen:
        raise data.DataNotFound(missing[0] if missing else f"no {task} dataset selected")
    for note in missing:
        warnings.warn(f"{task}: skipped, {note}", DatasetSkipped, stacklevel=2)
    return chosen


def run_task(name: str, model: Model, data_dir: str | os.PathLike[str] | None = None,
             data_path: str | os.PathLike[str] | None = None, langs: Sequence[str] | None = None,
             datasets: Sequence[str] | None = None, **kw: Any) -> list[TaskResult]:
    """Run one task by name (see TASKS) on its built-in datasets (`datasets` picks some; `langs` for sts) or on
    the user's dataset at data_path; keyword arguments go to the task function."""
    if name not in _FUNCS:
        raise ValueError(f"unknown task {name!r}; expected one of {TASKS}")
    names = [_LANG_SETS.get(lang, lang) for lang in langs] if langs is not None else datasets
    if name in WORD_TASKS:
        word_vectors(model) or _vocab(model, name, 1)  # the model check comes before reading any data
    limit = kw.pop("limit", None) if name == "cluster" else None
    return _FUNCS[name](model, select(name, data_dir, names, data_path, limit), **kw)
