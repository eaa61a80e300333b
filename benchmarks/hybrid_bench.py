"""Hybrid retrieval benchmark: quality on BEIR SciFact, memory and latency on a 100k en_corpus index.

    .venv/bin/python -m benchmarks.hybrid_bench [--stage all|embed|scifact|memory|scale] [--coarse default-static]

Stages:
  embed    cache document vectors as .npy under .cache/bench/hybrid (keyed by bundle id), reused later
  scifact  nDCG@10 and latency against N (candidates) for static coarse + MiniLM stored rerank, vs MiniLM exact
  memory   build a MiniLM-only HNSW index and hybrid indexes of 100k en_corpus sentences, then measure each in a
           fresh subprocess from outside (/proc/<pid>/status): RSS with the encoders loaded, after opening the
           index, after the queries; end-to-end latency on one thread
  scale    resident bytes per document of an HNSW graph by dimension (synthetic vectors, fresh subprocesses),
           the model memory of each bundle, and the largest index that fits in 500 MB
Results go to .cache/bench/hybrid/results.json; `--stage report` prints markdown tables from it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "bench" / "hybrid"
RESULTS = CACHE / "results.json"
EN_TSV = ROOT.parent / "shared" / "data" / "en_corpus" / "en_sentences.tsv"
N_DOCS = 100_000
N_QUERIES = 200
QUERY_ROWS = 160_000  # held-out en_corpus rows used as queries
CANDIDATES = (10, 20, 50, 100, 200, 500, 1000)
LIVE_QUERIES = 5
SCALE_DIMS = (64, 128, 256, 384, 768, 896, 2048)


# -- small helpers ------------------------------------------------------------------------------------------
def percentile(xs, p: float) -> float:
    return float(np.percentile(np.asarray(xs, dtype=np.float64), p)) if len(xs) else float("nan")


def lat(xs) -> dict:
    return {"p50_ms": round(percentile(xs, 50), 3), "p95_ms": round(percentile(xs, 95), 3),
            "mean_ms": round(float(np.mean(xs)), 3), "n": len(xs)}


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def save_results(key: str, value) -> None:
    res = load_results()
    res[key] = value
    CACHE.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(res, indent=1, ensure_ascii=False))


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS, RssAnon, RssFile, VmHWM of a process, in kB, read from outside."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def en_sentences(start: int, n: int) -> list[str]:
    out = []
    with open(EN_TSV, encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for i, row in enumerate(reader):
            if i >= start + n:
                break
            if i >= start:
                out.append(row[1])
    return out


def cached_vectors(name: str, enc, texts: list[str], threads_note: str = "") -> np.ndarray:
    """Document vectors of `texts` by `enc`, cached as .npy keyed by dataset name and bundle id."""
    key = enc.manifest.bundle_id.replace("@", "-").replace("/", "_")
    path = CACHE / f"{name}_{key}.npy"
    if path.is_file():
        vecs = np.load(path)
        if len(vecs) == len(texts):
            return vecs
    CACHE.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    vecs = enc.encode_documents(texts, batch_size=32, show_progress=True)
    print(f"embedded {len(texts)} {name} texts with {enc.name} in {time.perf_counter() - start:.0f} s {threads_note}",
          file=sys.stderr)
    np.save(path, vecs)
    return vecs


def encoders(args, threads: int):
    import edgeemb

    return edgeemb.load(args.coarse, threads=threads), edgeemb.load(args.fine, threads=threads)


# -- stage: embed -------------------------------------------------------------------------------------------
def stage_embed(args) -> None:
    from edgeemb.eval.data import load_scifact

    coarse, fine = encoders(args, threads=args.threads)
    sf = load_scifact()
    docs = list(sf.corpus.values())
    for enc in (coarse, fine):
        cached_vectors("scifact", enc, docs)
        cached_vectors("en100k", enc, en_sentences(0, N_DOCS))


# -- stage: scifact -----------------------------------------------------------------------------------------
def stage_scifact(args) -> None:
    from edgeemb.eval.data import load_scifact
    from edgeemb.eval.metrics import ndcg_at_k
    from edgeemb.search.hybrid import HybridRetriever
    from edgeemb.search.index import Index

    coarse, fine = encoders(args, threads=1)
    sf = load_scifact()
    doc_ids, docs = list(sf.corpus), list(sf.corpus.values())
    cv, fv = cached_vectors("scifact", coarse, docs), cached_vectors("scifact", fine, docs)
    qids = list(sf.queries)
    queries = [sf.queries[q] for q in qids]

    def ndcg(rankings: list[list[str]]) -> float:
        return float(np.mean([ndcg_at_k(r, sf.qrels[q], 10) for q, r in zip(qids, rankings)]) * 100)

    out: dict = {"docs": len(docs), "queries": len(qids), "coarse": coarse.name, "fine": fine.name}
    # exact search with each encoder alone (queries encoded one at a time, as at search time)
    for role, enc, mat in (("fine_exact", fine, fv), ("coarse_exact", coarse, cv)):
        t, ranks = [], []
        unit = mat / np.maximum(np.linalg.norm(mat, axis=1, keepdims=True), 1e-12)
        for q in queries:
            s = time.perf_counter()
            qv = enc.encode_queries([q])[0]
            top = np.argsort(-(unit @ qv))[:10]
            t.append((time.perf_counter() - s) * 1e3)
            ranks.append([doc_ids[i] for i in top])
        out[role] = {"ndcg10": round(ndcg(ranks), 2), **lat(t)}
    # upper bound of the two-stage recipe: exact coarse top-N (no HNSW loss), then exact fine rerank
    qc = np.stack([coarse.encode_queries([q])[0] for q in queries])
    qf = np.stack([fine.encode_queries([q])[0] for q in queries])
    fine_scores = qf @ fv.T
    out["exact_two_stage"] = {}
    for cdim in args.coarse_dims:
        cu = cv[:, :cdim] / np.linalg.norm(cv[:, :cdim], axis=1, keepdims=True)
        qu = qc[:, :cdim] / np.linalg.norm(qc[:, :cdim], axis=1, keepdims=True)
        order = np.argsort(-(qu @ cu.T), axis=1)
        curve = {}
        for n in CANDIDATES:
            cand = order[:, :n]
            picked = np.take_along_axis(cand, np.argsort(-np.take_along_axis(fine_scores, cand, 1), axis=1), 1)
            curve[n] = round(ndcg([[doc_ids[i] for i in row[:10]] for row in picked]), 2)
        out["exact_two_stage"][cdim] = curve
        print(f"exact two-stage, coarse dim {cdim}: {curve}", file=sys.stderr)
    # MiniLM-only HNSW, as a plain Index
    tmp = CACHE / "tmp_scifact"
    shutil.rmtree(tmp, ignore_errors=True)
    with Index.create(tmp / "plain", fine, capacity=len(docs)) as ix:
        ix.add_vectors(fv, docs, ids=doc_ids)
        t, ranks = [], []
        for q in queries:
            s = time.perf_counter()
            hits = ix.search(q, k=10, ef=100)
            t.append((time.perf_counter() - s) * 1e3)
            ranks.append([h.id for h in hits])
        out["fine_hnsw"] = {"ndcg10": round(ndcg(ranks), 2), **lat(t)}
    # hybrid at each coarse dimension and each N
    out["hybrid"] = {}
    for cdim in args.coarse_dims:
        if cdim > coarse.dim:
            continue
        with HybridRetriever(coarse, fine, tmp / f"hy{cdim}", coarse_dim=cdim, threads=args.threads) as h:
            h.add_vectors(cv, fv, docs, ids=doc_ids)
            h.search(queries[0], k=10)  # warm-up
            curve = {}
            for lexical, n, mult in [(x, n, m) for x in (True, False) for m in args.ef_mults for n in CANDIDATES]:
                t, ranks, stages = [], [], {}
                for q in queries:
                    res = h.search(q, k=10, candidates=n, ef=mult * n or None,  # 0: the library default
                                   lexical=lexical)
                    t.append(res.timings["total_ms"])
                    ranks.append([x.id for x in res])
                    for key, v in res.timings.items():
                        stages.setdefault(key, []).append(v)
                score = ndcg(ranks)
                key = f"{n}" if len(args.ef_mults) == 1 else f"{n}@ef{mult or 'default'}x"
                key = ("bm25+static:" if lexical else "static:") + key
                curve[key] = {"ndcg10": round(score, 2), "kept_pct": round(100 * score / out["fine_exact"]["ndcg10"], 2),
                              **lat(t), "stages_p50_ms": {k: round(percentile(v, 50), 3) for k, v in stages.items()
                                                          if k.endswith("_ms")}}
                print(f"scifact coarse_dim {cdim} N={key}: nDCG@10 {score:.2f} ({curve[key]['kept_pct']}% of exact), "
                      f"p95 {curve[key]['p95_ms']} ms", file=sys.stderr)
            out["hybrid"][cdim] = {"curve": curve}
            if cdim == args.coarse_dims[0]:  # live rerank encodes 100 SciFact abstracts per query: a few suffice
                live = [h.search(q, k=10, candidates=100, rerank="live") for q in queries[:LIVE_QUERIES]]
                out["hybrid"][cdim]["live_rerank_n100"] = {
                    **lat([r.timings["total_ms"] for r in live]),
                    "rerank_p50_ms": round(percentile([r.timings["rerank_ms"] for r in live], 50), 1)}
    shutil.rmtree(tmp, ignore_errors=True)
    save_results("scifact", out)


# -- stage: memory (100k en_corpus) -------------------------------------------------------------------------
CHILD = r"""
import json, sys, time
import numpy as np
import edgeemb
from edgeemb.search.index import Index
from edgeemb.search.hybrid import HybridRetriever

