"""`mypy --strict` passes on the whole runtime (pyproject.toml's [tool.mypy]), with no module excepted (#12)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean():
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:]


def test_no_module_is_excepted_from_strict():
    tomllib = pytest.importorskip("tomllib")
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["mypy"]
    assert cfg["strict"] is True and cfg["files"] == ["edgeemb"]
    excepted = [o["module"] for o in cfg.get("overrides", []) if o.get("ignore_errors")]
    assert not excepted, f"modules excepted from mypy --strict: {excepted}"
