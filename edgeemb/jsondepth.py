"""Nesting depth of untrusted JSON (manifests, corpus lines), counted without recursion so no input can overflow."""
from __future__ import annotations

from typing import Any


def json_depth(value: Any, limit: int) -> int:
    """Depth of nested dicts/lists in a parsed JSON value; stops descending past `limit` (enough to refuse it)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, depth)
            if depth <= limit:
                stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest
