"""The measurements of one bundle: load and single queries, batch throughput, index, end to end, edge verdict.

Every measurement happens in a worker subprocess so that its peak RSS can be read from outside. Modes compared
with each other (natural vs presorted vs chunked order) run in rotating rounds after an untimed warm-up pass,
and each figure keeps its per-round values so the report can print the spread.
"""
from __future__ import annotations

import math
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import data, indexbench
from .cache import cache_dir, ensure_vectors
from .harness import Limits, Worker, log, margin, rotations, run_worker, spread, summarize

LATENCY_LIMIT_MS = 100.0
MEMORY_LIMIT_MB = 500.0


@dataclass
class Plan:
    """How much of everything a run measures (quick: under 3 minutes on a 2-core machine).

    Ratio verdicts (duels against peers) get `ratio_rounds` interleaved rounds, each on the same inputs, so each
    ratio comes with its min/median/max over rounds. A bundle's own throughput gets `throughput_rounds`: one
    pass over 10k sentences takes ~30 s per mode and thread count for MiniLM, so two rounds keep the full run
    near 12 minutes (static passes take under a second and get the ratio rounds).
    """

    quick: bool
    n_latency: int  # SciFact queries per round (single query, duels)
    n_throughput: int  # sentences of the bundle throughput sample (and of the static duel)
    n_duel: int  # sentences per round of a sentence-bundle duel's throughput
    n_chunked: int
    ratio_rounds: int
    throughput_rounds: int
    index_sizes: tuple[int, ...]
    n_recall: int
    n_e2e: int
    efs: tuple[int, ...] = (16, 32, 64, 128, 256)
    thread_counts: tuple[int, ...] = (1, 2)
    torch_peers: bool = True
    encode_rss_n: int = 100_000
    batch_size: int = 32
    static_batch_size: int = 1024
    warm_n: int = 200  # sentences of the untimed warm-up pass of a sentence bundle (a static one warms on all)


def make_plan(quick: bool, sentences: int | None = None) -> Plan:
    """The quick or the full plan; `sentences` overrides the throughput sample size (and caps the others)."""
    plan = _base_plan(quick)
    if sentences:
        plan.n_throughput = sentences
        plan.n_duel, plan.n_chunked = min(plan.n_duel, sentences), min(plan.n_chunked, sentences)
    return plan


def _base_plan(quick: bool) -> Plan:
    if quick:
        return Plan(quick=True, n_latency=100, n_throughput=500, n_duel=300, n_chunked=500, ratio_rounds=3,
                    throughput_rounds=1, index_sizes=(10_000,), n_recall=200, n_e2e=200, torch_peers=False,
                    encode_rss_n=10_000)
    return Plan(quick=False, n_latency=300, n_throughput=10_000, n_duel=500, n_chunked=2000, ratio_rounds=6,
                throughput_rounds=2, index_sizes=(10_000, 100_000), n_recall=1000, n_e2e=1109)


@dataclass
class Options:
    """Command-line settings: threads for single queries, cores/memory limits applied to edgeemb workers."""

    threads: int = 1
    cores: int | None = None
    memory_limit_mb: int | None = None

    def limits(self, threads: int | None = None) -> Limits:
        cores = self.cores or (threads if threads == 1 else None)
        return Limits(cores=cores, address_space_mb=self.memory_limit_mb)


def bundle_info(path: Path) -> dict[str, Any]:
    """Manifest facts and size on disk of a bundle."""
    from edgeemb.bundle import read_manifest

    m = read_manifest(path)
    size = sum(f.stat().st_size for f in path.iterdir() if f.is_file())
    return {"name": m.name, "path": str(path), "kind": m.kind, "quantization": m.quantization, "dim": m.dim,
            "bundle_id": m.bundle_id, "size_mb": size / 1e6}


def edgeemb_spec(path: Path | str, threads: int | None) -> dict[str, Any]:
    return {"bundle": str(path), "threads": threads}


def batch_size(info: dict, plan: Plan) -> int:
    return plan.static_batch_size if info["kind"] == "static" else plan.batch_size


