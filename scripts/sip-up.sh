#!/usr/bin/env bash
# `make sip-up`: start the telephony stack on loopback in the background - Redis,
# livekit-server (its config names that Redis) and livekit-sip (SIP on UDP/TCP
# 127.0.0.1:${PARLEY_SIP_PORT:-5060}, RTP in PARLEY_SIP_RTP_PORTS) - then provision the
# trunks and dispatch rule (parley-sip setup). Logs and pid files: logs/sip/.
# Start the worker separately: .venv/bin/python -m agent start. Stop: make sip-down.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m harness.sipstack up "$@"
