"""Where edgeemb keeps its cache and the embedded default bundles."""
from __future__ import annotations

import os
from pathlib import Path

# Names usable instead of a path in edgeemb.load(); "default" is also what load() with no argument means.
DEFAULT_BUNDLES = {
    "default": "all-minilm-l6-v2-int8",
    "default-static": "minilm-static-256",
    "default-multilingual": "multilingual-e5-small-int4",
}


def home() -> Path:
    """EDGEEMB_HOME, else <checkout>/.cache/edgeemb in a source checkout, else ~/.cache/edgeemb."""
    env = os.environ.get("EDGEEMB_HOME")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "export").is_dir():
        return checkout / ".cache" / "edgeemb"
    return Path.home() / ".cache" / "edgeemb"


def bundles_dir() -> Path:
    """Folder holding the built default bundles."""
    return home() / "bundles"


def default_bundle_path(name: str = "default") -> Path:
    """Path of an embedded default bundle by its short name ("default", "default-static", "default-multilingual")."""
    return bundles_dir() / DEFAULT_BUNDLES[name]
