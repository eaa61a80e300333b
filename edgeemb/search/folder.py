"""What an index folder holds: the index's own files (removed or replaced by edgeemb) and everything else (never)."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
from fnmatch import fnmatchcase
from pathlib import Path

from ..atomic import fsync_dir
from ..errors import IndexStoreError
from .store import STORE

# every file an index (plain, hybrid, binary codes) writes in its folder, temporary files included
OWN_FILES = (STORE, f"{STORE}-wal", f"{STORE}-shm", f"{STORE}-journal", "writer.lock", "graph.*.bin",
             ".graph.*.bin.tmp", "fine.i8", "lexical.bm25", "codes.*.bin", "rows.*.i8", ".*.tmp-*")
BUNDLE_MANIFEST = "edgeemb.json"


def is_own_file(name: str) -> bool:
    """Whether a file name is one an index writes (so edgeemb may remove or replace it)."""
    return any(fnmatchcase(name, pattern) for pattern in OWN_FILES)


def foreign_entries(folder: Path) -> list[str]:
    """Names in `folder` that are not the index's own files (sorted); [] for a missing folder."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise IndexStoreError(f"cannot list {folder} ({exc.strerror or exc})") from None
    return sorted(n for n in names if not (is_own_file(n) and (folder / n).is_file()))


def check_new_index_folder(path: Path) -> None:
    """Refuse a path where a new index must not go: a file, a bundle, or a folder holding other files."""
    if path.exists() and not path.is_dir():
        raise IndexStoreError(f"{path} is a file, not a folder; choose a new or empty folder for the index")
    if (path / BUNDLE_MANIFEST).is_file():
        raise IndexStoreError(f"{path} is a bundle folder (it holds {BUNDLE_MANIFEST}); put the index in a folder "
                              f"of its own")
    other = foreign_entries(path)
    if other:
        shown = ", ".join(other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        raise IndexStoreError(f"{path} is a non-empty folder that is not an index (it holds {shown}); choose a new "
                              f"or empty folder, so the index's files never mix with yours")


def not_an_index_message(path: Path) -> str:
    """Why `path` cannot be opened as an index, with what to do instead."""
    if (path / BUNDLE_MANIFEST).is_file():
        return (f"{path} is a bundle, not an index: build an index with it first, e.g. `edgeemb index build {path} "
                f"CORPUS -o INDEX_DIR` (or edgeemb.Index.create(INDEX_DIR, edgeemb.load({str(path)!r}))), then "
                f"search INDEX_DIR")
    if not path.exists():
        return f"no index at {path} (the folder does not exist)"
    return f"no index at {path} ({STORE} missing)"


def remove_own_files(folder: Path) -> None:
    """Delete the index's own files in `folder`, then the folder itself if nothing else is left in it."""
    for name in os.listdir(folder):
        if is_own_file(name) and (folder / name).is_file():
            (folder / name).unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # the user's files stay, and so does their folder


def swap_in(new: Path, old: Path) -> None:
    """Make the complete index folder `new` take the place of `old` (an index, an empty folder or nothing).

    The user's files in `old` are moved into the new folder; the old index's files are deleted. Where the
    platform can (Linux renameat2 RENAME_EXCHANGE) the two folders trade places in one atomic step, so `old`'s
    path holds a complete index at every moment; elsewhere `old` is first moved aside (a short window without one).
    Where `old` cannot be renamed at all (a mount point), the files are replaced one by one inside it.
    """
    try:
        if not old.exists() or not any(old.iterdir()):
            os.rename(new, old)  # rename(2) also replaces an empty folder
            fsync_dir(old.parent)
            return
        if not _exchange(new, old):
            aside = old.with_name(f".{old.name}.replaced-{os.getpid()}")
            os.rename(old, aside)
            os.rename(new, old)
            new = aside
    except OSError:  # EBUSY, EXDEV: `old` is a mount point
        _replace_files(new, old)
        return
    fsync_dir(old.parent)
    # `new` now names the previous index: keep the user's files, drop the old index's own ones
    try:
        for name in foreign_entries(new):
            os.rename(new / name, old / name)  # the new index folder holds only index files: no name clashes
    except OSError as exc:
        raise IndexStoreError(f"the new index is in place at {old}, but moving your other files out of the previous "
                              f"one failed ({exc.strerror or exc}): they are in {new}") from None
    remove_own_files(new)


def _replace_files(new: Path, old: Path) -> None:
    """Fallback of swap_in: delete the old index's own files in `old`, then move the new ones in (not atomic)."""
    try:
        old.mkdir(parents=True, exist_ok=True)
        for name in os.listdir(old):
            if is_own_file(name) and (old / name).is_file():
                (old / name).unlink()
        for name in sorted(os.listdir(new), key=lambda n: n == STORE):  # the store last: it makes it an index
            shutil.move(str(new / name), str(old / name))
        fsync_dir(old)
        new.rmdir()
    except OSError as exc:
        raise IndexStoreError(f"cannot move the new index from {new} into {old} ({exc.strerror or exc})") from None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 with RENAME_EXCHANGE); False where unsupported."""
    name = ctypes.util.find_library("c")
    if os.name != "posix" or not name:
        return False
    libc = ctypes.CDLL(name, use_errno=True)
    fn = getattr(libc, "renameat2", None)
    if fn is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    ok: int = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return ok == 0
