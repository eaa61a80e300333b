"""Storage generation files: save the index's vector storage (an hnswlib graph, or binary codes) as the next
generation atomically, load the recorded one, drop stale files, and reconcile a loaded storage with the store (the
truth).

Which storage an index uses is its `vectors` setting: "float32" (graph.<generation>.bin; indexes made before the
setting existed open as this) or "binary" (codes.<generation>.bin, beside the int8 rows file rows.<epoch>.i8 it
names). Either is derived from the store's float vectors, so a missing or damaged one is rebuilt from it.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import fsync_dir
from ..errors import IndexStoreError, InputError
from .graph import CodesGraph, HnswGraph
from .store import STORE, DocStore, crash_point

VECTORS = ("float32", "binary")
Storage = HnswGraph | CodesGraph


def storage_kind(meta: dict[str, Any]) -> str:
    """The index's vector storage: its `vectors` setting, "float32" when it has none (older indexes)."""
    kind: str = meta.get("vectors", "float32")
    if kind not in VECTORS:
        raise IndexStoreError(f"index vectors {kind!r} are not supported by this edgeemb (it reads "
                              f"{', '.join(VECTORS)}); upgrade edgeemb")
    return kind


def check_vectors_setting(vectors: str) -> str:
    """Index.create's vectors= argument, checked (InputError naming the choices)."""
    if vectors == "int8":
        raise InputError('vectors="int8" is not offered: exhaustive int8 search reads every row per query (39 MB '
                         'at 100k documents) and an int8 graph needs a library edgeemb does not ship; use "binary" '
                         '(bits scanned in RAM, re-scored with int8 rows read from disk)')
    if vectors not in VECTORS:
        raise InputError(f"vectors must be one of {', '.join(VECTORS)}, got {vectors!r}")
    return vectors


def new_graph(meta: dict[str, Any], capacity: int, folder: Path | None = None, read_only: bool = False) -> Storage:
    """An empty storage with the index's settings (binary codes need the folder their rows file goes in)."""
    if storage_kind(meta) == "binary":
        return CodesGraph.new(folder, meta["dim"], capacity, read_only=read_only or folder is None)
    return HnswGraph.new(meta["dim"], meta["M"], meta["ef_construction"], meta["ef_search"], capacity)


def load_graph(path: Path, meta: dict[str, Any], read_only: bool = False) -> Storage | None:
    """The storage of the recorded generation; None if it is missing or damaged (then rebuilt from the store)."""
    if int(meta["generation"]) == 0:
        return new_graph(meta, 1024, path, read_only)
    if storage_kind(meta) == "binary":
        return CodesGraph.load(path, int(meta["generation"]), meta["dim"], read_only)
    return HnswGraph.load(path / f"graph.{meta['generation']}.bin", meta["dim"], meta["ef_search"],
                          meta.get("graph_size"))


def save_generation(folder: Path, store: DocStore, graph: Storage) -> None:
    """Write the storage as generation + 1 (temp file, size checked, fsync, rename), then record the generation
    and size in the store; a failure at any step leaves the previous generation in force."""
    old_gen = int(store.meta["generation"])
    gen = old_gen + 1
    intact = f"the previous state (generation {old_gen}) is intact and every acknowledged document is in {STORE}"
    if isinstance(graph, CodesGraph):
        final = folder / f"codes.{gen}.bin"
        try:
            size = graph.write(gen)  # crash point "graph-written" inside, after the rows fsync
        except (OSError, IndexStoreError) as exc:
            raise IndexStoreError(f"cannot save the codes of {folder} ({exc}); {intact}") from None
    else:
        final, tmp = folder / f"graph.{gen}.bin", folder / f".graph.{gen}.bin.tmp"
        try:
            size = graph.save(tmp)
            crash_point("graph-written")
            os.replace(tmp, final)
            fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise IndexStoreError(f"cannot save the graph of {folder} ({exc.strerror or exc}); {intact}") from None
    crash_point("graph-renamed")
    try:
        store.set_meta({"generation": gen, "graph_size": size})
    except IndexStoreError:
        final.unlink(missing_ok=True)
        raise IndexStoreError(f"cannot record the new graph in {folder / STORE} (disk full or read-only?); "
                              f"{intact}") from None
    crash_point("generation-committed")
    remove_stale(folder, store.meta, graph)


def remove_stale(folder: Path, meta: dict[str, Any], graph: Storage | None = None) -> None:
    """Delete graph and codes files of other generations, leftover temporary ones, and (given the storage in
    use) rows files of other epochs."""
    gen = meta["generation"]
    keep = {f"graph.{gen}.bin", f"codes.{gen}.bin"}
    old = [*folder.glob("graph.*.bin"), *folder.glob(".graph.*.bin.tmp"), *folder.glob("codes.*.bin"),
           *folder.glob(".codes.*.bin.tmp-*")]
    epoch = graph.epoch if isinstance(graph, CodesGraph) else None
    if epoch is not None:
        keep.add(f"rows.{epoch}.i8")
        old += folder.glob("rows.*.i8")
    for f in old:
        if f.name not in keep:
            f.unlink(missing_ok=True)


def reconcile(store: DocStore, graph: Storage, threads: int) -> tuple[int, bool]:
    """Re-add to the storage the stored documents it lacks and tombstone labels the store no longer has.
    Returns (documents re-added, whether the storage changed)."""
    in_store = store.all_labels()
    in_graph = graph.labels()
    if len(in_graph) > 1 and not bool(np.all(in_graph[1:] > in_graph[:-1])):
        in_graph = np.unique(in_graph)
    if np.array_equal(in_store, in_graph):  # the usual case after a clean close: nothing to compare further
        return 0, False
    missing = np.setdiff1d(in_store, in_graph, assume_unique=True)
    extra = np.setdiff1d(in_graph, in_store, assume_unique=True)
    for s in range(0, len(missing), 4096):
        labels, vecs = store.vectors(missing[s:s + 4096].tolist())
        graph.add(vecs, labels, threads)
    newly_deleted = graph.delete(extra.tolist())
    return len(missing), bool(len(missing)) or bool(newly_deleted)
