"""The `edgeemb` command: the runtime's subcommands, plus those other installed parts register.

Other distributions (the export toolchain, the benchmarks) add subcommands through the entry-point group
`edgeemb.commands`: each entry is a function `add_parsers(sub, export_sub)`. The runtime never names them.
"""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import entry_points

from . import bundles, check, demo, embed, evaluate, index, models

PLUGIN_GROUP = "edgeemb.commands"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser: the runtime's subcommands, plus the plugins' unless `command` is a runtime one
    (so `edgeemb search` never imports the toolchain)."""
    from .. import __version__

    parser = argparse.ArgumentParser(prog="edgeemb", description="Embedding models on the edge: export, encode, "
                                     "index and search offline.")
    parser.add_argument("--version", action="version", version=f"edgeemb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    export = sub.add_parser("export", help="turn a source model into a bundle (needs the export toolchain)")
    export_sub = export.add_subparsers(dest="export_kind", metavar="KIND", required=True)
    for module in (bundles, check, index, embed, demo, evaluate, models):
        module.add_parsers(sub, export_sub)
    if command in sub.choices and command != "export":
        return parser
    for ep in sorted(entry_points(group=PLUGIN_GROUP), key=lambda e: e.name):
        try:
            add_parsers = ep.load()
        except ImportError:
            continue  # that part of edgeemb is not installed
        add_parsers(sub, export_sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; EdgeembError becomes a one-line message and exit status 2."""
    from ..errors import EdgeembError

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeembError as exc:
        print(f"edgeemb {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("edgeemb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
