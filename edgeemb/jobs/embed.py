"""Embed a corpus into shards: in one process (`engine="local"`) or with Ray Data actors (`engine="ray"`).

Both engines run the same pipeline: plan the corpus into blocks of B documents (`source.plan_blocks`), skip the
blocks whose shard is already there and intact, encode each other block with one torch-free Encoder
(`encode_documents`, batches length-sorted inside the block), write its shard atomically, and write the manifest
`embeddings.json` last. A run killed at any point restarts where it stopped; no row is lost or written twice.

Test hooks (environment): EDGEEMB_EMBED_CRASH_AFTER=k exits the process (status 137) while writing the
(k+1)-th shard of a run, after its data files and before its sidecar; EDGEEMB_EMBED_DELAY=S sleeps S seconds
per block before encoding; EDGEEMB_EMBED_ACTOR_PIDS=DIR makes each Ray actor write DIR/<pid> once its Encoder
has loaded.
"""
from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..progress import Progress
from .shards import (
    FORMAT_VERSION,
    JOB_FORMAT,
    MANIFEST,
    MANIFEST_FORMAT,
    SHARD_FORMATS,
    EmbedJobError,
    open_job,
    valid_shard,
    write_manifest,
    write_shard,
)
from .source import BlockRef, Docs, Plan, corpus_spec, plan_blocks, read_block

if TYPE_CHECKING:
    from ..bundle import Manifest
    from ..encode.encoder import Encoder

ENGINES = ("local", "ray")
DEFAULT_BLOCK_ROWS = 4096  # documents per shard: ~12 s of MiniLM int8 work on one thread, the most a kill loses
MODEL_FILES = ("model.onnx", "model.ort", "vectors.npy")  # the file Manifest.bundle_id is derived from
RAY_EXTRA = "install the ray extra: pip install edgeemb[ray]"


@dataclass
class EmbedResult:
    """What a run did: rows and shards in the finished job, shards written now and skipped (already done), rows
    encoded now, wall seconds (bundle load and planning included) and seconds spent writing shards."""

    out: Path
    rows: int
    shards: int
    written: int
    skipped: int
    seconds: float
    truncated: int
    write_seconds: float = 0.0
    encoded: int = 0
    encode_seconds: float = 0.0  # summed over workers: time inside the Encoder (rows / this = one worker's rate)
    shard_times: list[float] = field(repr=False, default_factory=list)  # seconds from the start to each shard
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)

    @property
    def rate(self) -> float:
        """Documents encoded per second by this run (resumed shards not counted)."""
        return self.encoded / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Hooks:
    """Test hooks read from the environment once per run (see the module docstring)."""

    crash_after: int | None = None
    delay: float = 0.0
    pid_dir: str | None = None

    @classmethod
    def from_env(cls) -> Hooks:
        crash = os.environ.get("EDGEEMB_EMBED_CRASH_AFTER")
        return cls(int(crash) if crash else None, float(os.environ.get("EDGEEMB_EMBED_DELAY") or 0),
                   os.environ.get("EDGEEMB_EMBED_ACTOR_PIDS") or None)


class ShardWriter:
    """Writes finished blocks as shards, counts them, draws progress and fires the crash hook."""

    def __init__(self, out: Path, fmt: str, bundle_id: str, hooks: Hooks, bar: Progress):
        self.out, self.fmt, self.bundle_id, self.hooks, self.bar = out, fmt, bundle_id, hooks, bar
        self.entries: dict[int, dict[str, Any]] = {}
        self.rows = 0
        self.seconds = 0.0  # time spent writing shards (for Ray: the driver's own work per row)
        self.done_at: list[float] = []  # perf_counter() when each shard of this run was written
        self.busy = 0.0  # seconds the workers spent encoding the blocks written

    def write(self, ref: BlockRef, docs: Docs, vectors: np.ndarray, truncated: int, busy: float = 0.0) -> None:
        crash = self.hooks.crash_after is not None and len(self.entries) >= self.hooks.crash_after
        start = time.perf_counter()
        self.entries[ref.index] = write_shard(self.out, ref, docs, vectors, self.fmt, self.bundle_id, truncated,
                                              before_sidecar=(lambda: os._exit(137)) if crash else None)
        self.done_at.append(time.perf_counter())
        self.seconds += self.done_at[-1] - start
        self.rows += ref.rows
        self.busy += busy
        self.bar.update(ref.rows)


