"""PNG plots of a results document: latency distributions, quality vs latency with its Pareto front, memory.

Every figure groups what it shows by colour (end to end, edgeemb encode-only, peers) and carries a caption saying
whether it was a quick run and what the machine's load average was, so a plot read alone cannot mislead.
"""
from __future__ import annotations

import math
from pathlib import Path

from .report import QUALITY, dig, peer_quality, quality_of, scrub_paths

# group -> (legend label, colour); order = left-to-right order in the plots
GROUPS = {"e2e": ("end to end: query text → top-10 from an index", "tab:blue"),
          "encode": ("edgeemb encode only (no index)", "tab:green"),
          "peer": ("peers, encode only (same queries, same core)", "tab:orange")}
LOADED = 1.5  # 1-min load average above which a run's timings are flagged as loaded
MARKERS = "osD^vPX*<>ph"


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
    made = [(draw_latency(doc), "latency.png"), (draw_quality(doc, quality or {}, task), "quality_latency.png"),
            (draw_memory(doc), "memory.png")]
    return [_save(fig, out / name) for fig, name in made if fig is not None]


def caption(doc: dict) -> str:
    """`full run of <command>, <created>; load average 10.4 at start, 5.0 at end on 2 CPUs: LOADED ...`."""
    m = doc.get("machine") or {}
    start, end = (m.get("load_average") or [None])[0], (m.get("load_average_end") or [None])[0]
    load = "load average " + (f"{start:.1f} at start" if start is not None else "not recorded")
    if end is not None:
        load += f", {end:.1f} at end"
    cpus = f" on {m['logical_cpus']} CPUs" if m.get("logical_cpus") else ""
    text = (f"{'QUICK' if doc.get('quick') else 'full'} run, {doc.get('created', '?')}, `{doc.get('command', '?')}`;"
            f" {load}{cpus}")
    if max((x for x in (start, end) if x is not None), default=0.0) > LOADED:
        text += (" — LOADED: parts ran minutes apart (single query, encode-only duel, index, then end to end) "
                 "while the load changed, so compare within a colour, not across")
    return scrub_paths(text)  # the image may be shared: no machine paths from the command line


def latency_series(doc: dict) -> list[tuple[str, str, list[float]]]:
    """(group, label, samples) for the latency plot: end-to-end runs, then edgeemb's encode-only, then peers."""
    out = [("e2e", f"{b['name']}\n({b['e2e']['n_docs'] // 1000}k docs)", b["e2e"]["latency_samples"])
           for b in doc["bundles"] if dig(b, "e2e", "latency_samples")]
    for group in ("encode", "peer"):
        for d in doc.get("duels", []):
            out += [(group, _engine_label(name, d), r["latency_samples"]) for name, r in d["engines"].items()
                    if r.get("latency_samples") and (name == "edgeemb") == (group == "encode")]
    return out


def draw_latency(doc: dict):
    """Box plots of per-query latency, coloured by group; None when nothing was timed."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    series = latency_series(doc)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(max(6.5, 1.45 * len(series)), 5.2))
    boxes = ax.boxplot([s for _, _, s in series], whis=(1, 99), showfliers=False, patch_artist=True,
                       medianprops={"color": "black"})
    for box, (group, _, _) in zip(boxes["boxes"], series):
        box.set_facecolor(GROUPS[group][1])
        box.set_alpha(0.75)
    for i in range(1, len(series)):  # a thin line between groups
        if series[i][0] != series[i - 1][0]:
            ax.axvline(i + 0.5, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xticks(range(1, len(series) + 1), [n for _, n, _ in series], fontsize=7, rotation=20, ha="right")
    ax.set_yscale("log")
    limit = ax.axhline(100, color="red", linestyle="--", linewidth=1)
    low, high = ax.get_ylim()
    ax.set_ylim(low, max(high, 100) * 10)  # headroom: the legend sits above the boxes and the 100 ms line
    present = [g for g in GROUPS if any(s[0] == g for s in series)]
    ax.legend([Patch(color=GROUPS[g][1], alpha=0.75) for g in present] + [limit],
              [GROUPS[g][0] for g in present] + ["100 ms"], loc="upper left", fontsize=7)
    ax.set_ylabel("ms per query (log; whiskers p1-p99)")
    ax.set_title("Single-query latency (1 thread)")
    return _with_caption(fig, doc)


def quality_points(doc: dict, quality: dict, task: str) -> list[tuple[float, float, str, str]]:
    """(p50 ms, quality, label, group) of every bundle and peer with both numbers."""
    pts = []
    for b in doc["bundles"]:
        q, lat = quality_of(quality, b["name"], task), dig(b, "single", "latency", "p50")
        if q is not None and lat is not None:
            pts.append((lat, q, b["name"], "encode"))
    for d in doc.get("duels", []):
        for name, r in d["engines"].items():
            q, lat = peer_quality(name, d["bundle"], quality, task), dig(r, "latency", "p50")
            if name != "edgeemb" and q is not None and lat is not None:
                pts.append((lat, q, name, "peer"))
    return sorted(pts)


def draw_quality(doc: dict, quality: dict, task: str):
    """Quality vs latency: numbered points (numbers placed so none overlap), names in a legend beside the axes."""
    import matplotlib.pyplot as plt

    pts = quality_points(doc, quality, task)
    if not pts:
        return None
    fig, ax = plt.subplots(figsize=(10, 5.2))
    for i, (x, y, name, group) in enumerate(pts):
        ax.scatter([x], [y], color=GROUPS[group][1], marker=MARKERS[i % len(MARKERS)], s=45, zorder=3,
                   label=f"{i + 1}  {name} ({x:.2g} ms, {y:.1f})")
    front = [pts[i] for i in pareto_front([(p[0], p[1]) for p in pts])]
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="grey", linewidth=1, zorder=1,
            label="Pareto front")
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.12)
    ax.set_xlabel("single-query p50 ms (log, 1 thread)")
    metric = QUALITY[task]
    ax.set_ylabel(f"{metric[1]} {metric[2]} (eval suite)")
    ax.set_title("Quality vs latency (green: edgeemb bundles, orange: peers)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=7, borderaxespad=0)
    _with_caption(fig, doc, right=0.6)
    place_labels(fig, ax, [(x, y) for x, y, _, _ in pts], [str(i + 1) for i in range(len(pts))])
    return fig


def place_labels(fig, ax, points: list[tuple[float, float]], labels: list[str]) -> list:
    """Annotate each point with its label at the first nearby offset whose box overlaps no label placed yet."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    offsets = [(5, 4), (5, -11), (-11, 4), (-11, -11), (5, 14), (5, -21), (-11, 14), (-11, -21), (15, 4),
               (15, -11), (-21, 4), (-21, -11), (5, 24), (5, -31)]
    placed, texts = [], []
    for (x, y), label in zip(points, labels):
        text = ax.annotate(label, (x, y), xytext=offsets[0], textcoords="offset points", fontsize=7, zorder=4)
        for dx, dy in offsets:
            text.set_position((dx, dy))
            box = text.get_window_extent(renderer).padded(3)
            if not any(box.overlaps(b) for b in placed):
                break
        placed.append(text.get_window_extent(renderer))
        texts.append(text)
    return texts


