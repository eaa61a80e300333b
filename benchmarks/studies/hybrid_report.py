"""The hybrid study's Markdown tables (docs/results/hybrid.md), from its results.json."""
from __future__ import annotations

import json
from pathlib import Path


def load_results(path: Path) -> dict:
    """The study's results so far ({} before the first stage ran)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def report(res: dict, candidates: tuple[int, ...]) -> str:
    """Every table the recorded stages allow, each headed by its size and conditions."""
    lines: list[str] = []
    if res.get("scifact"):
        lines += _scifact(res["scifact"], candidates)
    if res.get("en_index"):
        lines += _memory(res["en_index"], candidates)
    if res.get("scale"):
        lines += _scale(res["scale"])
    if res.get("bits_quality"):
        lines += _bits(res["bits_quality"], res.get("bits_cost") or {})
    for stage, m in (res.get("machine") or {}).items():
        lines.append(f"- {stage}: measured on {m.get('cpu')}, load average {m.get('load_average')}")
    return "\n".join(lines) + "\n"


def _lat(r: dict) -> str:
    return f"{r['latency']['p50']:.3f} | {r['latency']['p95']:.3f}"


def _scifact(sf: dict, candidates: tuple[int, ...]) -> list[str]:
    base = sf["fine_exact"]["ndcg10"]
    out = [(f"SciFact ({sf['docs']} docs, {sf['queries']} test queries, one at a time on one thread); coarse "
            f"{sf['coarse']}, fine {sf['fine']}"), "",
           "| retrieval | nDCG@10 | % of MiniLM exact | p50 ms | p95 ms |", "|---|---|---|---|---|"]
    for key, label in (("fine_exact", "MiniLM exact (brute force)"), ("fine_hnsw", "MiniLM HNSW (ef 100)"),
                       ("coarse_exact", "static alone (exact)")):
        r = sf[key]
        out.append(f"| {label} | {r['ndcg10']} | {100 * r['ndcg10'] / base:.1f} | {_lat(r)} |")
    out += ["", "| coarse dim | HNSW ef | " + " | ".join(f"N={n}" for n in candidates) + " |",
            "|---|---|" + "---|" * len(candidates)]
    for cdim, curve in sf.get("exact_two_stage", {}).items():
        out.append(f"| {cdim} | exact coarse | " + " | ".join(
            f"{curve[str(n)]} ({100 * curve[str(n)] / base:.1f}%)" for n in candidates) + " |")
    for cdim, h in sf["hybrid"].items():
        for first in ("bm25+static", "static"):
            keys = [k.split(":", 1)[1] for k in h["curve"] if k.startswith(first + ":")]
            mults = sorted({k.split("@ef")[1] for k in keys if "@ef" in k}) or [""]
            for mult in mults:
                row = [h["curve"][f"{first}:{n}@ef{mult}" if mult else f"{first}:{n}"] for n in candidates]
                label = "N + min(N, 200) (default)" if mult in ("", "defaultx") else mult.replace("x", " x N")
                out.append(f"| {cdim}, {first} | {label} | "
                           + " | ".join(f"{r['ndcg10']} ({r['kept_pct']}%)" for r in row) + " |")
    for cdim, h in sf["hybrid"].items():
        for first in ("bm25+static", "static"):
            key = next((k for k in (f"{first}:100", f"{first}:100@efdefaultx") if k in h["curve"]),
                       f"{first}:100@ef1x")
            r = h["curve"][key]
            out += ["", (f"latency, coarse dim {cdim}, N=100 ({key}, {r['latency']['n']} queries): p50 "
                         f"{r['latency']['p50']:.3f} ms, p95 {r['latency']['p95']:.3f} ms; stages p50 "
                         f"{r['stages_p50_ms']}")]
        if h.get("live_rerank_n100"):
            r = h["live_rerank_n100"]
            out.append(f"live rerank, N=100 ({r['latency']['n']} queries): p50 {r['latency']['p50']:.1f} ms, "
                       f"rerank p50 {r['rerank_p50_ms']} ms")
    return out + [""]


def _memory(en: dict, candidates: tuple[int, ...]) -> list[str]:
    base, base_anon = en["minilm"]["index_rss_mb"], en["minilm"]["index_anon_mb"]
    docs = en["minilm"].get("docs")
    out = [(f"Index of the first {docs:,} en_corpus rows, each measured in a fresh worker from outside "
            "(/proc status); searches on one thread, N=100 unless said"), "",
           ("| index | index RSS MB (anon + file) | % of MiniLM-only (total / anon) | encoders MB | open s | "
            "p50 ms | p95 ms |"), "|---|---|---|---|---|---|---|"]
    for name, r in en.items():
        out.append(f"| {name} | {r['index_rss_mb']} ({r['index_anon_mb']} + {r['index_file_mb']}) | "
                   f"{100 * r['index_rss_mb'] / base:.0f}% / {100 * r['index_anon_mb'] / base_anon:.0f}% | "
                   f"{r['encoders_rss_mb']} | {r['open_s']} | {r['latency_n100']['p50']:.3f} | "
                   f"{r['latency_n100']['p95']:.3f} |")
    out += ["", "MiniLM query encoding alone, same queries: " + ", ".join(
        f"{name} run p50 {r['fine_encode_only']['p50']:.3f} / p95 {r['fine_encode_only']['p95']:.3f} ms"
        for name, r in en.items()), "",
        "| N | " + " | ".join(f"{name} p50 / p95 ms (agreement@10)" for name in en) + " |",
        "|---|" + "---|" * len(en)]
    for n in map(str, candidates):
        out.append(f"| {n} | " + " | ".join(
            f"{r['curve'][n]['latency']['p50']:.3f} / {r['curve'][n]['latency']['p95']:.3f} "
            f"({r['curve'][n].get('agreement', '–')})" for r in en.values()) + " |")
    return out + [""]


def _scale(sc: dict) -> list[str]:
    out = ["| dim | graph bytes/doc (M=16, 20k synthetic vectors) |", "|---|---|"]
    out += [f"| {dim} | {b} |" for dim, b in sc["graph_bytes_per_doc"].items()]
    out.append("")
    out += [f"- {b}: {m['name']} ({m['kind']}, dim {m['dim']}): runtime {m['base_rss_mb']} MB + model "
            f"{m['model_rss_mb']} MB" for b, m in sc["models"].items()]
    return out + [""]


def _bits(q: dict, cost: dict) -> list[str]:
    """Fine bits as a recall source: quality per split and N, then cost per index and split (N=100)."""
    ns = [str(n) for n in q["n"]]
    out = [(f"SciFact nDCG@10 (% of MiniLM exact, {q['scifact']['exact_ndcg10']}) and en_corpus agreement@10 "
            "with MiniLM exact, per candidate split (keywords / bits / coarse) and N"), "",
           "| index | split | " + " | ".join(f"SciFact N={n}" for n in ns) + " | "
           + " | ".join(f"agreement N={n}" for n in ns) + " |", "|---|---|" + "---|" * (2 * len(ns))]
    for name, en in q["en"].items():
        cdim = name.removeprefix("hybrid")
        sf = q["scifact"].get(cdim, {})
        for split, agree in en["agreement"].items():
            cells = [f"{sf[split][n]['ndcg10']} ({sf[split][n]['kept_pct']}%)" if split in sf else "–" for n in ns]
            out.append(f"| {name} | {split} {tuple(q['splits'][split])} | " + " | ".join(cells) + " | "
                       + " | ".join(str(agree[n]) for n in ns) + " |")
    out.append("")
    if cost:
        out += [("| index | split | open s (bits s) | index RSS MB after open / queries | whole-process peak MB | "
                 "p50 ms | p95 ms | agreement@10 | load average |"), "|---|---|---|---|---|---|---|---|---|"]
        for name, splits in cost.items():
            for split, c in splits.items():
                out.append(f"| {name} | {split} | {c['open_s']} ({c['bits_open_s']}) | {c['open_rss_mb']} / "
                           f"{c['index_rss_mb']} | {c['peak_rss_mb']} | {c['latency']['p50']:.2f} | "
                           f"{c['latency']['p95']:.2f} | {c['agreement']} | {c['load_average']} |")
        out.append("")
    return out
