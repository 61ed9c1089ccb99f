#!/usr/bin/env bash
# Build the real LiveKit server from the Go module proxy at a pinned tag and
# install it as .venv/bin/livekit-server. The Go build cache makes rebuilds quick.
set -euo pipefail
VERSION="${LIVEKIT_SERVER_VERSION:-v1.13.5}"
DEST="${1:-.venv/bin/livekit-server}"
STAMP="$DEST.version"

if [[ -x "$DEST" && -f "$STAMP" && "$(cat "$STAMP")" == "$VERSION" ]]; then
  exit 0
fi
command -v go >/dev/null || { echo "install-livekit-server: Go is required (https://go.dev/dl)" >&2; exit 1; }
echo "==> building livekit-server $VERSION with $(go version | awk '{print $3}') (first build takes a few minutes)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
GOBIN="$tmp" go install "github.com/livekit/livekit-server/cmd/server@$VERSION"
mkdir -p "$(dirname "$DEST")"
mv "$tmp/server" "$DEST"
echo "$VERSION" > "$STAMP"
echo "==> livekit-server $VERSION installed at $DEST in $(( $(date +%s) - start ))s"
