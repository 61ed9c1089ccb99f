#!/usr/bin/env bash
# Token endpoint throughput and latency on loopback: starts parley-tokens (rate limit
# and call caps off, bearer key set) on a free port, drives POST /api/token with wrk for
# a bounded time, prints wrk's figures, then stops the service. Then the cost of the call
# caps: sequential mints against a real livekit-server (a ListRooms and a CreateRoom each).
#   bash scripts/bench-tokens.sh [SECONDS=10] [CONNECTIONS=16] [CAPPED_MINTS=200]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_RUN="${1:-10}"
CONNS="${2:-16}"
CAPPED="${3:-200}"
command -v wrk >/dev/null || { echo "bench-tokens: wrk missing (scripts/install-system-deps.sh installs it)" >&2; exit 1; }
PORT="$(.venv/bin/python -c 'from harness.devstack import free_port; print(free_port())')"
KEY="bench-$RANDOM$RANDOM"
tmp="$(mktemp -d)"
trap 'kill "$svc" 2>/dev/null || true; wait "$svc" 2>/dev/null || true; rm -rf "$tmp"' EXIT
PARLEY_TOKEN_API_KEY="$KEY" PARLEY_TOKEN_RATE_LIMIT=0 PARLEY_LOG_LEVEL=WARNING \
  PARLEY_TOKEN_MAX_CALLS_PER_CLIENT=0 PARLEY_TOKEN_MAX_CALLS=0 PARLEY_TOKEN_METRICS_PORT=0 \
  LIVEKIT_API_SECRET="bench-secret-bench-secret-bench-secret-0123" \
  .venv/bin/parley-tokens --port "$PORT" > "$tmp/access.log" 2> "$tmp/service.log" &
svc=$!
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
cat > "$tmp/post.lua" <<LUA
wrk.method = "POST"
wrk.body   = '{"name": "Load Test"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
local non200 = 0
response = function(status, headers, body) if status ~= 200 then non200 = non200 + 1 end end
done = function(summary, latency, requests)
  io.write(string.format("non-200 responses: %d\n", non200))
  io.write(string.format("p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
LUA
echo "==> POST /api/token: wrk -t1 -c$CONNS -d${SECONDS_RUN}s on 127.0.0.1:$PORT ($(nproc) cores shared by wrk and the service)"
# One wrk thread: the non-200 counter in the Lua script is per thread.
wrk -t1 -c"$CONNS" -d"${SECONDS_RUN}s" --timeout 5s --latency -s "$tmp/post.lua" "http://127.0.0.1:$PORT/api/token"
echo "==> GET /healthz (framework floor, same settings)"
wrk -t1 -c"$CONNS" -d"$(( SECONDS_RUN / 2 > 0 ? SECONDS_RUN / 2 : 1 ))s" --timeout 5s --latency "http://127.0.0.1:$PORT/healthz" | grep -E "Requests/sec|99%|Latency "
echo "==> POST /api/token with the call caps on: $CAPPED sequential mints, livekit-server on loopback"
.venv/bin/python - "$CAPPED" "$tmp" <<'PY'
import http.client, statistics, sys, time
from pathlib import Path
from harness.devstack import LiveKitServer, TokenService

n, tmp = int(sys.argv[1]), Path(sys.argv[2])
server = LiveKitServer.create().start(tmp / "logs")
svc = TokenService(env={**server.env(), "PARLEY_TOKEN_API_KEY": "bench-key", "PARLEY_TOKEN_RATE_LIMIT": "0",
                        "PARLEY_LOG_LEVEL": "WARNING", "PARLEY_AGENT_NAME": "bench-nobody",
                        "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0", "PARLEY_TOKEN_MAX_CALLS": str(n + 1)})
try:
    svc.start(tmp / "logs")
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=10)
    ms, codes = [], []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("POST", "/api/token", b"{}", {"Authorization": "Bearer bench-key"})
        r = conn.getresponse(); r.read()
        ms.append((time.perf_counter() - t) * 1000); codes.append(r.status)
    q = statistics.quantiles(ms, n=100)
    print(f"{n} mints, non-200: {sum(c != 200 for c in codes)}, p50 {q[49]:.2f} ms, p90 {q[89]:.2f} ms, "
          f"p99 {q[98]:.2f} ms (rooms in LiveKit at the end: {n})")
finally:
    svc.stop(); server.stop()
PY
