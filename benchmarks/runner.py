"""The benchmark run: per bundle (load, latency, throughput, memory, index, end to end), then peers side by side.

Every measurement happens in a worker subprocess so that its peak RSS can be read from outside and peers can
live in their own venv. Engines compared with each other run in interleaved rounds so machine drift cancels.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import peers as peers_mod
from . import workloads
from .harness import Goal, Limits, Worker, WorkerError, margin, ratio, rotations, summarize

MINILM_INT8 = "all-minilm-l6-v2-int8"
LATENCY_LIMIT_MS = 100.0
MEMORY_LIMIT_MB = 500.0


@dataclass
class Plan:
    """How much of everything a run measures (quick: under 3 minutes on a 2-core machine)."""

    quick: bool
    n_latency: int
    n_throughput: int
    n_duel: int
    n_chunked: int
    latency_rounds: int
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


def make_plan(quick: bool, sentences: int | None = None) -> Plan:
    """The quick or the full plan; `sentences` overrides the throughput sample size (and caps the others)."""
    plan = _base_plan(quick)
    if sentences:
        plan.n_throughput = sentences
        plan.n_duel, plan.n_chunked = min(plan.n_duel, sentences), min(plan.n_chunked, sentences)
    return plan


def _base_plan(quick: bool) -> Plan:
    if quick:
        return Plan(quick=True, n_latency=200, n_throughput=500, n_duel=500, n_chunked=500, latency_rounds=2, throughput_rounds=1,
                    index_sizes=(10_000,), n_recall=200, n_e2e=200, torch_peers=False, encode_rss_n=10_000)
    return Plan(quick=False, n_latency=1109, n_throughput=10_000, n_duel=1000, n_chunked=2000, latency_rounds=4, throughput_rounds=2,
                index_sizes=(10_000, 100_000), n_recall=1000, n_e2e=1109)


def log(msg: str) -> None:
    """One progress line on stderr."""
    print(f"bench: {msg}", file=sys.stderr, flush=True)


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


def edgeemb_spec(path: Path, threads: int | None) -> dict[str, Any]:
    return {"bundle": str(path), "threads": threads}


def embedding_cache(name: str, n: int) -> Path:
    """Cached corpus embeddings: en_corpus_<tag>_<n/1000>k.npy (float32, first n sentences in file order)."""
    tag = "minilm_int8" if name == MINILM_INT8 else "".join(c if c.isalnum() else "_" for c in name)
    return peers_mod.cache_dir() / f"en_corpus_{tag}_{n // 1000}k.npy"


def npy_rows(path: Path) -> int:
    """Rows of a .npy without reading it (0 if unreadable)."""
    import numpy as np

    try:
        return int(np.load(path, mmap_mode="r").shape[0])
    except (OSError, ValueError):
        return 0


def run_worker(label: str, limits: Limits, steps: list[tuple[str, dict]], python: str | None = None
               ) -> tuple[list[dict], float | None, Worker]:
    """Start a worker, run steps in order, stop it; answers, peak RSS (MB) seen from outside, the worker."""
    worker = Worker(python or sys.executable, label, limits).start()
    answers = []
    try:
        for op, args in steps:
            answers.append(worker.call(op, **args))
    finally:
        peak = worker.stop()
    return answers, peak, worker


def ensure_embeddings(info: dict, n: int, plan: Plan, opts: Options) -> tuple[Path, dict]:
    """Corpus embeddings for the index benchmarks (reused when cached) and the encode-memory measurement."""
    cache = peers_mod.cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    candidates = [embedding_cache(info["name"], size) for size in (100_000, n)]
    for path in candidates:
        wait_for_writer(path)
    found = next((p for p in candidates if p.is_file() and npy_rows(p) >= n), None)
    measured: dict = {}
    sidecar = found.with_suffix(".json") if found else None
    if sidecar and sidecar.is_file():
        measured = json.loads(sidecar.read_text())
    if found is None or (not measured and not plan.quick):
        out = embedding_cache(info["name"], max(n, plan.encode_rss_n))
        target_n = max(n, plan.encode_rss_n)
        write_to = out if not out.is_file() else out.with_name(out.stem + ".measure.npy")
        log(f"{info['name']}: encoding {target_n} en_corpus sentences (streamed to {write_to.name})")
        corpus = str(workloads.data_file(workloads.EN_CORPUS))
        (_, enc), peak, _ = run_worker(f"encode {info['name']}", opts.limits(), [
            ("load", {"engine": "edgeemb", "spec": edgeemb_spec(Path(info["path"]), None)}),
            ("encode_to_npy", {"corpus": corpus, "n": target_n, "out": str(write_to)})])
        measured = {"bundle_id": info["bundle_id"], "n": target_n, "seconds": enc["seconds"],
                    "sentences_per_s": target_n / enc["seconds"], "peak_rss_mb": peak,
                    "threads": "physical cores", "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        if write_to != out:
            write_to.unlink(missing_ok=True)
        out.with_suffix(".json").write_text(json.dumps(measured, indent=2) + "\n")
        found = out
    if measured.get("peak_rss_mb") is None:
        measured.setdefault("note", "cached embeddings written by another tool; encode memory not measured")
    return found, measured


def wait_for_writer(path: Path, idle_s: float = 300.0) -> None:
    """If another run is writing this cache file (a fresh .tmp-<pid> beside it), wait for it to finish."""
    while True:
        tmps = [p for p in path.parent.glob(path.name + ".tmp-*") if time.time() - p.stat().st_mtime < idle_s]
        if not tmps or path.is_file():
            return
        log(f"waiting for another process writing {tmps[0].name}")
        time.sleep(20)


def bench_single(info: dict, plan: Plan, opts: Options) -> dict:
    """Load time, first-query latency and single-query p50/p95/p99 on real queries, in a fresh worker."""
    queries = workloads.scifact_queries(plan.n_latency)
    path = Path(info["path"])
    (load, first, lat), peak, _ = run_worker(f"latency {info['name']}", opts.limits(opts.threads), [
        ("load", {"engine": "edgeemb", "spec": edgeemb_spec(path, opts.threads)}),
        ("latency", {"texts": queries[:1]}),
        ("latency", {"texts": queries, "warmup": 10})])
    return {"load_s": load["load_s"], "first_query_ms": first["ms"][0], "latency": summarize(lat["ms"]),
            "latency_samples": [round(x, 4) for x in lat["ms"]], "threads": opts.threads,
            "worker_peak_rss_mb": peak}


def bench_throughput(info: dict, plan: Plan, opts: Options) -> dict:
    """Sentences/s on the corpus sample at each thread count: natural order, presorted, chunked (no sorting)."""
    texts = workloads.sample_sentences(plan.n_throughput)
    presorted = workloads.sort_by_tokens(texts, Path(info["path"]) / "tokenizer.json")
    bs = plan.static_batch_size if info["kind"] == "static" else plan.batch_size
    out: dict[str, Any] = {"n": len(texts), "n_chunked": min(len(texts), plan.n_chunked), "batch_size": bs}
    for t in plan.thread_counts:
        log(f"{info['name']}: throughput, {t} thread(s), {len(texts)} sentences")
        steps = [("load", {"engine": "edgeemb", "spec": edgeemb_spec(Path(info["path"]), t)}),
                 ("throughput", {"texts": texts[:200], "batch_size": bs}),  # warm-up
                 ("throughput", {"texts": texts, "batch_size": bs}),
                 ("throughput", {"texts": presorted, "batch_size": bs}),
                 ("throughput", {"texts": texts[:plan.n_chunked], "batch_size": bs, "mode": "chunked"})]
        answers, peak, _ = run_worker(f"throughput {info['name']} t{t}", opts.limits(t), steps)
        nat, pre, chunk = (a["n"] / a["seconds"] for a in answers[2:])
        out[str(t)] = {"natural": nat, "presorted": pre, "chunked": chunk, "worker_peak_rss_mb": peak}
    return out


def bench_index(info: dict, vectors: Path, plan: Plan, opts: Options) -> list[dict]:
    """Per index size: build time, size on disk, RSS of a process holding it, query latency, recall@10 vs exact."""
    corpus = str(workloads.data_file(workloads.EN_CORPUS))
    cache = peers_mod.cache_dir()
    queries = cache / f"recall_queries_{info['name']}_{plan.n_recall}.npy"
    texts = workloads.held_out_queries(plan.n_recall // 2) + workloads.scifact_queries(plan.n_recall // 2)
    _encode_queries(info, texts, queries, opts)
    rows = []
    for n in plan.index_sizes:
        folder = _index_folder(info, n)
        log(f"{info['name']}: building a {n}-document index")
        (build,), build_peak, _ = run_worker(f"build {n}", opts.limits(1), [
            ("index_build", {"vectors": str(vectors), "n": n, "corpus": corpus, "folder": str(folder)})])
        log(f"{info['name']}: querying the {n}-document index (recall at ef {list(plan.efs)})")
        worker = Worker(sys.executable, f"index {n}", opts.limits(1)).start()
        try:
            worker.call("baseline")
            base = worker.hwm_mb()
            opened = worker.call("index_open", folder=str(folder))
            search = worker.call("search_vectors", queries=str(queries))
            held = worker.hwm_mb()
            recall = worker.call("recall", vectors=str(vectors), n=n, queries=str(queries), efs=list(plan.efs))
        finally:
            worker.stop()
        rows.append({"n": n, "build_s": build["build_s"], "disk_mb": build["disk_mb"],
                     "build_peak_rss_mb": build_peak, "open_s": opened["open_s"],
                     "rss_mb": held, "rss_over_runtime_mb": None if held is None or base is None else held - base,
                     "query": summarize(search["ms"]),
                     "recall_at_10": {ef: r["recall"] for ef, r in recall["by_ef"].items()},
                     "graph_query": {ef: summarize(r["ms"]) for ef, r in recall["by_ef"].items()},
                     "recall_queries": recall["queries"]})
    return rows


def _index_folder(info: dict, n: int) -> Path:
    return peers_mod.cache_dir() / "index" / f"{info['name']}-{n // 1000}k"


def _encode_queries(info: dict, texts: list[str], out: Path, opts: Options) -> None:
    run_worker(f"encode queries {info['name']}", opts.limits(), [
        ("load", {"engine": "edgeemb", "spec": edgeemb_spec(Path(info["path"]), None)}),
        ("encode_query_file", {"texts": texts, "out": str(out)})])


def bench_e2e(info: dict, plan: Plan, opts: Options) -> dict:
    """Query text -> top-10 hits from the largest index, in a fresh process: latency and peak RSS."""
    n = max(plan.index_sizes)
    folder = _index_folder(info, n)
    queries = workloads.scifact_queries(plan.n_e2e)
    log(f"{info['name']}: end to end on the {n}-document index, {len(queries)} queries")
    (opened, first, lat), peak, _ = run_worker(f"e2e {info['name']}", opts.limits(opts.threads), [
        ("index_open", {"folder": str(folder), "bundle": info["path"], "threads": opts.threads}),
        ("search_text", {"texts": queries[:1]}),
        ("search_text", {"texts": queries})])
    return {"n_docs": n, "load_s": opened["load_s"], "open_s": opened["open_s"], "first_query_ms": first["ms"][0],
            "latency": summarize(lat["ms"]), "latency_samples": [round(x, 4) for x in lat["ms"]],
            "peak_rss_mb": peak, "threads": opts.threads}


def verdict(e2e: dict, latency_ms: float = LATENCY_LIMIT_MS, memory_mb: float = MEMORY_LIMIT_MB) -> dict:
    """The edge rule: end-to-end p95 under 100 ms and peak RSS under 500 MB, with the margin of each."""
    p95 = e2e.get("latency", {}).get("p95")
    rss = e2e.get("peak_rss_mb")
    lat_ok = p95 is not None and math.isfinite(p95) and p95 < latency_ms
    mem_ok = rss is not None and rss < memory_mb
    return {"latency_p95_ms": p95, "latency_limit_ms": latency_ms, "latency_margin": margin(p95, latency_ms),
            "peak_rss_mb": rss, "memory_limit_mb": memory_mb, "memory_margin": margin(rss, memory_mb),
            "meets": bool(lat_ok and mem_ok), "n_docs": e2e.get("n_docs")}


def duel(info: dict, peer_list: list[peers_mod.Peer], plan: Plan) -> dict:
    """edgeemb and its peers on one core, one thread, the same inputs, in interleaved rotating rounds."""
    static = info["kind"] == "static"
    queries = workloads.scifact_queries(plan.n_latency)
    texts = workloads.sample_sentences(plan.n_throughput if static else plan.n_duel, seed=1)
    presorted = workloads.sort_by_tokens(texts, Path(info["path"]) / "tokenizer.json")
    bs = plan.static_batch_size if static else plan.batch_size
    engines = {"edgeemb": ("edgeemb", sys.executable, edgeemb_spec(Path(info["path"]), 1))}
    notes = {p.name: p.note for p in peer_list if not p.available}
    for p in peer_list:
        if p.available:
            spec = dict(p.spec, threads=1) if "threads" in p.spec else dict(p.spec)
            engines[p.name] = (p.engine, p.python, spec)
    workers: dict[str, Worker] = {}
    rows: dict[str, dict] = {}
    try:
        for name, (engine, python, spec) in engines.items():
            log(f"{info['name']}: duel: loading {name}")
            w = Worker(python, name, Limits(cores=1)).start()
            try:
                rows[name] = {"engine": engine, "load_s": w.call("load", engine=engine, spec=spec)["load_s"]}
                w.call("latency", texts=queries[:10])  # warm-up
                workers[name] = w
            except WorkerError as exc:
                w.stop()
                notes[name] = f"failed to load: {exc}"
        names = list(workers)
        lat = {n: [] for n in names}
        chunk = math.ceil(len(queries) / plan.latency_rounds)
        for r, order in enumerate(rotations(names, plan.latency_rounds)):
            part = queries[r * chunk:(r + 1) * chunk]
            for name in order:
                lat[name] += workers[name].call("latency", texts=part)["ms"]
        log(f"{info['name']}: duel: latency done ({len(queries)} queries x {len(names)} engines)")
        tp = {n: {"natural": [], "presorted": []} for n in names if rows[n]["engine"] != "floor"}
        for order in rotations(list(tp), plan.throughput_rounds):
            for name in order:
                for mode, inp in (("natural", texts), ("presorted", presorted)):
                    a = workers[name].call("throughput", texts=inp, batch_size=bs)
                    tp[name][mode].append(a["n"] / a["seconds"])
            log(f"{info['name']}: duel: throughput round done")
        for name in names:
            rows[name]["latency"] = summarize(lat[name])
            rows[name]["latency_samples"] = [round(x, 4) for x in lat[name]]
            if name in tp:
                rows[name]["throughput"] = {m: statistics.median(v) for m, v in tp[name].items()}
    finally:
        for name, w in workers.items():
            rows[name]["peak_rss_mb"] = w.stop()
    return {"bundle": info["name"], "n_queries": len(queries), "n_sentences": len(texts), "batch_size": bs,
            "threads": 1, "cores": 1, "rounds": {"latency": plan.latency_rounds, "throughput": plan.throughput_rounds},
            "engines": rows, "skipped": notes}


def duel_goals(info: dict, d: dict, encode: dict | None) -> list[Goal]:
    """The issue's goals as ratios from one duel (same run, interleaved)."""
    rows = d["engines"]

    def find(prefix: str) -> dict | None:
        return next((v for k, v in rows.items() if k.startswith(prefix)), None)

    def p50(row):
        return row["latency"]["p50"] if row else None

    def tput(row, mode="natural"):
        return row.get("throughput", {}).get(mode) if row else None

    ours = rows.get("edgeemb")
    goals: list[Goal] = []
    if info["kind"] == "static":
        m2v = find("model2vec")
        goals.append(Goal(f"{info['name']} throughput / model2vec (natural order)", ratio(tput(ours), tput(m2v)),
                          2.0, ">=", "" if m2v else "model2vec absent"))
        return goals
    fe, floor, st = find("fastembed"), find("floor"), find("sentence-transformers torch")
    goals += [
        Goal("p50 / fastembed (same int8 file)", ratio(p50(ours), p50(fe)), 1.0, "<=", "" if fe else "fastembed absent"),
        Goal("p50 / bare session.run on pre-tokenised input", ratio(p50(ours), p50(floor)), 1.15, "<="),
        Goal("throughput on unsorted text / fastembed", ratio(tput(ours), tput(fe)), 3.0, ">=",
             "" if fe else "fastembed absent"),
        Goal("throughput on unsorted text / sentence-transformers torch", ratio(tput(ours), tput(st)), 5.0, ">=",
             "" if st else "sentence-transformers torch absent or not run (--quick)"),
    ]
    if encode is not None:
        n = encode.get("n")
        goals.append(Goal(f"peak RSS encoding {n} sentences (MB)", encode.get("peak_rss_mb"), 250.0, "<=",
                          encode.get("note", "") if encode.get("peak_rss_mb") is None else
                          ("" if n == 100_000 else "quick run: fewer than 100k sentences")))
    return goals


