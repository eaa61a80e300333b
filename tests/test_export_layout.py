"""The toolchain's package layout: every subpackage ships in a non-editable install, and its CLI modules stay light
(they register the `edgeemb export ...` parsers, so they import no numpy, torch or onnx)."""
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("edgeemb_export")
tomllib = pytest.importorskip("tomllib")  # Python 3.11+
EXPORT = Path(__file__).resolve().parents[1] / "export"


def test_every_subpackage_is_listed_for_the_wheel():
    listed = set(tomllib.loads((EXPORT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"edgeemb_export"} | {"edgeemb_export." + ".".join(p.parent.relative_to(EXPORT).parts)
                                  for p in EXPORT.glob("*/**/__init__.py") if "build" not in p.parts}
    assert found == listed


def test_cli_modules_import_no_numpy_torch_or_onnx():
    script = ("import sys\n"
              "import edgeemb_export.cli, edgeemb_export.llm_cli, edgeemb_export.static_cli\n"
              "print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'torch', 'onnx'))))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""