def warm_texts(info: dict, texts: list[str], plan: Plan) -> list[str]:
    """What the untimed warm-up pass encodes: all of it for a static bundle (its memory-mapped table pages in on
    first touch, which would otherwise be charged to whichever mode runs first), a few batches otherwise."""
    return texts if info["kind"] == "static" else texts[:plan.warm_n]


def ensure_embeddings(info: dict, plan: Plan, opts: Options) -> tuple[Path, dict]:
    """en_corpus vectors for the index benchmarks (cached) and the memory of encoding them (streamed in chunks)."""
    n = max(max(plan.index_sizes), plan.encode_rss_n)
    return ensure_vectors(info["path"], "en_corpus", n, opts.limits(), measure=not plan.quick)


def bench_single(info: dict, plan: Plan, opts: Options) -> dict:
    """Load time, first-query latency and single-query p50/p95/p99 on real queries, in a fresh worker."""
    queries = data.scifact_queries(plan.n_e2e)
    path = Path(info["path"])
    (load, first, lat), peak, _ = run_worker(f"latency {info['name']}", opts.limits(opts.threads), [
        ("load", {"engine": "edgeemb", "spec": edgeemb_spec(path, opts.threads)}),
        ("latency", {"texts": queries[:1]}),
        ("latency", {"texts": queries, "warmup": 10})])
    return {"load_s": load["load_s"], "first_query_ms": first["ms"][0], "latency": summarize(lat["ms"]),
            "latency_samples": [round(x, 4) for x in lat["ms"]], "n_queries": len(queries),
            "threads": opts.threads, "worker_peak_rss_mb": peak}


def bench_throughput(info: dict, plan: Plan, opts: Options) -> dict:
    """Sentences/s on the corpus sample at each thread count: natural order, presorted, chunked (no sorting),
    after a warm-up pass, the three modes in rotating rounds; the median and spread over rounds of each."""
    texts = data.sample_sentences(plan.n_throughput)
    inputs = {"natural": (texts, "call"), "presorted": (data.sort_by_tokens(texts, Path(info["path"]) /
                                                                          "tokenizer.json"), "call"),
              "chunked": (texts[:plan.n_chunked], "chunked")}
    bs = batch_size(info, plan)
    rounds = plan.ratio_rounds if info["kind"] == "static" else plan.throughput_rounds
    out: dict[str, Any] = {"n": len(texts), "n_chunked": min(len(texts), plan.n_chunked), "batch_size": bs,
                           "rounds": rounds, "warm_up": len(warm_texts(info, texts, plan))}
    for t in plan.thread_counts:
        log(f"{info['name']}: throughput, {t} thread(s), {len(texts)} sentences, {rounds} round(s)")
        worker = Worker(sys.executable, f"throughput {info['name']} t{t}", opts.limits(t)).start()
        per_round: dict[str, list[float]] = {m: [] for m in inputs}
        try:
            worker.call("load", engine="edgeemb", spec=edgeemb_spec(info["path"], t))
            worker.call("warm", texts=warm_texts(info, texts, plan), batch_size=bs)
            for order in rotations(list(inputs), rounds):
                for mode in order:
                    inp, how = inputs[mode]
                    a = worker.call("throughput", texts=inp, batch_size=bs, mode=how)
                    per_round[mode].append(a["n"] / a["seconds"])
        finally:
            peak = worker.stop()
        out[str(t)] = {**{m: statistics.median(v) for m, v in per_round.items()},
                       "spread": {m: spread(v) for m, v in per_round.items()}, "worker_peak_rss_mb": peak}
    return out


def index_folder(info: dict, n: int) -> Path:
    return cache_dir() / "index" / f"{info['name']}-{n // 1000}k"


