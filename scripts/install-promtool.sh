#!/usr/bin/env bash
# Build promtool (Prometheus' rule checker and unit-test runner) from the Go module
# proxy at a pinned version into .venv/bin; `make k8s-check` validates the alerting
# rules with it. Prometheus 3.x is tagged v0.3xx.y on the module proxy.
set -euo pipefail
VERSION="${PROMTOOL_VERSION:-v0.316.0}"
DEST="${1:-.venv/bin/promtool}"
STAMP="$DEST.version"

if [[ -x "$DEST" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-promtool: Go is required (https://go.dev/dl)" >&2; exit 1; }
echo "==> building promtool $VERSION with $(go version | awk '{print $3}')"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "github.com/prometheus/prometheus/cmd/promtool@$VERSION"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/promtool" "$DEST"
echo "$VERSION" > "$STAMP"
