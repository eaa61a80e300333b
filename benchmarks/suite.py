"""`edgeemb bench` end to end: which bundles, which peers, in what order; returns the results document."""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from . import lowend, peers, runner
from .harness import WorkerError
from .runner import Options, Plan, log

SCHEMA = "edgeemb-bench/1"


def default_bundles() -> list[Path]:
    """The embedded defaults that are built: MiniLM int8, and the static default when present."""
    from edgeemb.paths import default_bundle_path

    return [p for p in (default_bundle_path("default"), default_bundle_path("default-static")) if p.is_dir()]


def resolve(names: list[str]) -> list[Path]:
    """Bundle arguments (paths or default names) to folders."""
    from edgeemb.bundle import resolve_bundle

    return [resolve_bundle(n) for n in names] if names else default_bundles()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import onnxruntime

    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = None
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu, "logical_cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
            "memory_mb": mem, "python": platform.python_version(), "onnxruntime": onnxruntime.__version__,
            "platform": platform.platform(), "load_average": list(os.getloadavg())}


def run_bench(names: list[str], quick: bool, opts: Options, command: str = "edgeemb bench",
              sentences: int | None = None) -> dict[str, Any]:
    """Measure each bundle, its peers, the goals and the low-end simulation; the stable results document."""
    plan = runner.make_plan(quick, sentences)
    folders = resolve(names)
    started = time.time()
    doc: dict[str, Any] = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
                           "quick": quick, "machine": machine(),
                           "settings": {"threads": opts.threads, "cores": opts.cores,
                                        "memory_limit_mb": opts.memory_limit_mb, "plan": plan.__dict__},
                           "bundles": [], "duels": [], "goals": [], "words": None, "lowend": None,
                           "errors": {}, "notes": []}
    for folder in folders:
        doc["bundles"].append(bench_bundle(folder, plan, opts, doc))
    log("word lookups: edgeemb static bundle vs gensim on the same GloVe vectors")
    doc["words"] = attempt({"name": "words", "errors": doc["errors"]}, "words",
                           lambda: runner.word_duel(plan))
    doc["lowend"] = run_lowend(doc, plan, opts)
    doc["machine"]["load_average_end"] = list(os.getloadavg())
    doc["seconds"] = round(time.time() - started, 1)
    return doc


def bench_bundle(folder: Path, plan: Plan, opts: Options, doc: dict) -> dict[str, Any]:
    """Everything measured for one bundle; a failing part is recorded as an error, not fatal to the run."""
    info = runner.bundle_info(folder)
    name = info["name"]
    log(f"{name}: load, first query, {plan.n_latency} single queries")
    row: dict[str, Any] = {**info, "errors": {}}
    parts = [("single", lambda: runner.bench_single(info, plan, opts)),
             ("throughput", lambda: runner.bench_throughput(info, plan, opts))]
    for key, fn in parts:
        row[key] = attempt(row, key, fn)
    peer_list = select_peers(info, folder, plan)
    d = attempt(row, "duel", lambda: runner.duel(info, peer_list, plan))
    vectors, encode = attempt(row, "embeddings", lambda: runner.ensure_embeddings(
        info, max(plan.index_sizes), plan, opts)) or (None, None)
    row["encode_corpus"] = encode
    if vectors is not None:
        row["index"] = attempt(row, "index", lambda: runner.bench_index(info, vectors, plan, opts))
        row["e2e"] = attempt(row, "e2e", lambda: runner.bench_e2e(info, plan, opts))
    if row.get("e2e"):
        row["verdict"] = runner.verdict(row["e2e"])
    if d:
        doc["duels"].append(d)
        doc["goals"] += [g.to_dict() | {"bundle": name} for g in runner.duel_goals(info, d, encode)]
    return row


def select_peers(info: dict, folder: Path, plan: Plan) -> list[peers.Peer]:
    """The peers that fit a bundle's kind."""
    if info["kind"] == "static":
        return peers.static_peers()
    return peers.sentence_peers(folder, 1, torch_peers=plan.torch_peers)


def attempt(row: dict, key: str, fn):
    """Run one part; record a WorkerError (or missing data) under row['errors'] and go on."""
    try:
        return fn()
    except (WorkerError, OSError, ValueError, KeyError) as exc:
        log(f"{row['name']}: {key} failed: {exc}")
        row["errors"][key] = str(exc)[:400]
        return None


def run_lowend(doc: dict, plan: Plan, opts: Options) -> dict | None:
    """The low-end simulation on the first bundle that has an index."""
    row = next((b for b in doc["bundles"] if b.get("index")), None)
    if row is None:
        return None
    caps = [opts.memory_limit_mb or 500] if plan.quick else [1024, 768, 512, 384, 256, 192, 128, 96]
    index = str(runner._index_folder(row, max(plan.index_sizes)))
    log(f"low-end simulation: {row['name']}, 1 core, caps {caps} MB")
    return lowend.simulate(row["path"], index, caps, cores=1)
