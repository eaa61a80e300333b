"""Index memory study (issue 16): float32 HNSW vs compressed storages at 10k, 100k and ~537k documents.

A study script, not library code: over 400 lines because each measurement runs in its own child process and
the parent, children, report and plot share one file so the committed figures come from one command.

    .venv/bin/python benchmarks/studies/index_memory.py figures --sizes 10k 100k   # the Index API, end to end
    .venv/bin/python benchmarks/studies/index_memory.py encode      # all corpora for the "all" size (~40 min)

`figures` takes document vectors from the benchmarks' shared vector cache (edgeemb_bench.cache, encoding what is
missing: the first 100k en_corpus rows and the SciFact corpus), builds Index(vectors="float32") and
Index(vectors="binary") from them, answers query text end to end through Index.search in a fresh process per
configuration, measures deleting half and compacting, and writes the report and plot under docs/results.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
VECTORS = ROOT / ".cache" / "vectors"
BUNDLE = "default"
MODEL = "all-minilm-l6-v2-int8"  # the default bundle's name, in the cached vector files
CHUNK = 4096
CORPORA = {"en_corpus": DATA / "en_corpus" / "en_sentences.tsv", "zh_corpus": DATA / "zh_corpus" / "zh_sentences.tsv"}


def tsv_sentences(path: Path) -> list[str]:
    """Every data line's text after the first tab, in file order (row i = data line i after the header)."""
    with open(path, encoding="utf-8") as f:
        next(f, None)
        return [line.rstrip("\n").partition("\t")[2] for line in f]


def scifact_texts() -> tuple[list[str], list[str], list[str], list[str]]:
    """SciFact corpus ids and texts (title + " " + text, as edgeemb.eval.data), test query ids and texts."""
    from edgeemb.eval.data import load_scifact

    sf = load_scifact(data_dir=DATA)
    return list(sf.corpus), list(sf.corpus.values()), list(sf.queries), list(sf.queries.values())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def vector_path(name: str, enc) -> Path:
    return VECTORS / f"{name}.{enc.manifest.name}.npy"


def encode_range(name: str, enc, texts: list[str], lo: int, hi: int, progress: Path, queries: bool = False) -> None:
    """Encode rows lo..hi into the partial .npy, resumable (rows done recorded in `progress`)."""
    part = vector_path(name, enc).with_suffix(".partial.npy")
    done = json.loads(progress.read_text())["done"] if progress.is_file() else lo
    arr = np.lib.format.open_memmap(part, mode="r+")
    fn = enc.encode_queries if queries else enc.encode_documents
    start = time.perf_counter()
    for a in range(done, hi, CHUNK):
        b = min(a + CHUNK, hi)
        arr[a:b] = fn(texts[a:b])
        arr.flush()
        progress.write_text(json.dumps({"done": b}))
        rate = (b - done) / (time.perf_counter() - start)
        print(f"{name}[{lo}:{hi}]: {b} ({rate:.0f}/s)", file=sys.stderr, flush=True)
    del arr


def child_encode(name: str, lo: int, hi: int) -> dict:
    import edgeemb

    enc = edgeemb.load(BUNDLE, threads=1)
    encode_range(name, enc, tsv_sentences(CORPORA[name]), lo, hi, VECTORS / f"{name}.{MODEL}.partial.{lo}.json")
    return {"done": hi}


def encode_cached(name: str, enc, texts: list[str], meta: dict, queries: bool = False, workers: int = 1) -> Path:
    """Encode texts in chunks into a float32 .npy (resumable), with a JSON beside it naming bundle and row order."""
    out = vector_path(name, enc)
    side = out.with_suffix(".json")
    if out.is_file() and side.is_file():
        return out
    part = out.with_suffix(".partial.npy")
    progress = out.with_suffix(".partial.json")
    done = json.loads(progress.read_text())["done"] if part.is_file() and progress.is_file() else 0
    arr = np.lib.format.open_memmap(part, mode="r+" if done else "w+", dtype=np.float32,
                                    shape=(len(texts), enc.dim))
    del arr
    if workers > 1 and name in CORPORA and len(texts) - done > workers * CHUNK:
        step = -(-(len(texts) - done) // workers // CHUNK) * CHUNK
        cuts = [*range(done, len(texts), step), len(texts)]
        procs = [subprocess.Popen([sys.executable, __file__, "child-encode", name, str(lo), str(hi)])
                 for lo, hi in itertools.pairwise(cuts)]
        if any(proc.wait() for proc in procs):
            raise SystemExit(f"encoding {name} failed (rerun to resume)")
    else:
        encode_range(name, enc, texts, done, len(texts), progress, queries)
    part.rename(out)
    progress.unlink(missing_ok=True)
    for f in VECTORS.glob(f"{name}.*.partial.*.json"):
        f.unlink()
    meta = {"bundle": enc.manifest.name, "bundle_id": enc.manifest.bundle_id, "dim": enc.dim, "rows": len(texts),
            "dtype": "float32", "normalized": True, "encode": "encode_queries" if queries else "encode_documents",
            "prompts": dict(enc.manifest.prompts), **meta}
    side.write_text(json.dumps(meta, indent=1, ensure_ascii=False))
    return out


def cmd_encode(args) -> None:
    import edgeemb

    VECTORS.mkdir(parents=True, exist_ok=True)
    enc = edgeemb.load(BUNDLE, threads=1)
    sources = {}
    for name, path in CORPORA.items():
        sources[name] = (tsv_sentences(path), {"source": str(path.relative_to(DATA.parent.parent)),
                                               "source_sha256": file_sha256(path),
                                               "row_order": "row i = data line i of the TSV after the header "
                                                            "(column `sentence`, text after the first tab), "
                                                            "empty lines included"})
    ids, docs, qids, queries = scifact_texts()
    sf_src = "shared/data/beir_scifact"
    encode_cached("en_corpus", enc, *sources["en_corpus"])
    encode_cached("scifact_corpus", enc, docs, {"source": sf_src + "/corpus.jsonl", "ids": ids,
                                                "row_order": "corpus.jsonl order; text = title + ' ' + text"})
    encode_cached("scifact_queries_test", enc, queries, {"source": sf_src + "/queries.jsonl", "ids": qids,
                                                         "row_order": "queries with test qrels, file order"},
                  queries=True)
    encode_cached("zh_corpus", enc, *sources["zh_corpus"], workers=args.workers)


# -- the documents and queries of each size ------------------------------------------------------------------
BENCH = ROOT / ".cache" / "bench" / "index_memory"
SIZES = ("10k", "100k", "all")
N_QUERIES = 1000  # held-out en_corpus sentences (never indexed)
HELD_FROM = 100_000
K = 10


def held_out_rows(n_en: int) -> np.ndarray:
    """The query rows: 1000 en_corpus rows past the first 100k, fixed seed; no index of any size holds them."""
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(np.arange(HELD_FROM, n_en), N_QUERIES, replace=False))


