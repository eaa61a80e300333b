"""Evaluation metrics in plain numpy (MTEB / BEIR / gensim conventions)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

_CHUNK_ELEMENTS = 1 << 23  # score-matrix elements per analogy chunk (32 MiB of float32)


def _rank(a: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank."""
    order = np.argsort(a, kind="mergesort")
    s = a[order]
    new = np.r_[True, s[1:] != s[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(a)]
    ranks = np.empty(len(a))
    ranks[order] = ((starts + ends + 1) / 2.0)[np.cumsum(new) - 1]
    return ranks


def pearson(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Pearson correlation; nan when undefined (n < 2, constant or non-finite input)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy) / denom if denom > 0 else math.nan


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties); nan when undefined."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) != len(y):
        raise ValueError(f"length mismatch: {len(x)} vs {len(y)}")
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return math.nan
    return pearson(_rank(x), _rank(y))


def ndcg_at_k(ranked_ids: Sequence[str], qrels: dict[str, int], k: int) -> float:
    """nDCG@k with linear gain rel / log2(i + 1) (pytrec_eval ndcg_cut); 0 when nothing is relevant."""
    ideal = sorted((r for r in qrels.values() if r > 0), reverse=True)[:k]
    idcg = sum(r / math.log2(i + 2) for i, r in enumerate(ideal))
    if idcg == 0:
        return 0.0
    dcg = sum(max(qrels.get(d, 0), 0) / math.log2(i + 2) for i, d in enumerate(ranked_ids[:k]))
    return dcg / idcg


def recall_at_k(ranked_ids: Sequence[str], qrels: dict[str, int], k: int) -> float:
    """Fraction of relevant (rel > 0) documents found in the top k."""
    relevant = {d for d, r in qrels.items() if r > 0}
    return len(relevant.intersection(ranked_ids[:k])) / len(relevant) if relevant else 0.0


