"""`edgeemb eval`: run the benchmark suite on one or more bundles and print a markdown table."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

import numpy as np

from .data import DataNotFound
from .report import to_json, to_markdown
from .tasks import SENTENCE_TASKS, TASKS, WORD_TASKS, run_task


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the `eval` subcommand."""
    p = subparsers.add_parser(
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
    return p


class SentenceTransformerModel:
    """A sentence-transformers model behind the `encode(texts, batch_size=, show_progress=)` interface."""

    def __init__(self, path: str):
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(path)

    def encode(self, texts: list[str], batch_size: int = 32, show_progress: bool = False) -> np.ndarray:
        """Embed texts as a float32 (n, dim) array."""
        out = self.model.encode(
            list(texts), batch_size=batch_size, convert_to_numpy=True, show_progress_bar=show_progress
        )
        return np.asarray(out, dtype=np.float32)


def _load_models(args: argparse.Namespace) -> dict:
    import edgeemb

    reference = None
    if args.reference:
        kind, _, reference = args.reference.partition(":")
        if kind != "sentence-transformers" or not reference:
            raise ValueError(f"--reference must be sentence-transformers:PATH, got {args.reference!r}")
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ValueError(
                "--reference needs sentence-transformers; install the export extra: "
                "pip install 'edgeemb[export]'"
            )
    models = {}
    for path in [args.bundle, *args.compare]:
        label = Path(path).name or str(path)
        models[str(path) if label in models else label] = edgeemb.load(path)
    if reference:
        models[f"st:{Path(reference).name or reference}"] = SentenceTransformerModel(reference)
    return models


class IndexForEval:
    """edgeemb.Index (hnswlib + SQLite, in a temporary folder) behind the eval suite's add/search interface."""

    def __init__(self, dim: int):
        import tempfile

        from ..index import Index

        self._tmp = tempfile.TemporaryDirectory(prefix="edgeemb-eval-")
        self.index = Index.create(self._tmp.name, dim=dim)

    def add(self, vectors, ids) -> None:
        self.index.add_vectors(vectors, [""] * len(ids), ids=[str(int(i)) for i in ids])

    def search(self, queries, k: int):
        import numpy as np

        hits = [self.index.search(q, k=k) for q in queries]
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for row, found in enumerate(hits):
            ids[row, : len(found)] = [int(h.id) for h in found]
            scores[row, : len(found)] = [h.score for h in found]
        return ids, scores


def _evaluate(label: str, model, tasks: list[str], explicit: bool, args: argparse.Namespace) -> list:
    results = []
    static = getattr(model, "words", None) is not None and getattr(model, "vectors", None) is not None
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
