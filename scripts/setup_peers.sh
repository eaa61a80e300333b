#!/usr/bin/env bash
# Install every benchmark peer the recorded figures use (idempotent), so `edgeemb bench` can reproduce them:
#   1. the `peers` extra of benchmarks/pyproject.toml into the main venv (model2vec[distill], gensim, matplotlib): model2vec
#      and gensim run in the main venv beside the export stack (torch, sentence-transformers);
#   2. ./.venv-peers with fastembed, which needs a huggingface-hub the main venv's tokenizers refuses; its
#      onnxruntime, tokenizers and numpy are pinned to the main venv's versions so a peer on the same ONNX
#      file differs from edgeemb only in its own code.
# pip needs a package index (nothing comes from a model hub: model2vec later distils the locally installed
# source model once, into .cache/bench/peers). A peer that is still absent afterwards is named by
# `edgeemb bench` at the top of its report, and its ratios read "not measured".
set -euo pipefail
cd "$(dirname "$0")/.."
main=${VENV:-.venv}/bin/python
python=${PYTHON:-python3}
peer_pins=(
  "fastembed==0.9.1"
  "onnxruntime==1.32.0"
  "tokenizers==0.22.2"
  "numpy==2.4.6"
)

[ -x "$main" ] || { echo "edgeemb setup_peers: $main not found: run scripts/setup.sh first" >&2; exit 2; }
install() {  # install VENV_PYTHON PACKAGE...: pip, or one clear line saying what could not be installed
  local py=$1; shift
  "$py" -m pip --disable-pip-version-check -q install "$@" || {
    echo "edgeemb setup_peers: pip could not install $* (is a package index reachable?); edgeemb bench will" \
      "report these peers as absent" >&2
    exit 2
  }
}
mapfile -t bench_pins < <("$main" - <<'EOF'
import tomllib
with open("benchmarks/pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["peers"]))
EOF
)
stamp="${VENV:-.venv}/.edgeemb-bench-$(printf '%s\n' "${bench_pins[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "edgeemb setup_peers: installing the benchmark peers into ${VENV:-.venv}: ${bench_pins[*]}"
  install "$main" "${bench_pins[@]}"
  touch "$stamp"
fi

[ -x .venv-peers/bin/python ] || "$python" -m venv .venv-peers
stamp=".venv-peers/.edgeemb-peers-$(printf '%s\n' "${peer_pins[@]}" | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "edgeemb setup_peers: installing ${peer_pins[*]} into .venv-peers"
  install .venv-peers/bin/python "${peer_pins[@]}"
  touch "$stamp"
fi
"$main" -c "import model2vec, gensim, matplotlib; print('main venv ok: model2vec', model2vec.__version__, \
'gensim', gensim.__version__, 'matplotlib', matplotlib.__version__)"
.venv-peers/bin/python -c "import fastembed, onnxruntime; print('peers venv ok: fastembed', fastembed.__version__, \
'onnxruntime', onnxruntime.__version__)"
