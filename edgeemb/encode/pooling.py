"""Pooling and normalisation as plain numpy functions (the graph fuses the same maths); the only place that normalises."""
from __future__ import annotations

import numpy as np
import numpy.typing as npt

POOLINGS = ("mean", "cls", "max", "last")


def mean_pooling(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Average of the unmasked token vectors, (batch, seq, dim) -> (batch, dim), as a matmul."""
    m = mask.astype(tokens.dtype)
    summed = np.einsum("bs,bsd->bd", m, tokens)
    mean: np.ndarray = summed / np.maximum(m.sum(axis=1, keepdims=True), 1e-9)
    return mean


def cls_pooling(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The first token's vector (BERT's [CLS])."""
    return tokens[:, 0, :]


def max_pooling(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Element-wise max over unmasked tokens."""
    masked = np.where(mask[:, :, None].astype(bool), tokens, -np.inf)
    pooled: np.ndarray = masked.max(axis=1)
    return pooled


def last_token_pooling(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The last unmasked token's vector, correct under left and right padding."""
    seq = mask.shape[1]
    last = seq - 1 - np.argmax(mask[:, ::-1].astype(bool), axis=1)
    pooled: np.ndarray = tokens[np.arange(tokens.shape[0]), last]
    return pooled


_POOLERS = {"mean": mean_pooling, "cls": cls_pooling, "max": max_pooling, "last": last_token_pooling}


def pool(tokens: np.ndarray, mask: np.ndarray, how: str) -> np.ndarray:
    """Pool token vectors by name: one of POOLINGS."""
    try:
        return _POOLERS[how](tokens, mask)
    except KeyError:
        raise ValueError(f"unknown pooling {how!r}; expected one of {', '.join(POOLINGS)}") from None


def normalize(x: np.ndarray, eps: float = 1e-12) -> npt.NDArray[np.float32]:
    """L2-normalise rows (or a single vector); zero vectors stay zero."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit: npt.NDArray[np.float32] = (x / np.maximum(norms, eps)).astype(np.float32, copy=False)
    return unit


def finish(x: np.ndarray, unit: bool, is_unit: bool) -> npt.NDArray[np.float32]:
    """The one decision to normalise: unit length when asked (`unit`) and not already (`is_unit`); float32."""
    return normalize(x) if unit and not is_unit else x.astype(np.float32, copy=False)


def truncate_dim(x: np.ndarray, dim: int, renormalize: bool = True) -> np.ndarray:
    """Matryoshka-style truncation to the first `dim` components, renormalised by default."""
    if not 0 < dim <= x.shape[-1]:
        raise ValueError(f"cannot truncate {x.shape[-1]}-dim vectors to {dim}")
    out = x[..., :dim]
    return normalize(out) if renormalize else out
