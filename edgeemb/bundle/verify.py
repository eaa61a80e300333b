"""Checking a bundle's files against its manifest: sizes and sha256, hashed once per unchanged file."""
from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..errors import BundleError
from .manifest import Manifest


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify_files(folder: str | os.PathLike[str], manifest: Manifest, cache: bool = True) -> None:
    """Check every listed file exists with the recorded size and sha256.

    cache: trust a file hashed before whose path, size, inode and mtime are unchanged (recorded in
    <home>/verified.json), so repeated CLI calls do not re-hash a large bundle. What that trades: a file
    rewritten in place with its size and mtime forged back is not re-hashed; pass cache=False (or
    `load(verify="full")`) to hash everything.
    """
    folder = Path(folder)
    known = _HashCache.load() if cache else None
    for name, info in manifest.files.items():
        path = folder / name
        try:
            st = path.lstat()
        except OSError:
            raise BundleError(f"{path}: listed in the manifest but missing") from None
        if stat.S_ISLNK(st.st_mode):
            raise BundleError(f"{path}: is a symbolic link; a bundle holds only regular files")
        if not stat.S_ISREG(st.st_mode):
            raise BundleError(f"{path}: listed in the manifest but not a regular file")
        if st.st_size != info["size"]:
            raise BundleError(f"{path}: size {st.st_size} differs from the manifest's {info['size']} (truncated?)")
        key = _stat_key(path, st)
        if known is not None and known.get(key) == info["sha256"]:
            continue
        if sha256_file(path) != info["sha256"]:
            raise BundleError(f"{path}: sha256 differs from the manifest (file changed or corrupt)")
        if known is not None:
            known.put(key, info["sha256"])
    if known is not None:
        known.save()


def file_matches(path: str | os.PathLike[str], sha256: str, cache: bool = True) -> bool:
    """Whether a file's sha256 is `sha256`, trusting the hash cache for an unchanged file (see verify_files)."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError:
        return False
    known = _HashCache.load() if cache else None
    key = _stat_key(path, st)
    if known is not None and known.get(key) == sha256:
        return True
    if sha256_file(path) != sha256:
        return False
    if known is not None:
        known.put(key, sha256)
        known.save()
    return True


def _stat_key(path: Path, st: os.stat_result) -> str:
    return f"{path.resolve()}|{st.st_size}|{st.st_ino}|{st.st_dev}|{st.st_mtime_ns}"


class _HashCache:
    """sha256 of files already verified, keyed by path and stat; kept small, written atomically."""

    LIMIT = 512

    def __init__(self, path: Path, entries: dict[str, str]):
        self.path, self.entries, self.changed = path, entries, False

    @classmethod
    def load(cls) -> _HashCache:
        from ..paths import home

        path = home() / "verified.json"
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(entries, dict):
                entries = {}
        except (OSError, ValueError):
            entries = {}
        return cls(path, entries)

    def get(self, key: str) -> str | None:
        value = self.entries.get(key)
        return value if isinstance(value, str) else None

    def put(self, key: str, sha: str) -> None:
        self.entries.pop(key, None)
        self.entries[key] = sha  # newest last; the oldest are dropped past LIMIT
        self.changed = True

    def save(self) -> None:
        if not self.changed:
            return
        keep = dict(list(self.entries.items())[-self.LIMIT:])
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path, json.dumps(keep).encode())
        except OSError:
            pass  # a read-only home only costs re-hashing next time


def file_entry(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest's record of one file: sha256 and size."""
    return {"sha256": sha256_file(path), "size": os.path.getsize(path)}
