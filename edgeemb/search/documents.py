"""A write's documents: checked against the store (ids, metadata, texts), chunked from lists or streams alike."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import Any

from ..encode.batching import check_texts
from ..errors import InputError
from .filters import facets
from .store import DocStore
from .validate import check_id_list, check_metadata

_END = object()


def check_all(store: DocStore, texts: Iterable[str], ids: Iterable[str] | None,
              metadata: Iterable[dict[str, Any]] | None, mode: str,
              must_exist: bool) -> tuple[list[str], list[str] | None, list[dict[str, Any]] | None]:
    """Validate a write (texts, ids, metadata) without generating ids or empty metadata (None stays None)."""
    texts = check_texts(texts)
    n = len(texts)
    if ids is None and mode != "add":
        raise InputError("upsert needs the ids of the documents it replaces or adds")
    if isinstance(ids, str):
        raise InputError("ids must be a list of str, not one str")
    if isinstance(metadata, dict):
        raise InputError("metadata must be a list of dicts, one per text (not one dict)")
    ids = None if ids is None else list(ids)
    metas = None if metadata is None else list(metadata)
    if (ids is not None and len(ids) != n) or (metas is not None and len(metas) != n):
        raise InputError(f"got {n} texts, {n if ids is None else len(ids)} ids and "
                         f"{n if metas is None else len(metas)} metadata entries")
    check_metadata(metas or [])
    if ids is not None:
        if check_id_list(ids) != ids:
            dup = next(i for i in ids if ids.count(i) > 1)
            raise InputError(f"id {dup!r} appears more than once in one call")
        taken = store.labels_of(ids)
        if mode == "add" and taken:
            raise InputError(f"id {next(iter(taken))!r} is already in the index (use upsert to replace it)")
        if must_exist and len(taken) < n:
            raise InputError(f"id {next(i for i in ids if i not in taken)!r} is not in the index")
    return texts, ids, metas


def fill_in(store: DocStore, texts: list[str], ids: list[str] | None, metas: list[dict[str, Any]] | None,
            mode: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Ids generated for a plain add (doc-<label>); metadata {} for new documents, and for an upsert without
    metadata, what the store holds (an upsert of the text alone keeps the metadata)."""
    if ids is None:
        start = int(store.meta["next_label"])
        ids = [f"doc-{start + i}" for i in range(len(texts))]
    if metas is None:
        stored = store.get_many(ids) if mode == "upsert" else {}
        metas = [stored[i][1].metadata if i in stored else {} for i in ids]
    return ids, metas


def merged_metadata(stored: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    """update(): the stored metadata with a change merged in (a None value removes the key)."""
    return {key: v for key, v in {**stored, **change}.items() if v is not None}


def facet_rows(labels: Iterable[int], metas: Iterable[dict[str, Any]]) -> list[tuple[int, str, str]]:
    """(label, field, key) rows of the facets table for documents' metadata."""
    try:
        return [(int(lab), f, v) for lab, m in zip(labels, metas) for f, v in facets(m)]
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"metadata must be JSON-serialisable ({exc})") from None


def chunks(texts: Iterable[str], ids: Iterable[str] | None, metadata: Iterable[dict[str, Any]] | None,
           size: int) -> Iterator[tuple[list[str], list[str] | None, list[dict[str, Any]] | None]]:
    """(texts, ids | None, metadata | None) in chunks of `size`; only one chunk of a stream is held at a time."""
    t_it = iter(texts)
    i_it = None if ids is None else iter(ids)
    m_it = None if metadata is None else iter(metadata)
    while True:
        t = list(islice(t_it, size))
        i = None if i_it is None else list(islice(i_it, len(t)))
        m = None if m_it is None else list(islice(m_it, len(t)))
        if not t:
            if any(it is not None and next(it, _END) is not _END for it in (i_it, m_it)):
                raise InputError("there are more ids or metadata entries than texts (the texts were stored)")
            return
        yield t, i, m
