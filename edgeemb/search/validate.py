"""Argument checks of the index API: each bad argument becomes an InputError naming it, never a raw TypeError."""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..encode.batching import check_texts
from ..errors import InputError

MAX_EF = 2**31 - 1  # hnswlib takes ef as a C size_t; past the number of documents a bigger ef changes nothing


def positive_int(name: str, value: Any, limit: int = 2**63 - 1) -> int:
    """A positive int (bool refused: True is not a count)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 < value <= limit:
        raise InputError(f"{name} must be a positive int{f' (at most {limit})' if limit < 2**63 - 1 else ''}, "
                         f"got {value!r:.80}")
    return int(value)


def check_ef(ef: Any) -> int | None:
    """None (the index's ef_search) or a positive int up to MAX_EF."""
    return None if ef is None else positive_int("ef", ef, MAX_EF)


def check_create(dim: Any, M: Any, ef_construction: Any, ef_search: Any, capacity: Any,
                 compact_threshold: Any) -> None:
    """The settings of a new index."""
    positive_int("dim", dim, 1 << 16)
    positive_int("M", M, 1024)
    positive_int("ef_construction", ef_construction, MAX_EF)
    positive_int("ef_search", ef_search, MAX_EF)
    positive_int("capacity", capacity, 1 << 34)
    if isinstance(compact_threshold, bool) or not isinstance(compact_threshold, (int, float)) \
            or not 0 < compact_threshold <= 1:
        raise InputError(f"compact_threshold must be in (0, 1], got {compact_threshold!r:.80}")


def as_matrix(vectors: Any, name: str = "vectors") -> np.ndarray:
    """A numeric array as float32, finite; InputError for str/object/bool arrays, ragged lists or NaN."""
    if isinstance(vectors, (str, bytes, bytearray, memoryview)):
        raise InputError(f"{name} must be numbers (an array or list of floats), got {type(vectors).__name__}")
    try:
        arr = np.asarray(vectors)
    except (TypeError, ValueError) as exc:  # ragged nested lists
        raise InputError(f"{name} is not a rectangular array of numbers ({str(exc).splitlines()[0]})") from None
    if arr.dtype.kind not in "iuf":
        raise InputError(f"{name} must hold numbers, got an array of dtype {arr.dtype} "
                         f"({'str' if arr.dtype.kind in 'US' else arr.dtype.kind})")
    arr = arr.astype(np.float32, copy=False)
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contain NaN or infinity" if name.endswith("s") else
                         f"{name} contains NaN or infinity")
    return arr


def check_vectors(vectors: Any, n: int, dim: int, name: str = "vectors") -> np.ndarray:
    """An (n, dim) finite float32 matrix."""
    arr = as_matrix(vectors, name)
    if arr.ndim != 2 or arr.shape != (n, dim):
        raise InputError(f"{name} have shape {arr.shape}, expected ({n}, {dim})")
    return arr


@dataclass
class Queries:
    """A parsed search query: texts or vectors, and whether the caller asked for one (hits) or many (lists)."""

    texts: list[str] | None
    vectors: np.ndarray | None  # float32 (n, dim)
    single: bool


def parse_queries(query: Any, dim: int) -> Queries:
    """One str or vector gives hits; a list of str or an (n, dim) matrix gives a list of hit lists."""
    if isinstance(query, str):
        return Queries([_check_query_text(query, "query")], None, True)
    if query is None:
        raise InputError("query is None; pass a str, a list of str, a vector or an (n, dim) matrix")
    if isinstance(query, (bytes, bytearray, memoryview)):
        raise InputError(f"query is {type(query).__name__}; decode it to str first (or pass a vector)")
    if isinstance(query, (list, tuple)) and query and any(isinstance(q, str) for q in query):
        for i, q in enumerate(query):
            if not isinstance(q, str):
                raise InputError(f"queries[{i}] is {type(q).__name__}: a list of queries holds only str (or pass "
                                 f"an (n, {dim}) matrix of vectors)")
        return Queries([_check_query_text(q, f"queries[{i}]") for i, q in enumerate(query)], None, False)
    if isinstance(query, (list, tuple)) and not query:
        return Queries([], None, False)
    if not isinstance(query, (list, tuple, np.ndarray)):
        raise InputError(f"query must be a str, a list of str, a vector or an (n, {dim}) matrix, got "
                         f"{type(query).__name__}")
    arr = as_matrix(query, "query vector")
    if arr.ndim == 1:
        if arr.shape[0] != dim:
            raise InputError(f"query vector has dimension {arr.shape[0]}, the index holds {dim}")
        return Queries(None, arr[None, :], True)
    if arr.ndim == 2:
        if arr.shape[1] != dim:
            raise InputError(f"query matrix has shape {arr.shape}: each row must be a vector of the index's "
                             f"dimension {dim}")
        return Queries(None, arr, False)
    raise InputError(f"query has shape {arr.shape}: pass one vector ({dim},) or a matrix (n, {dim})")


def _check_query_text(text: str, where: str) -> str:
    try:
        check_texts([text])
    except InputError as exc:
        raise InputError(f"{where}{str(exc).removeprefix('texts[0]')}") from None
    if not text.strip():
        raise InputError(f"{where} is empty: there is nothing to search for (an empty query would rank documents "
                         f"by their distance to the embedding of no text)")
    return text


def check_id_list(ids: Any, name: str = "ids") -> list[str]:
    """A list (any iterable but str) of non-empty str ids, duplicates dropped in order."""
    if isinstance(ids, str):
        raise InputError(f"{name} must be a list of str, not one str (wrap one id in a list)")
    if ids is None or isinstance(ids, bytes) or not isinstance(ids, Iterable):
        raise InputError(f"{name} must be a list of str ids, got {type(ids).__name__}")
    out = list(ids)
    for i, doc_id in enumerate(out):
        if not isinstance(doc_id, str) or not doc_id:
            raise InputError(f"{name}[{i}] must be a non-empty str, got {doc_id!r:.80}")
    return list(dict.fromkeys(out))


def check_metadata(metas: Sequence[Any], name: str = "metadata") -> None:
    """Each entry a dict with str keys."""
    for i, m in enumerate(metas):
        if not isinstance(m, dict) or not all(isinstance(key, str) for key in m):
            raise InputError(f"{name}[{i}] must be a dict with str keys, got {m!r:.80}")