cfg = json.loads(sys.argv[1])
def say(obj):
    print(json.dumps(obj), flush=True)
    sys.stdin.readline()  # the parent reads /proc/<pid>/status, then lets us go on

say({"stage": "imported"})
fine = edgeemb.load(cfg["fine"], threads=1)
coarse = edgeemb.load(cfg["coarse"], threads=1) if cfg["kind"] == "hybrid" else None
queries = cfg["queries"]
fine.encode_queries(queries[:8])
if coarse is not None:
    coarse.encode_queries(queries[:8])
enc_lat = []
for q in queries:  # the fine encoder alone on the same queries: how much of a search is query encoding
    s = time.perf_counter()
    fine.encode_queries([q])
    enc_lat.append((time.perf_counter() - s) * 1e3)
say({"stage": "encoders", "enc_lat": enc_lat})
t = time.perf_counter()
if cfg["kind"] == "hybrid":
    h = HybridRetriever(coarse, fine, cfg["path"], read_only=True)
    search = lambda q, n: h.search(q, k=10, candidates=n)
else:
    ix = Index.open(cfg["path"], fine, read_only=True)
    search = lambda q, n: ix.search(q, k=10, ef=max(n, 64))
open_s = time.perf_counter() - t
say({"stage": "opened", "open_s": open_s})
lat, ids = [], []
for q in queries:
    s = time.perf_counter()
    hits = search(q, 100)
    lat.append((time.perf_counter() - s) * 1e3)
    ids.append([x.id for x in hits])
