#!/usr/bin/env bash
# Debian packages the stack and its tests use; installs only what is missing.
# redis-server (LiveKit multi-node, SIP), sip-tester (sipp), chromium (browser tests),
# espeak-ng/sox (test audio), opus/soxr dev headers + pkg-config (LiveKit SIP cgo build),
# nodejs/npm (web frontend build), wrk (token service load figures).
set -euo pipefail
PKGS=(redis-server sip-tester chromium chromium-driver espeak-ng sox
      libopus-dev libopusfile-dev libsoxr-dev pkg-config nodejs wrk)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Debian ships npm apart from nodejs; NodeSource's nodejs (when present) bundles it.
command -v npm >/dev/null || missing+=(npm)
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) -ne 0 ]]; then
  SUDO=sudo; command -v sudo >/dev/null || { echo "install-system-deps: need root to install: ${missing[*]}" >&2; exit 1; }
else
  SUDO=
fi
echo "==> apt-get install ${missing[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
