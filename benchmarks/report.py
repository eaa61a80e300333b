"""Bench reports: the JSON document (stable schema), a Markdown table, PNG plots, and eval-suite quality."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from .harness import ratio

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
    from .peers import CHECKOUT

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


def _g(d: dict | None, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def to_markdown(doc: dict) -> str:
    """The results as Markdown tables: bundles, throughput, index, peers side by side, goals, low end."""
    m = doc["machine"]
    lines = [f"Measured {doc['created']} with `{doc['command']}` ({'quick' if doc['quick'] else 'full'} run, "
             f"{doc.get('seconds', '?')} s) on {m['cpu']}, {m['logical_cpus']} CPUs, {fmt(m['memory_mb'], 0)} MB, "
             f"Python {m['python']}, onnxruntime {m['onnxruntime']}; load average at start "
             f"{', '.join(f'{x:.1f}' for x in m['load_average'])}"
             + (f", at end {', '.join(f'{x:.1f}' for x in m['load_average_end'])}" if m.get("load_average_end")
                else "") + ".", ""]
    lines += ["### Bundles (edge verdict: end-to-end p95 < 100 ms and peak RSS < 500 MB)", "",
              ("| bundle | kind | size MB | load s | first query ms | p50 ms | p95 ms | p99 ms | e2e p50 ms | "
               "e2e p95 ms | e2e p99 ms | peak RSS MB | verdict |"),
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for b in doc["bundles"]:
        s, e, v = b.get("single") or {}, b.get("e2e") or {}, b.get("verdict") or {}
        verdict = "–" if not v else (f"{'meets' if v['meets'] else 'fails'} (p95 margin "
                                     f"{fmt(_pct(v['latency_margin']), 0)}%, RSS margin {fmt(_pct(v['memory_margin']), 0)}%)")
        lines.append(f"| {b['name']} | {b['kind']} | {fmt(b['size_mb'])} | {fmt(s.get('load_s'), 2)} | "
                     f"{fmt(s.get('first_query_ms'), 2)} | {fmt(_g(s, 'latency', 'p50'), 2)} | "
                     f"{fmt(_g(s, 'latency', 'p95'), 2)} | {fmt(_g(s, 'latency', 'p99'), 2)} | "
                     f"{fmt(_g(e, 'latency', 'p50'), 2)} | {fmt(_g(e, 'latency', 'p95'), 2)} | "
                     f"{fmt(_g(e, 'latency', 'p99'), 2)} | {fmt(e.get('peak_rss_mb'), 0)} | {verdict} |")
    lines += ["", ("### Batch throughput (sentences/s; natural = corpus order in one call, presorted = ordered by "
                   "token count, chunked = batches in input order with no sorting, on the first n_chunked)"), "",
              "| bundle | sentences | batch | threads | natural | presorted | chunked | worker peak RSS MB |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in doc["bundles"]:
        t = b.get("throughput") or {}
        for th in ("1", "2"):
            if th in t:
                r = t[th]
                lines.append(f"| {b['name']} | {t['n']} | {t['batch_size']} | {th} | {fmt(r['natural'], 0)} | "
                             f"{fmt(r['presorted'], 0)} | {fmt(r['chunked'], 0)} | {fmt(r['worker_peak_rss_mb'], 0)} |")
    enc = [(b["name"], b.get("encode_corpus")) for b in doc["bundles"] if b.get("encode_corpus")]
    if enc:
        lines += ["", "### Encoding the corpus for the index (streamed to .npy in chunks)", "",
                  "| bundle | sentences | seconds | sentences/s | peak RSS MB | measured |", "|---|---:|---:|---:|---:|---|"]
        for name, e in enc:
            lines.append(f"| {name} | {fmt(e.get('n'), 0)} | {fmt(e.get('seconds'))} | {fmt(e.get('sentences_per_s'), 0)} "
                         f"| {fmt(e.get('peak_rss_mb'), 0)} | {e.get('created') or e.get('note', '')} |")
    lines += _index_table(doc)
    lines += _duel_tables(doc)
    if doc.get("goals"):
        lines += ["", "### Goals (ratios from the same interleaved run)", "", "| bundle | goal | measured | target | met |",
                  "|---|---|---:|---|---|"]
        for g in doc["goals"]:
            met = {True: "**yes**", False: "**no**", None: "not measured"}[g["met"]]
            note = f" ({g['note']})" if g.get("note") else ""
            lines.append(f"| {g['bundle']} | {g['name']} | {fmt(g['value'], 2)} | {g['op']} {g['bound']} | {met}{note} |")
    lines += _words_lines(doc.get("words"))
    lines += _lowend_lines(doc.get("lowend"))
    errors = [(b["name"], k, v) for b in doc["bundles"] for k, v in (b.get("errors") or {}).items()]
    errors += [("run", k, v) for k, v in (doc.get("errors") or {}).items()]
    if errors or doc.get("notes"):
        lines += ["", "### Notes", ""] + [f"- {n}: {k} failed: {v}" for n, k, v in errors] + \
                 [f"- {n}" for n in doc.get("notes", [])]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _index_table(doc: dict) -> list[str]:
    rows = [(b["name"], r) for b in doc["bundles"] for r in (b.get("index") or [])]
    if not rows:
        return []
    efs = sorted({int(ef) for _, r in rows for ef in r["recall_at_10"]})
    out = ["", "### Index (hnswlib M 16, ef_construction 200, one build thread; SQLite document store)", "",
           "| bundle | docs | build s | disk MB | RSS MB (open) | + over runtime MB | query p50 ms | query p95 ms | "
           + " | ".join(f"recall@10 ef {ef}" for ef in efs) + " |",
           "|---|---:|---:|---:|---:|---:|---:|---:|" + "---:|" * len(efs)]
    for name, r in rows:
        out.append(f"| {name} | {r['n']:,} | {fmt(r['build_s'])} | {fmt(r['disk_mb'])} | {fmt(r['rss_mb'], 0)} | "
                   f"{fmt(r['rss_over_runtime_mb'], 0)} | {fmt(r['query']['p50'], 3)} | {fmt(r['query']['p95'], 3)} | "
                   + " | ".join(fmt(r["recall_at_10"].get(str(ef)), 3) for ef in efs) + " |")
    return out


def _duel_tables(doc: dict) -> list[str]:
    out = []
    for d in doc.get("duels", []):
        ours = d["engines"].get("edgeemb", {})
        out += ["", (f"### Side by side with {d['bundle']} (1 core, 1 thread; {d['n_queries']} queries, "
                     f"{d['n_sentences']} sentences, batch {d['batch_size']}; interleaved rounds "
                     f"{d['rounds']['latency']} latency / {d['rounds']['throughput']} throughput)"), "",
                ("| engine | load s | p50 ms | p95 ms | natural sent/s | presorted sent/s | peak RSS MB | "
                 "edgeemb p50 ÷ this | edgeemb natural ÷ this |"),
                "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for name, r in d["engines"].items():
            tp = r.get("throughput") or {}
            out.append(f"| {name} | {fmt(r.get('load_s'), 2)} | {fmt(_g(r, 'latency', 'p50'), 2)} | "
                       f"{fmt(_g(r, 'latency', 'p95'), 2)} | {fmt(tp.get('natural'), 0)} | {fmt(tp.get('presorted'), 0)} | "
                       f"{fmt(r.get('peak_rss_mb'), 0)} | "
                       f"{fmt(ratio(_g(ours, 'latency', 'p50'), _g(r, 'latency', 'p50')), 2)} | "
                       f"{fmt(ratio(_g(ours, 'throughput', 'natural'), tp.get('natural')), 2)} |")
        for name, note in (d.get("skipped") or {}).items():
            out.append(f"| {name} | skipped: {note} | | | | | | | |")
    return out


def _words_lines(words: dict | None) -> list[str]:
    if not words:
        return []
    if words.get("skipped"):
        return ["", f"### Word lookups: skipped ({words['skipped']})"]
    out = ["", (f"### Word lookups (10 nearest words, {words['words']} WordSim/SimLex words, 1 core, same GloVe 25d "
                f"vectors; edgeemb p50 ÷ gensim p50 = {fmt(words.get('p50_ratio'), 2)})"), "",
           "| engine | load s | p50 ms | p95 ms | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for name, r in words["engines"].items():
        out.append(f"| {name} | {fmt(r.get('load_s'), 2)} | {fmt(_g(r, 'latency', 'p50'), 3)} | "
                   f"{fmt(_g(r, 'latency', 'p95'), 3)} | {fmt(r.get('peak_rss_mb'), 0)} |")
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


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated (lower x = latency and higher y = quality are better), by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plots(doc: dict, out: Path, quality: dict | None = None, task: str = "similarity") -> list[Path]:
    """PNG plots: latency distributions, quality vs latency with the Pareto front, memory with the 500 MB line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    series = [(f"{b['name']}\n(e2e, {b['e2e']['n_docs'] // 1000}k docs)", b["e2e"]["latency_samples"])
              for b in doc["bundles"] if b.get("e2e")]
    for d in doc.get("duels", []):
        series += [(f"{_engine_label(name, d)}\n(encode, 1 thread)", r["latency_samples"])
                   for name, r in d["engines"].items() if r.get("latency_samples")]
    if series:
        fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(series)), 4.5))
        ax.boxplot([s for _, s in series], whis=(1, 99), showfliers=False)
        ax.set_xticks(range(1, len(series) + 1), [n for n, _ in series], fontsize=7, rotation=20, ha="right")
        ax.set_yscale("log")
        ax.axhline(100, color="red", linestyle="--", linewidth=1, label="100 ms")
        ax.set_ylabel("ms per query (log; whiskers p1-p99)")
        ax.set_title("Single-query latency")
        ax.legend(loc="upper left")
        fig.tight_layout()
        written.append(_save(fig, out / "latency.png"))
    pts = []
    for b in doc["bundles"]:
        q = quality_of(quality or {}, b["name"], task)
        lat = _g(b, "single", "latency", "p50")
        if q is not None and lat is not None:
            pts.append((lat, q, b["name"]))
    for d in doc.get("duels", []):
        for name, r in d["engines"].items():
            q = peer_quality(name, d["bundle"], quality or {}, task)
            lat = _g(r, "latency", "p50")
            if name != "edgeemb" and q is not None and lat is not None:
                pts.append((lat, q, name))
    if pts:
        fig, ax = plt.subplots(figsize=(7, 5))
        ax.scatter([p[0] for p in pts], [p[1] for p in pts])
        for i, (x, y, n) in enumerate(sorted(pts)):  # stagger labels: points of one model sit close together
            ax.annotate(n, (x, y), fontsize=7, xytext=(4, -14 - 10 * (i % 4)), textcoords="offset points",
                        arrowprops={"arrowstyle": "-", "color": "grey", "linewidth": 0.5})
        front = [pts[i] for i in pareto_front([(p[0], p[1]) for p in pts])]
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="green", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel("single-query p50 ms (log)")
        metric = QUALITY[task]
        ax.set_ylabel(f"{metric[1]} {metric[2]} (eval suite)")
        ax.set_title("Quality vs latency")
        ax.legend()
        fig.tight_layout()
        written.append(_save(fig, out / "quality_latency.png"))
    bars = [(f"{b['name']}\n(e2e process)", _g(b, "e2e", "peak_rss_mb")) for b in doc["bundles"]]
    bars += [(f"{b['name']}\n(encode {_g(b, 'encode_corpus', 'n') or 0:,})", _g(b, "encode_corpus", "peak_rss_mb"))
             for b in doc["bundles"]]
    for d in doc.get("duels", []):
        bars += [(f"{_engine_label(name, d)}\n(load+queries+batch)", r.get("peak_rss_mb"))
                 for name, r in d["engines"].items()]
    bars = [(n, v) for n, v in bars if v]
    if bars:
        fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(bars)), 4.5))
        drawn = ax.bar(range(len(bars)), [v for _, v in bars], color="steelblue")
        ax.bar_label(drawn, fmt="%.0f", fontsize=7)
        ax.set_xticks(range(len(bars)), [n for n, _ in bars], fontsize=7, rotation=25, ha="right")
        ax.axhline(500, color="red", linestyle="--", linewidth=1, label="500 MB edge limit")
        ax.set_ylim(0, max(560, 1.1 * max(v for _, v in bars)))
        ax.set_ylabel("peak RSS MB (measured from outside)")
        ax.set_title("Memory per process")
        ax.legend(loc="upper left")
        fig.tight_layout()
        written.append(_save(fig, out / "memory.png"))
    return written


def _engine_label(name: str, duel: dict) -> str:
    """'edgeemb' in a duel names the bundle it ran."""
    return f"edgeemb {duel['bundle']}" if name == "edgeemb" else name


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