say({"stage": "queried", "lat": lat, "ids": ids})
curve, curve_ids, stages = {}, {}, {}
for n in cfg["curve"]:
    curve[n], curve_ids[n], stages[n] = [], [], {}
    for q in queries:
        s = time.perf_counter()
        hits = search(q, n)
        curve[n].append((time.perf_counter() - s) * 1e3)
        curve_ids[n].append([x.id for x in hits])
        for key, v in getattr(hits, "timings", {}).items():
            stages[n].setdefault(key, []).append(v)
    stages[n] = {k: float(np.median(v)) for k, v in stages[n].items() if k.endswith("_ms")}
say({"stage": "curve", "curve": curve, "curve_ids": curve_ids, "stages": stages})
"""


def measure(cfg: dict) -> dict:
    """Run CHILD in a fresh process and read its memory from outside at each stage."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env)
    out: dict = {"mem_kb": {}}
    for line in proc.stdout:
        msg = json.loads(line)
        out["mem_kb"][msg["stage"]] = status_kb(proc.pid)
        out.update({k: v for k, v in msg.items() if k != "stage"})
        proc.stdin.write("\n")
        proc.stdin.flush()
    proc.wait()
    if proc.returncode:
        raise SystemExit(f"measuring {cfg['path']} failed ({proc.returncode})")
    return out


