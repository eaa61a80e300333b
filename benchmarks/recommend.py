"""The decision rule: given a latency and memory budget, a task and whether there is a GPU, pick a bundle.

The field's rule: within 100 ms and 500 MB, choose an independent model (static or a small sentence encoder);
with room beyond that (or a GPU), choose a bigger contextual one. Here it is applied to numbers measured on this
machine: a bundle fits when its end-to-end p95 and peak RSS are under the budget; among those that fit, the best
eval-suite quality for the task wins, else the kind the rule prefers, then the lower latency.
"""
from __future__ import annotations

from dataclasses import dataclass

from .report import QUALITY, fmt, quality_of

TASK_KINDS = {"retrieval": ("sentence", "llm", "static"), "similarity": ("sentence", "llm", "static"),
              "contextual": ("sentence", "llm"), "analogy": ("static",)}
# preference among kinds when no quality number decides: tight budget -> small models first; roomy -> contextual
TIGHT_ORDER = ("sentence", "static", "llm")
ROOMY_ORDER = ("llm", "sentence", "static")


@dataclass
class Candidate:
    """One measured bundle as the rule sees it."""

    name: str
    kind: str
    p95_ms: float | None
    rss_mb: float | None
    quality: float | None
    fits_latency: bool
    fits_memory: bool
    eligible: bool
    source: str  # which measurement: "e2e" or "single query"

    @property
    def fits(self) -> bool:
        return self.eligible and self.fits_latency and self.fits_memory


def measured(doc: dict) -> bool:
    """Whether a results document measured any bundle (an empty report must not pass for a result)."""
    return any(isinstance(b, dict) and (b.get("single") or b.get("e2e")) for b in doc.get("bundles") or [])


def candidates(doc: dict, quality: dict, task: str, latency_ms: float, memory_mb: float) -> list[Candidate]:
    """Every bundle in a results document with its p95, peak RSS, quality and whether it fits."""
    out = []
    for b in doc.get("bundles", []):
        e2e, single = b.get("e2e") or {}, b.get("single") or {}
        p95 = (e2e.get("latency") or {}).get("p95")
        rss = e2e.get("peak_rss_mb")
        source = f"e2e, {e2e.get('n_docs', 0) // 1000}k docs"
        if p95 is None:
            p95, rss, source = (single.get("latency") or {}).get("p95"), single.get("worker_peak_rss_mb"), "single query"
        out.append(Candidate(b["name"], b["kind"], p95, rss, quality_of(quality, b["name"], task),
                             p95 is not None and p95 < latency_ms, rss is not None and rss < memory_mb,
                             b["kind"] in TASK_KINDS[task], source))
    return out


def choose(cands: list[Candidate], task: str, latency_ms: float, memory_mb: float, gpu: bool
           ) -> tuple[Candidate | None, str]:
    """The chosen bundle and a one-line reason."""
    eligible = [c for c in cands if c.eligible]
    if not eligible:
        return None, f"no measured bundle suits task '{task}' (needs kind {' or '.join(TASK_KINDS[task])})"
    tight = latency_ms <= 100 and memory_mb <= 500 and not gpu
    order = TIGHT_ORDER if tight else ROOMY_ORDER
    fitting = [c for c in eligible if c.fits] if not gpu else eligible
    if not fitting:
        closest = min(eligible, key=lambda c: max((c.p95_ms or float("inf")) / latency_ms,
                                                  (c.rss_mb or float("inf")) / memory_mb))
        return closest, (f"none fits {latency_ms:g} ms / {memory_mb:g} MB; {closest.name} comes closest "
                         f"(p95 {fmt(closest.p95_ms, 1)} ms, {fmt(closest.rss_mb, 0)} MB)")
    scored = [c for c in fitting if c.quality is not None]
    if scored:
        best = max(scored, key=lambda c: (c.quality, -(c.p95_ms or 0)))
        metric = QUALITY[task]
        why = f"best {metric[1]} {metric[2]} ({best.quality:.1f}) among bundles that fit"
    else:
        best = min(fitting, key=lambda c: (order.index(c.kind) if c.kind in order else 9, c.p95_ms or 0))
        why = ("tight budget: the rule prefers an independent model (a small sentence encoder, else static) "
               f"and {best.kind} is the first such kind that fits" if tight
               else "room in the budget: the rule prefers the most contextual model that fits")
    if gpu:
        why += "; with a GPU the CPU limits measured here do not bind (GPU not measured)"
    return best, f"{why}; p95 {fmt(best.p95_ms, 1)} ms ({best.source}), peak RSS {fmt(best.rss_mb, 0)} MB"


def table(cands: list[Candidate], chosen: Candidate | None) -> str:
    """A short Markdown-ish table of the candidates."""
    rows = ["| bundle | kind | p95 ms | peak RSS MB | quality | fits | chosen |", "|---|---|---:|---:|---:|---|---|"]
    for c in cands:
        fits = "n/a for task" if not c.eligible else "yes" if c.fits else \
            "no (" + ", ".join(x for x, ok in (("latency", c.fits_latency), ("memory", c.fits_memory)) if not ok) + ")"
        rows.append(f"| {c.name} | {c.kind} | {fmt(c.p95_ms, 1)} | {fmt(c.rss_mb, 0)} | {fmt(c.quality, 1)} | {fits} "
                    f"| {'**yes**' if chosen is c else ''} |")
    return "\n".join(rows)
