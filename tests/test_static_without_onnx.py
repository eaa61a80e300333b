"""`edgeemb export static` needs numpy and tokenizers only: it works where onnx, onnxruntime's tools and torch are
absent (a runtime-only install), simulated by blocking those imports in a subprocess."""
import subprocess
import sys

SCRIPT = """
import sys
for name in ("onnx", "torch", "transformers", "optimum"):
    sys.modules[name] = None  # any import of these now fails
from edgeemb.cli.main import main
code = main(["export", "static", sys.argv[1], "-o", sys.argv[2], "--quantize", "fp32"])
import edgeemb
enc = edgeemb.load(sys.argv[2])
print(code, enc.kind, enc.dim, round(float(enc.wv.similarity("king", "queen")), 3))
"""


def test_export_static_runs_without_onnx_or_torch(tmp_path):
    vec = tmp_path / "tiny.vec"
    vec.write_text("3 4\nking 1 0 0 0\nqueen 0.9 0.1 0 0\napple 0 0 1 0\n")
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(vec), str(tmp_path / "b")], capture_output=True,
                         text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    code, kind, dim, sim = out.stdout.splitlines()[-1].split()
    assert (code, kind, dim) == ("0", "static", "4") and float(sim) > 0.9
