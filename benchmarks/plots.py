"""PNG plots of a results document: latency distributions, quality vs latency with its Pareto front, memory."""
from __future__ import annotations

import math
from pathlib import Path

from .report import QUALITY, dig, peer_quality, quality_of


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
    out.mkdir(parents=True, exist_ok=True)
    made = (_latency_plot(doc, out), _quality_plot(doc, out, quality or {}, task), _memory_plot(doc, out))
    return [p for p in made if p is not None]


def _latency_plot(doc: dict, out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    series = [(f"{b['name']}\n(e2e, {b['e2e']['n_docs'] // 1000}k docs)", b["e2e"]["latency_samples"])
              for b in doc["bundles"] if b.get("e2e")]
    for d in doc.get("duels", []):
        series += [(f"{_engine_label(name, d)}\n(encode, 1 thread)", r["latency_samples"])
                   for name, r in d["engines"].items() if r.get("latency_samples")]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(max(6, 1.5 * len(series)), 4.5))
    ax.boxplot([s for _, s in series], whis=(1, 99), showfliers=False)
    ax.set_xticks(range(1, len(series) + 1), [n for n, _ in series], fontsize=7, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.axhline(100, color="red", linestyle="--", linewidth=1, label="100 ms")
    ax.set_ylabel("ms per query (log; whiskers p1-p99)")
    ax.set_title("Single-query latency")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return _save(fig, out / "latency.png")


def _quality_plot(doc: dict, out: Path, quality: dict, task: str) -> Path | None:
    import matplotlib.pyplot as plt

    pts = []
    for b in doc["bundles"]:
        q = quality_of(quality, b["name"], task)
        lat = dig(b, "single", "latency", "p50")
        if q is not None and lat is not None:
            pts.append((lat, q, b["name"]))
    for d in doc.get("duels", []):
        for name, r in d["engines"].items():
            q = peer_quality(name, d["bundle"], quality, task)
            lat = dig(r, "latency", "p50")
            if name != "edgeemb" and q is not None and lat is not None:
                pts.append((lat, q, name))
    if not pts:
        return None
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
    return _save(fig, out / "quality_latency.png")


def _memory_plot(doc: dict, out: Path) -> Path | None:
    import matplotlib.pyplot as plt

    bars = [(f"{b['name']}\n(e2e process, {dig(b, 'e2e', 'n_docs') or 0:,} docs)", dig(b, "e2e", "peak_rss_mb"))
            for b in doc["bundles"]]
    bars += [(f"{b['name']}\n(encode {dig(b, 'encode_corpus', 'n') or 0:,}, streamed)",
              dig(b, "encode_corpus", "peak_rss_mb")) for b in doc["bundles"]]
    for d in doc.get("duels", []):
        bars += [(f"{_engine_label(name, d)}\n(load+queries+batch)", r.get("peak_rss_mb"))
                 for name, r in d["engines"].items()]
    bars = [(n, v) for n, v in bars if v]
    if not bars:
        return None
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
    return _save(fig, out / "memory.png")


def _engine_label(name: str, duel: dict) -> str:
    """'edgeemb' in a duel names the bundle it ran."""
    return f"edgeemb {duel['bundle']}" if name == "edgeemb" else name


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