def embed_corpus(corpus: str | os.PathLike[str], bundle: str | os.PathLike[str] | None,
                 out: str | os.PathLike[str], engine: str = "local", address: str | None = None,
                 workers: int | None = None, threads: int | None = None, block_rows: int = DEFAULT_BLOCK_ROWS, shard_format: str = "npy",
                 text_field: str = "text", id_field: str = "id", force: bool = False, batch_size: int = 32,
                 show_progress: bool = False) -> EmbedResult:
    """Embed `corpus` with `bundle` into shards under `out`, resuming a run of the same job there.

    engine "local": one process, one Encoder with `threads` (default: physical cores); "ray": `workers` actors
    (default: as many as the cluster's CPUs allow) of `threads` each (default 1) on the cluster at `address`,
    or on a local one started here (`ray.init(num_cpus=workers*threads)`) and shut down after.
    """
    import edgeemb

    _check_options(engine, address, workers, threads, shard_format, batch_size)
    if engine == "ray":
        require_ray()
    if shard_format == "parquet":
        from .shards import _arrow

        _arrow()
    start = time.perf_counter()
    spec = corpus_spec(corpus, text_field, id_field)
    ref = bundle_ref(bundle)
    encoder: Encoder | None = None
    enc: Encoder | BundleInfo
    if engine == "local":
        enc = encoder = edgeemb.load(ref, threads=threads)
    else:  # the driver only needs the bundle's identity (checked files), not an onnxruntime session
        from ..bundle.resolve import open_bundle

        enc = BundleInfo(*open_bundle(ref))
    plan = plan_blocks(spec, block_rows)
    if plan.rows == 0:
        raise EmbedJobError(f"{spec.path}: no documents (every line is empty)")
    out = Path(out)
    record = job_record(enc, plan, shard_format, ref)
    open_job(out, record, force)
    done, pending = {}, []
    for block in plan.blocks:
        entry = valid_shard(out, block, shard_format, record["bundle_id"])
        if entry is None:
            pending.append(block)
        else:
            done[block.index] = entry
    hooks = Hooks.from_env()
    if pending:
        (out / MANIFEST).unlink(missing_ok=True)  # the job is unfinished again until every shard is back
    with Progress(sum(b.rows for b in pending), f"embed {len(pending)}/{len(plan.blocks)} blocks",
                  show_progress, "texts") as bar:
        writer = ShardWriter(out, shard_format, record["bundle_id"], hooks, bar)
        if pending and engine == "local":
            assert encoder is not None  # loaded above for a local run
            _run_local(encoder, plan, pending, writer, batch_size, hooks)
        elif pending:
            from .ray_engine import run_ray

            run_ray(plan, pending, writer, ref, record["bundle_id"], record["dim"], workers, threads or 1, address,
                    batch_size, hooks)
    entries = {**done, **writer.entries}
    missing = [b.index for b in plan.blocks if b.index not in entries]
    if missing:
        raise EmbedJobError(f"{out}: blocks {missing[:5]} were not written; rerun to finish the job")
    shards = [entries[b.index] for b in plan.blocks]
    if sum(s["rows"] for s in shards) != plan.rows:
        raise EmbedJobError(f"{out}: shards hold {sum(s['rows'] for s in shards)} rows, the corpus {plan.rows}")
    manifest = {**record, "format": MANIFEST_FORMAT, "rows": plan.rows, "corpus": plan.corpus_record(),
                "truncated": sum(int(s.get("truncated", 0)) for s in shards), "engine": engine,
                "workers": workers if engine == "ray" else 1, "threads": threads or enc.threads, "shards": shards,
                "created_with": {"edgeemb": edgeemb.__version__}}
    write_manifest(out, manifest)
    elapsed = time.perf_counter() - start
    return EmbedResult(out, plan.rows, len(shards), len(writer.entries), len(done), elapsed,
                       manifest["truncated"], writer.seconds, writer.rows,
                       writer.busy, [round(t - start, 3) for t in writer.done_at], manifest)


