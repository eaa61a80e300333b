"""Where benchmark artefacts live, and the one cache of dataset vectors every benchmark shares.

Vectors of a dataset (data.DATASETS) by a bundle are `vectors/<dataset>.<bundle id>.npy` under cache_dir():
float32, row i = row i of the dataset, written by a worker that streams the dataset in chunks (bounded memory),
with a `.json` sidecar saying how they were made and what that cost (seconds, peak RSS read from outside).
A file holding at least n rows serves any request for the first n.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Limits, log, run_worker

CHECKOUT = Path(__file__).resolve().parents[1]
CHUNK = 2048  # sentences per encode() call when streaming a dataset to disk


def cache_dir() -> Path:
    """Where benchmark artefacts are cached (.cache/bench in a checkout, else ~/.cache/edgeemb/bench)."""
    env = os.environ.get("EDGEEMB_BENCH_CACHE")
    if env:
        return Path(env)
    if (CHECKOUT / "pyproject.toml").is_file():
        return CHECKOUT / ".cache" / "bench"
    return Path.home() / ".cache" / "edgeemb" / "bench"


def vectors_path(dataset: str, bundle_id: str) -> Path:
    """The cache file of a dataset's vectors by one bundle (its id names the weights, so a rebuild misses)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in bundle_id.replace("@", "-"))
    return cache_dir() / "vectors" / f"{dataset}.{safe}.npy"


def npy_rows(path: Path) -> int:
    """Rows of a .npy without reading it (0 if absent or unreadable)."""
    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return 0


def sidecar(path: Path) -> dict[str, Any]:
    """The JSON written beside a cached .npy ({} when there is none)."""
    try:
        return json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def ensure_vectors(bundle: str | Path, dataset: str, n: int, limits: Limits | None = None,
                   threads: int | None = None, measure: bool = False) -> tuple[Path, dict[str, Any]]:
    """A cached file holding the first n vectors of a dataset by a bundle, encoding them when missing.

    measure: re-encode when the cached file's sidecar has no measurement (its peak RSS is a bench figure).
    Returns the path and the sidecar (how it was made; `peak_rss_mb` None when not measured by us)."""
    from edgeemb.bundle import read_manifest

    bundle_id = read_manifest(Path(bundle)).bundle_id
    path = vectors_path(dataset, bundle_id)
    wait_for_writer(path)
    measured = sidecar(path)
    if npy_rows(path) >= n and (measured.get("peak_rss_mb") is not None or not measure):
        measured.setdefault("note", "vectors cached by another tool; encode memory not measured")
        return path, measured
    path.parent.mkdir(parents=True, exist_ok=True)
    log(f"{Path(bundle).name}: encoding {n} {dataset} rows ({CHUNK}-row chunks streamed to {path.name})")
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        (_, enc), peak, _ = run_worker(f"encode {dataset}", limits or Limits(), [
            ("load", {"engine": "edgeemb", "spec": {"bundle": str(bundle), "threads": threads}}),
            (op_encode_to_npy, {"dataset": dataset, "n": n, "out": str(tmp)})])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    measured = {"bundle_id": bundle_id, "dataset": dataset, "n": n, "seconds": enc["seconds"],
                "sentences_per_s": n / enc["seconds"], "peak_rss_mb": peak, "chunk": CHUNK,
                "batch_size": enc["batch_size"], "mode": f"streamed in {CHUNK:,}-sentence chunks",
                "threads": threads or "physical cores", "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.with_suffix(".json").write_text(json.dumps(measured, indent=2) + "\n", encoding="utf-8")
    return path, measured


def wait_for_writer(path: Path, idle_s: float = 300.0) -> None:
    """If another run is writing this cache file (a fresh .tmp-<pid> beside it), wait for it to finish."""
    while True:
        tmps = [p for p in path.parent.glob(path.name + ".tmp-*") if time.time() - p.stat().st_mtime < idle_s]
        if not tmps:
            return
        log(f"waiting for another process writing {tmps[0].name}")
        time.sleep(20)


def op_encode_to_npy(state: dict, dataset: str, n: int, out: str, batch_size: int = 32) -> dict:
    """Worker op: stream the first n rows of a dataset through the loaded engine into a float32 .npy."""
    from . import data

    eng = state["engine"]
    encode = getattr(eng, "encode_documents", eng.encode)
    done, dim, start = 0, None, time.perf_counter()
    with open(out, "wb") as dst:
        buf: list[str] = []
        for text in data.dataset_texts(dataset):
            if done + len(buf) >= n:
                break
            buf.append(text)
            if len(buf) == CHUNK:
                dim = _write_chunk(encode(buf, batch_size), dst, dim, n)
                done, buf = done + len(buf), []
        if buf:
            dim = _write_chunk(encode(buf, batch_size), dst, dim, n)
            done += len(buf)
        dst.flush()
        os.fsync(dst.fileno())
    if done != n:
        os.unlink(out)
        raise ValueError(f"{dataset} has only {done} rows, {n} asked")
    return {"seconds": time.perf_counter() - start, "n": done, "dim": dim, "batch_size": batch_size}


def _write_chunk(vecs: np.ndarray, dst, dim: int | None, n: int) -> int:
    vecs = np.ascontiguousarray(vecs, dtype="<f4")
    if dim is None:
        dim = int(vecs.shape[1])
        np.lib.format.write_array_header_1_0(dst, {"descr": "<f4", "fortran_order": False, "shape": (n, dim)})
    dst.write(vecs.tobytes())
    return dim
