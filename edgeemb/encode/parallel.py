"""Encoding on more than one core: the next span tokenised in a background thread, batches dealt to sessions.

Why (issue #15): with one session, tokenising a span runs between graph calls while onnxruntime's threads wait;
and one session of two intra-op threads is slower on a batch stream than two one-thread sessions fed
alternate batches (measured x1.31, identical vectors). Both tokenizers' encode_batch and onnxruntime's run
release the GIL, so plain threads overlap them (benchmarks/studies/two_cores.py `gil` times it).

`one_ahead` keeps at most one item ahead of its caller (memory: one more tokenised span, issue #14);
`SessionPool` runs each task on one of its backends' threads. Every thread here is a daemon thread joined
before the call that started it returns, also on an error or a KeyboardInterrupt, and a worker's exception
is raised in the caller as the same object (an InputError stays an InputError).
"""
from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Sequence
from types import TracebackType
from typing import Generic, TypeVar

A = TypeVar("A")
R = TypeVar("R")
B = TypeVar("B")

QUEUED_PER_SESSION = 2  # tasks waiting per session thread: enough to never starve it, bounded memory


class _Ahead(threading.Thread, Generic[A, R]):
    """fn(item) computed in a daemon thread; result() joins it and returns the value or raises its exception."""

    def __init__(self, fn: Callable[[A], R], item: A):
        super().__init__(daemon=True, name="edgeemb-tokenise")
        self._fn, self._item = fn, item
        self._value: list[R] = []  # the result, once run() has it
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value.append(self._fn(self._item))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
            self._error = exc

    def result(self) -> R:
        """Wait for fn(item); its exception, if any, is raised here."""
        self.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        return self._value.pop()


def one_ahead(fn: Callable[[A], R], items: Sequence[A]) -> Generator[R, None, None]:
    """fn(item) for each item in order, fn(items[i + 1]) running in a daemon thread while the caller uses the
    i-th result (never more than one ahead). Use it under contextlib.closing: closing it (or an error or
    KeyboardInterrupt in the caller) joins the thread in flight."""
    job = _Ahead(fn, items[0]) if items else None
    try:
        for i in range(len(items)):
            assert job is not None
            value = job.result()
            job = _Ahead(fn, items[i + 1]) if i + 1 < len(items) else None
            yield value
    finally:
        if job is not None:
            job.join()


class SessionPool(Generic[B]):
    """One daemon thread per backend; submit(task) queues task(backend) for whichever thread is free.

    At most QUEUED_PER_SESSION tasks per thread wait (submit blocks beyond). The first task exception stops
    the rest (they are skipped) and is raised by the next submit() or by leaving the `with` block.
    """

    def __init__(self, backends: Sequence[B]):
        if not backends:
            raise ValueError("SessionPool needs at least one backend")
        self._tasks: queue.Queue[Callable[[B], None] | None] = queue.Queue(QUEUED_PER_SESSION * len(backends))
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._abort = False
        self._threads = [threading.Thread(target=self._work, args=(b,), daemon=True, name=f"edgeemb-session-{i}")
                         for i, b in enumerate(backends)]
        for t in self._threads:
            t.start()

    def _work(self, backend: B) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            if self._abort or self._error is not None:
                continue  # keep draining so submit() and close() never wait on a full queue
            try:
                task(backend)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller as is
                with self._lock:
                    if self._error is None:
                        self._error = exc

    def _raise(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            self._abort = True
            raise error

    def submit(self, task: Callable[[B], None]) -> None:
        """Queue task(backend); raises an earlier task's exception instead, if one failed."""
        self._raise()
        self._tasks.put(task)

    def _join(self) -> None:
        for _ in self._threads:
            self._tasks.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self) -> SessionPool[B]:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Wait for the queued tasks (skipped after an error in the caller) and raise a task's exception."""
        if exc_type is not None:
            self._abort = True
        try:
            self._join()
        except BaseException:  # interrupted while waiting: skip what is queued, wait for the runs in flight
            self._abort = True
            self._join()
            raise
        if exc_type is None:
            self._raise()
