"""Metadata filters: how values are stored for lookup (facets) and how a filter becomes a set of labels.

`{"lang": "zh", "topic": ["a", "b"]}` keeps documents whose field equals the value (a list means any of them; a
list-valued metadata field matches when it contains the value; several fields must all match). A field that no
stored document has is an InputError naming the known ones: a typo should not look like "no results".
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .store import DocStore


def facet_key(value: Any) -> str:
    """How a metadata value is stored for filtering: canonical JSON (2.0 == 2; True stays distinct from 1)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)


def facets(meta: dict[str, Any]) -> set[tuple[str, str]]:
    """(field, key) pairs a document can be filtered by; a list value contributes each element."""
    out = set()
    for name, value in meta.items():
        for v in (value if isinstance(value, list) else [value]):
            out.add((name, facet_key(v)))
    return out


def filter_labels(store: DocStore, filter: dict[str, Any]) -> np.ndarray:
    """Sorted labels of the documents whose metadata match a filter."""
    if not isinstance(filter, dict) or not filter:
        raise InputError(f"filter must be a non-empty dict of metadata field -> value, got {filter!r:.80}")
    result = None
    for name, value in filter.items():
        if not isinstance(name, str):
            raise InputError(f"filter field {name!r} must be a str")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values:
            raise InputError(f"filter on {name!r} lists no values")
        try:
            keys = sorted({facet_key(v) for v in values})
        except (TypeError, ValueError) as exc:
            raise InputError(f"filter value for {name!r} is not JSON-serialisable ({exc})") from None
        if not store.has_field(name):
            raise InputError(f"no document has metadata field {name!r} (fields present: "
                             f"{', '.join(map(repr, store.fields())) or 'none'})")
        labels = store.labels_with(name, keys)
        result = labels if result is None else np.intersect1d(result, labels, assume_unique=True)
    return result
