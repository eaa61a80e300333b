"""Compile a character map (string -> replacement) into a SentencePiece `precompiled_charsmap`, the blob that
`tokenizers.normalizers.Precompiled` reads, so a container's own normalisation table becomes a fast normaliser.

The blob is: u32 trie size in bytes, a darts-clone double-array trie over the keys' UTF-8 bytes (u32 units),
then the NUL-terminated replacements; a key's trie value is the byte offset of its replacement. Unit layout
(darts-clone): bits 0-7 label, bit 8 has-leaf, bit 9 offset-extension, bits 10-30 offset, bit 31 is-leaf (a
leaf unit holds the value in bits 0-30); a child with label c sits at (parent position ^ parent offset) ^ c,
and a node's value sits in its label-0 child.
"""
from __future__ import annotations

import struct
from collections import deque

import numpy as np

HAS_LEAF = 1 << 8
EXTENSION = 1 << 9
IS_LEAF = 1 << 31
MAX_OFFSET = 1 << 21


class _Node:
    __slots__ = ("children", "value")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.value: int | None = None


def _encode_offset(offset: int) -> int:
    if offset < MAX_OFFSET:
        return offset << 10
    if offset & 0xFF == 0 and offset >> 8 < MAX_OFFSET:
        return ((offset >> 8) << 10) | EXTENSION
    raise ValueError(f"double-array offset {offset} cannot be encoded")


def _find_base(used: np.ndarray, used_bases: set[int], labels: list[int]) -> int:
    """The first base, tried at each free slot for the first label (as darts-clone does), whose children all
    land on free slots other than 0 and that no other node uses."""
    start = 0
    while True:  # free slots in chunks; past the array every slot is free
        chunk = used[start:start + 1024]
        frees = (np.flatnonzero(~chunk) + start).tolist() if len(chunk) else range(start, start + 1024)
        for free in frees:
            base = free ^ labels[0]
            if base > 0 and base not in used_bases and all(
                    base ^ c and ((base ^ c) >= len(used) or not used[base ^ c]) for c in labels):
                return base
        start += 1024


def build_double_array(keys: dict[bytes, int]) -> list[int]:
    """darts-clone units for byte-string keys (no NUL bytes) mapping to values < 2**31."""
    root = _Node()
    for key, value in keys.items():
        if not key or 0 in key:
            raise ValueError(f"key {key!r} is empty or holds a NUL byte")
        node = root
        for byte in key:
            node = node.children.setdefault(byte, _Node())
        node.value = value
    units = [0]
    used = np.zeros(1024, dtype=bool)
    used[0] = True
    used_bases: set[int] = set()
    queue = deque([(root, 0)])
    while queue:
        node, pos = queue.popleft()
        labels = ([0] if node.value is not None else []) + sorted(node.children)
        if not labels:
            continue
        base = _find_base(used, used_bases, labels)
        used_bases.add(base)
        top = max(base ^ c for c in labels) + 1
        if top > len(units):
            units.extend([0] * (top - len(units)))
        while top > len(used):
            used = np.concatenate([used, np.zeros(len(used), dtype=bool)])
        units[pos] |= _encode_offset(pos ^ base) | (HAS_LEAF if node.value is not None else 0)
        for c in labels:
            used[base ^ c] = True
        if node.value is not None:
            units[base] = IS_LEAF | node.value
        for c in sorted(node.children):
            units[base ^ c] = c
            queue.append((node.children[c], base ^ c))
    # a lookup may probe base ^ c for any byte c: pad to whole 256-unit blocks (readers do not bounds-check)
    top = ((max(used_bases, default=0) >> 8) + 1) << 8
    return units + [0] * max(0, top - len(units))


def prefix_values(units: list[int], key: bytes) -> list[int]:
    """Values of every key that is a prefix of `key`, shortest first (darts-clone common-prefix search)."""
    def offset(unit: int) -> int:
        return (unit >> 10) << ((unit & EXTENSION) >> 6)

    out, pos = [], offset(units[0])
    for c in key:
        pos ^= c
        if pos >= len(units) or (units[pos] & (IS_LEAF | 0xFF)) != c:
            break
        unit = units[pos]
        pos ^= offset(unit)
        if unit & HAS_LEAF:
            out.append(units[pos] & (IS_LEAF - 1))
    return out


def compile_charsmap(mapping: dict[str, str]) -> bytes:
    """A precompiled_charsmap blob for `mapping` (key -> replacement; "" deletes the key)."""
    pool, where = bytearray(), {}
    keys = {}
    for key, replacement in mapping.items():
        if replacement not in where:
            where[replacement] = len(pool)
            pool += replacement.encode("utf-8") + b"\0"
        keys[key.encode("utf-8")] = where[replacement]
    units = build_double_array(keys)
    trie = struct.pack(f"<{len(units)}I", *units)
    return struct.pack("<I", len(trie)) + trie + bytes(pool)
