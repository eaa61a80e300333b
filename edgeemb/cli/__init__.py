"""The `edgeemb` command line: one module per group of subcommands."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
