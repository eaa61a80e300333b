"""Building an index folder from a stream of documents: into a temporary sibling, resumable, swapped in at the end.

`index build -o OUT` writes into `.OUT.partial` beside OUT, so OUT (an older index, or nothing) is untouched until
the new index is complete and closed; then the two trade places (atomically on Linux) and the old index's own
files are deleted (a user's other files in OUT are kept). An interrupted build leaves the partial folder with the
documents committed so far (each chunk is one transaction); `--resume` reopens it and skips the corpus rows whose
ids it already holds. Replacing an index (--force) first takes OUT's writer lock, so an index another process
has open for writing is refused, never deleted under it.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ..errors import IndexStoreError
from ..progress import Progress
from .folder import check_new_index_folder, remove_own_files, swap_in
from .locks import release, writer_lock
from .store import STORE, crash_point

if TYPE_CHECKING:
    from .index import Index

CHUNK = 512  # documents read, checked against the partial index and added per step
_T = TypeVar("_T")


class BuildDoc(Protocol):
    """A document a build reads (corpus.Doc, a shard's row)."""

    @property
    def id(self) -> str: ...

    @property
    def text(self) -> str: ...

    @property
    def metadata(self) -> dict[str, Any]: ...


class BuildTarget(Protocol):
    """What `make` opens: an Index, a HybridRetriever, or a stand-in with `.index` (jobs' VectorFeed)."""

    def add(self, texts: list[str], ids: list[str], metadata: list[dict[str, Any]]) -> list[str]: ...

    def close(self) -> None: ...


def partial_path(out: Path) -> Path:
    """Where a build of `out` puts its unfinished index."""
    return out.with_name(f".{out.name}.partial")


@dataclass
class BuildReport:
    """What a build did: documents in the new index, added now, skipped as already there (resume)."""

    count: int
    added: int
    skipped: int
    resumed: bool


class FolderBuild:
    """One `index build`: `with FolderBuild(out, force, resume) as b: b.run(...)`. Entering checks OUT and takes
    its writer lock (replacing a live index is refused); leaving releases it."""

    def __init__(self, out: str | os.PathLike[str], force: bool = False, resume: bool = False):
        self.out, self.force, self.resume = Path(out), force, resume
        self.partial = partial_path(self.out)
        self._lock: int | None = None

    def __enter__(self) -> FolderBuild:  # noqa: PYI034
        out = self.out
        if (out / STORE).is_file():
            if not self.force:
                raise IndexStoreError(f"{out} already holds an index; pass --force to replace it")
            try:
                self._lock = writer_lock(out)
            except IndexStoreError:
                raise IndexStoreError(f"cannot replace {out}: it is open for writing by another process (close "
                                      f"that writer first); nothing was changed") from None
        else:
            check_new_index_folder(out)
        if self.partial.exists() and not self.resume:
            self.__exit__()
            raise IndexStoreError(f"an interrupted build of {out} is in {self.partial}: pass --resume to continue "
                                  f"it, or delete that folder to start over")
        return self

    def __exit__(self, *exc: object) -> None:
        release(self._lock)
        self._lock = None

    def run(self, make: Callable[[Path, bool], BuildTarget], docs: Iterable[BuildDoc], total: int,
            show_progress: bool = True) -> BuildReport:
        """Add `docs` (objects with .id, .text, .metadata) to the partial index `make(path, exists)` opens or
        creates (an Index or HybridRetriever), then swap it in. `total`: the corpus's document count."""
        resumed = (self.partial / STORE).is_file()
        if self.resume and not resumed:
            print(f"nothing to resume for {self.out}: building from the start", file=sys.stderr)
        handle = make(self.partial, resumed)
        index = cast("Index", getattr(handle, "index", handle))
        added = skipped = 0
        try:
            state = index.meta.get("build_state")
            if resumed and state != "building" and not (state is None and len(index) == 0):
                raise IndexStoreError(f"{self.partial} holds a complete index, left by an interrupted replacement "
                                      f"of {self.out}: check {self.out}, then delete {self.partial} (move out any "
                                      f"files of yours first)")
            if state is None:
                index.store.set_meta({"build_state": "building"})
            with Progress(total, f"index {self.out.name}", show_progress, "docs") as bar:
                for chunk in _chunked(docs, CHUNK):
                    stored = index.store.labels_of([d.id for d in chunk]) if resumed else {}
                    new = [d for d in chunk if d.id not in stored]
                    if new:
                        handle.add([d.text for d in new], ids=[d.id for d in new], metadata=[d.metadata for d in new])
                    added, skipped = added + len(new), skipped + len(chunk) - len(new)
                    bar.update(len(chunk))
                    crash_point("build-chunk")
            index.store.set_meta({"build_state": "complete"})
            count = len(index)
        except BaseException:
            self._abandon(handle, index)
            raise
        handle.close()
        swap_in(self.partial, self.out)
        return BuildReport(count, added, skipped, resumed)

    def _abandon(self, handle: BuildTarget, index: Index) -> None:
        """After a failure or an interrupt: keep what was committed for --resume (or nothing, if nothing was)."""
        n = len(index)
        with suppress(Exception):  # the first error is the one to report; the store is the truth
            handle.close()
        if n == 0:
            remove_own_files(self.partial)
        else:
            print(f"the {n:,} documents indexed so far are kept in {self.partial}: run the same command with "
                  f"--resume to continue", file=sys.stderr)


def _chunked(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    chunk: list[_T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
