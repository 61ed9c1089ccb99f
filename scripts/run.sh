#!/usr/bin/env bash
# `make run`: start livekit-server (dev keys, loopback) and the Parley worker in
# the foreground; Ctrl-C stops both (the worker drains active calls first).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
[[ -f .env ]] && { set -a; source .env; set +a; }
export LIVEKIT_URL="${LIVEKIT_URL:-ws://127.0.0.1:7880}"
export LIVEKIT_API_KEY="${LIVEKIT_API_KEY:-devkey}"
export LIVEKIT_API_SECRET="${LIVEKIT_API_SECRET:-secret}"
# One worker on a shared dev machine: count calls, not host CPU (builds, browsers), as load.
export PARLEY_LOAD_CPU="${PARLEY_LOAD_CPU:-0}"
# Log lines for people: one line per event, [room=… participant=…] on each call's lines
# (production keeps JSON). Metrics for a local Prometheus or a curl on 127.0.0.1.
export PARLEY_LOG_FORMAT="${PARLEY_LOG_FORMAT:-human}"
export PARLEY_METRICS_PORT="${PARLEY_METRICS_PORT:-9100}"
MODE="${PARLEY_MODE:-start}"
mkdir -p logs
pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

port="${LIVEKIT_URL##*:}"; port="${port%%/*}"
if (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "==> a LiveKit server already listens on 127.0.0.1:$port; using it"
else
  echo "==> starting livekit-server --dev on 127.0.0.1:$port (log: logs/livekit-server.log)"
  "$BIN/livekit-server" --dev --bind 127.0.0.1 --config-body "port: $port
rtc: {tcp_port: 7881, udp_port: 7882, use_external_ip: false, node_ip: 127.0.0.1}
keys: {$LIVEKIT_API_KEY: $LIVEKIT_API_SECRET}" > logs/livekit-server.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
fi

if [[ -x scripts/run-extra.sh ]]; then source scripts/run-extra.sh; fi

cat <<TXT

Parley is starting (worker log below; models load in a few seconds).
  LiveKit:      $LIVEKIT_URL   (key $LIVEKIT_API_KEY)
  Agent name:   ${PARLEY_AGENT_NAME:-parley}
  Test call:    $BIN/parley-call --audio tests/fixtures/audio/capital_france.wav
  JSON figures: $BIN/parley-call --json --audio tests/fixtures/audio/capital_france.wav
  Metrics:      curl -s http://127.0.0.1:${PARLEY_METRICS_PORT}/metrics | grep ^parley_
Press Ctrl-C to stop.

TXT
"$BIN/python" -m agent "$MODE" &
pids+=($!)
wait "${pids[-1]}"
