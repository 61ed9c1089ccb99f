"""Prometheus metrics of the token service, served at `/metrics` on their own port
(PARLEY_TOKEN_METRICS_PORT), away from the public API the ingress exposes.

Labels are bounded: a status code and a refusal reason from a fixed list, never a room,
an identity or an address.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Every reason /api/token can give; the access log uses the same words.
REASONS = ("ok", "rate limited", "dev mode, not loopback", "no key", "wrong key", "invalid",
           "client call cap", "global call cap", "livekit unavailable", "error")
STATUSES = ("200", "400", "401", "429", "500", "503")
# Minting is ~0.3 ms of CPU; with the call caps on it adds two LiveKit API round trips.
MINT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class TokenMetrics:
    def __init__(self) -> None:
        # A registry of our own: several apps in one process (tests) never collide.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "parley_token_requests", "POST /api/token answers, by HTTP status and refusal reason",
            ["status", "reason"], registry=self.registry)
        self.mint_seconds = Histogram(
            "parley_token_mint_seconds",
            "Time to answer a successful POST /api/token (validation, call count, room, signing)",
            buckets=MINT_BUCKETS, registry=self.registry)
        self.rate_limited = Counter(
            "parley_token_rate_limited", "Requests refused by a limit, by limit",
            ["limit"], registry=self.registry)
        self.calls = Gauge(
            "parley_token_calls", "Calls in the service's room prefix at the last admission (LiveKit's room list)",
            registry=self.registry)
        for limit in ("rate", "client_calls", "global_calls"):
            self.rate_limited.labels(limit)  # present (as 0) before the first refusal
        for status, reason in (("200", "ok"), ("401", "no key"), ("401", "wrong key"), ("429", "rate limited")):
            self.requests.labels(status, reason)

    def observe(self, status: int, reason: str | None, seconds: float) -> None:
        label_status = str(status) if str(status) in STATUSES else "other"
        label_reason = reason if reason in REASONS else ("ok" if status == 200 else "error")
        self.requests.labels(label_status, label_reason).inc()
        if status == 200:
            self.mint_seconds.observe(seconds)
        limit = {"rate limited": "rate", "client call cap": "client_calls",
                 "global call cap": "global_calls"}.get(label_reason)
        if limit:
            self.rate_limited.labels(limit).inc()

    def serve(self, host: str, port: int) -> tuple[WSGIServer, threading.Thread]:
        """Serve /metrics on host:port in a daemon thread (raises OSError if the port is taken)."""
        return start_http_server(port, addr=host, registry=self.registry)