def shared_vectors(name: str) -> Path:
    """The benchmarks' shared cache file of a dataset's vectors by the default bundle (edgeemb_bench.cache)."""
    from edgeemb_bench.cache import vectors_path

    from edgeemb.bundle import read_manifest
    from edgeemb.paths import default_bundle_path

    return vectors_path(name, read_manifest(default_bundle_path(BUNDLE)).bundle_id)


def vec_file(name: str) -> np.ndarray:
    """Cached document vectors: the study's own file (all rows, from `encode`), else the shared cache's."""
    own = VECTORS / f"{name}.all-minilm-l6-v2-int8.npy"
    return np.load(own if own.is_file() else shared_vectors(name), mmap_mode="r")


def en_rows() -> int:
    """Data rows of en_corpus (the held-out queries are drawn from rows past the first 100k)."""
    with open(CORPORA["en_corpus"], "rb") as f:
        return sum(1 for _ in f) - 1


def segments(size: str) -> list[tuple[str, np.ndarray]]:
    """(vector file name, its rows) in label order: corpus rows, then the SciFact corpus (the nDCG targets)."""
    n_en = en_rows()
    held = held_out_rows(n_en)
    if size == "all":
        en = np.setdiff1d(np.arange(n_en), held)
        parts = [("en_corpus", en), ("zh_corpus", np.arange(len(vec_file("zh_corpus"))))]
    else:
        parts = [("en_corpus", np.arange({"10k": 10_000, "100k": 100_000}[size]))]
    return parts + [("scifact_corpus", np.arange(len(vec_file("scifact_corpus"))))]


def n_docs(size: str) -> int:
    return sum(len(rows) for _, rows in segments(size))


def scifact_offset(size: str) -> int:
    return sum(len(rows) for name, rows in segments(size) if name != "scifact_corpus")


def iter_vectors(size: str, chunk: int = 4096):
    """(labels, float32 vectors) of a size's documents in label order, chunk at a time (memory-mapped source)."""
    label = 0
    for name, rows in segments(size):
        src = vec_file(name)
        for lo in range(0, len(rows), chunk):
            part = rows[lo:lo + chunk]
            yield np.arange(label, label + len(part), dtype=np.int64), np.ascontiguousarray(src[part], np.float32)
            label += len(part)


def doc_texts(size: str) -> list[str]:
    out: list[str] = []
    for name, rows in segments(size):
        if name == "scifact_corpus":
            texts = scifact_texts()[1]
        else:
            texts = tsv_sentences(CORPORA[name])
        out += [texts[i] for i in rows.tolist()]
    return out


def query_texts() -> tuple[list[str], list[str], list[str], dict]:
    """Held-out en sentences, SciFact test query ids and texts, and the qrels."""
    from edgeemb.eval.data import load_scifact

    en = tsv_sentences(CORPORA["en_corpus"])
    held = held_out_rows(len(en))
    sf = load_scifact(data_dir=DATA)
    return [en[i] for i in held.tolist()], list(sf.queries), list(sf.queries.values()), sf.qrels


# -- measuring a process -----------------------------------------------------------------------------------
def proc_status() -> dict[str, int]:
    """VmHWM, VmRSS, RssAnon, RssFile of this process in kB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0])
    return out


def mb(kb: int) -> float:
    return round(kb / 1024, 1)


def pct(xs, p) -> float:
    return round(float(np.percentile(np.asarray(xs, np.float64) * 1000, p)), 3) if len(xs) else float("nan")


def lat(xs) -> dict:
    return {"p50_ms": pct(xs, 50), "p95_ms": pct(xs, 95)}


def load_now() -> float:
    return round(os.getloadavg()[0], 2)


def folder_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def run_child(*argv: str, timeout: int = 7200) -> dict:
    """Run this script in a fresh process (its own peak RSS) pinned to one core; its last stdout line is JSON."""
    cmd = ["taskset", "-c", os.environ.get("BENCH_CPU", "1"), sys.executable, __file__, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save_result(key: str, value) -> None:
    file = BENCH / "results.json"
    res = json.loads(file.read_text()) if file.is_file() else {}
    res[key] = value
    file.write_text(json.dumps(res, indent=1, ensure_ascii=False))


def load_results() -> dict:
    file = BENCH / "results.json"
    return json.loads(file.read_text()) if file.is_file() else {}


# -- ground truth ------------------------------------------------------------------------------------------
def query_vectors(enc=None) -> dict[str, np.ndarray]:
    """Query vectors encoded one at a time, as a search encodes them (cached)."""
    file = BENCH / "queries.npz"
    if file.is_file():
        return dict(np.load(file))
    import edgeemb

    enc = enc or edgeemb.load(BUNDLE, threads=1)
    para, _, sf, _ = query_texts()
    out = {"para": np.stack([enc.encode_queries([t])[0] for t in para]),
           "scifact": np.stack([enc.encode_queries([t])[0] for t in sf])}
    BENCH.mkdir(parents=True, exist_ok=True)
    np.savez(file, **out)
    return out


def truth(size: str, depth: int = 100) -> dict[str, np.ndarray]:
    """Exact float top-`depth` labels (and cosines) for both query sets over a size's documents (cached)."""
    file = BENCH / size / "truth.npz"
    if file.is_file():
        return dict(np.load(file))
    qv = query_vectors()
    out = {}
    for name, q in qv.items():
        best_l = np.zeros((len(q), 0), np.int64)
        best_s = np.zeros((len(q), 0), np.float32)
        for labels, vecs in iter_vectors(size, 65536):
            sims = q @ vecs.T
            all_s = np.concatenate([best_s, sims], axis=1)
            all_l = np.concatenate([best_l, np.broadcast_to(labels, sims.shape)], axis=1)
            keep = np.argpartition(-all_s, min(depth, all_s.shape[1] - 1), axis=1)[:, :depth]
            best_s = np.take_along_axis(all_s, keep, 1)
            best_l = np.take_along_axis(all_l, keep, 1)
        order = np.argsort(-best_s, axis=1, kind="stable")
        out[f"{name}_labels"] = np.take_along_axis(best_l, order, 1)
        out[f"{name}_scores"] = np.take_along_axis(best_s, order, 1)
    file.parent.mkdir(parents=True, exist_ok=True)
    np.savez(file, **out)
    return out


def recall_at_k(got: list[list[int]], exact: np.ndarray, k: int = K) -> float:
    return round(float(np.mean([len(set(g[:k]) & set(e[:k].tolist())) / k for g, e in zip(got, exact)])), 4)


