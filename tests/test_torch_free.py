"""The runtime never imports torch, transformers or optimum: proved in a fresh interpreter."""
import subprocess
import sys

SCRIPT = """
import sys, tempfile, edgeemb
enc = edgeemb.load(sys.argv[1], threads=1)
from edgeemb.index import Index
with tempfile.TemporaryDirectory() as d:
    index = Index.create(d, enc)
    index.add(["a cat on a mat", "stock market news"])
    assert index.search("kitten", k=1)[0].id == "doc-0"
    index.close()
import edgeemb.cli, edgeemb.commands, edgeemb.demo
edgeemb.cli.build_parser()
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "optimum", "onnx", "sklearn"))
print("HEAVY:" + ",".join(heavy))
"""


def test_runtime_import_graph_is_torch_free(default_bundle):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(default_bundle)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "HEAVY:", out.stdout
