"""Low-end device simulation: one core, and memory capped by RLIMIT_AS or a cgroup; report what breaks first.

The worker walks the steps of a real session (import, load, query, encode, open index, search) under each cap;
the first step that fails under a cap, and how (MemoryError, onnxruntime allocation failure, OOM kill), is the
finding. A cgroup v1 memory folder is made inside this process's own cgroup when that is writable.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from . import data, indexbench
from .harness import Limits, Worker, WorkerError

STEPS = ("import runtime", "load bundle", "10 queries", "encode 300 sentences", "open index", "10 searches")


def cgroup_root() -> Path | None:
    """This process's cgroup v1 memory folder when we may create children in it, else None."""
    try:
        line = next(x for x in Path("/proc/self/cgroup").read_text().splitlines() if ":memory:" in x)
    except (OSError, StopIteration):
        return None
    folder = Path("/sys/fs/cgroup/memory" + line.split(":", 2)[2])
    return folder if (folder / "cgroup.procs").exists() and os.access(folder, os.W_OK) else None


def make_cgroup(limit_mb: int) -> Path | None:
    """A child memory cgroup limited to limit_mb (swap included where the kernel accounts it)."""
    root = cgroup_root()
    if root is None:
        return None
    folder = root / f"edgeemb-bench-{os.getpid()}-{limit_mb}"
    try:
        folder.mkdir(exist_ok=True)
        (folder / "memory.limit_in_bytes").write_text(str(limit_mb << 20))
        memsw = folder / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            try:
                memsw.write_text(str(limit_mb << 20))
            except OSError:
                pass
    except OSError:
        return None
    return folder


def remove_cgroup(folder: Path | None) -> None:
    """Remove a child cgroup made by make_cgroup (its processes have exited)."""
    if folder is not None:
        try:
            folder.rmdir()
        except OSError:
            pass


def walk(bundle: str, index_folder: str | None, limits: Limits) -> dict:
    """Run the session steps under `limits`; the steps passed, the first failure, and the peak RSS."""
    queries = data.scifact_queries(10)
    texts = data.sample_sentences(300, seed=2)
    steps = [(indexbench.op_baseline, {}),
             ("load", {"engine": "edgeemb", "spec": {"bundle": bundle, "threads": 1}}),
             ("latency", {"texts": queries}),
             ("throughput", {"texts": texts, "batch_size": 32}),
             (indexbench.op_index_attach, {"folder": index_folder}) if index_folder else None,
             (indexbench.op_search_text, {"texts": queries}) if index_folder else None]
    passed, failure = [], None
    worker = Worker(sys.executable, "lowend", limits)
    try:
        worker.start()
        for name, step in zip(STEPS, steps):
            if step is None:
                continue
            try:
                worker.call(step[0], **step[1])
            except WorkerError as exc:
                failure = {"step": name, "error": str(exc).split(": ", 1)[-1][:300]}
                break
            passed.append(name)
    except OSError as exc:  # the worker could not even start (exec under a tiny cap)
        failure = {"step": "start python", "error": str(exc)}
    finally:
        peak = worker.stop()
    if failure and worker.exit_status not in (None, 0):
        failure["exit_status"] = worker.exit_status
        if worker.exit_status in (-9, 137):
            failure["error"] = "killed (out of memory in the cgroup)" if limits.cgroup else failure["error"]
    return {"passed": passed, "failure": failure, "peak_rss_mb": peak}


def simulate(bundle: str, index_folder: str | None, caps_mb: list[int], cores: int = 1) -> dict:
    """Walk the steps at each cap with RLIMIT_AS and, where possible, a cgroup; one core throughout."""
    out: dict = {"cores": cores, "bundle": bundle, "index": index_folder, "rlimit_as": [], "cgroup": [],
                 "cgroup_available": cgroup_root() is not None}
    for cap in caps_mb:
        row = walk(bundle, index_folder, Limits(cores=cores, address_space_mb=cap))
        out["rlimit_as"].append({"cap_mb": cap, **row})
        if out["cgroup_available"]:
            folder = make_cgroup(cap)
            try:
                row = walk(bundle, index_folder, Limits(cores=cores, cgroup=str(folder))) if folder else None
            finally:
                remove_cgroup(folder)
            if row:
                out["cgroup"].append({"cap_mb": cap, **row})
    out["summary"] = summarize(out)
    return out


def summarize(sim: dict) -> list[str]:
    """One line per mechanism: the smallest cap where everything passed and what broke first below it."""
    lines = []
    for mech, label in (("rlimit_as", "address-space cap (RLIMIT_AS)"), ("cgroup", "cgroup memory limit")):
        rows = sorted(sim.get(mech, []), key=lambda r: r["cap_mb"])
        if not rows:
            continue
        ok = [r["cap_mb"] for r in rows if r["failure"] is None]
        broken = [r for r in rows if r["failure"] is not None]
        first = broken[-1] if broken else None  # the largest cap that still broke
        text = f"{label}: all steps pass at ≥ {min(ok)} MB" if ok else f"{label}: no cap tried passed"
        if first:
            text += (f"; at {first['cap_mb']} MB the first step to break is '{first['failure']['step']}' "
                     f"({first['failure']['error']})")
        lines.append(text)
    return lines
