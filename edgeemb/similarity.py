"""Cosine similarity and exact top-k, in numpy."""
from __future__ import annotations

import numpy as np

from .encode.pooling import normalize


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray | float:
    """Cosine similarity: vector·vector -> float, matrix×matrix -> (n, m)."""
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    sims = normalize(np.atleast_2d(a)) @ normalize(np.atleast_2d(b)).T
    return float(sims[0, 0]) if a.ndim == 1 and b.ndim == 1 else sims


def top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores per row, best first."""
    scores = np.atleast_2d(scores)
    k = min(k, scores.shape[1])
    if k <= 0:
        return np.zeros((scores.shape[0], 0), np.int64), np.zeros((scores.shape[0], 0), scores.dtype)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)
