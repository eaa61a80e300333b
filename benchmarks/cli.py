"""`edgeemb bench` and `edgeemb recommend` (registered through edgeemb.cli; nothing heavy imported here)."""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

BENCH_EXTRA = "pip install 'edgeemb[bench]'"


def add_parsers(sub, export_sub) -> None:
    """Register `bench` and `recommend`."""
    p = sub.add_parser("bench", help="measure bundles on this machine: latency, throughput, memory, index, peers")
    p.add_argument("bundles", nargs="*", metavar="BUNDLE",
                   help="bundle folders or default names (default: the built embedded defaults)")
    p.add_argument("--quick", action="store_true", help="smaller samples, no torch peers (under 3 minutes)")
    p.add_argument("--threads", type=int, default=1, help="threads for single-query and end-to-end runs (default 1)")
    p.add_argument("--cores", type=int, default=None, help="pin edgeemb workers to this many cores")
    p.add_argument("--memory-limit", type=parse_mb, default=None, metavar="SIZE",
                   help="address-space cap for edgeemb workers, e.g. 500M or 1G (also the quick low-end cap)")
    p.add_argument("--sentences", type=int, default=None, metavar="N",
                   help="throughput sample size (default 10000, 500 with --quick)")
    p.add_argument("--out", default="bench-results", help="folder for bench.json, bench.md and plots")
    p.add_argument("--eval-json", nargs="*", default=[], metavar="FILE",
                   help="`edgeemb eval --json` files giving quality for the Pareto plot")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("recommend", help="pick a bundle for a latency/memory budget from measured results")
    p.add_argument("--latency-ms", type=float, default=100.0, help="end-to-end p95 budget (default 100)")
    p.add_argument("--memory-mb", type=float, default=500.0, help="peak RSS budget (default 500)")
    p.add_argument("--gpu", choices=("no", "yes"), default="no", help="is a GPU available (default no)")
    p.add_argument("--task", choices=("retrieval", "similarity", "contextual", "analogy"), default="retrieval",
                   help="what the bundle is for: sets the quality metric and the kinds that qualify (default "
                        "retrieval)")
    p.add_argument("--results", default=None, metavar="FILE",
                   help="bench.json to use (default: the latest run's; a quick bench runs when there is none)")
    p.add_argument("--eval-json", nargs="*", default=[], metavar="FILE", help="eval-suite JSON files for quality")
    p.set_defaults(func=cmd_recommend)


def parse_mb(text: str) -> int:
    """'500M', '1G', '750MB' or '512' (MB) -> megabytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgG]?)[bB]?\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"memory size {text!r} is not like 500M or 1G")
    value, unit = float(m.group(1)), m.group(2).lower()
    mb = value / 1024 if unit == "k" else value * 1024 if unit == "g" else value
    if mb < 16:
        raise argparse.ArgumentTypeError(f"memory size {text!r} is below 16 MB")
    return int(mb)


def needs_bench_extra(exc: ImportError) -> int:
    """Say which install is missing instead of a traceback."""
    print(f"edgeemb: this command needs the bench extra ({exc.name} is not installed): {BENCH_EXTRA}",
          file=sys.stderr)
    return 2


def quality_files(extra: list[str]) -> list[Path]:
    """Eval JSON files: those given, plus docs/results/**/*.json in a checkout and the bench cache's eval/."""
    from .cache import CHECKOUT, cache_dir

    found = [Path(p) for p in extra]
    for folder in (CHECKOUT / "docs" / "results", cache_dir() / "eval"):
        if folder.is_dir():
            found += sorted(folder.rglob("*.json"))
    return found


def latest_results() -> Path:
    from .cache import cache_dir

    return cache_dir() / "latest.json"


def run_and_report(bundles: list[str], quick: bool, opts, out: Path, eval_json: list[str], command: str,
                   sentences: int | None = None) -> dict:
    """Run the bench, then write bench.json/bench.md (and plots when matplotlib is there) and remember it as
    latest; a run that refuses (suite.NothingToMeasure, data.DataMissing) raises before anything is written."""
    from . import plots, report, suite

    doc = suite.run_bench(bundles, quick, opts, command, sentences)
    report.write_json(doc, out / "bench.json", scrub=True)
    report.write_json(doc, latest_results())  # `recommend` reads this one: real paths
    (out / "bench.md").write_text(report.scrub_paths(report.to_markdown(doc)), encoding="utf-8")
    try:
        written = plots.plots(doc, out, report.load_quality(quality_files(eval_json)))
        print(f"plots: {', '.join(str(p) for p in written) or 'none (nothing to plot)'}", file=sys.stderr)
    except ImportError as exc:
        print(f"edgeemb bench: plots skipped ({exc.name} is not installed): {BENCH_EXTRA}", file=sys.stderr)
    return doc


def refusals() -> tuple[type[Exception], ...]:
    """The exceptions with which a bench run refuses to start or to report (its message is the whole story)."""
    from .data import DataMissing
    from .suite import NothingToMeasure

    return DataMissing, NothingToMeasure


def cmd_bench(args) -> int:
    try:
        from . import report
        from .runner import Options

        refused = refusals()
    except ImportError as exc:
        return needs_bench_extra(exc)
    opts = Options(threads=args.threads, cores=args.cores, memory_limit_mb=args.memory_limit)
    command = "edgeemb bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "edgeemb bench"
    try:
        doc = run_and_report(args.bundles, args.quick, opts, Path(args.out), args.eval_json, command,
                             args.sentences)
    except refused as exc:
        print(f"edgeemb bench: {exc}; nothing written", file=sys.stderr)
        return 2
    print(report.to_markdown(doc), end="")
    print(f"\nwrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'bench.md'}", file=sys.stderr)
    return 0


def cmd_recommend(args) -> int:
    import json

    try:
        from . import recommend, report
        from .runner import Options

        refused = refusals()
    except ImportError as exc:
        return needs_bench_extra(exc)
    path = Path(args.results) if args.results else latest_results()
    if path.is_file():
        doc = json.loads(path.read_text(encoding="utf-8"))
    elif args.results:
        print(f"edgeemb recommend: results file not found: {path}", file=sys.stderr)
        return 2
    else:
        print("edgeemb recommend: no measured results yet; running `edgeemb bench --quick` first", file=sys.stderr)
        try:
            doc = run_and_report([], True, Options(), Path("bench-results"), args.eval_json,
                                 "edgeemb bench --quick (from recommend)")
        except refused as exc:
            print(f"edgeemb recommend: the quick bench refused: {exc}", file=sys.stderr)
            return 2
    if not recommend.measured(doc):
        print(f"edgeemb recommend: {path} holds no measured bundle (an empty or failed run); run `edgeemb bench` "
              "again, or pass --results FILE", file=sys.stderr)
        return 2
    quality = report.load_quality(quality_files(args.eval_json))
    gpu = args.gpu == "yes"
    cands = recommend.candidates(doc, quality, args.task, args.latency_ms, args.memory_mb)
    chosen, why = recommend.choose(cands, args.task, args.latency_ms, args.memory_mb, gpu)
    print(f"budget: p95 < {args.latency_ms:g} ms, peak RSS < {args.memory_mb:g} MB, GPU {args.gpu}, "
          f"task {args.task}; measured {doc.get('created', '?')} ({'quick' if doc.get('quick') else 'full'} run)")
    print(recommend.table(cands, chosen))
    print(f"choice: {chosen.name if chosen else 'none'} — {why}")
    return 0 if chosen else 1
