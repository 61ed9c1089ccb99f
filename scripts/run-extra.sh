# Sourced by scripts/run.sh after livekit-server is up and before the worker starts:
# runs the token service in the background, serving the built web frontend (make
# builds it first), and prints the one URL a person opens. Ctrl-C stops it with the rest.
# shellcheck shell=bash
TOKENS_HOST="${PARLEY_TOKEN_HOST:-127.0.0.1}"
TOKENS_PORT="${PARLEY_TOKEN_PORT:-8080}"
if (echo > "/dev/tcp/127.0.0.1/$TOKENS_PORT") 2>/dev/null; then
  echo "==> port $TOKENS_PORT is already taken; not starting the token service (set PARLEY_TOKEN_PORT)" >&2
else
  echo "==> starting parley-tokens on $TOKENS_HOST:$TOKENS_PORT (log: logs/parley-tokens.log)"
  "$BIN/parley-tokens" --host "$TOKENS_HOST" --port "$TOKENS_PORT" > logs/parley-tokens.log 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$TOKENS_PORT") 2>/dev/null && break; sleep 0.2; done
  if ! kill -0 "${pids[-1]}" 2>/dev/null; then
    echo "==> parley-tokens did not start:" >&2
    tail -n 5 logs/parley-tokens.log >&2
  else
    [[ -f frontend/dist/index.html ]] || echo "==> note: frontend/dist is missing; run 'make frontend'" >&2
    cat <<TXT

  ┌──────────────────────────────────────────────────────────────┐
    Open Parley in your browser:  http://$TOKENS_HOST:$TOKENS_PORT/
  └──────────────────────────────────────────────────────────────┘
TXT
  fi
fi