def bench_index(info: dict, vectors: Path, plan: Plan, opts: Options) -> list[dict]:
    """Per index size: build time, size on disk, RSS of a process holding it, query latency (a tight loop over
    pre-encoded vectors, and between real encodes), recall@10 against exact search."""
    queries = cache_dir() / f"recall_queries_{info['name']}_{plan.n_recall}.npy"
    texts = data.held_out_queries(plan.n_recall // 2) + data.scifact_queries(plan.n_recall // 2)
    run_worker(f"encode queries {info['name']}", opts.limits(), [
        ("load", {"engine": "edgeemb", "spec": edgeemb_spec(info["path"], None)}),
        (indexbench.op_encode_query_file, {"texts": texts, "out": str(queries)})])
    rows = []
    for n in plan.index_sizes:
        folder = index_folder(info, n)
        log(f"{info['name']}: building a {n}-document index")
        (build,), build_peak, _ = run_worker(f"build {n}", opts.limits(1), [
            (indexbench.op_index_build, {"vectors": str(vectors), "n": n, "folder": str(folder)})])
        log(f"{info['name']}: querying the {n}-document index (recall at ef {list(plan.efs)})")
        worker = Worker(sys.executable, f"index {n}", opts.limits(1)).start()
        try:
            worker.call(indexbench.op_baseline)
            base = worker.hwm_mb()
            opened = worker.call(indexbench.op_index_open, folder=str(folder))
            tight = worker.call(indexbench.op_search_vectors, queries=str(queries))
            held = worker.hwm_mb()
            recall = worker.call(indexbench.op_recall, vectors=str(vectors), n=n, queries=str(queries),
                                 efs=list(plan.efs))
            worker.call("load", engine="edgeemb", spec=edgeemb_spec(info["path"], 1))
            between = worker.call(indexbench.op_search_between_encodes, texts=texts)
        finally:
            worker.stop()
        rows.append({"n": n, "build_s": build["build_s"], "disk_mb": build["disk_mb"],
                     "build_peak_rss_mb": build_peak, "open_s": opened["open_s"],
                     "rss_mb": held, "rss_over_runtime_mb": None if held is None or base is None else held - base,
                     "query": summarize(tight["ms"]), "query_between_encodes": summarize(between["ms"]),
                     "recall_at_10": {ef: r["recall"] for ef, r in recall["by_ef"].items()},
                     "graph_query": {ef: summarize(r["ms"]) for ef, r in recall["by_ef"].items()},
                     "recall_queries": recall["queries"]})
    return rows


def bench_e2e(info: dict, plan: Plan, opts: Options) -> dict:
    """Query text -> top-10 hits from the largest index, in a fresh process: latency and peak RSS."""
    n = max(plan.index_sizes)
    queries = data.scifact_queries(plan.n_e2e)
    log(f"{info['name']}: end to end on the {n}-document index, {len(queries)} queries")
    (opened, first, lat), peak, _ = run_worker(f"e2e {info['name']}", opts.limits(opts.threads), [
        (indexbench.op_index_open, {"folder": str(index_folder(info, n)), "bundle": info["path"],
                                    "threads": opts.threads}),
        (indexbench.op_search_text, {"texts": queries[:1]}),
        (indexbench.op_search_text, {"texts": queries})])
    return {"n_docs": n, "load_s": opened["load_s"], "open_s": opened["open_s"], "first_query_ms": first["ms"][0],
            "latency": summarize(lat["ms"]), "latency_samples": [round(x, 4) for x in lat["ms"]],
            "peak_rss_mb": peak, "threads": opts.threads, "n_queries": len(queries)}


def verdict(e2e: dict, latency_ms: float = LATENCY_LIMIT_MS, memory_mb: float = MEMORY_LIMIT_MB) -> dict:
    """The edge rule: end-to-end p95 under 100 ms and peak RSS under 500 MB, with the margin of each."""
    p95 = e2e.get("latency", {}).get("p95")
    rss = e2e.get("peak_rss_mb")
    lat_ok = p95 is not None and math.isfinite(p95) and p95 < latency_ms
    mem_ok = rss is not None and rss < memory_mb
    return {"latency_p95_ms": p95, "latency_limit_ms": latency_ms, "latency_margin": margin(p95, latency_ms),
            "peak_rss_mb": rss, "memory_limit_mb": memory_mb, "memory_margin": margin(rss, memory_mb),
            "meets": bool(lat_ok and mem_ok), "n_docs": e2e.get("n_docs"), "threads": e2e.get("threads")}