def ndcg(got: list[list[int]], size: str) -> float:
    from edgeemb.eval.metrics import ndcg_at_k

    _, qids, _, qrels = query_texts()
    sf_ids = scifact_texts()[0]
    off = scifact_offset(size)
    scores = []
    for qid, labels in zip(qids, got):
        ranked = [sf_ids[lab - off] if lab >= off else f"distractor-{lab}" for lab in labels[:K]]
        scores.append(ndcg_at_k(ranked, qrels[qid], K))
    return round(100 * float(np.mean(scores)), 2)


# -- building ----------------------------------------------------------------------------------------------
def paths(size: str) -> dict[str, Path]:
    base = BENCH / size
    return {"index": base / "index", "binary": base / "binary", "codes": base / "codes", "usearch_i8": base / "usearch_i8.usearch",
            "usearch_b1": base / "usearch_b1.usearch", "sqlite_vec": base / "sqlite_vec.db"}


def packed(vecs: np.ndarray) -> np.ndarray:
    return np.packbits(vecs > 0, axis=1)


def child_build(size: str, what: str) -> dict:
    """Build one storage of one size from the cached vectors; time and peak RSS of this process."""
    p = paths(size)
    start = time.perf_counter()
    extra: dict = {}
    if what in ("index", "binary"):  # Index(vectors="float32": hnswlib M 16, ef_construction 200 | "binary")
        import edgeemb

        enc = edgeemb.load(BUNDLE, threads=1)
        shutil.rmtree(p[what], ignore_errors=True)
        texts = doc_texts(size)
        index = edgeemb.Index.create(p[what], enc, capacity=n_docs(size) + 16,
                                     vectors="float32" if what == "index" else "binary")
        graph_time = [0.0]
        orig = index.graph.add

        def timed_add(*a, **kw):
            t = time.perf_counter()
            orig(*a, **kw)
            graph_time[0] += time.perf_counter() - t

        index.graph.add = timed_add
        for labels, vecs in iter_vectors(size):
            lo, hi = int(labels[0]), int(labels[-1]) + 1
            index.add_vectors(vecs, texts[lo:hi], ids=[f"d{i}" for i in range(lo, hi)])
        index.save()
        index.close()
        extra = {"graph_s": round(graph_time[0], 1)}
        files = {"docs.sqlite": folder_bytes(p[what] / "docs.sqlite"),
                 "graph": sum(folder_bytes(f) for f in p[what].glob("graph.*.bin")),
                 "codes": sum(folder_bytes(f) for f in p[what].glob("codes.*.bin")),
                 "rows": sum(folder_bytes(f) for f in p[what].glob("rows.*.i8"))}
    elif what == "codes":
        from edgeemb.search.codes import BinaryCodes

        shutil.rmtree(p["codes"], ignore_errors=True)
        p["codes"].mkdir(parents=True)
        codes = BinaryCodes.create(p["codes"], 384, capacity=n_docs(size))
        for labels, vecs in iter_vectors(size):
            codes.add(vecs, labels)
        codes.save(1)
        files = {f.name: f.stat().st_size for f in p["codes"].iterdir()}
        extra = {"ram_bytes": codes.nbytes}
    elif what in ("usearch_i8", "usearch_b1"):
        from usearch.index import Index as UIndex

        kw = {"metric": "cos", "dtype": "i8"} if what == "usearch_i8" else {"metric": "hamming", "dtype": "b1"}
        ix = UIndex(ndim=384, connectivity=16, expansion_add=128, **kw)
        for labels, vecs in iter_vectors(size):
            ix.add(labels.astype(np.uint64), vecs if what == "usearch_i8" else packed(vecs), threads=1)
        ix.save(str(p[what]))
        files = {p[what].name: p[what].stat().st_size}
    elif what == "sqlite_vec":
        db = sqlite_vec_connect(p["sqlite_vec"], fresh=True)
        db.execute("CREATE VIRTUAL TABLE codes USING vec0(embedding bit[384])")
        for labels, vecs in iter_vectors(size):
            with db:
                db.executemany("INSERT INTO codes(rowid, embedding) VALUES (?, vec_bit(?))",
                               [(int(lab), row.tobytes()) for lab, row in zip(labels, packed(vecs))])
        db.close()
        files = {p["sqlite_vec"].name: p["sqlite_vec"].stat().st_size}
    else:
        raise SystemExit(f"unknown storage {what}")
    st = proc_status()
    return {"size": size, "storage": what, "docs": n_docs(size), "build_s": round(time.perf_counter() - start, 1),
            "peak_rss_mb": mb(st["VmHWM"]), "files": files, "load": load_now(), **extra}


def sqlite_vec_connect(path: Path, fresh: bool = False):
    """An apsw connection with sqlite-vec loaded (the stdlib sqlite3 here cannot load extensions)."""
    import apsw
    import sqlite_vec

    if fresh:
        path.unlink(missing_ok=True)
    db = apsw.Connection(str(path))
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    return db


def cmd_build(args) -> None:
    for size in args.sizes:
        (BENCH / size).mkdir(parents=True, exist_ok=True)
        truth(size)
        for what in args.storages:
            res = run_child("child-build", size, what)
            print(json.dumps(res), flush=True)
            save_result(f"build/{size}/{what}", res)


# -- sweeps (vectors only, one process per size): what settings keep recall ----------------------------------
def child_sweep(size: str) -> dict:
    import hnswlib

    from edgeemb.search.codes import BinaryCodes

    p, tr, qv = paths(size), truth(size), query_vectors()
    para, exact = qv["para"], tr["para_labels"]
    out: dict = {"size": size, "docs": n_docs(size), "load": load_now()}

    def timed(fn, queries):
        """Results and, per query, the faster of two passes (the machine is shared: this trims preemptions)."""
        got, times = [], []
        for rep in range(2):
            for i, q in enumerate(queries):
                t = time.perf_counter()
                res = fn(q)
                dt = time.perf_counter() - t
                if rep == 0:
                    got.append(res)
                    times.append(dt)
                else:
                    times[i] = min(times[i], dt)
        return got, times

    g = hnswlib.Index(space="cosine", dim=384)
    g.load_index(str(next(p["index"].glob("graph.*.bin"))))
    rows = []
    for ef in (64, 100, 150, 200, 300, 400, 600, 800):
        g.set_ef(ef)
        got, times = timed(lambda q: g.knn_query(q[None, :], k=K, num_threads=1)[0][0].tolist(), para)
        rows.append({"ef": ef, "recall@10": recall_at_k(got, exact), **lat(times)})
    out["hnsw"] = rows
    g = None
    codes = BinaryCodes.load(p["codes"], 1, 384, read_only=True)
    rows = []
    for cand in (1000, 2000, 4000, 8000):
        for resc in (50, 100, 200, 400):
            codes.candidates, codes.rescore = cand, resc
            got, times = timed(lambda q: [lab for lab, _ in codes.search(q, K)], para)
            rows.append({"candidates": cand, "rescore": resc, "recall@10": recall_at_k(got, exact), **lat(times)})
    out["codes"] = rows
    codes.candidates = codes.rescore = None
    got, times = timed(lambda q: [lab for lab, _ in codes.search(q, K)], para)
    out["codes_default"] = {"candidates": codes.candidates, "recall@10": recall_at_k(got, exact), **lat(times)}
    from usearch.index import Index as UIndex

    for name in ("usearch_i8", "usearch_b1"):
        ix = UIndex.restore(str(p[name]), view=True)
        rows = []
        for ef in (64, 128, 256, 512):
            ix.expansion_search = ef
            for resc in ((0, 50) if name == "usearch_i8" else (100, 200, 400)):
                def fn(q, ix=ix, resc=resc, name=name):
                    query = q if name == "usearch_i8" else packed(q[None, :])[0]
                    m = ix.search(query, max(K, resc), threads=1)
                    keys = m.keys.astype(np.int64)
                    if not resc:
                        return keys[:K].tolist()
                    labs, sc = codes.scores(keys, q)
                    return labs[np.argsort(-sc)[:K]].tolist()
                got, times = timed(fn, para)
                rows.append({"ef": ef, "rescore_int8": resc, "recall@10": recall_at_k(got, exact), **lat(times)})
        out[name] = rows
        del ix
    return out


