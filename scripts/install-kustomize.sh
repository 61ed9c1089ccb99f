#!/usr/bin/env bash
# Build kustomize from the Go module proxy at a pinned version into .venv/bin.
# The Go build cache makes a rebuild take seconds.
set -euo pipefail
VERSION="${KUSTOMIZE_VERSION:-v5.8.1}"
DEST="${1:-.venv/bin/kustomize}"
STAMP="$DEST.version"

if [[ -x "$DEST" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-kustomize: Go is required (https://go.dev/dl)" >&2; exit 1; }
echo "==> building kustomize $VERSION with $(go version | awk '{print $3}')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "sigs.k8s.io/kustomize/kustomize/v5@$VERSION"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/kustomize" "$DEST"
echo "$VERSION" > "$STAMP"
