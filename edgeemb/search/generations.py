"""Graph generation files: save a graph as the next generation atomically, load the recorded one, drop stale ones,
and reconcile a loaded graph with the store (the truth)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import fsync_dir
from ..errors import IndexStoreError
from .graph import HnswGraph
from .store import STORE, DocStore, crash_point


def new_graph(meta: dict[str, Any], capacity: int) -> HnswGraph:
    """An empty graph with the index's settings."""
    return HnswGraph.new(meta["dim"], meta["M"], meta["ef_construction"], meta["ef_search"], capacity)


def load_graph(path: Path, meta: dict[str, Any]) -> HnswGraph | None:
    """The graph of the recorded generation; None if it is missing or damaged (then rebuilt from the store)."""
    if int(meta["generation"]) == 0:
        return new_graph(meta, 1024)
    return HnswGraph.load(path / f"graph.{meta['generation']}.bin", meta["dim"], meta["ef_search"],
                          meta.get("graph_size"))


def save_generation(folder: Path, store: DocStore, graph: HnswGraph) -> None:
    """Write the graph as graph.<generation + 1>.bin (temp file, size checked, fsync, rename), then record the
    generation and size in the store; a failure at any step leaves the previous generation in force."""
    old_gen = int(store.meta["generation"])
    gen = old_gen + 1
    final, tmp = folder / f"graph.{gen}.bin", folder / f".graph.{gen}.bin.tmp"
    intact = f"the previous state (generation {old_gen}) is intact and every acknowledged document is in {STORE}"
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
    remove_stale(folder, store.meta)


def remove_stale(folder: Path, meta: dict[str, Any]) -> None:
    """Delete graph files of other generations and leftover temporary ones."""
    keep = f"graph.{meta['generation']}.bin"
    for old in list(folder.glob("graph.*.bin")) + list(folder.glob(".graph.*.bin.tmp")):
        if old.name != keep:
            old.unlink(missing_ok=True)


def reconcile(store: DocStore, graph: HnswGraph, threads: int) -> tuple[int, bool]:
    """Re-add to the graph the stored documents it lacks and tombstone labels the store no longer has.
    Returns (documents re-added, whether the graph changed)."""
    in_store = store.all_labels()
    in_graph = graph.labels()
    missing = np.setdiff1d(in_store, in_graph, assume_unique=True)
    extra = np.setdiff1d(in_graph, in_store, assume_unique=True)
    for s in range(0, len(missing), 4096):
        labels, vecs = store.vectors(missing[s:s + 4096].tolist())
        graph.add(vecs, labels, threads)
    newly_deleted = sum(graph.mark_deleted(label) for label in extra.tolist())
    return len(missing), bool(len(missing)) or bool(newly_deleted)
