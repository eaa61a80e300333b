"""JSON and markdown reports of evaluation results."""

from __future__ import annotations

import math
from typing import Any

from .tasks import TaskResult


def _num(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def to_json(results: list[TaskResult]) -> dict[str, Any]:
    """Stable JSON-ready schema: {"results": [{task, dataset, metrics, n, coverage, seconds}]}; nan -> None."""
    return {
        "results": [
            {
                "task": r.task,
                "dataset": r.dataset,
                "metrics": {k: _num(v) for k, v in r.metrics.items()},
                "n": r.n,
                "coverage": _num(r.coverage),
                "seconds": round(r.seconds, 3),
            }
            for r in results
        ]
    }


def _rows(results: list[TaskResult]) -> dict[tuple[str, str, str], float | None]:
    rows: dict[tuple[str, str, str], float | None] = {}
    for r in results:
        flag = " (= majority class)" if r.details.get("degenerate") else ""
        rows.update({(r.task, r.dataset, k + (flag if k == "accuracy" else "")): v for k, v in r.metrics.items()})
        if r.coverage is not None:
            rows[(r.task, r.dataset, "coverage %")] = 100.0 * r.coverage
    return rows


def _fmt(x: float | None, sign: bool = False) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:+.2f}" if sign else f"{x:.2f}"


def to_markdown(results_by_model: dict[str, list[TaskResult]]) -> str:
    """Markdown table, one column per model, plus a delta column vs the first model for each other model."""
    names = list(results_by_model)
    per_model = [_rows(results_by_model[m]) for m in names]
    keys = list(dict.fromkeys(k for rows in per_model for k in rows))
    header = ["task", "dataset", "metric", *names, *(f"Δ {m}" for m in names[1:])]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 3 + "---:|" * (len(header) - 3)]
    for key in keys:
        vals = [rows.get(key) for rows in per_model]
        deltas = [None if v is None or vals[0] is None else v - vals[0] for v in vals[1:]]
        cells = [*key, *(_fmt(v) for v in vals), *(_fmt(d, sign=True) for d in deltas)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