def build_indexes(args, coarse, fine) -> dict[str, Path]:
    from edgeemb.search.hybrid import HybridRetriever
    from edgeemb.search.index import Index

    texts = en_sentences(0, N_DOCS)
    ids = [f"en-{i}" for i in range(N_DOCS)]
    fv = cached_vectors("en100k", fine, texts)
    cv = cached_vectors("en100k", coarse, texts)
    folders, builds = {}, load_results().get("en100k_build", {})
    plain = CACHE / "en100k_minilm"
    if not (plain / "docs.sqlite").is_file() or args.rebuild:
        shutil.rmtree(plain, ignore_errors=True)
        s = time.perf_counter()
        with Index.create(plain, fine, capacity=N_DOCS, threads=args.threads, bundle_ref=args.fine) as ix:
            for lo in range(0, N_DOCS, 10_000):
                ix.add_vectors(fv[lo:lo + 10_000], texts[lo:lo + 10_000], ids[lo:lo + 10_000])
        builds["minilm"] = round(time.perf_counter() - s, 1)
        print(f"built {plain} in {builds['minilm']} s", file=sys.stderr)
    folders["minilm"] = plain
    for cdim in args.coarse_dims:
        if cdim > coarse.dim:
            continue
        folder = CACHE / f"en100k_hybrid{cdim}"
        if not (folder / "docs.sqlite").is_file() or args.rebuild:
            shutil.rmtree(folder, ignore_errors=True)
            s = time.perf_counter()
            with HybridRetriever(coarse, fine, folder, coarse_dim=cdim, threads=args.threads,
                                 coarse_ref=args.coarse, fine_ref=args.fine) as h:
                h.add_vectors(cv, fv, texts, ids, batch_size=10_000)
            builds[f"hybrid{cdim}"] = round(time.perf_counter() - s, 1)
            print(f"built {folder} in {builds[f'hybrid{cdim}']} s", file=sys.stderr)
        folders[f"hybrid{cdim}"] = folder
    save_results("en100k_build", builds)
    return folders


def stage_memory(args) -> None:
    coarse, fine = encoders(args, threads=args.threads)
    folders = build_indexes(args, coarse, fine)
    queries = en_sentences(QUERY_ROWS, N_QUERIES)
    # exact MiniLM top-10 over the 100k, to report how often the hybrid agrees with it
    fv = cached_vectors("en100k", fine, en_sentences(0, N_DOCS))
    qv = np.stack([fine.encode_queries([q])[0] for q in queries])  # one at a time, as the searches do
    exact = np.argsort(-(qv @ fv.T), axis=1)[:, :10]
    out = {}
    for name, folder in folders.items():
        cfg = {"kind": "plain" if name == "minilm" else "hybrid", "path": str(folder), "fine": args.fine,
               "coarse": args.coarse, "queries": queries, "curve": list(CANDIDATES)}
        m = measure(cfg)
        mem = m["mem_kb"]
        def agreement(rankings) -> float:
            return round(float(np.mean([len({f"en-{i}" for i in e} & set(got)) / 10
                                        for e, got in zip(exact, rankings)])), 3)

        agree = agreement(m["ids"])
        disk = {p.name: round(p.stat().st_size / 1e6, 2) for p in folder.iterdir() if p.is_file()}
        out[name] = {
            "rss_mb": {k: round(v["VmRSS"] / 1024, 1) for k, v in mem.items()},
            "index_rss_mb": round((mem["queried"]["VmRSS"] - mem["encoders"]["VmRSS"]) / 1024, 1),
            "index_anon_mb": round((mem["queried"]["RssAnon"] - mem["encoders"]["RssAnon"]) / 1024, 1),
            "index_file_mb": round((mem["queried"]["RssFile"] - mem["encoders"]["RssFile"]) / 1024, 1),
            "encoders_rss_mb": round((mem["encoders"]["VmRSS"] - mem["imported"]["VmRSS"]) / 1024, 1),
            "peak_rss_mb": round(mem["curve"]["VmHWM"] / 1024, 1),
            "open_s": round(m["open_s"], 2), "latency_n100": lat(m["lat"]), "fine_encode_only": lat(m["enc_lat"]),
            "curve": {n: {**lat(v), "agreement": agreement(m["curve_ids"][n]),
                          "stages_p50_ms": {k: round(x, 3) for k, x in m["stages"][n].items()}}
                      for n, v in m["curve"].items()},
            "agree_at_10_with_minilm_exact": agree, "disk_mb": disk}
        print(f"{name}: index RSS {out[name]['index_rss_mb']} MB (anon {out[name]['index_anon_mb']}, file "
              f"{out[name]['index_file_mb']}), p95 {out[name]['latency_n100']['p95_ms']} ms, agreement "
              f"{out[name]['agree_at_10_with_minilm_exact']}", file=sys.stderr)
    save_results("en100k", out)


