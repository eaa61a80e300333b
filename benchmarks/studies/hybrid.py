"""Hybrid retrieval study (docs/results/hybrid.md): quality on BEIR SciFact, memory and latency on a 100k index.

A study script, not library code: over 400 lines because its stages share one vector cache, one index build and
one report, so the committed figures come from one command.

    .venv/bin/python -m edgeemb_bench.studies.hybrid [--stage all|embed|scifact|memory|scale|report] [--docs N]

Stages:
  embed    cache document vectors (SciFact corpus, the first N en_corpus rows) for both bundles in the shared
           vector cache (cache.ensure_vectors: streamed by a worker, reused by `edgeemb bench` and other studies)
  scifact  nDCG@10 and latency against N (candidates) for static coarse + MiniLM stored rerank, vs MiniLM exact
  memory   build a MiniLM-only HNSW index and hybrid indexes of the N en_corpus rows, then measure each in a fresh
           worker from outside (probes.resident_kb): RSS with the encoders loaded, after opening the index,
           after the queries; end-to-end latency on one thread
  scale    resident bytes per document of an HNSW graph by dimension (synthetic vectors, fresh workers), the
           model memory of each bundle, and the largest index that fits in 500 MB
  bits     the fine model's sign bits as a third recall source (issue #16): SciFact nDCG@10 and paraphrase
           agreement@10 with exact MiniLM (held-out en_corpus sentences as queries) for each candidate split
           (keywords / bits / coarse), then, per split, a fresh worker per index: open time (bits derived from
           fine.i8), p50/p95 at N=100 and whole-process peak RSS. Run it pinned: `taskset -c 1 ...`
Results go to <bench cache>/hybrid/results.json; `--stage report` prints markdown tables from it.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from edgeemb_bench import data, probes
from edgeemb_bench.cache import cache_dir, ensure_vectors
from edgeemb_bench.harness import Limits, Worker, log, percentile, summarize
from edgeemb_bench.indexbench import doc_ids
from edgeemb_bench.studies import hybrid_report

CANDIDATES = (10, 20, 50, 100, 200, 500, 1000)
N_QUERIES = 200
QUERY_ROWS = 160_000  # held-out en_corpus rows used as queries
LIVE_QUERIES = 5
SCALE_DIMS = (64, 128, 256, 384, 768, 896, 2048)
SPLITS = {"kw+coarse (before)": (0.5, 0.0, 0.5), "kw+bits": (0.5, 0.5, 0.0), "kw+bits+coarse": (0.4, 0.4, 0.2),
          "kw 0.25+bits 0.75": (0.25, 0.75, 0.0), "kw 0.75+bits 0.25": (0.75, 0.25, 0.0), "bits alone": (0.0, 1.0, 0.0)}
BITS_N = (50, 100, 200)


def work_dir() -> Path:
    return cache_dir() / "hybrid"


def results_file() -> Path:
    return work_dir() / "results.json"


def save_results(key: str, value) -> None:
    res = hybrid_report.load_results(results_file())
    res[key] = value
    res.setdefault("machine", {})[key] = probes.machine()
    work_dir().mkdir(parents=True, exist_ok=True)
    results_file().write_text(json.dumps(res, indent=1, ensure_ascii=False))


def bundle_folder(name: str) -> Path:
    from edgeemb.bundle import resolve_bundle

    return resolve_bundle(name)


def vectors(dataset: str, bundle: str, n: int, threads: int) -> np.ndarray:
    """The first n vectors of a dataset by a bundle, from the shared cache (encoded by a worker when missing)."""
    path, _ = ensure_vectors(bundle_folder(bundle), dataset, n, threads=threads)
    return np.asarray(np.load(path, mmap_mode="r")[:n])


def encoders(args, threads: int):
    import edgeemb

    return edgeemb.load(args.coarse, threads=threads), edgeemb.load(args.fine, threads=threads)


# -- stage: embed -------------------------------------------------------------------------------------------
def stage_embed(args) -> None:
    n_sf = len(data.scifact_corpus()[0])
    for bundle in (args.coarse, args.fine):
        vectors("scifact_corpus", bundle, n_sf, args.threads)
        vectors("en_corpus", bundle, args.docs, args.threads)


# -- stage: scifact -----------------------------------------------------------------------------------------
def stage_scifact(args) -> None:
    from edgeemb import HybridRetriever, Index
    from edgeemb.eval.metrics import ndcg_at_k

    coarse, fine = encoders(args, threads=1)
    sf = data.scifact("test")
    ids, docs = data.scifact_corpus()
    cv, fv = (vectors("scifact_corpus", b, len(docs), args.threads) for b in (args.coarse, args.fine))
    qids = list(sf.queries)
    queries = [sf.queries[q] for q in qids]

    def ndcg(rankings: list[list[str]]) -> float:
        return float(np.mean([ndcg_at_k(r, sf.qrels[q], 10) for q, r in zip(qids, rankings)]) * 100)

    out: dict = {"docs": len(docs), "queries": len(qids), "coarse": coarse.name, "fine": fine.name}
    for role, enc, mat in (("fine_exact", fine, fv), ("coarse_exact", coarse, cv)):  # queries one at a time
        t, ranks = [], []
        unit = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        for q in queries:
            s = time.perf_counter()
            top = np.argsort(-(unit @ enc.encode_queries([q])[0]))[:10]
            t.append((time.perf_counter() - s) * 1e3)
            ranks.append([ids[i] for i in top])
        out[role] = {"ndcg10": round(ndcg(ranks), 2), "latency": summarize(t)}
    # upper bound of the two-stage recipe: exact coarse top-N (no HNSW loss), then exact fine rerank
    qc = np.stack([coarse.encode_queries([q])[0] for q in queries])
    fine_scores = np.stack([fine.encode_queries([q])[0] for q in queries]) @ fv.T
    out["exact_two_stage"] = {}
    for cdim in args.coarse_dims:
        cu = cv[:, :cdim] / np.linalg.norm(cv[:, :cdim], axis=1, keepdims=True)
        qu = qc[:, :cdim] / np.linalg.norm(qc[:, :cdim], axis=1, keepdims=True)
        order = np.argsort(-(qu @ cu.T), axis=1)
        curve = {}
        for n in CANDIDATES:
            cand = order[:, :n]
            picked = np.take_along_axis(cand, np.argsort(-np.take_along_axis(fine_scores, cand, 1), axis=1), 1)
            curve[n] = round(ndcg([[ids[i] for i in row[:10]] for row in picked]), 2)
        out["exact_two_stage"][cdim] = curve
        log(f"exact two-stage, coarse dim {cdim}: {curve}")
    tmp = work_dir() / "tmp_scifact"
    shutil.rmtree(tmp, ignore_errors=True)
    with Index.create(tmp / "plain", fine, capacity=len(docs)) as ix:  # MiniLM-only HNSW, a plain Index
        ix.add_vectors(fv, docs, ids=ids)
        t, ranks = [], []
        for q in queries:
            s = time.perf_counter()
            ranks.append([h.id for h in ix.search(q, k=10, ef=100)])
            t.append((time.perf_counter() - s) * 1e3)
        out["fine_hnsw"] = {"ndcg10": round(ndcg(ranks), 2), "latency": summarize(t)}
    out["hybrid"] = {}
    for cdim in [d for d in args.coarse_dims if d <= coarse.dim]:
        with HybridRetriever(coarse, fine, tmp / f"hy{cdim}", coarse_dim=cdim, threads=args.threads) as h:
            h.add_vectors(cv, fv, docs, ids=ids)
            h.search(queries[0], k=10)  # warm-up
            out["hybrid"][cdim] = {"curve": hybrid_curve(args, h, queries, ndcg, out["fine_exact"]["ndcg10"])}
            if cdim == args.coarse_dims[0]:  # live rerank encodes 100 SciFact abstracts per query: a few suffice
                live = [h.search(q, k=10, candidates=100, rerank="live") for q in queries[:LIVE_QUERIES]]
                out["hybrid"][cdim]["live_rerank_n100"] = {
                    "latency": summarize([r.timings["total_ms"] for r in live]),
                    "rerank_p50_ms": round(percentile([r.timings["rerank_ms"] for r in live], 50), 1)}
    shutil.rmtree(tmp, ignore_errors=True)
    save_results("scifact", out)


def hybrid_curve(args, h, queries: list[str], ndcg, exact: float) -> dict:
    """nDCG@10, latency and stage timings of a hybrid retriever at each N, with and without keywords."""
    curve = {}
    for lexical, mult, n in [(x, m, n) for x in (True, False) for m in args.ef_mults for n in CANDIDATES]:
        t, ranks, stages = [], [], {}
        for q in queries:
            res = h.search(q, k=10, candidates=n, ef=mult * n or None, lexical=lexical)  # 0: the library default
            t.append(res.timings["total_ms"])
            ranks.append([x.id for x in res])
            for key, v in res.timings.items():
                stages.setdefault(key, []).append(v)
        score = ndcg(ranks)
        key = ("bm25+static:" if lexical else "static:") + (f"{n}" if len(args.ef_mults) == 1 else
                                                            f"{n}@ef{mult or 'default'}x")
        curve[key] = {"ndcg10": round(score, 2), "kept_pct": round(100 * score / exact, 2), "latency": summarize(t),
                      "stages_p50_ms": {k: round(percentile(v, 50), 3) for k, v in stages.items()
                                        if k.endswith("_ms")}}
        log(f"scifact N={key}: nDCG@10 {score:.2f} ({curve[key]['kept_pct']}% of exact), "
            f"p95 {curve[key]['latency']['p95']} ms")
    return curve


# -- stage: memory (N en_corpus rows) -----------------------------------------------------------------------
def op_open_encoders(state: dict, fine: str, coarse: str | None, queries: list[str]) -> dict:
    """Worker op: load the encoders (warmed), and time the fine encoder alone on the queries."""
    import edgeemb

    state["fine"] = edgeemb.load(fine, threads=1)
    state["coarse"] = edgeemb.load(coarse, threads=1) if coarse else None
    for enc in (state["fine"], state["coarse"]):
        if enc is not None:
            enc.encode_queries(queries[:8])
    ms = []
    for q in queries:  # how much of a search is query encoding
        s = time.perf_counter()
        state["fine"].encode_queries([q])
        ms.append((time.perf_counter() - s) * 1e3)
    return {"enc_lat": ms}


def op_open_index(state: dict, path: str, split: list[float] | None = None) -> dict:
    """Worker op: open a plain or hybrid index read-only with the loaded encoders (split: the hybrid's
    candidate shares, None for its default)."""
    from edgeemb import HybridRetriever, Index

    t = time.perf_counter()
    bits_s = None
    if state["coarse"] is not None:
        h = HybridRetriever(state["coarse"], state["fine"], path, read_only=True)
        state["search"] = lambda q, n: h.search(q, k=10, candidates=n, split=split)
        bits_s = h.bits_open_s
    else:
        ix = Index.open(path, state["fine"], read_only=True)
        state["search"] = lambda q, n: ix.search(q, k=10, ef=max(n, 64))
    return {"open_s": time.perf_counter() - t, "bits_open_s": bits_s}


def op_search(state: dict, queries: list[str], n: int) -> dict:
    """Worker op: search each query with N candidates; ms, hit ids and median stage timings."""
    ms, ids, stages = [], [], {}
    for q in queries:
        s = time.perf_counter()
        hits = state["search"](q, n)
        ms.append((time.perf_counter() - s) * 1e3)
        ids.append([x.id for x in hits])
        for key, v in getattr(hits, "timings", {}).items():
            stages.setdefault(key, []).append(v)
    return {"ms": ms, "ids": ids, "stages": {k: percentile(v, 50) for k, v in stages.items() if k.endswith("_ms")}}


def measure(kind: str, path: Path, args, queries: list[str]) -> dict:
    """One index in a fresh worker; resident memory read from outside after each step."""
    w = Worker(sys.executable, f"memory {path.name}", Limits(), env={"OMP_NUM_THREADS": "1"}).start()
    mem, out = {}, {}
    try:
        w.call("import", modules=["edgeemb", "edgeemb.search.index", "edgeemb.search.hybrid"])
        mem["imported"] = probes.resident_kb(w.pid)
        out["enc_lat"] = w.call(op_open_encoders, fine=args.fine, coarse=args.coarse if kind == "hybrid" else None,
                                queries=queries)["enc_lat"]
        mem["encoders"] = probes.resident_kb(w.pid)
        out["open_s"] = w.call(op_open_index, path=str(path))["open_s"]
        mem["opened"] = probes.resident_kb(w.pid)
        out["n100"] = w.call(op_search, queries=queries, n=100)
        mem["queried"] = probes.resident_kb(w.pid)
        out["curve"] = {n: w.call(op_search, queries=queries, n=n) for n in CANDIDATES}
        mem["curve"] = probes.resident_kb(w.pid)
    finally:
        w.stop()
    return {"mem_kb": mem, **out}


def build_indexes(args, coarse, fine, plain_too: bool = True) -> dict[str, Path]:
    from edgeemb import HybridRetriever, Index

    n = args.docs
    texts, ids = data.sentences("en_corpus", 0, n), doc_ids(0, n)
    fv, cv = (vectors("en_corpus", b, n, args.threads) for b in (args.fine, args.coarse))
    folders, builds = {}, hybrid_report.load_results(results_file()).get("en_build", {})
    tag = f"en{n // 1000}k"
    plain = work_dir() / f"{tag}_minilm"
    if plain_too and (not (plain / "docs.sqlite").is_file() or args.rebuild):
        shutil.rmtree(plain, ignore_errors=True)
        s = time.perf_counter()
        with Index.create(plain, fine, capacity=n, threads=args.threads, bundle_ref=args.fine) as ix:
            for lo in range(0, n, 10_000):
                ix.add_vectors(fv[lo:lo + 10_000], texts[lo:lo + 10_000], ids[lo:lo + 10_000])
        builds["minilm"] = round(time.perf_counter() - s, 1)
        log(f"built {plain} in {builds['minilm']} s")
    if plain_too:
        folders["minilm"] = plain
    for cdim in [d for d in args.coarse_dims if d <= coarse.dim]:
        folder = work_dir() / f"{tag}_hybrid{cdim}"
        if not (folder / "docs.sqlite").is_file() or args.rebuild:
            shutil.rmtree(folder, ignore_errors=True)
            s = time.perf_counter()
            with HybridRetriever(coarse, fine, folder, coarse_dim=cdim, threads=args.threads,
                                 coarse_ref=args.coarse, fine_ref=args.fine) as h:
                h.add_vectors(cv, fv, texts, ids, batch_size=10_000)
            builds[f"hybrid{cdim}"] = round(time.perf_counter() - s, 1)
            log(f"built {folder} in {builds[f'hybrid{cdim}']} s")
        folders[f"hybrid{cdim}"] = folder
    save_results("en_build", builds)
    return folders


def stage_memory(args) -> None:
    coarse, fine = encoders(args, threads=args.threads)
    folders = build_indexes(args, coarse, fine)
    queries = data.sentences("en_corpus", QUERY_ROWS, N_QUERIES)
    fv = vectors("en_corpus", args.fine, args.docs, args.threads)  # exact MiniLM top-10, for agreement
    qv = np.stack([fine.encode_queries([q])[0] for q in queries])  # one at a time, as the searches do
    exact = [{f"en-{i}" for i in row} for row in np.argsort(-(qv @ fv.T), axis=1)[:, :10]]

    def agreement(rankings) -> float:
        return round(float(np.mean([len(e & set(got)) / 10 for e, got in zip(exact, rankings)])), 3)

    out = {}
    for name, folder in folders.items():
        m = measure("plain" if name == "minilm" else "hybrid", folder, args, queries)
        mem = m["mem_kb"]

        def delta(key: str, a: str, b: str, mem=mem) -> float:
            return round((mem[a][key] - mem[b][key]) / 1024, 1)

        out[name] = {
            "docs": args.docs, "rss_mb": {k: round(v["VmRSS"] / 1024, 1) for k, v in mem.items()},
            "index_rss_mb": delta("VmRSS", "queried", "encoders"), "index_anon_mb": delta("RssAnon", "queried", "encoders"),
            "index_file_mb": delta("RssFile", "queried", "encoders"),
            "encoders_rss_mb": delta("VmRSS", "encoders", "imported"), "peak_rss_mb": round(mem["curve"]["VmHWM"] / 1024, 1),
            "open_s": round(m["open_s"], 2), "latency_n100": summarize(m["n100"]["ms"]),
            "fine_encode_only": summarize(m["enc_lat"]),
            "curve": {n: {"latency": summarize(r["ms"]), "agreement": agreement(r["ids"]),
                          "stages_p50_ms": {k: round(x, 3) for k, x in r["stages"].items()}}
                      for n, r in m["curve"].items()},
            "agree_at_10_with_minilm_exact": agreement(m["n100"]["ids"]),
            "disk_mb": {p.name: round(p.stat().st_size / 1e6, 2) for p in folder.iterdir() if p.is_file()}}
        r = out[name]
        log(f"{name}: index RSS {r['index_rss_mb']} MB (anon {r['index_anon_mb']}, file {r['index_file_mb']}), "
            f"p95 {r['latency_n100']['p95']} ms, agreement {r['agree_at_10_with_minilm_exact']}")
    save_results("en_index", out)


# -- stage: bits (the fine model's sign bits as a recall source) ------------------------------------------------
class MemoQueries:
    """An encoder whose single-query encodings are remembered: the quality grid asks each query many times
    (queries are encoded alone either way, so the vectors are the same)."""

    def __init__(self, enc) -> None:
        self.enc, self.manifest, self.dim, self.path = enc, enc.manifest, enc.dim, enc.path
        self.memo: dict[str, np.ndarray] = {}

    def encode_queries(self, texts, **kw) -> np.ndarray:
        if len(texts) != 1:
            return self.enc.encode_queries(texts, **kw)
        if texts[0] not in self.memo:
            self.memo[texts[0]] = self.enc.encode_queries(texts, **kw)
        return self.memo[texts[0]]

    def encode_documents(self, texts, **kw) -> np.ndarray:
        return self.enc.encode_documents(texts, **kw)


def bits_scifact(args, coarse, fine, out: dict) -> None:
    """SciFact nDCG@10 as % of exact MiniLM per coarse dim, split and N (into out["scifact"])."""
    from edgeemb import HybridRetriever
    from edgeemb.eval.metrics import ndcg_at_k

    # SciFact: nDCG@10 as % of exact MiniLM, per coarse dim, split and N
    sf = data.scifact("test")
    ids, docs = data.scifact_corpus()
    cv, fv = (vectors("scifact_corpus", b, len(docs), args.threads) for b in (args.coarse, args.fine))
    qids = list(sf.queries)
    queries = [sf.queries[q] for q in qids]
    qf = np.stack([fine.encode_queries([q])[0] for q in queries])
    unit = fv / np.linalg.norm(fv, axis=1, keepdims=True)
    exact_rank = [[ids[i] for i in row] for row in np.argsort(-(qf @ unit.T), axis=1)[:, :10]]

    def ndcg(rankings: list[list[str]]) -> float:
        return float(np.mean([ndcg_at_k(r, sf.qrels[q], 10) for q, r in zip(qids, rankings)]) * 100)

    exact = ndcg(exact_rank)
    out["scifact"]["exact_ndcg10"] = round(exact, 2)
    tmp = work_dir() / "tmp_bits"
    shutil.rmtree(tmp, ignore_errors=True)
    for cdim in [d for d in args.coarse_dims if d <= coarse.dim]:
        with HybridRetriever(coarse, fine, tmp / f"sf{cdim}", coarse_dim=cdim, threads=args.threads) as h:
            h.add_vectors(cv, fv, docs, ids=ids)
            h.search(queries[0], k=10)  # warm-up
            for name, split in SPLITS.items():
                for n in BITS_N:
                    score = ndcg([[x.id for x in h.search(q, k=10, candidates=n, split=split)] for q in queries])
                    out["scifact"].setdefault(str(cdim), {}).setdefault(name, {})[str(n)] = {
                        "ndcg10": round(score, 2), "kept_pct": round(100 * score / exact, 2)}
                    log(f"scifact dim {cdim} {name} N={n}: {score:.2f} ({100 * score / exact:.1f}% of exact)")
    shutil.rmtree(tmp, ignore_errors=True)


def stage_bits(args) -> None:
    from edgeemb import HybridRetriever

    coarse, fine = (MemoQueries(e) for e in encoders(args, threads=1))
    out: dict = {"splits": {k: list(v) for k, v in SPLITS.items()}, "n": list(BITS_N), "scifact": {}, "en": {}}
    if args.bits_part != "cost":
        bits_scifact(args, coarse, fine, out)
    # en_corpus: agreement@10 with exact MiniLM on held-out sentences, per split and N (in process)
    folders = build_indexes(args, coarse, fine, plain_too=False)
    en_q = data.sentences("en_corpus", QUERY_ROWS, N_QUERIES)
    env = vectors("en_corpus", args.fine, args.docs, args.threads)
    qv = np.stack([fine.encode_queries([q])[0] for q in en_q])
    truth = [{f"en-{i}" for i in row} for row in np.argsort(-(qv @ env.T), axis=1)[:, :10]]

    def agreement(rankings) -> float:
        return round(float(np.mean([len(e & set(got)) / 10 for e, got in zip(truth, rankings)])), 3)

    for name, folder in (folders.items() if args.bits_part != "cost" else ()):
        with HybridRetriever(coarse, fine, folder, read_only=True) as h:
            out["en"].setdefault(name, {})["bits_open_s"] = round(h.bits_open_s, 3)
            out["en"][name]["bits_mb"] = round(h.bits.nbytes / 2**20, 2)
            for split_name, split in SPLITS.items():
                for n in BITS_N:
                    got = agreement([[x.id for x in h.search(q, k=10, candidates=n, split=split)] for q in en_q])
                    out["en"][name].setdefault("agreement", {}).setdefault(split_name, {})[str(n)] = got
                    log(f"en {name} {split_name} N={n}: agreement@10 {got}")
    if args.bits_part != "cost":
        save_results("bits_quality", out)
    # latency and memory: a fresh, pinned worker per index and split (before / after), N=100
    cost: dict = {}
    for name, folder in folders.items():
        for split_name in args.bits_cost_splits:
            w = Worker(sys.executable, f"bits {name}", Limits(), env={"OMP_NUM_THREADS": "1"}).start()
            try:
                w.call("import", modules=["edgeemb", "edgeemb.search.index", "edgeemb.search.hybrid"])
                w.call(op_open_encoders, fine=args.fine, coarse=args.coarse, queries=en_q[:20])
                enc = probes.resident_kb(w.pid)
                opened = w.call(op_open_index, path=str(folder), split=list(SPLITS[split_name]))
                after_open = probes.resident_kb(w.pid)
                r = w.call(op_search, queries=en_q, n=100)
                done = probes.resident_kb(w.pid)
            finally:
                w.stop()
            cost.setdefault(name, {})[split_name] = {
                "open_s": round(opened["open_s"], 3), "bits_open_s": round(opened["bits_open_s"], 3),
                "open_rss_mb": round((after_open["VmRSS"] - enc["VmRSS"]) / 1024, 1),
                "index_rss_mb": round((done["VmRSS"] - enc["VmRSS"]) / 1024, 1),
                "peak_rss_mb": round(done["VmHWM"] / 1024, 1), "latency": summarize(r["ms"]),
                "agreement": agreement(r["ids"]), "stages_p50_ms": {k: round(x, 3) for k, x in r["stages"].items()},
                "load_average": probes.load_average()}
            c = cost[name][split_name]
            log(f"{name} {split_name}: open {c['open_s']} s (bits {c['bits_open_s']} s), p50 {c['latency']['p50']:.2f}"
                f" p95 {c['latency']['p95']:.2f} ms, peak {c['peak_rss_mb']} MB, load {c['load_average']}")
    save_results("bits_cost", cost)


# -- stage: scale -------------------------------------------------------------------------------------------
def op_load_graph(state: dict, file: str, dim: int) -> dict:
    """Worker op: load a saved hnswlib graph and keep it (its memory is read from outside)."""
    import hnswlib

    state["graph"] = hnswlib.Index(space="cosine", dim=int(dim))
    state["graph"].load_index(file, allow_replace_deleted=True)
    return {}


def stage_scale(args) -> None:
    import hnswlib

    n = 20_000
    out: dict = {"graph_bytes_per_doc": {}, "models": {}}
    tmp = work_dir() / "tmp_scale"
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for dim in SCALE_DIMS:
        g = hnswlib.Index(space="cosine", dim=dim)
        g.init_index(max_elements=n, M=16, ef_construction=16, allow_replace_deleted=True)
        g.add_items(rng.normal(size=(n, dim)).astype(np.float32), np.arange(n), num_threads=args.threads)
        file = tmp / f"g{dim}.bin"
        g.save_index(str(file))
        del g
        before, after = resident_around(f"graph {dim}", [("import", {"modules": ["hnswlib"]})],
                                        [(op_load_graph, {"file": str(file), "dim": dim})])
        out["graph_bytes_per_doc"][dim] = round((after["VmRSS"] - before["VmRSS"]) * 1024 / n)
        log(f"dim {dim}: {out['graph_bytes_per_doc'][dim]} B/doc")
    shutil.rmtree(tmp, ignore_errors=True)
    for bundle in args.scale_bundles:
        before, after = resident_around(f"model {bundle}", [("import", {"modules": ["edgeemb"]})], [
            ("load", {"engine": "edgeemb", "spec": {"bundle": bundle, "threads": 1}}),
            ("latency", {"texts": ["a short query to warm the session up", "一个简短的查询"]})])
        m = bundle_info(bundle)
        out["models"][bundle] = {**m, "base_rss_mb": round(before["VmRSS"] / 1024, 1),
                                 "model_rss_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1)}
    save_results("scale", out)


def resident_around(label: str, setup: list, steps: list) -> tuple[dict, dict]:
    """Resident memory of a fresh worker after `setup` and again after `steps` (read from outside)."""
    w = Worker(sys.executable, label).start()
    try:
        for op, kw in setup:
            w.call(op, **kw)
        before = probes.resident_kb(w.pid)
        for op, kw in steps:
            w.call(op, **kw)
        return before, probes.resident_kb(w.pid)
    finally:
        w.stop()


def bundle_info(bundle: str) -> dict:
    from edgeemb import read_manifest

    m = read_manifest(bundle_folder(bundle))
    return {"kind": m.kind, "dim": m.dim, "name": m.name}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("all", "embed", "scifact", "memory", "scale", "bits", "report"))
    p.add_argument("--coarse", default="default-static")
    p.add_argument("--fine", default="default")
    p.add_argument("--coarse-dims", type=int, nargs="+", default=[256, 128])
    p.add_argument("--docs", type=int, default=100_000, help="en_corpus rows in the memory stage's indexes")
    p.add_argument("--threads", type=int, default=2, help="threads for embedding and graph building (not queries)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--ef-mults", type=int, nargs="+", default=[0],
                   help="scifact: HNSW ef = mult x N for each mult (0: the library default, N + min(N, 200))")
    p.add_argument("--scale-bundles", nargs="+", default=["default-static", "default"])
    p.add_argument("--bits-cost-splits", nargs="+", default=["kw+coarse (before)", "kw+bits"], choices=list(SPLITS),
                   help="bits: the splits whose latency and memory are measured in fresh workers")
    p.add_argument("--bits-part", default="both", choices=("both", "cost"),
                   help="bits: 'cost' measures only latency and memory (the quality grid is kept)")
    args = p.parse_args(argv)
    if args.stage == "report":
        print(hybrid_report.report(hybrid_report.load_results(results_file()), CANDIDATES), end="")
        return
    stages = ("embed", "scifact", "memory", "scale") if args.stage == "all" else (args.stage,)
    for stage in stages:
        globals()[f"stage_{stage}"](args)
    if args.stage == "all":
        print(hybrid_report.report(hybrid_report.load_results(results_file()), CANDIDATES), end="")


if __name__ == "__main__":
    main()
