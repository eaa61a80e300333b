#!/usr/bin/env bash
# Set up edgeemb in ./.venv (idempotent): the runtime (.) and the toolchain (./export, distribution edgeemb-export),
# and with --dev the test tools, the ray extra and the benchmarks (./benchmarks, distribution edgeemb-bench).
# Then build the embedded default bundles into the ignored cache (.cache/edgeemb), once.
set -euo pipefail
cd "$(dirname "$0")/.."
projects=(-e . -e ./export)
name="export"
if [ "${1:-}" = "--dev" ]; then projects=(-e ".[dev,ray]" -e ./export -e ./benchmarks); name="export-dev-ray-bench"; fi
python=${PYTHON:-python3}

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check -q)

# torch first, pinned: the CPU build lies in pip's find-links; a bare `torch` would pull CUDA.
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" install "torch==2.13.0"

stamp=".venv/.edgeemb-setup-$(cat pyproject.toml export/pyproject.toml benchmarks/pyproject.toml constraints.txt \
  | sha256sum | cut -c1-16)-${name}"
if [ ! -f "$stamp" ]; then
  echo "edgeemb setup: installing ${projects[*]} into .venv"
  "${pip[@]}" install -c constraints.txt "${projects[@]}"
  touch "$stamp"
fi

# Export the default bundles once; later runs find them in the cache and do nothing.
.venv/bin/edgeemb setup
