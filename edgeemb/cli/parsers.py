"""Type names shared by the subcommand modules: the sub-parser group each `add_parsers` registers into."""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeAlias

if TYPE_CHECKING:
    # argparse's `add_subparsers()` result; generic only in the stubs, so the alias exists for the checker alone.
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]
