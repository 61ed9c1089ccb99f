#!/usr/bin/env bash
# Build LiveKit SIP from the Go module proxy at a pinned tag and install it as
# .venv/bin/livekit-sip. It uses cgo (libopus, libopusfile, libsoxr via pkg-config;
# scripts/install-system-deps.sh installs them). The Go build cache makes rebuilds quick.
#
# The pin is v1.11.0. Some module proxies (the one this project's CI machines use
# among them) refuse to serve it and its newest dependencies ("403 This module
# version is not available"); then, and only then, the newest release they do serve
# (LIVEKIT_SIP_FALLBACK_VERSION) is built instead, with a warning. Its config keys,
# API and wire protocol are the same for everything Parley uses.
set -euo pipefail
VERSION="${LIVEKIT_SIP_VERSION:-v1.11.0}"
FALLBACK="${LIVEKIT_SIP_FALLBACK_VERSION:-v1.8.0}"
DEST="${1:-.venv/bin/livekit-sip}"
STAMP="$DEST.version"
PKG=github.com/livekit/sip/cmd/livekit-sip

if [[ -x "$DEST" && -f "$STAMP" ]]; then
  installed="$(cat "$STAMP")"
  [[ "$installed" == "$VERSION" || "$installed" == "$FALLBACK (proxy refused $VERSION)" ]] && exit 0
fi
command -v go >/dev/null || { echo "install-livekit-sip: Go is required (https://go.dev/dl)" >&2; exit 1; }
for lib in opus opusfile soxr; do
  pkg-config --exists "$lib" || {
    echo "install-livekit-sip: pkg-config cannot find $lib (run scripts/install-system-deps.sh)" >&2; exit 1; }
done
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=1
start=$(date +%s)
echo "==> building livekit-sip $VERSION with $(go version | awk '{print $3}') and cgo (first build takes a few minutes)"
if GOBIN="$tmp/bin" go install "$PKG@$VERSION" 2> "$tmp/err"; then
  stamp="$VERSION"
elif grep -q "not available" "$tmp/err"; then
  sed 's/^/    /' "$tmp/err" >&2
  echo "==> WARNING: the Go module proxy does not serve livekit-sip $VERSION; building $FALLBACK instead" >&2
  # `go install pkg@ver` also asks the proxy for the module's version list (refused
  # too), so build the fallback from a throwaway module that requires it.
  mkdir -p "$tmp/mod" && cd "$tmp/mod"
  go mod init parley.local/livekit-sip-build >/dev/null 2>&1
  go get "$PKG@$FALLBACK" > "$tmp/get.log" 2>&1 || { cat "$tmp/get.log" >&2; exit 1; }
  go build -o "$tmp/bin/livekit-sip" "$PKG"
  cd - >/dev/null
  stamp="$FALLBACK (proxy refused $VERSION)"
else
  cat "$tmp/err" >&2
  exit 1
fi
mkdir -p "$(dirname "$DEST")"
mv "$tmp/bin/livekit-sip" "$DEST"
echo "$stamp" > "$STAMP"
echo "==> livekit-sip $stamp installed at $DEST in $(( $(date +%s) - start ))s"