def word_duel(plan: Plan) -> dict:
    """Word lookups (10 nearest words) on the same GloVe vectors: an edgeemb static bundle vs gensim."""
    (peer,) = peers_mod.word_peers()
    folder, note = peers_mod.glove_bundle()
    if folder is None or not peer.available:
        return {"skipped": note or peer.note}
    words = workloads.similarity_words()
    engines = {"edgeemb (glove-25d-fp32 bundle)": ("edgeemb-words", {"bundle": str(folder), "threads": 1}),
               peer.name: (peer.engine, peer.spec)}
    workers = {name: Worker(sys.executable, name, Limits(cores=1)).start() for name in engines}
    rows: dict[str, dict] = {}
    try:
        for name, (engine, spec) in engines.items():
            rows[name] = {"engine": engine, "load_s": workers[name].call("load", engine=engine, spec=spec)["load_s"]}
            workers[name].call("latency", texts=words[:20])
        samples: dict[str, list[float]] = {n: [] for n in engines}
        chunk = math.ceil(len(words) / plan.latency_rounds)
        for r, order in enumerate(rotations(list(engines), plan.latency_rounds)):
            for name in order:
                samples[name] += workers[name].call("latency", texts=words[r * chunk:(r + 1) * chunk])["ms"]
        for name in engines:
            rows[name]["latency"] = summarize(samples[name])
    finally:
        for name, w in workers.items():
            rows.setdefault(name, {})["peak_rss_mb"] = w.stop()
    names = list(rows)
    return {"words": len(words), "engines": rows,
            "p50_ratio": ratio(rows[names[0]].get("latency", {}).get("p50"), rows[names[1]].get("latency", {}).get("p50"))}
