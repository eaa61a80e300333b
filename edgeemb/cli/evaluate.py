"""`edgeemb eval`: run the evaluation suite on one or more bundles (and a reference model) and print a table."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np

from ..eval.data import DataNotFound
from ..eval.report import to_json, to_markdown
from ..eval.tasks import SENTENCE_TASKS, TASKS, WORD_TASKS, run_task, word_vectors

REFERENCE_GROUP = "edgeemb.references"  # entry points: kind name -> class(path) with encode(texts, ...)


def add_parsers(sub, export_sub) -> None:
    """Register the `eval` subcommand."""
    p = sub.add_parser(
        "eval",
        help="evaluate bundles on the benchmark suite",
        description="Evaluate a bundle (and optional comparisons) on the benchmark suite.",
    )
    p.add_argument("bundle", help="path of the bundle to evaluate")
    p.add_argument(
        "--task", action="append", choices=(*TASKS, "all"), help="task to run, repeatable (default: all)"
    )
    p.add_argument("--data", metavar="PATH", help="data root (default: $EDGEEMB_DATA, else ../shared/data)")
    p.add_argument("--json", metavar="OUT", help="write results as JSON")
    p.add_argument("--markdown", metavar="OUT", help="write the markdown table")
    p.add_argument(
        "--compare", nargs="+", default=[], metavar="BUNDLE", help="other bundles to compare against"
    )
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N items of each dataset")
    p.add_argument(
        "--reference",
        metavar="sentence-transformers:PATH",
        help="also evaluate a sentence-transformers model (needs the export extra)",
    )
    p.set_defaults(func=run_eval_cli)


def _load_models(args: argparse.Namespace) -> dict:
    import edgeemb

    reference = reference_model = None
    if args.reference:
        kind, _, reference = args.reference.partition(":")
        if kind != "sentence-transformers" or not reference:
            raise ValueError(f"--reference must be sentence-transformers:PATH, got {args.reference!r}")
        reference_model = _reference_class(kind)
    models = {}
    for path in [args.bundle, *args.compare]:
        label = Path(path).name or str(path)
        models[str(path) if label in models else label] = edgeemb.load(path)
    if reference:
        models[f"st:{Path(reference).name or reference}"] = reference_model(reference)
    return models


def _reference_class(kind: str):
    """The toolchain's reference model for `kind` (an entry point), or a ValueError saying what to install."""
    for ep in entry_points(group=REFERENCE_GROUP, name=kind):
        try:
            return ep.load()
        except ImportError:
            break
    raise ValueError(f"--reference {kind}:PATH needs the export extra: pip install 'edgeemb[export]'")


class IndexForEval:
    """edgeemb.Index (hnswlib + SQLite, in a temporary folder) behind the eval suite's add/search interface."""

    def __init__(self, dim: int):
        import tempfile

        from ..search.index import Index

        self._tmp = tempfile.TemporaryDirectory(prefix="edgeemb-eval-")
        self.index = Index.create(self._tmp.name, dim=dim)

    def add(self, vectors, ids) -> None:
        self.index.add_vectors(vectors, [""] * len(ids), ids=[str(int(i)) for i in ids])

    def search(self, queries, k: int):

        hits = [self.index.search(q, k=k) for q in queries]
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for row, found in enumerate(hits):
            ids[row, : len(found)] = [int(h.id) for h in found]
            scores[row, : len(found)] = [h.score for h in found]
        return ids, scores


def _evaluate(label: str, model, tasks: list[str], explicit: bool, args: argparse.Namespace) -> list:
    results = []
    static = word_vectors(model) is not None
    for task in tasks:
        if task in WORD_TASKS and not static and not explicit:
            print(
                f"edgeemb eval: {label}: skipping {task} (needs a static bundle with a vocabulary)",
                file=sys.stderr,
            )
            continue
        kw = {"show_progress": sys.stderr.isatty()} if task in SENTENCE_TASKS else {}
        if task == "retrieval":
            kw["index_factory"] = IndexForEval  # the same search through edgeemb.Index: ANN loss is visible
        print(f"edgeemb eval: {label}: {task}", file=sys.stderr)
        results += run_task(task, model, data_dir=args.data, limit=args.limit, **kw)
    return results


def run_eval_cli(args: argparse.Namespace) -> int:
    """Run `edgeemb eval`; returns the exit status."""
    explicit = bool(args.task) and "all" not in args.task
    tasks = list(dict.fromkeys(args.task)) if explicit else list(TASKS)
    try:
        models = _load_models(args)
        by_model = {label: _evaluate(label, m, tasks, explicit, args) for label, m in models.items()}
    except (DataNotFound, ValueError) as e:
        print(f"edgeemb eval: {e}", file=sys.stderr)
        return 2
    markdown = to_markdown(by_model)
    if args.markdown:
        Path(args.markdown).write_text(markdown, encoding="utf-8")
    if args.json:
        (first, primary), *others = by_model.items()
        doc = {"bundle": first, **to_json(primary)}
        if others:
            doc["compare"] = {label: to_json(res) for label, res in others}
        Path(args.json).write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(markdown, end="")
    return 0