def cmd_sweep(args) -> None:
    for size in args.sizes:
        res = run_child("child-sweep", size)
        print(json.dumps(res), flush=True)
        save_result(f"sweep/{size}", res)


# -- paraphrase recall for the hybrid: compressed fine codes as the recall stage ------------------------------
def child_paraphrase(size: str) -> dict:
    """Top-10 overlap with exact MiniLM search when R candidates from the codes are re-scored exactly."""
    from edgeemb.search.codes import BinaryCodes

    p, tr, qv = paths(size), truth(size), query_vectors()
    codes = BinaryCodes.load(p["codes"], 1, 384, read_only=True)
    out = {"size": size, "docs": n_docs(size), "hamming": [], "hamming+asymmetric": []}
    all_vecs = None
    for R in (50, 100, 200, 500, 1000, 2000):
        for stage in ("hamming", "hamming+asymmetric"):
            got, sizes = [], []
            for q in qv["para"]:
                s = codes._state
                cand = codes._hamming_stage(q, s, None, R if stage == "hamming" else max(4 * R, 2000))
                sizes.append(len(cand))  # ties at the Hamming cut are kept: a few more than R
                if stage != "hamming":
                    approx = codes._asymmetric(q, s.codes[:, cand])
                    cand = cand[np.argpartition(-approx, R - 1)[:R]]
                labels = s.labels[cand]
                if all_vecs is None:
                    all_vecs = np.concatenate([v for _, v in iter_vectors(size, 65536)])
                exact = all_vecs[labels] @ q
                got.append(labels[np.argsort(-exact)[:K]].tolist())
            out[stage].append({"R": R, "mean_candidates": round(float(np.mean(sizes)), 1),
                               "overlap@10": recall_at_k(got, tr["para_labels"])})
    return out


def cmd_paraphrase(args) -> None:
    for size in args.sizes:
        res = run_child("child-paraphrase", size)
        print(json.dumps(res), flush=True)
        save_result(f"paraphrase/{size}", res)


# -- end to end: query text -> hits with documents, one thread, one process per configuration ---------------
def child_query(size: str, config: str, params: dict) -> dict:
    """Load the encoder, open the store and one storage, answer every query end to end; RSS and latency."""
    import edgeemb
    from edgeemb.search.store import DocStore

    p = paths(size)
    para, _, sf, _ = query_texts()
    base = proc_status()
    enc = edgeemb.load(BUNDLE, threads=1)
    enc.encode_queries(["warm up the session"])
    after_model = proc_status()
    index = None
    if config == "hnsw":
        index = edgeemb.Index.open(p["index"], enc, read_only=True)
        store = index.store
        ef = params.get("ef")

        def search(v):
            with index.reading():
                return index.candidates(v, K, ef)
    else:
        store = DocStore.open(p["index"], read_only=True)
        if config == "none":
            def search(v):
                return []
        else:
            from edgeemb.search.codes import BinaryCodes

            codes = BinaryCodes.load(p["codes"], 1, 384, read_only=True, verify=params.get("verify", True),
                                     candidates=params.get("candidates"), rescore=params.get("rescore"),
                                     float_vectors=store.vectors, exact_top=params.get("exact_top", 0))
            if config == "codes":
                search = codes.search
            elif config.startswith("usearch"):
                from usearch.index import Index as UIndex

                ix = UIndex.restore(str(p[config]), view=True)
                ix.expansion_search = params["ef"]
                resc = params.get("rescore", 50)

                def search(v):
                    m = ix.search(v if config == "usearch_i8" else packed(v[None, :])[0], max(K, resc), threads=1)
                    labs, sc = codes.scores(m.keys.astype(np.int64), v)
                    top = np.argsort(-sc)[:K]
                    return list(zip(labs[top].tolist(), sc[top].tolist()))
            elif config == "sqlite_vec":
                db = sqlite_vec_connect(p["sqlite_vec"])
                resc = params.get("rescore", 200)

                def search(v):
                    rows = db.execute("SELECT rowid FROM codes WHERE embedding MATCH vec_bit(?) AND k = ?",
                                      (packed(v[None, :])[0].tobytes(), resc)).fetchall()
                    labs, sc = codes.scores([r[0] for r in rows], v)
                    top = np.argsort(-sc)[:K]
                    return list(zip(labs[top].tolist(), sc[top].tolist()))
            else:
                raise SystemExit(f"unknown config {config}")
    opened = proc_status()
    for t in para[:20]:  # warm-up
        search(enc.encode_queries([t])[0])
    results: dict[str, list] = {}
    times: dict[str, list] = {"total": [], "encode": [], "search": [], "fetch": []}
    for name, texts in (("para", para), ("scifact", sf)):
        got = []
        for text in texts:
            t0 = time.perf_counter()
            v = enc.encode_queries([text])[0]
            t1 = time.perf_counter()
            pairs = search(v)
            t2 = time.perf_counter()
            docs = store.documents([lab for lab, _ in pairs])
            t3 = time.perf_counter()
            assert len(docs) == len(pairs) or config == "none"
            got.append([lab for lab, _ in pairs])
            for key, dt in (("total", t3 - t0), ("encode", t1 - t0), ("search", t2 - t1), ("fetch", t3 - t2)):
                times[key].append(dt)
        results[name] = got
    end = proc_status()
    tr = truth(size)
    out = {"size": size, "config": config, "params": params, "docs": n_docs(size), "load": load_now(),
           "rss_mb": {"start": mb(base["VmRSS"]), "model": mb(after_model["VmRSS"]), "opened": mb(opened["VmRSS"]),
                      "end": mb(end["VmRSS"]), "end_anon": mb(end["RssAnon"]), "end_file": mb(end["RssFile"]),
                      "peak": mb(end["VmHWM"])},
           "latency_ms": {key: lat(v) for key, v in times.items()}}
    if config != "none":
        out["recall@10"] = recall_at_k(results["para"], tr["para_labels"])
        out["ndcg@10"] = ndcg(results["scifact"], size)
        out["ndcg@10_exact"] = ndcg([row.tolist() for row in tr["scifact_labels"]], size)
    return out


