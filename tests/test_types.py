"""`mypy --strict` passes on the runtime, with the exceptions listed in pyproject.toml's [tool.mypy] overrides."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")
ROOT = Path(__file__).resolve().parent.parent


def test_mypy_strict_is_clean_outside_the_listed_exceptions():
    out = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental"], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:]
