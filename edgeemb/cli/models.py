"""`edgeemb models`: the bundles this machine can load by name, where each lives and what it is."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .parsers import Subparsers


def add_parsers(sub: Subparsers, export_sub: Subparsers) -> None:
    """Register `models`."""
    p = sub.add_parser("models", help="list the bundles loadable by name (built in the cache, installed as wheels)")
    p.set_defaults(func=cmd_models)


def cmd_models(args: argparse.Namespace) -> int:
    """`edgeemb models`: one row per bundle loadable by name, then the defaults not built yet."""
    from ..bundle import read_manifest
    from ..bundle.installed import available_bundles
    from ..errors import BundleError
    from ..paths import DEFAULT_BUNDLES

    rows = []
    for b in available_bundles():
        try:
            m = read_manifest(b.path)
            size = sum(f["size"] for f in m.files.values()) / 1e6
            rows.append((b.name, m.kind, str(m.dim), m.quantization, f"{size:.1f}", b.origin, str(b.path)))
        except BundleError as exc:
            rows.append((b.name, "?", "?", "?", "?", b.origin, f"unreadable: {exc}"))
    present = {r[0] for r in rows}
    for alias, folder in DEFAULT_BUNDLES.items():
        if alias not in present:
            rows.append((alias, "-", "-", "-", "-", "not built", f"run `edgeemb setup` to build {folder}"))
    if not rows:
        print("no bundles: run `edgeemb setup`, or pip install a model wheel made by `edgeemb pack BUNDLE --wheel`")
        return 0
    header = ("name", "kind", "dim", "quant", "MB", "origin", "path")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    for r in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1])
    return 0
