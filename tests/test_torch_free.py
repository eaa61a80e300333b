"""The runtime never imports torch, transformers, optimum or onnx, nor the toolchain or the benchmarks: proved in
a fresh interpreter after importing, encoding, indexing, searching and running `edgeemb search`."""
import subprocess
import sys

SCRIPT = """
import sys, tempfile
FORBIDDEN = ("torch", "transformers", "optimum", "onnx", "sklearn", "edgeemb_export", "edgeemb_bench", "ray")

def loaded(stage):
    bad = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
    print(stage + ":" + ",".join(bad))

import edgeemb
loaded("import")
enc = edgeemb.load(sys.argv[1], threads=1)
enc.encode(["a text"])
loaded("encode")
with tempfile.TemporaryDirectory() as d:
    index = edgeemb.Index.create(d + "/ix", enc)
    index.add(["a cat on a mat", "stock market news"])
    assert index.search("kitten", k=1)[0].id == "doc-0"
    index.close()
    loaded("search")
    from edgeemb.cli import main
    assert main(["search", d + "/ix", "kitten", "-k", "1", "--bundle", sys.argv[1]]) == 0
    loaded("cli-search")
"""


def test_runtime_import_graph_is_torch_and_toolchain_free(default_bundle):
    out = subprocess.run([sys.executable, "-c", SCRIPT, str(default_bundle)], capture_output=True, text=True, check=False,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    stages = dict(line.split(":", 1) for line in out.stdout.splitlines() if line.split(":")[0] in
                  ("import", "encode", "search", "cli-search"))
    assert stages == {"import": "", "encode": "", "search": "", "cli-search": ""}, out.stdout


def test_the_parser_still_finds_the_toolchain_commands():
    from edgeemb.cli import build_parser

    choices = build_parser().parse_args(["export", "static", "x", "-o", "y"])
    assert choices.command == "export"
