"""Locks of an index: a readers-writer lock between threads, and one writing process per index folder (flock)."""
from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import IndexStoreError

try:
    import fcntl
except ImportError:  # Windows: no cross-process writer lock
    fcntl = None  # type: ignore[assignment]

WRITER_LOCK = "writer.lock"


class RWLock:
    """Many readers or one writer; a waiting writer holds back new readers so writes are not starved.

    Not re-entrant: a thread holding read() must not ask for read() or write() again.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._waiting_writers = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        """Shared access: runs alongside other readers, never alongside the writer."""
        with self._cond:
            while self._writing or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Exclusive access: waits for running readers to finish and keeps new ones out."""
        with self._cond:
            self._waiting_writers += 1
            try:
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


def writer_lock(folder: Path) -> int | None:
    """Hold an exclusive flock on writer.lock for a handle's life: one writing process per index."""
    if fcntl is None:
        return None
    try:
        fd = os.open(folder / WRITER_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IndexStoreError(f"cannot open {folder / WRITER_LOCK} for writing ({exc.strerror or exc}); "
                              f"open the index with read_only=True") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise IndexStoreError(f"{folder} is open for writing by another process; open it with read_only=True "
                              f"or close the other writer") from None
    return fd


def release(fd: int | None) -> None:
    """Drop a writer lock taken by writer_lock (closing the descriptor drops the flock)."""
    if fd is not None:
        os.close(fd)
