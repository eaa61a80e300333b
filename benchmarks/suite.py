"""`edgeemb bench` end to end: which bundles, which peers, in what order; returns the results document.

A run that cannot measure (no bundle, no data) refuses before it starts, and one that measured nothing refuses
after: neither writes a report, so `recommend` never reads an empty "latest" result.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from edgeemb.errors import EdgeembError

from . import data, duels, lowend, peers, probes, runner
from .harness import WorkerError, log
from .runner import Options, Plan

SCHEMA = "edgeemb-bench/1"
NEEDED_DATA = ("en_corpus", "beir_scifact")  # throughput sample and index; queries


class NothingToMeasure(EdgeembError):
    """No bundle to measure, or every measurement of the run failed: no report is written."""


def default_bundles() -> list[Path]:
    """The embedded defaults that are built: MiniLM int8, and the static default when present."""
    from edgeemb.paths import default_bundle_path

    return [p for p in (default_bundle_path("default"), default_bundle_path("default-static")) if p.is_dir()]


def resolve(names: list[str]) -> list[Path]:
    """Bundle arguments (paths or default names) to folders."""
    from edgeemb.bundle import resolve_bundle

    return [resolve_bundle(n) for n in names] if names else default_bundles()


def preflight(names: list[str]) -> list[Path]:
    """The bundle folders to measure; DataMissing or NothingToMeasure before anything runs."""
    data.require(NEEDED_DATA)
    folders = resolve(names)
    if not folders:
        raise NothingToMeasure("no bundle to measure (build the defaults with `edgeemb setup` or pass a path)")
    return folders


def run_bench(names: list[str], quick: bool, opts: Options, command: str = "edgeemb bench",
              sentences: int | None = None) -> dict[str, Any]:
    """Measure each bundle, its peers, the goals and the low-end simulation; the stable results document."""
    folders = preflight(names)
    plan = runner.make_plan(quick, sentences)
    started = time.time()
    doc: dict[str, Any] = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "command": command,
                           "quick": quick, "machine": probes.machine(),
                           "settings": {"threads": opts.threads, "cores": opts.cores,
                                        "memory_limit_mb": opts.memory_limit_mb, "plan": plan.__dict__},
                           "bundles": [], "duels": [], "goals": [], "words": None, "lowend": None,
                           "peers_absent": {}, "errors": {}, "notes": []}
    for folder in folders:
        doc["bundles"].append(bench_bundle(folder, plan, opts, doc))
    log("word lookups: edgeemb static bundle vs gensim on the same GloVe vectors")
    doc["words"] = attempt({"name": "words", "errors": doc["errors"]}, "words", lambda: duels.word_duel(plan))
    if doc["words"] and doc["words"].get("skipped") and isinstance(doc["words"]["skipped"], str):
        absent(doc, "gensim (word lookups)", doc["words"]["skipped"])
    doc["lowend"] = run_lowend(doc, plan, opts)
    doc["machine"]["load_average_end"] = probes.load_average()
    doc["seconds"] = round(time.time() - started, 1)
    if not any(b.get("single") or b.get("throughput") or b.get("e2e") for b in doc["bundles"]):
        errors = "; ".join(f"{b['name']}: {k}: {v}" for b in doc["bundles"] for k, v in b["errors"].items())
        raise NothingToMeasure(f"nothing was measured ({errors[:600] or 'no error recorded'})")
    return doc


def absent(doc: dict, name: str, note: str) -> None:
    """Record a peer that did not run, loudly: in the log now and at the top of the report."""
    if name not in doc["peers_absent"]:
        log(f"PEER ABSENT: {name}: {note}")
    doc["peers_absent"][name] = note


def bench_bundle(folder: Path, plan: Plan, opts: Options, doc: dict) -> dict[str, Any]:
    """Everything measured for one bundle; a failing part is recorded as an error, not fatal to the run."""
    info = runner.bundle_info(folder)
    name = info["name"]
    log(f"{name}: load, first query, {plan.n_e2e} single queries")
    row: dict[str, Any] = {**info, "errors": {}}
    row["single"] = attempt(row, "single", lambda: runner.bench_single(info, plan, opts))
    row["throughput"] = attempt(row, "throughput", lambda: runner.bench_throughput(info, plan, opts))
    peer_list = select_peers(info, folder, plan)
    for p in peer_list:
        if not p.available:
            absent(doc, p.name, p.note)
    d = attempt(row, "duel", lambda: duels.duel(info, peer_list, plan))
    vectors, encode = attempt(row, "embeddings", lambda: runner.ensure_embeddings(info, plan, opts)) or (None, None)
    row["encode_corpus"] = encode
    if vectors is not None:
        row["index"] = attempt(row, "index", lambda: runner.bench_index(info, vectors, plan, opts))
        row["e2e"] = attempt(row, "e2e", lambda: runner.bench_e2e(info, plan, opts))
    if row.get("e2e"):
        row["verdict"] = runner.verdict(row["e2e"])
    if d:
        for peer, note in d["skipped"].items():
            absent(doc, peer, note)
        doc["duels"].append(d)
        doc["goals"] += [g.to_dict() | {"bundle": name} for g in duels.duel_goals(info, d, encode)]
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
    index = str(runner.index_folder(row, max(plan.index_sizes)))
    log(f"low-end simulation: {row['name']}, 1 core, caps {caps} MB")
    return lowend.simulate(row["path"], index, caps, cores=1)
