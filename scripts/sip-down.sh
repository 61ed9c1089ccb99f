#!/usr/bin/env bash
# `make sip-down`: stop what `make sip-up` started (livekit-sip, livekit-server, Redis).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m harness.sipstack down "$@"
