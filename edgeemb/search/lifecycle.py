"""Creating and opening index folders: settings, locks, and the refusals (occupied folder, bundle, wrong bundle).

Create is atomic by one SQLite transaction (schema and settings together), not by a temporary sibling folder:
a crash inside it leaves a store with nothing committed, which open names as an unfinished create and create
replaces. That works where a sibling cannot be made or renamed over the target (a mount point, a folder whose
parent is not writable) and leaves nothing beside the folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import IndexMismatchError, IndexStoreError, InputError
from .folder import check_new_index_folder, not_an_index_message
from .generations import Storage, check_vectors_setting, load_graph, new_graph
from .locks import release, writer_lock
from .store import INDEX_FORMAT, STORE, DocStore, UnfinishedStore
from .validate import check_create

if TYPE_CHECKING:
    from ..encode.encoder import TextEncoder
    from .index import Index


def settings(encoder: TextEncoder | None, dim: int | None, M: int, ef_construction: int, ef_search: int,
             bundle_ref: str | None, compact_threshold: float, capacity: int, extra_meta: dict[str, Any] | None,
             vectors: str = "float32") -> dict[str, Any]:
    """The meta a new index records (arguments checked); `vectors` names the storage (generations.py)."""
    if encoder is not None:
        dim = encoder.dim
    elif dim is None:
        raise InputError("Index.create needs an encoder or a dim")
    check_create(dim, M, ef_construction, ef_search, capacity, compact_threshold)
    meta = {"format": INDEX_FORMAT, "dim": int(dim), "space": "cosine", "M": int(M),
            "ef_construction": int(ef_construction), "ef_search": int(ef_search), "generation": 0,
            "graph_size": 0, "next_label": 0, "compact_threshold": compact_threshold,
            "vectors": check_vectors_setting(vectors),
            "bundle_id": encoder.manifest.bundle_id if encoder is not None else "",
            "bundle_name": encoder.manifest.name if encoder is not None else "",
            "bundle_ref": bundle_ref or (str(Path(encoder.path).resolve()) if encoder is not None else "")}
    meta.update(extra_meta or {})
    return meta


def create_store(path: Path, meta: dict[str, Any]) -> tuple[DocStore, int | None]:
    """Make the folder (new or empty, or holding an unfinished create), take the writer lock, create the store."""
    if not (path / STORE).is_file():
        check_new_index_folder(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise IndexStoreError(f"cannot create index folder {path} ({exc.strerror or exc})") from None
    lock_fd = writer_lock(path)
    try:
        if (path / STORE).is_file():
            refuse_existing(path)
        return DocStore.create(path, meta), lock_fd
    except BaseException:
        release(lock_fd)
        raise


def open_store(path: Path, read_only: bool,
               encoder: TextEncoder | None) -> tuple[DocStore, Storage, int | None]:
    """Lock (writers), open the store and load the storage of its generation (an empty one if it is missing)."""
    if not (path / STORE).is_file():
        raise IndexStoreError(not_an_index_message(path))
    lock_fd = None if read_only else writer_lock(path)
    store: DocStore | None = None
    try:
        for attempt in range(5):
            store = DocStore.open(path, read_only)
            graph = load_graph(path, store.meta, read_only)
            # a writer may have saved a newer generation and removed ours since we read the store: retry
            if graph is not None or not read_only or int(store.meta["generation"]) == 0 or attempt == 4:
                break
            store.close()
        assert store is not None  # the loop runs at least once
        if encoder is not None:
            check_encoder(store.meta, encoder, path)
    except BaseException:
        if store is not None:
            store.close()
        release(lock_fd)
        raise
    return store, graph if graph is not None else new_graph(store.meta, 1024, path, read_only), lock_fd


def refuse_existing(path: Path) -> None:
    """create() over a store: only an unfinished create (nothing committed) may be replaced."""
    try:
        DocStore.open(path, read_only=True).close()
    except UnfinishedStore:
        return
    except IndexStoreError as exc:
        raise IndexStoreError(f"{path} already holds an index store that cannot be read ({exc}); remove it "
                              f"yourself if it is not needed") from None
    raise IndexStoreError(f"{path} already holds an index; open it with Index.open (or create(..., exist_ok=True))")


def same_kind(index: Index, meta: dict[str, Any]) -> Index:
    """create(exist_ok=True) found an index: keep it open if it has the dim, kind and vectors asked for, else
    refuse."""
    kind, want = index.meta.get("kind", "plain"), meta.get("kind", "plain")
    have_v, want_v = index.meta.get("vectors", "float32"), meta.get("vectors", "float32")
    if int(index.meta["dim"]) != int(meta["dim"]) or kind != want or have_v != want_v:
        index.close()
        raise IndexMismatchError(f"{index.path} holds a {kind} index of dim {index.meta['dim']} ({have_v} vectors), "
                                 f"not a {want} one of dim {meta['dim']} ({want_v} vectors)")
    return index


def check_encoder(meta: dict[str, Any], encoder: TextEncoder, path: Path) -> None:
    """Refuse an encoder whose vectors are not the ones the index holds."""
    if encoder.dim != int(meta["dim"]) or (meta.get("bundle_id") and encoder.manifest.bundle_id != meta["bundle_id"]):
        raise IndexMismatchError(f"index {path} was built with bundle {meta.get('bundle_name')!r} "
                                 f"(dim {meta['dim']}), not {encoder.manifest.name!r} (dim {encoder.dim})")