# -- stage: scale -------------------------------------------------------------------------------------------
GRAPH_CHILD = r"""
import sys, json
import hnswlib
def st():
    d = {}
    for line in open("/proc/self/status"):
        k, _, v = line.partition(":")
        if k in ("VmRSS", "RssAnon"):
            d[k] = int(v.split()[0])
    return d
a = st()
g = hnswlib.Index(space="cosine", dim=int(sys.argv[2]))
g.load_index(sys.argv[1], allow_replace_deleted=True)
b = st()
print(json.dumps({"before": a, "after": b}))
"""

MODEL_CHILD = r"""
import sys, json
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1])
import edgeemb
a = rss()
enc = edgeemb.load(sys.argv[1], threads=1)
enc.encode_queries(["a short query to warm the session up", "一个简短的查询"])
print(json.dumps({"before": a, "after": rss(), "kind": enc.kind, "dim": enc.dim, "name": enc.name}))
"""


def stage_scale(args) -> None:
    import hnswlib

    n = 20_000
    out = {"graph_bytes_per_doc": {}, "models": {}}
    tmp = CACHE / "tmp_scale"
    tmp.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for dim in SCALE_DIMS:
        g = hnswlib.Index(space="cosine", dim=dim)
        g.init_index(max_elements=n, M=16, ef_construction=16, allow_replace_deleted=True)
        g.add_items(rng.normal(size=(n, dim)).astype(np.float32), np.arange(n), num_threads=args.threads)
        file = tmp / f"g{dim}.bin"
        g.save_index(str(file))
        del g
        res = json.loads(subprocess.run([sys.executable, "-c", GRAPH_CHILD, str(file), str(dim)], check=True,
                                        capture_output=True, text=True).stdout)
        out["graph_bytes_per_doc"][dim] = round((res["after"]["VmRSS"] - res["before"]["VmRSS"]) * 1024 / n)
        print(f"dim {dim}: {out['graph_bytes_per_doc'][dim]} B/doc", file=sys.stderr)
    shutil.rmtree(tmp, ignore_errors=True)
    for bundle in args.scale_bundles:
        try:
            res = json.loads(subprocess.run([sys.executable, "-c", MODEL_CHILD, bundle], check=True,
                                            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT))
                                            ).stdout)
        except subprocess.CalledProcessError as exc:
            print(f"skip {bundle}: {exc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        out["models"][bundle] = {"kind": res["kind"], "dim": res["dim"], "name": res["name"],
                                 "base_rss_mb": round(res["before"] / 1024, 1),
                                 "model_rss_mb": round((res["after"] - res["before"]) / 1024, 1)}
    save_results("scale", out)