def draw_memory(doc: dict):
    """Peak RSS bars coloured by group, with the 500 MB edge limit."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    bars = [("e2e", f"{b['name']}\n(e2e process, {dig(b, 'e2e', 'n_docs') or 0:,} docs)",
             dig(b, "e2e", "peak_rss_mb")) for b in doc["bundles"]]
    bars += [("encode", f"{b['name']}\n(encode {dig(b, 'encode_corpus', 'n') or 0:,}, streamed)",
              dig(b, "encode_corpus", "peak_rss_mb")) for b in doc["bundles"]]
    for group in ("encode", "peer"):
        for d in doc.get("duels", []):
            bars += [(group, f"{_engine_label(name, d)}\n(load+queries+batch)", r.get("peak_rss_mb"))
                     for name, r in d["engines"].items() if (name == "edgeemb") == (group == "encode")]
    bars = [(g, n, v) for g, n, v in bars if v]
    if not bars:
        return None
    fig, ax = plt.subplots(figsize=(max(6.5, 1.3 * len(bars)), 5.2))
    drawn = ax.bar(range(len(bars)), [v for _, _, v in bars], color=[GROUPS[g][1] for g, _, _ in bars], alpha=0.8)
    ax.bar_label(drawn, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(bars)), [n for _, n, _ in bars], fontsize=7, rotation=25, ha="right")
    limit = ax.axhline(500, color="red", linestyle="--", linewidth=1)
    ax.set_ylim(0, max(560, 1.15 * max(v for _, _, v in bars)))
    present = [g for g in GROUPS if any(b[0] == g for b in bars)]
    ax.legend([Patch(color=GROUPS[g][1], alpha=0.8) for g in present] + [limit],
              [{"e2e": "end to end (process with the index open)", "encode": "edgeemb encode only",
                "peer": "peers"}[g] for g in present] + ["500 MB edge limit"], loc="upper left", fontsize=7)
    ax.set_ylabel("peak RSS MB (measured from outside)")
    ax.set_title("Memory per process")
    return _with_caption(fig, doc)


def _with_caption(fig, doc: dict, right: float | None = None):
    """Room at the bottom for the run's caption (wrapped to the figure's width), then the caption itself.

    right: lay out by hand with the axes ending there (a legend outside them); else tight_layout."""
    import textwrap

    lines = textwrap.wrap(caption(doc), int(fig.get_figwidth() * 15))
    bottom = (len(lines) * 7 * 1.3 + 8) / 72 / fig.get_figheight()  # caption height in figure fractions
    if right is None:
        fig.tight_layout(rect=(0, bottom, 1, 1))
    else:
        fig.subplots_adjust(left=0.08, right=right, top=0.92, bottom=bottom + 0.1)
    fig.text(0.01, 0.01, "\n".join(lines), fontsize=7, va="bottom", ha="left",
             color="darkred" if any("LOADED" in x for x in lines) else "dimgrey")
    return fig


def _engine_label(name: str, duel: dict) -> str:
    """'edgeemb' in a duel names the bundle it ran."""
    return f"edgeemb {duel['bundle']}" if name == "edgeemb" else name


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
