"""Bench reports: the JSON document (stable schema), its Markdown tables, and eval-suite quality (plots: plots.py).

Every ratio is printed with its spread over interleaved rounds, every figure with its size and conditions.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .harness import MIN_VERDICT_ROUNDS, ratio, round_ratios, spread

# task -> (eval task, dataset, metric) used as the quality axis; contextual uses STS with sentence kinds only.
QUALITY = {"retrieval": ("retrieval", "beir_scifact", "ndcg@10"),
           "similarity": ("sts", "stsb_en", "spearman"),
           "contextual": ("sts", "stsb_en", "spearman"),
           "analogy": ("analogy", "google_analogy", "3cosadd")}


def write_json(doc: dict, path: Path, scrub: bool = False) -> Path:
    """Write the results document (UTF-8, indented, NaN as null); scrub: hide this machine's paths."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_clean(doc), indent=1, ensure_ascii=False) + "\n"
    path.write_text(scrub_paths(text) if scrub else text, encoding="utf-8")
    return path


def scrub_paths(text: str) -> str:
    """A report meant for sharing names the checkout `<checkout>` and the home folder `~`, not this machine's."""
    from .cache import CHECKOUT

    text = text.replace(str(CHECKOUT), "<checkout>")
    home = str(Path.home())
    return text.replace(home + "/", "~/") if home not in ("/", "") else text


def _clean(x: Any) -> Any:
    if isinstance(x, float):
        return None if not math.isfinite(x) else round(x, 4)
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


def load_quality(paths: list[Path]) -> dict[str, dict[tuple[str, str, str], float]]:
    """Eval-suite JSON files (`edgeemb eval --json`) -> label -> {(task, dataset, metric): value}."""
    out: dict[str, dict[tuple[str, str, str], float]] = {}
    for path in paths:
        try:
            doc = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(doc, dict) or "results" not in doc:
            continue
        entries = [(doc.get("bundle", Path(path).stem), doc)] + list((doc.get("compare") or {}).items())
        for label, body in entries:
            table = out.setdefault(str(label), {})
            for r in body.get("results", []):
                for metric, value in (r.get("metrics") or {}).items():
                    if isinstance(value, (int, float)) and math.isfinite(value):
                        table[(r.get("task"), r.get("dataset"), metric)] = float(value)
    return out


def quality_of(quality: dict, name: str, task: str) -> float | None:
    """A bundle's (or peer label's) quality number for a recommend task, if the eval suite measured it."""
    return quality.get(name, {}).get(QUALITY[task])


def peer_quality(peer: str, bundle: str, quality: dict, task: str) -> float | None:
    """A peer's quality: fastembed runs the bundle's own file; sentence-transformers fp32 is the eval's st: label."""
    if peer.startswith("fastembed"):
        return quality_of(quality, bundle, task)
    if peer.startswith("sentence-transformers") and "int8" not in peer:
        label = next((k for k in quality if k.startswith("st:")), None)
        return quality_of(quality, label, task) if label else None
    return None


