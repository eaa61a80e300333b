"""`edgeemb check BUNDLE`: is a text's vector the same alone as in any batch? Worst alone-vs-batch cosine."""
from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .parsers import Subparsers

INVARIANCE_KEY = "invariance"  # manifest options field that `--write` fills


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register `check`."""
    p = sub.add_parser("check", help="measure batch invariance: the worst cosine between a text encoded alone and "
                                     "the same text inside random batches (sizes, orders, threads)")
    p.add_argument("bundle", help="bundle folder, .tar, or an embedded default's name")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts to try (default: 1 2)")
    p.add_argument("--sizes", type=int, nargs="+", default=None,
                   help="batch sizes to draw (default: 1 2 3 7 16 33 64 128 256)")
    p.add_argument("--seed", type=int, default=0, help="random seed for the batch compositions")
    p.add_argument("--write", action="store_true",
                   help="record the figure in the bundle's manifest (options.invariance); bundle folders only")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.set_defaults(func=cmd_check)


def run_check(ref: str, threads: list[int], sizes: list[int] | None = None, seed: int = 0) -> dict[str, Any]:
    """The invariance figures of one bundle on the built-in sample texts, as a dict."""
    import warnings

    from ..encode.encoder import TruncationWarning, load
    from ..encode.invariance import DEFAULT_SIZES, measure, sample_texts
    from ..errors import InputError

    if not threads or any(t < 1 for t in threads):
        raise InputError(f"--threads must be positive ints, got {threads}")
    if sizes is not None and (not sizes or any(s < 1 for s in sizes)):
        raise InputError(f"--sizes must be positive ints, got {sizes}")
    encoders = {t: load(ref, threads=t) for t in sorted(set(threads))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TruncationWarning)
        result = measure(encoders, sample_texts(), tuple(sizes or DEFAULT_SIZES), seed=seed)
    figures = result.to_dict()
    figures.update(texts="edgeemb sample corpus + demo queries (en/zh)", seed=seed)
    return figures


def record(ref: str, figures: dict[str, Any]) -> None:
    """Write the figures into the manifest's options (atomic; the listed files' checksums are unchanged)."""
    import dataclasses
    from pathlib import Path

    from ..bundle import read_manifest, resolve_bundle, write_manifest
    from ..errors import InputError

    folder = resolve_bundle(ref)
    if not Path(folder).is_dir():
        raise InputError(f"{folder}: --write needs a bundle folder (unpack the archive, check it, pack it again)")
    manifest = read_manifest(folder)
    options = {**manifest.options, INVARIANCE_KEY: figures}
    write_manifest(folder, dataclasses.replace(manifest, options=options))


def cmd_check(args: argparse.Namespace) -> int:
    figures = run_check(args.bundle, args.threads, args.sizes, args.seed)
    if args.write:
        record(args.bundle, figures)
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        kind = "bit-identical" if figures["identical"] else f"worst cosine {figures['worst_cosine']:.7f}"
        print(f"{args.bundle}: {kind} (max |diff| {figures['max_abs_diff']:.3g}) over {figures['batches']} "
              f"batches, {figures['rows']} rows, sizes {figures['sizes']}, threads {figures['threads']}")
        if args.write:
            print(f"recorded in the manifest's options.{INVARIANCE_KEY}", file=sys.stderr)
    return 0