# -- report -------------------------------------------------------------------------------------------------
def stage_report(args) -> None:
    res = load_results()
    sf = res.get("scifact")
    if sf:
        base = sf["fine_exact"]["ndcg10"]
        print(f"SciFact ({sf['docs']} docs, {sf['queries']} queries); coarse {sf['coarse']}, fine {sf['fine']}\n")
        print("| retrieval | nDCG@10 | % of MiniLM exact | p50 ms | p95 ms |\n|---|---|---|---|---|")
        for key, label in (("fine_exact", "MiniLM exact (brute force)"), ("fine_hnsw", "MiniLM HNSW (ef 100)"),
                           ("coarse_exact", "static alone (exact)")):
            r = sf[key]
            print(f"| {label} | {r['ndcg10']} | {100 * r['ndcg10'] / base:.1f} | {r['p50_ms']} | {r['p95_ms']} |")
        print("\n| coarse dim | HNSW ef | " + " | ".join(f"N={n}" for n in CANDIDATES) + " |\n|---|---|"
              + "---|" * len(CANDIDATES))
        for cdim, curve in sf.get("exact_two_stage", {}).items():
            print(f"| {cdim} | exact coarse | " + " | ".join(
                f"{curve[str(n)]} ({100 * curve[str(n)] / base:.1f}%)" for n in CANDIDATES) + " |")
        for cdim, h in sf["hybrid"].items():
            for first in ("bm25+static", "static"):
                keys = [k.split(":", 1)[1] for k in h["curve"] if k.startswith(first + ":")]
                mults = sorted({k.split("@ef")[1] for k in keys if "@ef" in k}) or [""]
                for mult in mults:
                    row = [h["curve"][f"{first}:{n}@ef{mult}" if mult else f"{first}:{n}"] for n in CANDIDATES]
                    label = "N + min(N, 200) (default)" if mult in ("", "defaultx") else mult.replace("x", " x N")
                    print(f"| {cdim}, {first} | {label} | "
                          + " | ".join(f"{r['ndcg10']} ({r['kept_pct']}%)" for r in row) + " |")
        for cdim, h in sf["hybrid"].items():
            for first in ("bm25+static", "static"):
                key = next((k for k in (f"{first}:100", f"{first}:100@efdefaultx") if k in h["curve"]),
                           f"{first}:100@ef1x")
                print(f"\nlatency, coarse dim {cdim}, N=100 ({key}): p50 {h['curve'][key]['p50_ms']} ms, p95 "
                      f"{h['curve'][key]['p95_ms']} ms; stages p50 {h['curve'][key]['stages_p50_ms']}")
            if h.get("live_rerank_n100"):
                r = h["live_rerank_n100"]
                print(f"live rerank, N=100 ({r['n']} queries): p50 {r['p50_ms']} ms, rerank p50 {r['rerank_p50_ms']} ms")
        print()
    en = res.get("en100k")
    if en:
        base = en["minilm"]["index_rss_mb"]
        base_anon = en["minilm"]["index_anon_mb"]
        print("| 100k en_corpus index | index RSS MB (anon + file) | % of MiniLM-only (total / anon) | encoders MB | "
              "open s | p50 ms | p95 ms |\n|---|---|---|---|---|---|---|")
        for name, r in en.items():
            print(f"| {name} | {r['index_rss_mb']} ({r['index_anon_mb']} + {r['index_file_mb']}) | "
                  f"{100 * r['index_rss_mb'] / base:.0f}% / {100 * r['index_anon_mb'] / base_anon:.0f}% | "
                  f"{r['encoders_rss_mb']} | {r['open_s']} | {r['latency_n100']['p50_ms']} | "
                  f"{r['latency_n100']['p95_ms']} |")
        print("\nMiniLM query encoding alone, same queries: " + ", ".join(
            f"{name} run p50 {r['fine_encode_only']['p50_ms']} / p95 {r['fine_encode_only']['p95_ms']} ms"
            for name, r in en.items() if "fine_encode_only" in r))
        print("\n| N | " + " | ".join(f"{name} p50 / p95 ms (agreement@10)" for name in en) + " |\n|---|"
              + "---|" * len(en))
        for n in map(str, CANDIDATES):
            print(f"| {n} | " + " | ".join(f"{r['curve'][n]['p50_ms']} / {r['curve'][n]['p95_ms']} "
                                          f"({r['curve'][n].get('agreement', '–')})" for r in en.values()) + " |")
        print()
    sc = res.get("scale")
    if sc:
        print("| dim | graph bytes/doc (M=16) |\n|---|---|")
        for dim, b in sc["graph_bytes_per_doc"].items():
            print(f"| {dim} | {b} |")
        print()
        for b, m in sc["models"].items():
            print(f"- {b}: {m['name']} ({m['kind']}, dim {m['dim']}): runtime {m['base_rss_mb']} MB + model "
                  f"{m['model_rss_mb']} MB")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", default="all", choices=("all", "embed", "scifact", "memory", "scale", "report"))
    p.add_argument("--coarse", default="default-static")
    p.add_argument("--fine", default="default")
    p.add_argument("--coarse-dims", type=int, nargs="+", default=[256, 128])
    p.add_argument("--threads", type=int, default=2, help="threads for embedding and graph building (not queries)")
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--ef-mults", type=int, nargs="+", default=[0],
                   help="scifact: HNSW ef = mult x N for each mult (0: the library default, N + min(N, 200))")
    p.add_argument("--scale-bundles", nargs="+", default=["default-static", "default"])
    args = p.parse_args()
    stages = ("embed", "scifact", "memory", "scale") if args.stage == "all" else (args.stage,)
    for stage in stages:
        globals()[f"stage_{stage}"](args)
    if args.stage == "all":
        stage_report(args)


if __name__ == "__main__":
    main()