def cmd_query(args) -> None:
    configs = json.loads(Path(args.configs).read_text()) if args.configs else DEFAULT_CONFIGS
    for rnd in range(args.rounds):
        for size in args.sizes:
            for name, (config, params) in configs.items():  # A, B, C, ... then the next round: interleaved
                res = run_child("child-query", size, config, json.dumps(params))
                res["name"], res["round"] = name, rnd
                print(json.dumps(res), flush=True)
                save_result(f"query/{size}/{name}/{rnd}", res)


DEFAULT_CONFIGS = {
    "encoder+store only": ("none", {}),
    "hnsw f32 ef64": ("hnsw", {"ef": 64}),
    "codes": ("codes", {}),
    "codes + exact top 20": ("codes", {"exact_top": 20}),
    "usearch i8": ("usearch_i8", {"ef": 128, "rescore": 50}),
    "usearch b1": ("usearch_b1", {"ef": 256, "rescore": 200}),
    "sqlite-vec bit": ("sqlite_vec", {"rescore": 200}),
}


# -- deletes and compaction --------------------------------------------------------------------------------
def child_compact(size: str, storage: str, frac: float) -> dict:
    """Delete a fraction of the documents, then compact; disk and (reopened) RAM before and after."""
    work = BENCH / size / f"compact_{storage}"
    shutil.rmtree(work, ignore_errors=True)
    src = paths(size)["index" if storage == "hnsw" else "codes"]
    shutil.copytree(src, work)
    n = n_docs(size)
    rng = np.random.default_rng(1)
    gone = np.sort(rng.choice(n, int(frac * n), replace=False))
    out = {"size": size, "storage": storage, "deleted": len(gone), "docs": n}
    if storage == "hnsw":
        import edgeemb

        out["disk_before"] = folder_bytes(work)
        with edgeemb.Index.open(work) as index:
            index.delete([f"d{i}" for i in gone.tolist()])
            index.save() if not index._compaction_due() else None
            index.store.transaction(lambda db: None)
        out["disk_after_delete"] = folder_bytes(work)
        with edgeemb.Index.open(work) as index:
            t = time.perf_counter()
            index.compact(force=True)
            out["compact_s"] = round(time.perf_counter() - t, 1)
        out["disk_after_compact"] = folder_bytes(work)
        out["graph_after_compact"] = sum(folder_bytes(f) for f in work.glob("graph.*.bin"))
    else:
        from edgeemb.search.codes import BinaryCodes

        codes = BinaryCodes.load(work, 1, 384)
        out["disk_before"], out["ram_before"] = folder_bytes(work), codes.nbytes
        codes.mark_deleted(gone)
        codes.save(2)
        codes.remove_stale()
        out["disk_after_delete"] = folder_bytes(work)
        t = time.perf_counter()
        codes.compact()
        codes.save(3)
        codes.remove_stale()
        out["compact_s"] = round(time.perf_counter() - t, 1)
        out["disk_after_compact"], out["ram_after_compact"] = folder_bytes(work), codes.nbytes
    return out


def child_open_rss(size: str, storage: str, which: str) -> dict:
    """RSS of a fresh process after opening one storage (no encoder): original or compacted copy."""
    base = proc_status()["VmRSS"]
    folder = BENCH / size / (f"compact_{storage}" if which == "compacted" else "")
    if storage == "hnsw":
        from edgeemb.search.graph import HnswGraph
        from edgeemb.search.store import DocStore

        folder = folder if which == "compacted" else paths(size)["index"]
        store = DocStore.open(folder, read_only=True)
        graph = HnswGraph.load(folder / f"graph.{store.meta['generation']}.bin", 384, 64)
        assert graph is not None
    else:
        from edgeemb.search.codes import BinaryCodes

        folder = folder if which == "compacted" else paths(size)["codes"]
        gen = max(int(f.name.split(".")[1]) for f in folder.glob("codes.*.bin"))
        graph = BinaryCodes.load(folder, gen, 384, read_only=True)
    st = proc_status()
    return {"size": size, "storage": storage, "which": which, "rss_added_mb": mb(st["VmRSS"] - base),
            "peak_mb": mb(st["VmHWM"])}


def cmd_compact(args) -> None:
    for size in args.sizes:
        for storage in ("hnsw", "codes"):
            before = run_child("child-open-rss", size, storage, "original")
            res = run_child("child-compact", size, storage, str(args.frac))
            after = run_child("child-open-rss", size, storage, "compacted")
            res["rss_added_mb_before"], res["rss_added_mb_after"] = before["rss_added_mb"], after["rss_added_mb"]
            print(json.dumps(res), flush=True)
            save_result(f"compact/{size}/{storage}", res)
            shutil.rmtree(BENCH / size / f"compact_{storage}", ignore_errors=True)


# -- the Index API end to end (what `figures` runs) ----------------------------------------------------------
E2E_CONFIGS = {
    "encoder + store only": ("none", {}),
    "float32 (hnsw ef 64)": ("index", {}),
    "binary": ("binary", {}),
    "binary + exact top 20": ("binary", {"exact_top": 20}),
}


def query_file() -> Path:
    """The query texts as a small JSON, written once by the parent: a child reading the corpora to find them would
    carry ~35 MB of freed-but-resident strings into the RSS it measures."""
    file = BENCH / "query_texts.json"
    if not file.is_file():
        para, _, sf, _ = query_texts()
        BENCH.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps({"para": para, "scifact": sf}, ensure_ascii=False))
    return file


