"""The output folder of an embedding job: job.json, one checksummed shard per corpus block, embeddings.json last.

A shard is `shard-<block>.npy` (float32 vectors) + `shard-<block>.jsonl` (id, text, metadata per row), or one
`shard-<block>.parquet`; its sidecar `shard-<block>.json` (sizes, sha256, row count, bundle id) is written
after its data files, each file atomically, so a shard counts as done only when the sidecar exists and every
file matches it. `embeddings.json` (the manifest) is written once all shards are done: its presence means the
job finished.
"""
from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..bundle import atomic_write_bytes, sha256_file
from ..errors import EdgeembError
from .source import BlockRef, Docs

JOB = "job.json"
MANIFEST = "embeddings.json"
JOB_FORMAT = "edgeemb-embedding-job"
MANIFEST_FORMAT = "edgeemb-embeddings"
FORMAT_VERSION = 1
SHARD_FORMATS = ("npy", "parquet")
# job.json fields that must agree for a rerun to resume into the same folder
IDENTITY = ("bundle_id", "model_sha256", "dim", "corpus_sha256", "block_rows", "shard_format", "text_field",
            "id_field", "prompt")


class EmbedJobError(EdgeembError):
    """An embedding job cannot run or resume: bad options, a foreign output folder, a damaged shard set."""


def stem(block: int) -> str:
    """File name stem of a block's shard."""
    return f"shard-{block:06d}"


def _digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}



