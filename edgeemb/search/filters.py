"""Metadata filters: how values are stored for lookup (facets) and how a filter becomes a set of labels.

The grammar (chroma's `where`, minus string operators):

    filter := {field: cond, ...}                 every field's condition holds
            | {"$and": [filter, ...]} | {"$or": [filter, ...]}
    cond   := value                              equal (2 == 2.0; True is not 1); a list-valued field: contains it
            | [v, ...]                           any of them (same as {"$in": [...]})
            | {"$eq": v} | {"$ne": v} | {"$in": [v, ...]} | {"$nin": [v, ...]}
            | {"$gt" | "$gte" | "$lt" | "$lte": number, ...}   numeric range; several bounds in one dict all hold

`$ne` / `$nin` keep every document the positive form does not, documents without the field included (as in
MongoDB). Ranges compare numbers only (int and float fields; strings and booleans never match a range) as SQLite
REAL, so integers beyond 2**53 compare approximately. An unknown operator, a field no stored document has, an empty
list or a non-numeric bound is an InputError naming it: a typo should not look like "no results".
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError

if TYPE_CHECKING:
    from .store import DocStore

EQUALITY = ("$eq", "$ne", "$in", "$nin")
RANGES = ("$gt", "$gte", "$lt", "$lte")
LOGICAL = ("$and", "$or")
_OPERATORS = ", ".join(LOGICAL + EQUALITY + RANGES)


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
    return _Evaluator(store).filter(filter, "filter")


class _Evaluator:
    """Evaluates one filter against a store (the set of all labels is read at most once)."""

    def __init__(self, store: DocStore):
        self.store = store
        self._all: np.ndarray | None = None

    def everything(self) -> np.ndarray:
        if self._all is None:
            self._all = self.store.all_labels()
        return self._all

    def filter(self, node: Any, where: str) -> np.ndarray:
        if not isinstance(node, dict) or not node:
            raise InputError(f"{where} must be a non-empty dict of metadata field -> condition, got {node!r:.80}")
        result = None
        for name, cond in node.items():
            if not isinstance(name, str):
                raise InputError(f"{where}: field {name!r} must be a str")
            if name in LOGICAL:
                labels = self.logical(name, cond, f"{where}[{name!r}]")
            elif name.startswith("$"):
                raise InputError(f"{where}: unsupported operator {name!r} (supported: {_OPERATORS})")
            else:
                labels = self.field(name, cond, f"{where}[{name!r}]")
            result = labels if result is None else np.intersect1d(result, labels, assume_unique=True)
        assert result is not None  # node is a non-empty dict
        return result

    def logical(self, op: str, parts: Any, where: str) -> np.ndarray:
        if not isinstance(parts, (list, tuple)) or not parts:
            raise InputError(f"{where} needs a non-empty list of filters, got {parts!r:.80}")
        sets = [self.filter(p, f"{where}[{i}]") for i, p in enumerate(parts)]
        out = sets[0]
        for other in sets[1:]:
            out = np.intersect1d(out, other, assume_unique=True) if op == "$and" else np.union1d(out, other)
        return out

    def field(self, name: str, cond: Any, where: str) -> np.ndarray:
        ops = _operators(cond, where)
        if not self.store.has_field(name):
            raise InputError(f"no document has metadata field {name!r} (fields present: "
                             f"{', '.join(map(repr, self.store.fields())) or 'none'})")
        if ops is None:  # a plain value or list: equality / any of
            return self.equal(name, cond, where)
        bounds = {op: v for op, v in ops.items() if op in RANGES}
        result = self.range(name, bounds, where) if bounds else None
        for op, value in ops.items():
            if op in RANGES:
                continue
            labels = self.equal(name, value if op in ("$in", "$nin") else [value], f"{where}[{op!r}]",
                                need_list=op in ("$in", "$nin"))
            if op in ("$ne", "$nin"):
                labels = np.setdiff1d(self.everything(), labels, assume_unique=True)
            result = labels if result is None else np.intersect1d(result, labels, assume_unique=True)
        assert result is not None  # ops holds at least one operator
        return result

    def equal(self, name: str, value: Any, where: str, need_list: bool = False) -> np.ndarray:
        if need_list and not isinstance(value, (list, tuple, set, frozenset)):
            raise InputError(f"{where} needs a list of values, got {value!r:.80}")
        values = list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]
        if not values:
            raise InputError(f"{where} lists no values")
        try:
            keys = sorted({facet_key(v) for v in values})
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: value is not JSON-serialisable ({exc})") from None
        return self.store.labels_with(name, keys)

    def range(self, name: str, bounds: dict[str, Any], where: str) -> np.ndarray:
        for op, bound in bounds.items():
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or np.isnan(bound):
                raise InputError(f"{where}[{op!r}] needs a number, got {bound!r:.80}")
            if isinstance(bound, int) and abs(bound) > 2**63:
                raise InputError(f"{where}[{op!r}]: {bound} is outside the range a filter compares")
        return self.store.labels_in_range(name, bounds)


def _operators(cond: Any, where: str) -> dict[str, Any] | None:
    """The operator dict of a condition; None for a plain value (a dict without '$' keys is a value too)."""
    if not isinstance(cond, dict) or not any(isinstance(k, str) and k.startswith("$") for k in cond):
        return None
    for op in cond:
        if op not in EQUALITY + RANGES:
            raise InputError(f"{where}: unsupported operator {op!r} (supported on a field: "
                             f"{', '.join(EQUALITY + RANGES)}; to match a dict value, use keys without '$')")
    return cond
