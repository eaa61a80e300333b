"""Engines side by side: edgeemb and its peers on one core, the same inputs, in interleaved rotating rounds.

Each round gives every engine the same queries (and the same sentences), the starting engine rotates, and the
per-round p50 and sentences/s are kept, so every ratio (a goal of issue #6) comes with its spread over rounds.
"""
from __future__ import annotations

import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import data
from . import peers as peers_mod
from .harness import (
    Goal,
    Limits,
    Worker,
    WorkerError,
    interleave,
    log,
    percentile,
    ratio,
    rotations,
    round_ratios,
    summarize,
)
from .runner import Plan, batch_size, edgeemb_spec, warm_texts


@dataclass
class Contender:
    """One engine in a side-by-side run: how to load it, its batch size, whether it encodes batches."""

    name: str
    engine: str
    spec: dict[str, Any]
    python: str = field(default_factory=lambda: sys.executable)
    batch_size: int = 32
    throughput: bool = True  # the floor only answers single queries


def side_by_side(contenders: list[Contender], queries: list[str], rounds: int,
                 texts: dict[str, list[str]] | None = None, warm: list[str] | None = None,
                 label: str = "") -> tuple[dict[str, dict], dict[str, str]]:
    """Load every contender in its own worker pinned to one core, warm it, then `rounds` rotating rounds of
    single-query latency (all `queries` each round) and of throughput on each input of `texts`.

    Returns rows by name (latency summary over all rounds, p50 of each round, median and per-round sentences/s
    per input, peak RSS from outside) and a note for each contender that failed to load."""
    workers: dict[str, Worker] = {}
    rows: dict[str, dict] = {}
    notes: dict[str, str] = {}
    by_name = {c.name: c for c in contenders}
    try:
        for c in contenders:
            log(f"{label}: loading {c.name}")
            w = Worker(c.python, c.name, Limits(cores=1)).start()
            try:
                rows[c.name] = {"engine": c.engine, "load_s": w.call("load", engine=c.engine, spec=c.spec)["load_s"]}
                w.call("latency", texts=queries[:10])
                if texts and warm and c.throughput:
                    w.call("warm", texts=warm, batch_size=c.batch_size)
                workers[c.name] = w
            except WorkerError as exc:
                rows.pop(c.name, None)
                w.stop()
                notes[c.name] = f"failed to load: {exc}"
        names = list(workers)

        def latency(name: str):
            return lambda r: workers[name].call("latency", texts=queries)["ms"]

        lat = interleave({n: latency(n) for n in names}, rounds)
        log(f"{label}: latency done ({rounds} rounds x {len(queries)} queries x {len(names)} engines)")
        modes = list(texts or {})
        mode_orders = rotations(modes, rounds)  # the mode that starts rotates too

        def throughput(name: str):
            def run(r: int) -> list[float]:
                rates = {}
                for mode in mode_orders[r]:
                    a = workers[name].call("throughput", texts=texts[mode], batch_size=by_name[name].batch_size)
                    rates[mode] = a["n"] / a["seconds"]
                log(f"{label}: {name}: throughput round {r + 1}/{rounds} done")
                return [rates[m] for m in modes]
            return run

        tp_rounds = interleave({n: throughput(n) for n in names if by_name[n].throughput}, rounds if modes else 0)
        tp = {n: {m: [part[i] for part in parts] for i, m in enumerate(modes)} for n, parts in tp_rounds.items()}
        for name in names:
            pooled = [x for part in lat[name] for x in part]
            rows[name].update({"latency": summarize(pooled), "latency_samples": [round(x, 4) for x in pooled],
                               "latency_round_p50": [round(percentile(part, 50), 4) for part in lat[name]]})
            if name in tp and modes:
                rows[name]["throughput"] = {m: statistics.median(v) for m, v in tp[name].items()}
                rows[name]["throughput_rounds"] = {m: [round(x, 2) for x in v] for m, v in tp[name].items()}
    finally:
        for name, w in workers.items():
            rows[name]["peak_rss_mb"] = w.stop()
    return rows, notes


