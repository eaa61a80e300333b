"""The Ray Data engine: a Datasource with one read task per pending block, `map_batches` over an actor pool
holding one Encoder each, and the driver assembling rows back into blocks and writing the shards.

Imported only for `engine="ray"`. The driver writes every shard, so the output folder need not be shared with
the workers; the corpus and the bundle must be readable at the same path on every node (a default bundle is
resolved by each node, and each actor checks it loaded the bundle id the job records).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.data
from ray.data import ActorPoolStrategy, Datasource, ReadTask
from ray.data.block import BlockMetadata

from ..errors import EdgeembError
from . import ray_guard
from .embed import Hooks, ShardWriter, encode_block
from .ray_guard import Guard
from .shards import EmbedJobError
from .source import BlockRef, CorpusSpec, Docs, Plan, read_block

# A killed actor is restarted and its unfinished task re-run this many times before the run fails (the
# driver then keeps every shard written so far, and a rerun resumes).
MAX_RESTARTS = 4
MAX_TASK_RETRIES = 4


class BlockSource(Datasource):  # type: ignore[misc, unused-ignore]  # Datasource is Any where ray is absent
    """Ray Data source over the pending blocks of a planned corpus: one read task, one Ray block each."""

    def __init__(self, spec: CorpusSpec, fieldnames: list[str] | None, refs: list[BlockRef]):
        super().__init__()  # type: ignore[no-untyped-call, unused-ignore]  # ray leaves it unannotated
        self.spec, self.fieldnames, self.refs = spec, fieldnames, refs

    def get_name(self) -> str:
        return "EdgeembCorpus"

    def estimate_inmemory_data_size(self) -> int | None:
        if self.spec.format == "parquet":
            return None
        return sum(r.end - r.start for r in self.refs)

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        return [ReadTask(functools.partial(read_table, self.spec, self.fieldnames, ref),
                         BlockMetadata(num_rows=ref.rows, size_bytes=None, input_files=(self.spec.path,),
                                       exec_stats=None))
                for ref in self.refs]


def read_table(spec: CorpusSpec, fieldnames: list[str] | None, ref: BlockRef) -> list[pa.Table]:
    """One block as an Arrow table: block, pos (row within the block), id, text, meta (JSON)."""
    docs = read_block((spec, fieldnames), ref)
    n = len(docs.texts)
    return [pa.table({"block": pa.array([ref.index] * n, pa.int64()), "pos": pa.array(range(n), pa.int64()),
                      "id": pa.array(docs.ids, pa.string()), "text": pa.array(docs.texts, pa.string()),
                      "meta": pa.array([json.dumps(m, ensure_ascii=False) for m in docs.metas], pa.string())})]


class EmbedActor:
    """One Encoder per actor, loaded once in the constructor with exactly `threads` onnxruntime threads."""

    def __init__(self, ref: str, threads: int, bundle_id: str, batch_size: int, delay: float = 0.0,
                 pid_dir: str | None = None):
        os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # tokenizers' pool, before it starts
        import edgeemb

        self.enc = edgeemb.load(ref, threads=threads)
        if self.enc.manifest.bundle_id != bundle_id:
            raise EmbedJobError(f"bundle {ref!r} on this node is {self.enc.manifest.bundle_id}, the job's is "
                                f"{bundle_id}")
        self.batch_size, self.delay = batch_size, delay
        if pid_dir:
            with open(os.path.join(pid_dir, str(os.getpid())), "w", encoding="ascii") as f:
                f.write(str(os.getpid()))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.delay:
            time.sleep(self.delay)
        texts = [str(t) for t in batch["text"]]
        start = time.perf_counter()
        vectors, truncated = encode_block(self.enc, texts, self.batch_size)
        trunc, busy = np.zeros(len(texts), np.int64), np.zeros(len(texts), np.float64)
        if len(texts):  # per-batch figures ride on its first row
            trunc[0], busy[0] = truncated, time.perf_counter() - start
        return {"block": batch["block"], "pos": batch["pos"], "id": batch["id"], "text": batch["text"],
                "meta": batch["meta"], "vector": vectors, "trunc": trunc, "busy": busy}


class Assembler:
    """Collects output rows by (block, pos); a block is complete when each of its rows arrived (a duplicate
    from a retried task is dropped)."""

    def __init__(self, refs: list[BlockRef], dim: int):
        self.refs = {r.index: r for r in refs}
        self.dim = dim
        self.open: dict[int, dict[str, Any]] = {}
        self.duplicates = 0

    def add(self, batch: dict[str, np.ndarray]) -> Iterator[tuple[BlockRef, Docs, np.ndarray, int, float]]:
        """Yield (ref, docs, vectors, truncated, busy seconds) for each block this batch completes."""
        blocks = np.asarray(batch["block"], dtype=np.int64)
        for b in np.unique(blocks):
            ref = self.refs.get(int(b))
            if ref is None:
                raise EmbedJobError(f"Ray returned rows of block {int(b)}, which this run did not send")
            state = self.open.setdefault(ref.index, {
                "have": np.zeros(ref.rows, bool), "vectors": np.zeros((ref.rows, self.dim), np.float32),
                "ids": [None] * ref.rows, "texts": [None] * ref.rows, "metas": [None] * ref.rows, "trunc": 0,
                "busy": 0.0})
            for i in np.flatnonzero(blocks == b):
                pos = int(batch["pos"][i])
                if state["have"][pos]:
                    self.duplicates += 1
                    continue
                state["have"][pos] = True
                state["vectors"][pos] = batch["vector"][i]
                state["ids"][pos], state["texts"][pos] = str(batch["id"][i]), str(batch["text"][i])
                state["metas"][pos] = json.loads(str(batch["meta"][i]))
                state["trunc"] += int(batch["trunc"][i])
                state["busy"] += float(batch["busy"][i])
            if state["have"].all():
                del self.open[ref.index]
                del self.refs[ref.index]
                yield (ref, Docs(state["ids"], state["texts"], state["metas"]), state["vectors"], state["trunc"],
                       state["busy"])

    def missing(self) -> list[int]:
        """Blocks sent but not (fully) returned."""
        return sorted(self.refs)


def run_ray(plan: Plan, pending: list[BlockRef], writer: ShardWriter, ref: str, bundle_id: str, dim: int,
            workers: int | None, threads: int, address: str | None, batch_size: int, hooks: Hooks) -> None:
    """Encode the pending blocks on Ray and hand each completed block to the writer."""
    started, guard = _init(address, workers, threads)
    try:
        if workers is None:
            cpus = ray.cluster_resources()  # type: ignore[no-untyped-call, unused-ignore]
            workers = max(1, int(cpus.get("CPU", 1) // threads))
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # the job draws its own
        # Reading a block is light I/O: its tasks ask for no CPU, or they would wait forever behind an actor pool
        # that holds every CPU of the cluster (a deadlock seen with 2 actors on 2 CPUs). A task asking for no CPU
        # is never held back by the scheduler, so their concurrency is capped here: uncapped, Ray started one
        # worker process per pending block (43 idle Python workers of ~100 MB at 50 blocks, load 35 on 2 cores).
        ds = ray.data.read_datasource(BlockSource(plan.spec, plan.fieldnames, pending),
                                      override_num_blocks=len(pending), num_cpus=0,
                                      concurrency=read_concurrency(workers))
        with warnings.catch_warnings():  # Ray 2.60 flags **ray_remote_args (max_restarts...) as deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map_batches(
                EmbedActor, batch_size=None, batch_format="numpy", compute=ActorPoolStrategy(size=workers),
                num_cpus=threads, fn_constructor_kwargs={"ref": ref, "threads": threads, "bundle_id": bundle_id,
                                                         "batch_size": batch_size, "delay": hooks.delay,
                                                         "pid_dir": hooks.pid_dir},
                **_retry_args())
        assembler = Assembler(pending, dim)
        try:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for block, docs, vectors, truncated, busy in assembler.add(batch):
                    writer.write(block, docs, vectors, truncated, busy)
        except EdgeembError:
            raise
        except Exception as exc:  # noqa: BLE001 - Ray wraps worker errors in its own exception types
            raise _job_error(exc) from None
        if assembler.missing():
            raise EmbedJobError(f"Ray finished without rows of blocks {assembler.missing()[:5]}; rerun to resume")
    finally:
        if started:
            ray.shutdown()
        if guard is not None:
            guard.done()


def read_concurrency(workers: int) -> int:
    """Read tasks in flight at once: one block ahead per actor, at least 2, so the actors never wait on I/O."""
    return max(2, workers + 1)


def _retry_args() -> dict[str, int]:
    """max_restarts / max_task_retries for the actors, passed explicitly (Ray Data's own default is -1, i.e.
    forever, which would hide a node that keeps dying); Ray 2.60 warns that **ray_remote_args is deprecated."""
    return {"max_restarts": MAX_RESTARTS, "max_task_retries": MAX_TASK_RETRIES}


def _init(address: str | None, workers: int | None, threads: int) -> tuple[bool, Guard | None]:
    """Join `address`, or reuse an initialised Ray, or start a local one watched by a Guard (which kills its
    processes if this driver dies without shutting it down); (True when this call initialised Ray, the Guard)."""
    if ray.is_initialized():
        return False, None
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    guard = None
    try:
        if address:
            check_reachable(address)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            from ..sysinfo import physical_cores

            cpus = (workers or max(1, physical_cores() // threads)) * threads
            guard = ray_guard.start()
            ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except EdgeembError:
        raise
    except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, ...
        if guard is not None:
            guard.done()
        where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
        hint = ""
        if address and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            hint = ("; if it uses token authentication (Ray turns it on for `ray start` where ~/.ray/auth_token "
                    "exists), set RAY_AUTH_MODE=token")
        raise EmbedJobError(f"cannot start or join {where} ({str(exc).splitlines()[0] if str(exc) else exc!r})"
                            f"{hint}") from None
    return True, guard


def check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once when nothing listens at a HOST:PORT address: Ray itself retries for minutes (20 connection
    attempts of ~11 s each) before it gives up. Other forms (`auto`, `ray://...`) are left to Ray."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "/" in address:
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise EmbedJobError(f"cannot join the Ray cluster at {address}: nothing answers there "
                            f"({exc.strerror or type(exc).__name__}); start it with `ray start --head` or check "
                            f"--address") from None


def _job_error(exc: BaseException) -> EdgeembError:
    """The EdgeembError a worker raised, found inside Ray's wrappers, or a one-line summary."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, EdgeembError):
            return cur
        cur = getattr(cur, "cause", None) or cur.__cause__ or cur.__context__
    text = str(exc).strip().splitlines()
    tail = next((line for line in reversed(text) if line.strip()), repr(exc))
    return EmbedJobError(f"the Ray run failed ({type(exc).__name__}: {tail[:300]}); finished shards are kept, "
                         f"rerun to resume")