@dataclass
class BundleInfo:
    """What the driver of a Ray run knows of the bundle: its folder and verified manifest."""

    path: Path
    manifest: Any
    threads: int = 1


def _check_options(engine: str, address: str | None, workers: int | None, threads: int | None,
                   shard_format: str, batch_size: int) -> None:
    if engine not in ENGINES:
        raise EmbedJobError(f"engine must be one of {ENGINES}, got {engine!r}")
    if shard_format not in SHARD_FORMATS:
        raise EmbedJobError(f"shard format must be one of {SHARD_FORMATS}, got {shard_format!r}")
    for name, value in (("workers", workers), ("threads", threads), ("batch_size", batch_size)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise EmbedJobError(f"{name} must be a positive int, got {value!r}")
    if engine == "local" and (address or (workers or 1) > 1):
        raise EmbedJobError("--address and --workers are for --engine ray (local runs one process)")


def require_ray() -> None:
    """Fail with the install hint, not an ImportError, when ray[data] is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise EmbedJobError(f"--engine ray needs ray[data]: {RAY_EXTRA}") from None


def bundle_ref(bundle: str | os.PathLike[str] | None) -> str:
    """How every process names the bundle: a default's short name (each node resolves its own) or an
    absolute path (a folder or .tar that must exist at that path on every node)."""
    from ..paths import DEFAULT_BUNDLES

    if bundle is None:
        return "default"
    text = os.fspath(bundle)
    return text if text in DEFAULT_BUNDLES else str(Path(text).resolve())


def model_file(manifest: Manifest) -> str:
    """The bundle file whose sha256 identifies its weights (the one Manifest.bundle_id uses)."""
    name = next((f for f in MODEL_FILES if f in manifest.files), None)
    if name is None:
        raise EmbedJobError(f"bundle {manifest.name}: no model file ({', '.join(MODEL_FILES)}) in its manifest")
    return name


def job_record(enc: Encoder | BundleInfo, plan: Plan, shard_format: str, ref: str) -> dict[str, Any]:
    """job.json: what identifies this job (a rerun resumes only into a folder whose record agrees)."""
    m = enc.manifest
    name = model_file(m)
    return {"format": JOB_FORMAT, "format_version": FORMAT_VERSION, "bundle_name": m.name,
            "bundle_id": m.bundle_id, "bundle_ref": ref, "model_file": name, "model_sha256": m.files[name]["sha256"],
            "dim": m.dim, "normalized": bool(m.normalize), "prompt": m.prompts.get("document") or "",
            "dtype": "float32", "corpus_path": plan.spec.path, "corpus_sha256": plan.sha256,
            "block_rows": plan.block_rows, "blocks": len(plan.blocks), "shard_format": shard_format,
            "text_field": plan.spec.text_field, "id_field": plan.spec.id_field}


def encode_block(enc: Encoder, texts: list[str], batch_size: int) -> tuple[np.ndarray, int]:
    """Document vectors of one block and how many of its texts were truncated (the warning is counted, not
    repeated per block)."""
    from ..encode.encoder import TruncationWarning

    before = enc.truncated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        vectors = enc.encode_documents(texts, batch_size=batch_size)
    return vectors, enc.truncated - before


def _run_local(enc: Encoder, plan: Plan, pending: list[BlockRef], writer: ShardWriter, batch_size: int,
               hooks: Hooks) -> None:
    for ref in pending:
        docs = read_block(plan, ref)
        if hooks.delay:
            time.sleep(hooks.delay)
        start = time.perf_counter()
        vectors, truncated = encode_block(enc, docs.texts, batch_size)
        writer.write(ref, docs, vectors, truncated, time.perf_counter() - start)