def mrr_at_k(ranked_ids: Sequence[str], qrels: dict[str, int], k: int) -> float:
    """Reciprocal rank of the first relevant document within the top k."""
    for i, d in enumerate(ranked_ids[:k]):
        if qrels.get(d, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def best_threshold_accuracy(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[float, float]:
    """Best accuracy of `score > threshold` over all thresholds; returns (accuracy, threshold)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    n = len(s)
    tp = np.r_[0, np.cumsum(y)]  # positives among the top i, i = 0..n
    correct = tp + (np.count_nonzero(~y) - (np.arange(n + 1) - tp))
    valid = np.r_[True, s[1:] != s[:-1], True]  # only cut between distinct scores
    i = int(np.argmax(np.where(valid, correct, -1)))
    threshold = np.r_[np.inf, (s[:-1] + s[1:]) / 2, -np.inf][i]
    return float(correct[i] / n), float(threshold)


def average_precision(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Average precision, sum of (R_n - R_{n-1}) * P_n over distinct score thresholds (sklearn's definition)."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    if not y.any():
        return math.nan
    last = np.r_[s[1:] != s[:-1], True]  # last index of each tie group
    tp = np.cumsum(y)[last]
    precision = tp / (np.flatnonzero(last) + 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _sq_dist(X: np.ndarray, C: np.ndarray) -> np.ndarray:
    d2: np.ndarray = np.maximum((X * X).sum(1)[:, None] - 2 * X @ C.T + (C * C).sum(1)[None, :], 0)
    return d2


def _kmeans_pp(X: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    centers = [X[rng.integers(len(X))]]
    d2 = _sq_dist(X, centers[0][None])[:, 0]
    for _ in range(1, k):
        total = d2.sum()
        i = rng.choice(len(X), p=d2 / total) if total > 0 else rng.integers(len(X))
        centers.append(X[i])
        d2 = np.minimum(d2, _sq_dist(X, X[i][None])[:, 0])
    return np.array(centers)


def kmeans(X: np.ndarray, k: int, seed: int = 0, n_init: int = 3, max_iter: int = 100) -> np.ndarray:
    """Lloyd k-means with k-means++ init; labels of the best of n_init runs (lowest inertia)."""
    X = np.asarray(X, dtype=np.float64)
    if not 1 <= k <= len(X):
        raise ValueError(f"k={k} must be between 1 and the number of points ({len(X)})")
    rng = np.random.default_rng(seed)
    best: np.ndarray | None = None
    best_inertia = np.inf
    for _ in range(n_init):
        C = _kmeans_pp(X, k, rng)
        labels = None
        for _ in range(max_iter):
            d2 = _sq_dist(X, C)
            new = d2.argmin(1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            for j in range(k):
                members = X[labels == j]
                # an empty cluster takes the point farthest from its centre
                C[j] = members.mean(0) if len(members) else X[d2[np.arange(len(X)), labels].argmax()]
        inertia = _sq_dist(X, C)[np.arange(len(X)), labels].sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    if best is None:  # n_init < 1, or no run had a finite inertia (non-finite points)
        raise ValueError(f"k-means found no clustering of finite inertia (n_init={n_init})")
    return best


def _entropy(counts: np.ndarray) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def v_measure(labels_true: npt.ArrayLike, labels_pred: npt.ArrayLike) -> float:
    """V-measure (beta = 1): harmonic mean of homogeneity and completeness."""
    _, t = np.unique(np.asarray(labels_true), return_inverse=True)
    _, p = np.unique(np.asarray(labels_pred), return_inverse=True)
    cont = np.zeros((t.max() + 1, p.max() + 1))
    np.add.at(cont, (t, p), 1)
    h_c, h_k = _entropy(cont.sum(1)), _entropy(cont.sum(0))
    joint = _entropy(cont.ravel())
    homogeneity = 1.0 if h_c == 0 else 1 - (joint - h_k) / h_c  # H(C|K) = H(C,K) - H(K)
    completeness = 1.0 if h_k == 0 else 1 - (joint - h_c) / h_k
    total = homogeneity + completeness
    return 0.0 if total == 0 else 2 * homogeneity * completeness / total


_Score = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _analogy(E: np.ndarray, a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike,
             score: _Score) -> np.ndarray:
    """Best candidate row of E per question, excluding the question's three words, in bounded chunks."""
    a, b, c = (np.asarray(v, dtype=np.int64) for v in (a, b, c))
    out = np.empty(len(a), dtype=np.int64)
    step = max(1, _CHUNK_ELEMENTS // max(len(E), 1))
    for lo in range(0, len(a), step):
        sl = slice(lo, lo + step)
        s = score(E, a[sl], b[sl], c[sl])
        rows = np.arange(len(s))
        for q in (a[sl], b[sl], c[sl]):
            s[rows, q] = -np.inf
        out[sl] = s.argmax(1)
    return out


def _cosadd(E: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    s: np.ndarray = (E[b] - E[a] + E[c]) @ E.T
    return s


def _cosmul(E: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    u, inv = np.unique(np.concatenate([a, b, c]), return_inverse=True)  # questions share words: fewer rows
    shifted = E[u] @ E.T
    shifted += 1
    shifted /= 2  # cosines mapped to [0, 1]
    ia, ib, ic = inv.reshape(3, -1)
    s: np.ndarray = shifted[ib]
    den = shifted[ia]
    s *= shifted[ic]
    den += eps
    s /= den
    return s


def analogy_3cosadd(E: np.ndarray, a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike) -> np.ndarray:
    """a : b :: c : ? by argmax cos(d, b) - cos(d, a) + cos(d, c) over unit rows E, query words excluded."""
    return _analogy(E, a, b, c, _cosadd)


def analogy_3cosmul(E: np.ndarray, a: npt.ArrayLike, b: npt.ArrayLike, c: npt.ArrayLike) -> np.ndarray:
    """a : b :: c : ? by 3CosMul (Levy & Goldberg 2014) with cosines mapped to [0, 1] and eps = 1e-3."""
    return _analogy(E, a, b, c, _cosmul)
