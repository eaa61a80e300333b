"""Build the embedded default bundles into the cache once (`edgeemb setup`): the models/ recipes with an alias."""
from __future__ import annotations

import sys
from pathlib import Path

from edgeemb.paths import DEFAULT_BUNDLES, bundles_dir

from .common.errors import ExportError
from .recipes import build, recipes


def default_recipes() -> list:
    """The recipes that define an embedded default, checked against the runtime's alias table."""
    found = [r for r in recipes() if r.alias]
    table = {r.alias: r.name for r in found}
    if table != DEFAULT_BUNDLES:
        raise ExportError(f"models/ defines the defaults {table}, but edgeemb.paths.DEFAULT_BUNDLES says "
                          f"{DEFAULT_BUNDLES}; keep them the same")
    return found


def build_defaults(force: bool = False, only: list[str] | None = None) -> list[Path]:
    """Export every default bundle that is missing, broken or built from an older recipe; return their folders."""
    done = []
    for recipe in default_recipes():
        if only and recipe.alias not in only and recipe.name not in only:
            continue
        out = build(recipe, bundles_dir() / recipe.name, force=force)
        print(f"{recipe.alias}: {out}", file=sys.stderr)
        done.append(out)
    return done