# -- the job folder -----------------------------------------------------------------------------------------
def open_job(out: Path, record: dict[str, Any], force: bool) -> None:
    """Create the job folder or check it belongs to this same job (same bundle, corpus, block size, format).

    force: a folder holding another embedding job is emptied of that job's files first; a folder holding
    anything else is never touched.
    """
    if out.exists() and not out.is_dir():
        raise EmbedJobError(f"{out} is a file, not an output folder")
    job_path = out / JOB
    if out.is_dir() and not job_path.is_file() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise EmbedJobError(f"{out} holds files that are not an embedding job (no {JOB}); choose an empty or "
                            f"new folder")
    if job_path.is_file():
        old = read_json(job_path, JOB_FORMAT)
        differs = next((k for k in IDENTITY if old.get(k) != record.get(k)), None)
        if differs and not force:
            raise EmbedJobError(f"{out} holds an embedding job with another {differs} ({old.get(differs)!r}, "
                                f"this run {record.get(differs)!r}); use a new folder or --force to redo it")
        if differs:
            clear_job(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedJobError(f"cannot create output folder {out} ({exc.strerror or exc})") from None
    for tmp in out.glob(".*.tmp-*"):  # left by a run killed mid-write
        tmp.unlink(missing_ok=True)
    atomic_write_bytes(job_path, _json_bytes(record))


def clear_job(out: Path) -> None:
    """Remove an embedding job's own files (shards, sidecars, job.json, manifest) and nothing else."""
    for p in out.iterdir():
        if p.name in (JOB, MANIFEST) or (p.name.startswith("shard-") and p.suffix in
                                         (".npy", ".jsonl", ".parquet", ".json")):
            p.unlink()


def read_json(path: Path, fmt: str) -> dict[str, Any]:
    """A job or manifest file; an error naming it if unreadable or of another format."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EmbedJobError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EmbedJobError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise EmbedJobError(f"{path}: not an {fmt} file (field 'format')")
    if int(data.get("format_version", 0)) > FORMAT_VERSION:
        raise EmbedJobError(f"{path}: format_version {data['format_version']} is newer than this edgeemb reads")
    return data


def _json_bytes(data: dict[str, Any]) -> bytes:
    return (json.dumps(data, indent=1, ensure_ascii=False) + "\n").encode()


def write_manifest(out: Path, manifest: dict[str, Any]) -> Path:
    """Write embeddings.json atomically: the last step of a finished job."""
    path = out / MANIFEST
    atomic_write_bytes(path, _json_bytes(manifest))
    return path


# -- shards -------------------------------------------------------------------------------------------------
@dataclass
class ShardData:
    """A shard read back: vectors (n, dim) float32 and its documents."""

    vectors: np.ndarray
    ids: list[str]
    texts: list[str]
    metas: list[dict[str, Any]]


def encode_shard(docs: Docs, vectors: np.ndarray, fmt: str) -> dict[str, bytes]:
    """The data files of a shard, as bytes by file suffix."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if fmt == "npy":
        buf = io.BytesIO()
        np.save(buf, vectors, allow_pickle=False)
        lines = [json.dumps({"id": i, "text": t, **({"metadata": m} if m else {})}, ensure_ascii=False)
                 for i, t, m in zip(docs.ids, docs.texts, docs.metas)]
        return {".npy": buf.getvalue(), ".jsonl": ("\n".join(lines) + "\n").encode() if lines else b""}
    pa, pq = _arrow()
    dim = vectors.shape[1]
    table = pa.table({
        "id": pa.array(docs.ids, pa.string()),
        "text": pa.array(docs.texts, pa.string()),
        "metadata": pa.array([json.dumps(m, ensure_ascii=False) for m in docs.metas], pa.string()),
        "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
    })
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return {".parquet": buf.getvalue()}


def write_shard(out: Path, ref: BlockRef, docs: Docs, vectors: np.ndarray, fmt: str, bundle_id: str,
                truncated: int = 0, before_sidecar: Callable[[], object] | None = None) -> dict[str, Any]:
    """Write a block's data files, then its sidecar; returns the sidecar (the manifest's shard entry)."""
    if len(docs.ids) != ref.rows or vectors.shape[0] != ref.rows:
        raise EmbedJobError(f"block {ref.index}: {len(docs.ids)} documents and {vectors.shape[0]} vectors, "
                            f"expected {ref.rows}")
    files = {}
    for suffix, data in encode_shard(docs, vectors, fmt).items():
        name = stem(ref.index) + suffix
        atomic_write_bytes(out / name, data)
        files[name] = _digest(data)
    if before_sidecar is not None:
        before_sidecar()
    entry = {"block": ref.index, "rows": ref.rows, "first_doc": ref.first_doc, "first_id": docs.ids[0],
             "last_id": docs.ids[-1], "bundle_id": bundle_id, "truncated": int(truncated), "files": files}
    atomic_write_bytes(out / (stem(ref.index) + ".json"), _json_bytes(entry))
    return entry


def valid_shard(out: Path, ref: BlockRef, fmt: str, bundle_id: str) -> dict[str, Any] | None:
    """The sidecar of a finished shard of this block, or None if it is missing, partial or corrupt."""
    try:
        entry = json.loads((out / (stem(ref.index) + ".json")).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    expected = {stem(ref.index) + s for s in ((".npy", ".jsonl") if fmt == "npy" else (".parquet",))}
    if not isinstance(entry, dict) or entry.get("block") != ref.index or entry.get("rows") != ref.rows \
            or entry.get("first_doc") != ref.first_doc or entry.get("bundle_id") != bundle_id \
            or not isinstance(entry.get("files"), dict) or set(entry["files"]) != expected:
        return None
    for name, info in entry["files"].items():
        path = out / name
        try:
            if path.stat().st_size != info["size"] or sha256_file(path) != info["sha256"]:
                return None
        except (OSError, KeyError, TypeError):
            return None
    return entry


def check_shard_files(out: Path, entry: dict[str, Any]) -> None:
    """Every file of a manifest's shard entry has its recorded size and sha256."""
    for name, info in entry["files"].items():
        path = out / name
        if not path.is_file():
            raise EmbedJobError(f"{path}: listed in {MANIFEST} but missing")
        if path.stat().st_size != info["size"] or sha256_file(path) != info["sha256"]:
            raise EmbedJobError(f"{path}: size or sha256 differs from {MANIFEST} (file changed or corrupt)")


def read_shard(out: Path, entry: dict[str, Any], dim: int) -> ShardData:
    """Load a shard's vectors and documents (files are checked against the entry first)."""
    check_shard_files(out, entry)
    names = sorted(entry["files"])
    if any(n.endswith(".parquet") for n in names):
        _, pq = _arrow()
        table = pq.read_table(out / names[0])
        vec = table.column("vector").combine_chunks()
        vectors = vec.flatten().to_numpy(zero_copy_only=False).reshape(len(table), -1).astype(np.float32)
        ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
        metas = [json.loads(m) if m else {} for m in table.column("metadata").to_pylist()]
    else:
        npy = next(n for n in names if n.endswith(".npy"))
        vectors = np.load(out / npy, allow_pickle=False)
        ids, texts, metas = [], [], []
        with open(out / npy.replace(".npy", ".jsonl"), encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                ids.append(row["id"])
                texts.append(row["text"])
                metas.append(row.get("metadata", {}))
    n = entry["rows"]
    if vectors.shape != (n, dim) or len(ids) != n:
        raise EmbedJobError(f"{out / names[0]}: holds {vectors.shape} vectors and {len(ids)} documents, "
                            f"expected ({n}, {dim})")
    return ShardData(vectors, ids, texts, metas)


def _arrow() -> tuple[Any, Any]:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise EmbedJobError("Parquet shards need pyarrow: pip install pyarrow (the ray extra brings it)") from None
    return pa, pq


def shard_paths(out: Path) -> list[Path]:
    """The sidecars present in a job folder (for tests and status)."""
    return sorted(p for p in out.glob("shard-*.json") if not p.name.startswith("."))