def fmt(x: Any, digits: int = 1) -> str:
    """A number for a table cell; '–' when missing."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, (int, float)):
        return f"{x:,.{digits}f}"
    return str(x)


def dig(d: dict | None, *keys: str) -> Any:
    """d[k1][k2]... or None where a level is missing."""
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def fmt_spread(s: dict | None, digits: int = 2) -> str:
    """A spread over rounds as "min–max, median m over n rounds" ('' when there is none)."""
    if not s:
        return ""
    if s["n"] == 1:
        return "1 round"
    return f"{fmt(s['min'], digits)}–{fmt(s['max'], digits)}, median {fmt(s['median'], digits)} over {s['n']} rounds"


def _with_spread(value: Any, s: dict | None, digits: int = 2) -> str:
    text = fmt(value, digits)
    extra = fmt_spread(s, digits)
    return f"{text} ({extra})" if extra and text != "–" else text


def to_markdown(doc: dict) -> str:
    """The results as Markdown tables: bundles, throughput, index, peers side by side, goals, low end."""
    lines = _header(doc)
    lines += _bundle_table(doc)
    lines += _throughput_table(doc)
    lines += _encode_table(doc)
    lines += _index_table(doc)
    lines += _duel_tables(doc)
    lines += _goal_table(doc)
    lines += _words_lines(doc.get("words"))
    lines += _lowend_lines(doc.get("lowend"))
    errors = [(b["name"], k, v) for b in doc["bundles"] for k, v in (b.get("errors") or {}).items()]
    errors += [("run", k, v) for k, v in (doc.get("errors") or {}).items()]
    if errors or doc.get("notes"):
        lines += ["", "### Notes", ""] + [f"- {n}: {k} failed: {v}" for n, k, v in errors] + \
                 [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def _header(doc: dict) -> list[str]:
    m = doc["machine"]
    flags = f" ({', '.join(m['flags'])})" if m.get("flags") else ""
    cores = f", {m['physical_cores']} physical cores" if m.get("physical_cores") else ""
    out = [f"Measured {doc['created']} with `{doc['command']}` ({'quick' if doc['quick'] else 'full'} run, "
           f"{doc.get('seconds', '?')} s) on {m['cpu']}{flags}, {m['logical_cpus']} CPUs{cores}, "
           f"{fmt(m['memory_mb'], 0)} MB, Python {m['python']}, onnxruntime {m['onnxruntime']}; load average at "
           f"start {', '.join(f'{x:.1f}' for x in m['load_average'])}"
           + (f", at end {', '.join(f'{x:.1f}' for x in m['load_average_end'])}" if m.get("load_average_end")
              else "") + ".", ""]
    if doc.get("peers_absent"):
        out += [("**Peers absent from this run** (their ratios read \"not measured\"; `bash scripts/setup_peers.sh` "
                 "installs every peer the recorded figures use):"), ""]
        out += [f"- {name}: {note}" for name, note in doc["peers_absent"].items()] + [""]
    return out


def _bundle_table(doc: dict) -> list[str]:
    docs = sorted({dig(b, "e2e", "n_docs") for b in doc["bundles"] if dig(b, "e2e", "n_docs")})
    where = f"a {'/'.join(f'{n:,}' for n in docs)}-document index" if docs else "an index"
    out = [(f"### Bundles (edge verdict: query text → top-10 from {where}, end-to-end p95 < 100 ms and peak RSS "
            "of that process < 500 MB)"), "",
           ("| bundle | kind | size MB | load s | first query ms | p50 ms | p95 ms | p99 ms | e2e docs | e2e p50 ms | "
            "e2e p95 ms | e2e p99 ms | e2e peak RSS MB | verdict |"),
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for b in doc["bundles"]:
        s, e, v = b.get("single") or {}, b.get("e2e") or {}, b.get("verdict") or {}
        verdict = "–" if not v else (f"{'meets' if v['meets'] else 'fails'} at {fmt(v.get('n_docs'), 0)} docs (p95 "
                                     f"margin {fmt(_pct(v['latency_margin']), 0)}%, RSS margin "
                                     f"{fmt(_pct(v['memory_margin']), 0)}%)")
        out.append(f"| {b['name']} | {b['kind']} | {fmt(b['size_mb'])} | {fmt(s.get('load_s'), 2)} | "
                   f"{fmt(s.get('first_query_ms'), 2)} | {fmt(dig(s, 'latency', 'p50'), 2)} | "
                   f"{fmt(dig(s, 'latency', 'p95'), 2)} | {fmt(dig(s, 'latency', 'p99'), 2)} | "
                   f"{fmt(e.get('n_docs'), 0)} | {fmt(dig(e, 'latency', 'p50'), 2)} | "
                   f"{fmt(dig(e, 'latency', 'p95'), 2)} | {fmt(dig(e, 'latency', 'p99'), 2)} | "
                   f"{fmt(e.get('peak_rss_mb'), 0)} | {verdict} |")
    single = next((b["single"] for b in doc["bundles"] if b.get("single")), None)
    e2e = next((b["e2e"] for b in doc["bundles"] if b.get("e2e")), None)
    if single or e2e:
        out += ["", (f"Single query: {fmt(dig(single, 'n_queries') or dig(single, 'latency', 'n'), 0)} SciFact "
                     f"queries, {fmt(dig(single, 'threads'), 0)} thread(s), no index. End to end: "
                     f"{fmt(dig(e2e, 'n_queries') or dig(e2e, 'latency', 'n'), 0)} queries, "
                     f"{fmt(dig(e2e, 'threads'), 0)} thread(s), a fresh process opening the index; its peak RSS "
                     "grows with the index (see the index table: RSS over the runtime per size).")]
    return out


def _throughput_table(doc: dict) -> list[str]:
    rows = [(b, b["throughput"]) for b in doc["bundles"] if b.get("throughput")]
    if not rows:
        return []
    out = ["", ("### Batch throughput (sentences/s, median of the rounds with min–max; natural = corpus sample in "
                "one encode() call, presorted = ordered by token count, chunked = batches in input order with no "
                "sorting, on the first n_chunked; modes in rotating rounds after an untimed warm-up pass)"), "",
           ("| bundle | sentences | batch | rounds | warm-up | threads | natural | presorted | chunked | "
            "peak RSS MB (one encode() call over all) |"),
           "|---|---:|---:|---:|---:|---:|---|---|---|---:|"]
    for b, t in rows:
        for th in ("1", "2"):
            if th in t:
                r, sp = t[th], t[th].get("spread") or {}
                cells = " | ".join(_rate_cell(r.get(m), sp.get(m)) for m in ("natural", "presorted", "chunked"))
                out.append(f"| {b['name']} | {fmt(t['n'], 0)} | {t['batch_size']} | {t.get('rounds', 1)} | "
                           f"{fmt(t.get('warm_up'), 0)} | {th} | {cells} | {fmt(r['worker_peak_rss_mb'], 0)} |")
    return out


def _rate_cell(value: float | None, s: dict | None) -> str:
    if s and s.get("n", 0) > 1:
        return f"{fmt(value, 0)} ({fmt(s['min'], 0)}–{fmt(s['max'], 0)})"
    return fmt(value, 0)


def _encode_table(doc: dict) -> list[str]:
    enc = [(b["name"], b.get("encode_corpus")) for b in doc["bundles"] if b.get("encode_corpus")]
    if not enc:
        return []
    out = ["", "### Encoding en_corpus for the index (streamed to .npy, one encode() call per chunk)", "",
           "| bundle | sentences | how | seconds | sentences/s | peak RSS MB | measured |",
           "|---|---:|---|---:|---:|---:|---|"]
    for name, e in enc:
        out.append(f"| {name} | {fmt(e.get('n'), 0)} | {e.get('mode', 'streamed in chunks')} | "
                   f"{fmt(e.get('seconds'))} | {fmt(e.get('sentences_per_s'), 0)} | {fmt(e.get('peak_rss_mb'), 0)} | "
                   f"{e.get('created') or e.get('note', '')} |")
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _index_table(doc: dict) -> list[str]:
    rows = [(b["name"], r) for b in doc["bundles"] for r in (b.get("index") or [])]
    if not rows:
        return []
    efs = sorted({int(ef) for _, r in rows for ef in r["recall_at_10"]})
    n_q = next((r.get("recall_queries") for _, r in rows), None)
    out = ["", ("### Index (hnswlib M 16, ef_construction 200, one build thread; SQLite document store; query = "
                f"Index.search of {fmt(n_q, 0)} query vectors, k 10: in a tight loop over pre-encoded vectors, and "
                "each right after a real encode of its text)"), "",
           "| bundle | docs | build s | disk MB | RSS MB (open) | + over runtime MB | query p50 / p95 ms (tight loop) | "
           "query p50 / p95 ms (between encodes) | " + " | ".join(f"recall@10 ef {ef}" for ef in efs) + " |",
           "|---|---:|---:|---:|---:|---:|---|---|" + "---:|" * len(efs)]
    for name, r in rows:
        tight, between = r["query"], r.get("query_between_encodes") or {}
        out.append(f"| {name} | {r['n']:,} | {fmt(r['build_s'])} | {fmt(r['disk_mb'])} | {fmt(r['rss_mb'], 0)} | "
                   f"{fmt(r['rss_over_runtime_mb'], 0)} | {fmt(tight['p50'], 3)} / {fmt(tight['p95'], 3)} | "
                   f"{fmt(between.get('p50'), 3)} / {fmt(between.get('p95'), 3)} | "
                   + " | ".join(fmt(r["recall_at_10"].get(str(ef)), 3) for ef in efs) + " |")
    return out


def _duel_tables(doc: dict) -> list[str]:
    out = []
    for d in doc.get("duels", []):
        ours = d["engines"].get("edgeemb", {})
        out += ["", (f"### Side by side with {d['bundle']} (1 core, 1 thread; each of {d['rounds']['latency']} "
                     f"interleaved rounds: the same {d['n_queries']} queries, then {d['n_sentences']} sentences "
                     f"natural and presorted, batch {d['batch_size']}, after a warm-up pass over "
                     f"{fmt(d.get('warm_up'), 0)}; ratios with the min–max and median of the round-by-round ratio)"), "",
                ("| engine | load s | p50 ms | p95 ms | natural sent/s | presorted sent/s | peak RSS MB | "
                 "edgeemb p50 ÷ this | edgeemb natural ÷ this |"),
                "|---|---:|---:|---:|---:|---:|---:|---|---|"]
        for name, r in d["engines"].items():
            tp = r.get("throughput") or {}
            mine = name == "edgeemb"  # a ratio to itself says nothing
            p50_r = spread(round_ratios(ours.get("latency_round_p50") or [], r.get("latency_round_p50") or []))
            tp_r = spread(round_ratios(dig(ours, "throughput_rounds", "natural") or [],
                                       dig(r, "throughput_rounds", "natural") or []))
            out.append(f"| {name} | {fmt(r.get('load_s'), 2)} | {fmt(dig(r, 'latency', 'p50'), 2)} | "
                       f"{fmt(dig(r, 'latency', 'p95'), 2)} | {fmt(tp.get('natural'), 0)} | "
                       f"{fmt(tp.get('presorted'), 0)} | {fmt(r.get('peak_rss_mb'), 0)} | "
                       f"{'–' if mine else _ratio_cell(ratio(dig(ours, 'latency', 'p50'), dig(r, 'latency', 'p50')), p50_r)} | "
                       f"{'–' if mine else _ratio_cell(ratio(dig(ours, 'throughput', 'natural'), tp.get('natural')), tp_r)} |")
        for name, note in (d.get("skipped") or {}).items():
            out.append(f"| {name} | absent: {note} | | | | | | | |")
    return out


def _ratio_cell(value: float | None, s: dict | None) -> str:
    """A ratio with the min–max and median of the same ratio round by round, and the number of rounds."""
    if value is None:
        return "–"
    if s and s["n"] > 1:
        return (f"{fmt(value, 2)} ({fmt(s['min'], 2)}–{fmt(s['max'], 2)}, median {fmt(s['median'], 2)}, "
                f"{s['n']} rounds)")
    return f"{fmt(value, 2)} (1 round)" if s else fmt(value, 2)


def _goal_table(doc: dict) -> list[str]:
    if not doc.get("goals"):
        return []
    out = ["", ("### Goals (ratios from the same interleaved run; spread = the ratio in each round; a ratio is "
                f"judged only on ≥ {MIN_VERDICT_ROUNDS} rounds that all fall on one side of the target, else "
                "\"not judged\")"), "",
           "| bundle | goal | measured | spread over rounds | target | met |", "|---|---|---:|---|---|---|"]
    for g in doc["goals"]:
        out.append(f"| {g['bundle']} | {g['name']} | {fmt(g['value'], 2)} | {fmt_spread(g.get('spread')) or '–'} | "
                   f"{g['op']} {g['bound']} | {_met_cell(g)} |")
    return out


def _met_cell(g: dict) -> str:
    """yes/no with how many rounds met it; "not judged" with why (too few rounds, target within the noise)."""
    why = g.get("not_judged") or ""
    if g["met"] is None:
        text = "not measured" if why in ("", "not measured") else f"not judged ({why})"
    else:
        text = "**yes**" if g["met"] else "**no**"
        rounds = g.get("rounds_met")
        if rounds:
            text += f" ({rounds[0]}/{rounds[1]} rounds)"
    return text + (f" ({g['note']})" if g.get("note") else "")


def _words_lines(words: dict | None) -> list[str]:
    if not words:
        return []
    if words.get("skipped") and isinstance(words["skipped"], str):
        return ["", f"### Word lookups: not measured ({words['skipped']})"]
    s = spread(words.get("p50_ratio_rounds") or [])
    out = ["", (f"### Word lookups (10 nearest words, {words['words']} WordSim/SimLex words each of "
                f"{words.get('rounds', '?')} rounds, 1 core, same GloVe 25d vectors; edgeemb p50 ÷ gensim p50 = "
                f"{_with_spread(words.get('p50_ratio'), s)})"), "",
           "| engine | load s | p50 ms | p95 ms | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for name, r in words["engines"].items():
        out.append(f"| {name} | {fmt(r.get('load_s'), 2)} | {fmt(dig(r, 'latency', 'p50'), 3)} | "
                   f"{fmt(dig(r, 'latency', 'p95'), 3)} | {fmt(r.get('peak_rss_mb'), 0)} |")
    return out


def _lowend_lines(low: dict | None) -> list[str]:
    if not low:
        return []
    out = ["", (f"### Low-end simulation ({low['cores']} core; steps: import, load, 10 queries, encode 300, "
                f"open index, 10 searches)"), ""] + [f"- {s}" for s in low.get("summary", [])]
    out += ["", "| limit | cap MB | steps passed | first failure | peak RSS MB |", "|---|---:|---:|---|---:|"]
    for mech in ("rlimit_as", "cgroup"):
        for r in low.get(mech, []):
            f = r["failure"]
            out.append(f"| {mech} | {r['cap_mb']} | {len(r['passed'])} | "
                       f"{'–' if not f else f['step'] + ': ' + f['error'][:120]} | {fmt(r['peak_rss_mb'], 0)} |")
    if not low.get("cgroup_available"):
        out.append("\n(no writable cgroup: only the address-space cap was simulated)")
    return out
