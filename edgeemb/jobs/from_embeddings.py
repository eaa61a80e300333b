"""Build an index from a finished embedding job's shards: vectors added as they are (Index.add_vectors), never
re-encoded, and only for the bundle that made them.

The build goes through `search.build.FolderBuild` like `index build` from a corpus: into `.OUT.partial`, swapped
in when complete, resumable (documents already in the partial index are skipped), refused over a live index.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InputError
from .shards import JOB, MANIFEST, MANIFEST_FORMAT, EmbedJobError, read_json, read_shard

if TYPE_CHECKING:
    from ..encode.encoder import Encoder
    from ..search.build import BuildReport
    from ..search.index import Index

WINDOW = 4096  # documents a pending vector may trail the reader by before it is dropped (skipped on resume)


@dataclass
class Row:
    """One document of a shard, as FolderBuild reads it."""

    id: str
    text: str
    metadata: dict[str, Any]


def read_embeddings(out: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a finished job folder (an error naming the folder if the job is unfinished)."""
    out = Path(out)
    if not out.is_dir():
        raise EmbedJobError(f"{out}: not an embedding job folder" if out.exists() else f"{out}: no such folder")
    if not (out / MANIFEST).is_file():
        hint = f"the job is unfinished (no {MANIFEST}): rerun `edgeemb embed` to finish it" if (out / JOB).is_file() \
            else f"not an embedding job folder (no {MANIFEST})"
        raise EmbedJobError(f"{out}: {hint}")
    manifest = read_json(out / MANIFEST, MANIFEST_FORMAT)
    shards = manifest.get("shards")
    if not isinstance(shards, list) or sum(int(s.get("rows", 0)) for s in shards) != manifest.get("rows"):
        raise EmbedJobError(f"{out / MANIFEST}: its shards do not add up to its {manifest.get('rows')} rows")
    foreign = next((s for s in shards if s.get("bundle_id") != manifest.get("bundle_id")), None)
    if foreign is not None:
        raise EmbedJobError(f"{out}: shard {foreign.get('block')} was made with bundle {foreign.get('bundle_id')}, "
                            f"the job records {manifest.get('bundle_id')}")
    return manifest


def check_bundle(manifest: dict[str, Any], enc: Encoder, where: Path) -> None:
    """Refuse an encoder other than the one the shards were made with (weights, dim)."""
    m = enc.manifest
    model = manifest.get("model_file", "model.onnx")
    sha = m.files.get(model, {}).get("sha256")
    if m.bundle_id != manifest["bundle_id"] or sha != manifest.get("model_sha256") or enc.dim != manifest["dim"]:
        raise EmbedJobError(f"{where}: the shards were made with bundle {manifest['bundle_id']} (dim "
                            f"{manifest['dim']}), not {m.bundle_id} (dim {enc.dim}); embed the corpus again with "
                            f"this bundle, or build with the bundle that made them")


def iter_rows(out: Path, manifest: dict[str, Any], pending: dict[str, np.ndarray]) -> Iterator[Row]:
    """Every document of the job in corpus order, shard by shard (each checked against its sha256); its vector is
    left in `pending` under its id for the index handle to take."""
    recent: deque[str] = deque()
    for entry in manifest["shards"]:
        shard = read_shard(out, entry, int(manifest["dim"]))
        for i, doc_id in enumerate(shard.ids):
            if doc_id in pending:
                raise InputError(f"{out}: id {doc_id!r} occurs twice in the shards (ids must be unique)")
            pending[doc_id] = shard.vectors[i]
            recent.append(doc_id)
            if len(recent) > WINDOW:  # a document FolderBuild skipped (already indexed) leaves its vector behind
                pending.pop(recent.popleft(), None)
            yield Row(doc_id, shard.texts[i], shard.metas[i])


class VectorFeed:
    """Stands in for an Index in FolderBuild: `add(texts, ids, metadata)` adds the vectors the reader left."""

    def __init__(self, index: Index, pending: dict[str, np.ndarray]):
        self.index, self.pending = index, pending

    def add(self, texts: list[str], ids: list[str], metadata: list[dict[str, Any]]) -> list[str]:
        vectors = np.stack([self.pending.pop(i) for i in ids])
        return self.index.add_vectors(vectors, texts, ids=ids, metadata=metadata)

    def close(self) -> None:
        self.index.close()


def build_index_from_embeddings(embeddings: str | os.PathLike[str], out: str | os.PathLike[str],
                                bundle: str | os.PathLike[str] | None = None, force: bool = False,
                                resume: bool = False, threads: int | None = None, show_progress: bool = False,
                                **create_options: Any) -> BuildReport:
    """Build an index folder `out` from the shards of the finished job `embeddings`, without re-encoding.

    bundle: the bundle the index will encode queries with (default: the one the job records); refused unless it
    is the bundle that made the shards. create_options go to Index.create (M, ef_construction, vector storage
    options the index offers...). Returns search.build.BuildReport.
    """
    from ..encode.encoder import load
    from ..search.build import FolderBuild
    from ..search.index import Index
    from .embed import bundle_ref

    src = Path(embeddings)
    manifest = read_embeddings(src)
    ref = manifest.get("bundle_ref") if bundle is None else bundle_ref(bundle)
    if not ref:
        raise EmbedJobError(f"{src / MANIFEST}: records no bundle; pass the bundle that made the shards")
    enc = load(ref, threads=threads or 1)
    check_bundle(manifest, enc, src)
    pending: dict[str, np.ndarray] = {}

    def make(path: Path, exists: bool) -> VectorFeed:
        if exists:
            index = Index.open(path, enc, threads=threads or 1)
        else:
            index = Index.create(path, enc, capacity=int(manifest["rows"]), bundle_ref=ref, threads=threads or 1,
                                 **create_options)
        return VectorFeed(index, pending)

    with FolderBuild(out, force=force, resume=resume) as build:
        return build.run(make, iter_rows(src, manifest, pending), int(manifest["rows"]), show_progress)
