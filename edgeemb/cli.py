"""The `edgeemb` command: subcommands are contributed by small modules, each with add_parsers(sub, export)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines add_parsers(sub, export_sub). Export-side modules import torch only inside handlers.
COMMAND_MODULES = (
    "edgeemb.commands",
    "edgeemb.eval.cli",
    "edgeemb.archive_cli",
    "edgeemb_export.cli",
    "edgeemb_export.static_cli",
    "edgeemb_export.llm_cli",
    "edgeemb_bench.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every available subcommand."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="edgeemb", description="Embedding models on the edge: export, encode, "
                                     "index and search offline.")
    parser.add_argument("--version", action="version", version=f"edgeemb {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    export = sub.add_parser("export", help="turn a source model into a bundle (needs the export extra)")
    export_sub = export.add_subparsers(dest="export_kind", metavar="KIND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of edgeemb is not installed
            raise
        if hasattr(module, "add_parsers"):
            module.add_parsers(sub, export_sub)
        else:
            module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; EdgeembError becomes a one-line message and exit status 2."""
    from .errors import EdgeembError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
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
