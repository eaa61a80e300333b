#!/usr/bin/env bash
# Create ./.venv-peers (idempotent): benchmark peers that must not share the main venv, run by
# `edgeemb bench` as subprocesses. onnxruntime, tokenizers and numpy are pinned to the main venv's
# versions so a peer on the same ONNX file differs from edgeemb only in its own code.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
pins=(
  "fastembed==0.9.1"
  "onnxruntime==1.32.0"
  "tokenizers==0.22.2"
  "numpy==2.4.6"
)

[ -x .venv-peers/bin/python ] || "$python" -m venv .venv-peers
stamp=".venv-peers/.edgeemb-peers-$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "edgeemb setup_peers: installing ${pins[*]} into .venv-peers"
  .venv-peers/bin/python -m pip --disable-pip-version-check -q install "${pins[@]}"
  touch "$stamp"
fi
.venv-peers/bin/python -c "import fastembed, onnxruntime; print('peers venv ok: fastembed', fastembed.__version__, \
'onnxruntime', onnxruntime.__version__)"
