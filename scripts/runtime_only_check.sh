#!/usr/bin/env bash
# The runtime-only path, as an app developer takes it: the default bundles packed as model wheels, a fresh venv
# with edgeemb and no extras (no torch, no onnx, no toolchain), then load -> index -> search. Prints the venv's
# size, the import time and the peak RSS. Needs .venv (scripts/setup.sh) to make the wheels.
# --lower-bounds: install the oldest runtime dependencies pyproject.toml admits (scripts/lower-bounds.txt) instead
# of constraints.txt, so the ranges it declares are tested.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
.venv/bin/edgeemb pack default --wheel -o "$tmp/wheels" >/dev/null
.venv/bin/edgeemb pack default-static --wheel -o "$tmp/wheels" >/dev/null
"$python" -m venv "$tmp/venv"
pins=constraints.txt
if [ "${1:-}" = "--lower-bounds" ]; then pins=scripts/lower-bounds.txt; fi
"$tmp/venv/bin/python" -m pip --disable-pip-version-check -q install -c "$pins" . "$tmp"/wheels/*.whl
"$tmp/venv/bin/python" -m pip --disable-pip-version-check list 2>/dev/null | grep -Ei "^(onnxruntime|tokenizers|numpy|hnswlib|tqdm) "
cd "$tmp"  # away from the checkout: nothing may come from it
"$tmp/venv/bin/python" - <<'PY'
import sys, tempfile, time
t = time.perf_counter()
import edgeemb
import_ms = (time.perf_counter() - t) * 1e3
enc, static = edgeemb.load(), edgeemb.load("default-static")
with tempfile.TemporaryDirectory() as d:
    for e in (enc, static):
        with edgeemb.Index.create(f"{d}/{e.name}", e) as ix:
            ix.add(["how to cook pasta", "train tickets across Europe", "如何降低血压"], ids=["a", "b", "c"])
            assert ix.search("boiling spaghetti", k=1)[0].id == "a", e.name
heavy = sorted({m.split(".")[0] for m in sys.modules} & {"torch", "transformers", "onnx", "optimum",
                                                         "edgeemb_export", "edgeemb_bench"})
assert not heavy, heavy
import importlib.util
shipped = [m for m in ("edgeemb_export", "edgeemb_bench", "torch", "onnx") if importlib.util.find_spec(m)]
assert not shipped, f"the runtime install carries {shipped}"
from edgeemb.sysinfo import peak_rss_mb
print(f"runtime-only: import edgeemb {import_ms:.0f} ms, peak RSS {peak_rss_mb():.0f} MB, no toolchain installed or loaded")
PY
echo "runtime-only venv: $(du -sm "$tmp/venv" | cut -f1) MB"