def duel(info: dict, peer_list: list[peers_mod.Peer], plan: Plan) -> dict:
    """edgeemb and its peers on one core, one thread, the same inputs, in plan.ratio_rounds rotating rounds."""
    static = info["kind"] == "static"
    queries = data.scifact_queries(plan.n_latency)
    texts = data.sample_sentences(plan.n_throughput if static else plan.n_duel, seed=1)
    presorted = data.sort_by_tokens(texts, Path(info["path"]) / "tokenizer.json")
    bs = batch_size(info, plan)
    contenders = [Contender("edgeemb", "edgeemb", edgeemb_spec(info["path"], 1), batch_size=bs)]
    notes = {p.name: p.note for p in peer_list if not p.available}
    for p in peer_list:
        if p.available:
            spec = dict(p.spec, threads=1) if "threads" in p.spec else dict(p.spec)
            contenders.append(Contender(p.name, p.engine, spec, p.python, bs, throughput=p.engine != "floor"))
    rows, failed = side_by_side(contenders, queries, plan.ratio_rounds, {"natural": texts, "presorted": presorted},
                                warm_texts(info, texts, plan), label=f"{info['name']}: duel")
    return {"bundle": info["name"], "n_queries": len(queries), "n_sentences": len(texts), "batch_size": bs,
            "threads": 1, "cores": 1, "rounds": {"latency": plan.ratio_rounds, "throughput": plan.ratio_rounds},
            "warm_up": len(warm_texts(info, texts, plan)), "engines": rows, "skipped": {**notes, **failed}}


def _find(rows: dict, prefix: str) -> dict | None:
    return next((v for k, v in rows.items() if k.startswith(prefix)), None)


def _p50(row: dict | None) -> float | None:
    return row["latency"]["p50"] if row and row.get("latency") else None


def _tput(row: dict | None, mode: str = "natural") -> float | None:
    return (row.get("throughput") or {}).get(mode) if row else None


def _p50_rounds(row: dict | None) -> list:
    return list(row.get("latency_round_p50") or []) if row else []


def _tput_rounds(row: dict | None, mode: str = "natural") -> list:
    return list((row.get("throughput_rounds") or {}).get(mode) or []) if row else []


def duel_goals(info: dict, d: dict, encode: dict | None) -> list[Goal]:
    """The issue's goals as ratios from one duel (same run, interleaved), each with its per-round ratios."""
    rows = d["engines"]
    ours = rows.get("edgeemb")
    goals: list[Goal] = []
    if info["kind"] == "static":
        m2v = _find(rows, "model2vec")
        goals.append(Goal(f"{info['name']} throughput / model2vec (natural order)", ratio(_tput(ours), _tput(m2v)),
                          2.0, ">=", "" if m2v else "model2vec absent",
                          round_ratios(_tput_rounds(ours), _tput_rounds(m2v))))
        return goals
    fe, floor, st = _find(rows, "fastembed"), _find(rows, "floor"), _find(rows, "sentence-transformers torch")
    goals += [
        Goal("p50 / fastembed (same int8 file)", ratio(_p50(ours), _p50(fe)), 1.0, "<=",
             "" if fe else "fastembed absent", round_ratios(_p50_rounds(ours), _p50_rounds(fe))),
        Goal("p50 / bare session.run on pre-tokenised input", ratio(_p50(ours), _p50(floor)), 1.15, "<=", "",
             round_ratios(_p50_rounds(ours), _p50_rounds(floor))),
        Goal("throughput on unsorted text / fastembed", ratio(_tput(ours), _tput(fe)), 3.0, ">=",
             "" if fe else "fastembed absent", round_ratios(_tput_rounds(ours), _tput_rounds(fe))),
        Goal("throughput on unsorted text / sentence-transformers torch", ratio(_tput(ours), _tput(st)), 5.0, ">=",
             "" if st else "sentence-transformers torch absent or not run (--quick)",
             round_ratios(_tput_rounds(ours), _tput_rounds(st))),
    ]
    if encode is not None:
        n = encode.get("n")
        how = encode.get("mode", "streamed in chunks")
        note = encode.get("note", "") if encode.get("peak_rss_mb") is None else \
            f"{how}; one encode() call over all of them peaks higher" + \
            ("" if n == 100_000 else "; quick run: fewer than 100k sentences")
        goals.append(Goal(f"peak RSS encoding {n} sentences, {how} (MB)", encode.get("peak_rss_mb"), 250.0, "<=",
                          note))
    return goals


def word_duel(plan: Plan) -> dict:
    """Word lookups (10 nearest words) on the same GloVe vectors: an edgeemb static bundle vs gensim."""
    (peer,) = peers_mod.word_peers()
    folder, note = peers_mod.glove_bundle()
    if folder is None or not peer.available:
        return {"skipped": note or peer.note}
    words = data.similarity_words()
    ours = "edgeemb (glove-25d-fp32 bundle)"
    contenders = [Contender(ours, "edgeemb-words", {"bundle": str(folder), "threads": 1}),
                  Contender(peer.name, peer.engine, peer.spec)]
    rows, failed = side_by_side(contenders, words, plan.ratio_rounds, label="words")
    theirs = rows.get(peer.name)
    return {"words": len(words), "rounds": plan.ratio_rounds, "engines": rows, "skipped": failed,
            "p50_ratio": ratio(_p50(rows.get(ours)), _p50(theirs)),
            "p50_ratio_rounds": round_ratios(_p50_rounds(rows.get(ours)), _p50_rounds(theirs))}