def child_e2e(size: str, storage: str, params: dict) -> dict:
    """One process: load the encoder, open the index read-only, answer every query text end to end (encode, then
    Index.search with the vector: search and documents fetched); RSS at each step and per-query latency."""
    import edgeemb
    from edgeemb.search.store import DocStore

    p = paths(size)
    texts_by_set = json.loads(query_file().read_text())
    para, sf = texts_by_set["para"], texts_by_set["scifact"]
    del texts_by_set
    base = proc_status()
    enc = edgeemb.load(BUNDLE, threads=1)
    enc.encode_queries(["warm up the session"])
    after_model = proc_status()
    t = time.perf_counter()
    if storage == "none":
        store = DocStore.open(p["binary"], read_only=True)

        def search(v):
            return list(store.documents([]).values())
    else:
        index = edgeemb.Index.open(p[storage], enc, read_only=True)
        if "exact_top" in params:  # what the exact_top setting would give, without another build
            index.graph.codes.exact_top = int(params["exact_top"])

        def search(v):
            return index.search(v, k=K, ef=params.get("ef"))
    open_s = time.perf_counter() - t
    opened = proc_status()
    for text in para[:20]:
        search(enc.encode_queries([text])[0])
    results, times, enc_times, search_times = {}, [], [], []
    for name, texts in (("para", para), ("scifact", sf)):
        got = []
        for text in texts:
            t0 = time.perf_counter()
            v = enc.encode_queries([text])[0]
            t1 = time.perf_counter()
            hits = search(v)
            t2 = time.perf_counter()
            times.append(t2 - t0)
            enc_times.append(t1 - t0)
            search_times.append(t2 - t1)
            assert all(h.text for h in hits)
            got.append([int(h.id[1:]) for h in hits])
        results[name] = got
    end = proc_status()
    out = {"size": size, "storage": storage, "params": params, "docs": n_docs(size), "load": load_now(),
           "open_s": round(open_s, 3),
           "rss_mb": {"start": mb(base["VmRSS"]), "model": mb(after_model["VmRSS"]), "opened": mb(opened["VmRSS"]),
                      "end": mb(end["VmRSS"]), "end_anon": mb(end["RssAnon"]), "end_file": mb(end["RssFile"]),
                      "peak": mb(end["VmHWM"])},
           "latency_ms": lat(times), "encode_ms": lat(enc_times), "search_ms": lat(search_times)}
    if storage != "none":
        tr = truth(size)
        out["recall@10"] = recall_at_k(results["para"], tr["para_labels"])
        out["ndcg@10"] = ndcg(results["scifact"], size)
        out["ndcg@10_exact"] = ndcg([row.tolist() for row in tr["scifact_labels"]], size)
    return out


def child_index_compact(size: str, storage: str, frac: float) -> dict:
    """Delete a fraction of an Index's documents, then Index.compact: disk after each step, and after a VACUUM
    of the store (which compact does not run)."""
    import sqlite3

    import edgeemb

    work = BENCH / size / f"compact_{storage}"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(paths(size)[storage], work)
    n = n_docs(size)
    gone = np.sort(np.random.default_rng(1).choice(n, int(frac * n), replace=False))
    out = {"size": size, "storage": storage, "deleted": len(gone), "docs": n, "disk_before": folder_bytes(work)}

    def vector_files():
        return sum(folder_bytes(f) for pat in ("graph.*.bin", "codes.*.bin", "rows.*.i8") for f in work.glob(pat))

    out["vectors_before"] = vector_files()
    index = edgeemb.Index.open(work)
    index.delete([f"d{i}" for i in gone.tolist()])
    out["disk_after_delete"] = folder_bytes(work)
    t = time.perf_counter()
    index.compact(force=True)
    out["compact_s"] = round(time.perf_counter() - t, 1)
    index.close()
    out["disk_after_compact"], out["vectors_after_compact"] = folder_bytes(work), vector_files()
    db = sqlite3.connect(work / "docs.sqlite")
    db.execute("VACUUM")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    out["disk_after_vacuum"] = folder_bytes(work)
    return out


def child_index_open_rss(size: str, storage: str, which: str) -> dict:
    """RSS a fresh process adds by opening an Index read-only (no encoder): the built one or its compacted copy."""
    import edgeemb

    folder = BENCH / size / f"compact_{storage}" if which == "compacted" else paths(size)[storage]
    import numpy  # noqa: F401 - counted in the base, as every edgeemb process has it

    base = proc_status()["VmRSS"]
    index = edgeemb.Index.open(folder, read_only=True)
    st = proc_status()
    return {"size": size, "storage": storage, "which": which, "docs": len(index),
            "rss_added_mb": mb(st["VmRSS"] - base), "peak_mb": mb(st["VmHWM"])}


def cmd_figures(args) -> None:
    """Everything the closing figures need, in one run: vectors, builds, end-to-end queries, compaction, report."""
    from edgeemb_bench.cache import ensure_vectors

    from edgeemb.paths import default_bundle_path

    bundle = default_bundle_path(BUNDLE)
    ensure_vectors(bundle, "scifact_corpus", 5183, threads=1)
    ensure_vectors(bundle, "en_corpus", 100_000, threads=1)
    query_vectors()
    query_file()
    for size in args.sizes:
        (BENCH / size).mkdir(parents=True, exist_ok=True)
        truth(size)
        for what in ("index", "binary"):
            if args.rebuild or not (paths(size)[what] / "docs.sqlite").is_file():
                res = run_child("child-build", size, what)
                print(json.dumps(res), flush=True)
                save_result(f"build/{size}/{what}", res)
    for rnd in range(args.rounds):
        for size in args.sizes:
            for name, (storage, params) in E2E_CONFIGS.items():
                res = run_child("child-e2e", size, storage, json.dumps(params))
                res["name"], res["round"] = name, rnd
                print(json.dumps(res), flush=True)
                save_result(f"e2e/{size}/{name}/{rnd}", res)
    for size in [] if args.skip_compact else args.sizes:
        for storage in ("index", "binary"):
            before = run_child("child-index-open-rss", size, storage, "original")
            res = run_child("child-index-compact", size, storage, str(args.frac))
            after = run_child("child-index-open-rss", size, storage, "compacted")
            res["rss_added_mb_before"], res["rss_added_mb_after"] = before["rss_added_mb"], after["rss_added_mb"]
            print(json.dumps(res), flush=True)
            save_result(f"index-compact/{size}/{storage}", res)
            shutil.rmtree(BENCH / size / f"compact_{storage}", ignore_errors=True)
    cmd_e2e_report(args)


def cmd_e2e_report(args) -> None:
    """Tables (medians over rounds) to .cache/bench/index_memory/e2e.md and the plot to docs/results."""
    res = load_results()
    lines = [("| size | docs | storage | peak RSS MB | RSS after open MB | open s | p50 ms | p95 ms | search p50/p95 ms "
              "| recall@10 | "
              "nDCG@10 (exact) | vector files MB/100k | store MB/100k | build s | load |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    plot: dict[str, dict[str, list]] = {}
    for size in SIZES:
        for name, (storage, _) in E2E_CONFIGS.items():
            runs = [v for k, v in res.items() if k.startswith(f"e2e/{size}/{name}/")]
            if not runs:
                continue

            def med(f, runs=runs):
                return _median([f(r) for r in runs])
            r0 = runs[0]
            b = res.get(f"build/{size}/{storage}", {})
            files = b.get("files", {})
            per = 1e5 / r0["docs"] / 2**20
            vec_mb = round((files.get("graph", 0) + files.get("codes", 0) + files.get("rows", 0)) * per, 1) if b else ""
            store_mb = round(files.get("docs.sqlite", 0) * per, 1) if b else ""
            nd = "" if storage == "none" else f"{med(lambda r: r['ndcg@10'])} ({r0['ndcg@10_exact']})"
            lines.append(f"| {size} | {r0['docs']:,} | {name} | {med(lambda r: r['rss_mb']['peak'])} | "
                         f"{med(lambda r: r['rss_mb']['opened'])} | {med(lambda r: r['open_s'])} | "
                         f"{med(lambda r: r['latency_ms']['p50_ms'])} | {med(lambda r: r['latency_ms']['p95_ms'])} | "
                         f"{med(lambda r: r['search_ms']['p50_ms'])}/{med(lambda r: r['search_ms']['p95_ms'])} | "
                         f"{'' if storage == 'none' else med(lambda r: r['recall@10'])} | {nd} | "
                         f"{vec_mb if storage != 'none' else ''} | {store_mb if storage != 'none' else ''} | "
                         f"{b.get('build_s', '') if storage != 'none' else ''} | {med(lambda r: r['load'])} |")
            row = plot.setdefault(name, {"docs": [], "peak": [], "p95": []})
            row["docs"].append(r0["docs"])
            row["peak"].append(med(lambda r: r["rss_mb"]["peak"]))
            row["p95"].append(med(lambda r: r["latency_ms"]["p95_ms"]))
    comp = [v for k, v in res.items() if k.startswith("index-compact/")]
    if comp:
        lines += ["", ("| size | storage | deleted | vector files MB before / after compact | folder MB before / "
                       "after delete / after compact / after VACUUM | RSS added by open MB before / after | compact s |"),
                  "|---|---|---|---|---|---|---|"]
        for v in comp:
            f = lambda x: f"{x / 2**20:.1f}"
            lines.append(f"| {v['size']} | {v['storage']} | {v['deleted']:,} | {f(v['vectors_before'])} / "
                         f"{f(v['vectors_after_compact'])} | {f(v['disk_before'])} / {f(v['disk_after_delete'])} / "
                         f"{f(v['disk_after_compact'])} / {f(v['disk_after_vacuum'])} | {v['rss_added_mb_before']} / "
                         f"{v['rss_added_mb_after']} | {v['compact_s']} |")
    text = "\n".join(lines) + "\n"
    (BENCH / "e2e.md").write_text(text)
    print(text)
    if plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
        for (name, row), color in zip(plot.items(), ("grey", "tab:orange", "tab:blue", "tab:green")):
            for ax, key in ((a, "peak"), (b, "p95")):
                ax.plot(row["docs"], row[key], "o-", label=name, color=color)
        a.axhline(150, ls=":", c="grey")
        b.axhline(10, ls=":", c="grey")
        for ax, title in ((a, "whole-process peak RSS (MB)"), (b, "p95 query text -> hits (ms)")):
            ax.set_xscale("log")
            ax.set_xlabel("documents")
            ax.set_title(title)
            ax.grid(alpha=0.3)
        a.legend(fontsize=8)
        loads = [r["load"] for k, r in res.items() if k.startswith("e2e/")]
        fig.suptitle(f"edgeemb Index: float32 vs binary storage (MiniLM int8, one thread; machine loaded, 1-min "
                     f"load {min(loads):.0f}-{max(loads):.0f} on 2 cores)")
        fig.tight_layout()
        out = ROOT / "docs" / "results" / "index-memory.png"
        fig.savefig(out, dpi=110)
        print(f"wrote {out.relative_to(ROOT)}")


# -- report ------------------------------------------------------------------------------------------------
def _median(xs):
    xs = [x for x in xs if x is not None]
    return round(float(np.median(xs)), 3 if max(map(abs, xs), default=0) < 10 else 1) if xs else None


STORAGE_FILES = {"hnsw": ("index", "graph"), "codes": ("codes", None), "usearch_i8": ("usearch_i8", None),
                 "usearch_b1": ("usearch_b1", None), "sqlite_vec": ("sqlite_vec", None)}


def storage_disk(res: dict, size: str, config: str) -> int | None:
    """Bytes on disk of a configuration's vector storage (the store's docs.sqlite not included)."""
    b = res.get(f"build/{size}/{ {'hnsw': 'index'}.get(config, config)}")
    if config == "none" or b is None:
        return None
    if config == "hnsw":
        return b["files"]["graph"]
    total = sum(b["files"].values())
    if config in ("usearch_i8", "usearch_b1", "sqlite_vec"):  # they re-score with the codes' int8 rows
        total += res.get(f"build/{size}/codes", {}).get("files", {}).get("rows.1.i8", 0)
    return total


def cmd_report(args) -> None:
    res = load_results()
    lines = ["# Index memory study (issue 16)", "",
             ("One thread (taskset -c 1), end to end from query text to hits with documents (MiniLM int8 default "
             "bundle, encoder loaded in the measured process). Queries: 1,000 held-out en_corpus sentences "
             "(recall@10 against exact float search over the same vectors) and the 300 SciFact test queries "
             "(nDCG@10, the 5,183 SciFact abstracts indexed beside the corpus sentences). Each configuration runs "
             "in its own process; peak = VmHWM of that process. Figures are medians over the rounds; load = "
             "1-min load average of the 2-core machine during the run."), ""]
    lines += [("| size | docs | storage | peak RSS MB | RSS opened MB | RSS end (anon/file) MB | p50 ms | p95 ms | "
               "search p50/p95 ms | recall@10 | nDCG@10 (exact) | storage disk MB/100k docs | build s | load |"),
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for size in SIZES:
        names = sorted({k.split("/")[2] for k in res if k.startswith(f"query/{size}/")},
                       key=lambda n: list(DEFAULT_CONFIGS).index(n) if n in DEFAULT_CONFIGS else 99)
        for name in names:
            runs = [v for k, v in res.items() if k.startswith(f"query/{size}/{name}/")]
            r0 = runs[0]
            cfg = r0["config"]
            def med(f, runs=runs):
                return _median([f(r) for r in runs])

            disk = storage_disk(res, size, cfg)
            build = res.get(f"build/{size}/{ {'hnsw': 'index'}.get(cfg, cfg)}", {})
            b_s = build.get("graph_s", build.get("build_s")) if cfg != "none" else None
            nd = "" if cfg == "none" else f"{med(lambda r: r['ndcg@10'])} ({r0['ndcg@10_exact']})"
            lines.append(
                f"| {size} | {r0['docs']:,} | {name} | {med(lambda r: r['rss_mb']['peak'])} | "
                f"{med(lambda r: r['rss_mb']['opened'])} | {med(lambda r: r['rss_mb']['end_anon'])}/"
                f"{med(lambda r: r['rss_mb']['end_file'])} | {med(lambda r: r['latency_ms']['total']['p50_ms'])} | "
                f"{med(lambda r: r['latency_ms']['total']['p95_ms'])} | "
                f"{med(lambda r: r['latency_ms']['search']['p50_ms'])}/"
                f"{med(lambda r: r['latency_ms']['search']['p95_ms'])} | "
                f"{'' if cfg == 'none' else med(lambda r: r['recall@10'])} | {nd} | "
                f"{'' if disk is None else round(disk / r0['docs'] * 1e5 / 2**20, 1)} | {b_s or ''} | "
                f"{med(lambda r: r['load'])} |")
    lines += ["", "## Builds", "", "| size | storage | build s | peak RSS MB | files (MB) | load |", "|---|---|---|---|---|---|"]
    for k, v in res.items():
        if k.startswith("build/"):
            files = ", ".join(f"{n} {b / 2**20:.1f}" for n, b in v["files"].items())
            lines.append(f"| {v['size']} | {v['storage']} | {v['build_s']}{' (graph ' + str(v['graph_s']) + ')' if 'graph_s' in v else ''} | "
                         f"{v['peak_rss_mb']} | {files} | {v['load']} |")
    for size in SIZES:
        sw = res.get(f"sweep/{size}")
        if not sw:
            continue
        lines += ["", f"## Sweeps at {size} ({sw['docs']:,} docs; search only, vector given; load {sw['load']})", "",
                  "| storage | setting | recall@10 | p50 ms | p95 ms |", "|---|---|---|---|---|"]
        for row in sw["hnsw"]:
            lines.append(f"| hnswlib f32 | ef {row['ef']} | {row['recall@10']} | {row['p50_ms']} | {row['p95_ms']} |")
        for row in sw["codes"]:
            lines.append(f"| codes | candidates {row['candidates']}, rescore {row['rescore']} | {row['recall@10']} | "
                         f"{row['p50_ms']} | {row['p95_ms']} |")
        d = sw["codes_default"]
        lines.append(f"| codes | defaults by size | {d['recall@10']} | {d['p50_ms']} | {d['p95_ms']} |")
        for name in ("usearch_i8", "usearch_b1"):
            for row in sw.get(name, []):
                lines.append(f"| {name} | ef {row['ef']}, int8 rescore {row['rescore_int8']} | {row['recall@10']} | "
                             f"{row['p50_ms']} | {row['p95_ms']} |")
    for size in SIZES:
        pp = res.get(f"paraphrase/{size}")
        if pp:
            lines += ["", (f"## Paraphrase recall stage at {size}: top-10 overlap with exact MiniLM after exact "
                           "re-scoring of R candidates"), "", "| R | Hamming only (mean candidates) | Hamming + asymmetric |",
                      "|---|---|---|"]
            for a, b in zip(pp["hamming"], pp["hamming+asymmetric"]):
                lines.append(f"| {a['R']} | {a['overlap@10']} ({a['mean_candidates']}) | {b['overlap@10']} |")
    comp = [v for k, v in res.items() if k.startswith("compact/")]
    if comp:
        lines += ["", "## Deletes and compaction (half the documents deleted)", "",
                  "| size | storage | disk before MB | after delete | after compact | RAM opened before MB | after compact | compact s |",
                  "|---|---|---|---|---|---|---|---|"]
        for v in comp:
            lines.append(f"| {v['size']} | {v['storage']} | {v['disk_before'] / 2**20:.1f} | "
                         f"{v['disk_after_delete'] / 2**20:.1f} | {v['disk_after_compact'] / 2**20:.1f} | "
                         f"{v['rss_added_mb_before']} | {v['rss_added_mb_after']} | {v['compact_s']} |")
    text = "\n".join(lines) + "\n"
    (BENCH / "results.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    sp = sub.add_parser("encode", help="cache corpus and SciFact vectors under .cache/vectors")
    sp.add_argument("--workers", type=int, default=1, help="processes for the zh corpus (one thread each)")
    for name in ("build", "sweep", "paraphrase", "query", "compact"):
        sp = sub.add_parser(name)
        sp.add_argument("--sizes", nargs="+", default=list(SIZES), choices=SIZES)
        if name == "build":
            sp.add_argument("--storages", nargs="+", default=["index", "codes", "usearch_i8", "usearch_b1",
                                                                "sqlite_vec"])
        if name == "query":
            sp.add_argument("--rounds", type=int, default=2)
            sp.add_argument("--configs", help="JSON file: name -> [config, params]")
        if name == "compact":
            sp.add_argument("--frac", type=float, default=0.5)
    sub.add_parser("report")
    sp = sub.add_parser("figures", help="Index float32 vs binary end to end: builds, queries, compaction, report")
    sp.add_argument("--sizes", nargs="+", default=["10k", "100k"], choices=SIZES)
    sp.add_argument("--rounds", type=int, default=2)
    sp.add_argument("--frac", type=float, default=0.5)
    sp.add_argument("--rebuild", action="store_true")
    sp.add_argument("--skip-compact", action="store_true", help="keep the compaction figures already measured")
    sub.add_parser("e2e-report")
    for name, n in (("child-encode", 3), ("child-build", 2), ("child-sweep", 1), ("child-paraphrase", 1), ("child-query", 3),
                    ("child-compact", 3), ("child-open-rss", 3), ("child-e2e", 3), ("child-index-compact", 3),
                    ("child-index-open-rss", 3)):
        sp = sub.add_parser(name)
        sp.add_argument("argv", nargs=n)
    args = p.parse_args(argv)
    if args.cmd.startswith("child-"):
        a = args.argv
        fn = {"child-encode": lambda: child_encode(a[0], int(a[1]), int(a[2])), "child-build": lambda: child_build(a[0], a[1]), "child-sweep": lambda: child_sweep(a[0]),
              "child-paraphrase": lambda: child_paraphrase(a[0]),
              "child-query": lambda: child_query(a[0], a[1], json.loads(a[2])),
              "child-compact": lambda: child_compact(a[0], a[1], float(a[2])),
              "child-open-rss": lambda: child_open_rss(a[0], a[1], a[2]),
              "child-e2e": lambda: child_e2e(a[0], a[1], json.loads(a[2])),
              "child-index-compact": lambda: child_index_compact(a[0], a[1], float(a[2])),
              "child-index-open-rss": lambda: child_index_open_rss(a[0], a[1], a[2])}[args.cmd]
        print(json.dumps(fn()))
        return
    {"encode": cmd_encode, "build": cmd_build, "sweep": cmd_sweep, "paraphrase": cmd_paraphrase,
     "query": cmd_query, "compact": cmd_compact, "report": cmd_report, "figures": cmd_figures,
     "e2e-report": cmd_e2e_report}[args.cmd](args)


if __name__ == "__main__":
    main()
