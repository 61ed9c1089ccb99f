"""The token service: `POST /api/token`, `GET /healthz`, `/openapi.json`, and the
built frontend at `/` so a person opens one URL."""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .calls import CallLedger, Refusal
from .clients import client_address, client_key
from .metrics import TokenMetrics
from .minting import MAX_BODY_BYTES, ErrorResponse, InvalidRequest, Minter, TokenRequest, TokenResponse
from .ratelimit import RateLimiter
from .settings import TokenSettings, is_loopback

log = logging.getLogger("parley.tokens")
access_log = logging.getLogger("parley.tokens.access")

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATIC_DIR = ROOT / "frontend" / "dist"

# Headers every response carries; API responses also get Cache-Control: no-store.
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]




def content_security_policy(livekit_url: str) -> str:
    """The web app may load only from itself, and talk only to itself and LiveKit (the
    signalling WebSocket, and the HTTP endpoint livekit-client checks when it fails)."""
    parts = urlsplit(livekit_url)
    secure = parts.scheme in ("wss", "https")
    origins = [f"{'wss' if secure else 'ws'}://{parts.netloc}", f"{'https' if secure else 'http'}://{parts.netloc}"]
    return "; ".join([
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        f"connect-src 'self' {' '.join(origins)}",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ])


@dataclass(frozen=True)
class ServiceOptions:
    settings: TokenSettings
    static_dir: Path | None = None  # built frontend; None: serve no UI
    metrics: TokenMetrics = field(default_factory=TokenMetrics)

    @property
    def dev_mode(self) -> bool:
        return self.settings.dev_mode


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class AccessLogMiddleware:
    """One JSON line per request (no secrets: never the Authorization header or the token),
    security headers on every response, and a JSON 500 instead of a traceback."""

    def __init__(self, app: ASGIApp, *, csp: str, metrics: TokenMetrics,
                 proxies: tuple[Any, ...] = ()) -> None:
        self.app = app
        self.headers = [*SECURITY_HEADERS, (b"content-security-policy", csp.encode())]
        self.metrics = metrics
        self.proxies = proxies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        path: str = scope["path"]
        api = path.startswith("/api/") or path == "/healthz"
        status = 500
        started = False
        scope.setdefault("state", {})
        # The client behind our trusted proxies (X-Forwarded-For), decided once for everything.
        peer = scope.get("client")
        forwarded = b",".join(v for k, v in scope.get("headers", []) if k == b"x-forwarded-for")
        address = client_address(peer[0] if peer else None, forwarded.decode("latin-1") or None, self.proxies)
        scope["state"]["client"] = address

        async def send_wrapper(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.extend(self.headers)
                if api:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], path)
            if not started:
                await _error(500, "internal error")(scope, receive, send_wrapper)
        finally:
            state = scope["state"]
            elapsed = time.perf_counter() - start
            record: dict[str, Any] = {
                "method": scope["method"],
                "path": path[:200],
                "status": status,
                "client": address,
                "ms": round(elapsed * 1000, 2),
            }
            for key in ("room", "identity", "agent", "reason"):
                if key in state:
                    record[key] = state[key]
            access_log.info(json.dumps(record, ensure_ascii=True))
            if path == "/api/token" and scope["method"] == "POST":
                self.metrics.observe(status, state.get("reason"), elapsed)


def create_app(opts: ServiceOptions) -> FastAPI:
    s = opts.settings
    minter = Minter.from_settings(s)
    limiter = RateLimiter(per_minute=s.rate_limit)
    ledger = CallLedger(s)
    api_key = s.bearer_key.encode()

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await ledger.aclose()

    app = FastAPI(
        lifespan=lifespan,
        title="Parley token service",
        version="1.0.0",
        description=(
            "Mints short-lived LiveKit room tokens that dispatch the Parley agent. "
            "Authenticate with `Authorization: Bearer <PARLEY_TOKEN_API_KEY>` "
            "(no key configured = dev mode, loopback clients only)."
        ),
        # Swagger UI and ReDoc load scripts from a CDN; the description is at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        messages = {404: "not found", 405: "method not allowed"}
        return _error(exc.status_code, messages.get(exc.status_code, str(exc.detail)), exc.headers)

    @app.get("/healthz", summary="Liveness probe", response_model=dict[str, str])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    # The request schema, with this server's room rule in it (the pattern is configurable).
    request_schema = TokenRequest.model_json_schema()
    room_rule = f"^(?={re.escape(s.room_prefix)})(?:{s.room_pattern})$"
    request_schema["properties"]["room"]["anyOf"][0]["pattern"] = room_rule

    error_responses: dict[int | str, dict[str, Any]] = {
        400: {"model": ErrorResponse, "description": "Invalid request (the reason is in `error`)."},
        401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
        429: {"model": ErrorResponse, "description": "Rate limited, or this client's call cap is reached; "
                                                      "see Retry-After."},
        503: {"model": ErrorResponse, "description": "Every call slot is taken, or LiveKit cannot count "
                                                      "calls; see Retry-After."},
    }

    @app.post(
        "/api/token",
        summary="Mint a room token that dispatches the agent",
        response_model=TokenResponse,
        responses=error_responses,
        openapi_extra={
            "requestBody": {
                "required": False,
                "content": {"application/json": {"schema": request_schema}},
            }
        },
    )
    async def token(request: Request) -> JSONResponse:
        client: str = request.state.client
        key = client_key(client)  # an IPv6 client is counted per /64

        wait = limiter.check(key)
        if wait > 0:
            request.state.reason = "rate limited"
            retry = max(1, math.ceil(wait))
            return _error(429, f"rate limit exceeded; retry in {retry} s", {"Retry-After": str(retry)})

        if opts.dev_mode:
            if not is_loopback(client):
                request.state.reason = "dev mode, not loopback"
                return _error(401, "the token service is in dev mode (no PARLEY_TOKEN_API_KEY) "
                                   "and serves loopback clients only")
        else:
            scheme, _, given = request.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not given.strip():
                request.state.reason = "no key"
                return _error(401, "missing API key: send 'Authorization: Bearer <key>'",
                              {"WWW-Authenticate": "Bearer"})
            if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), api_key):
                request.state.reason = "wrong key"
                return _error(401, "invalid API key", {"WWW-Authenticate": "Bearer"})

        try:
            body = await _read_body(request)
            req = minter.parse(body)
        except InvalidRequest as e:
            request.state.reason = "invalid"
            return _error(400, str(e))
        grant = minter.plan(req)
        room_metadata = ""
        if ledger.enabled:
            try:
                counts = await ledger.admit(key, grant.room, grant.agent)
            except Refusal as r:
                request.state.reason = r.reason
                return _error(r.status, r.message, {"Retry-After": str(r.retry_after)})
            opts.metrics.calls.set(counts.total)
            room_metadata = ledger.metadata(key)
        minted = minter.mint(grant, room_metadata)
        request.state.room = minted.room
        request.state.identity = minted.identity
        request.state.agent = grant.agent
        return JSONResponse(minted.model_dump())

    @app.get("/api/token", include_in_schema=False)
    async def token_get() -> JSONResponse:
        return _error(405, "method not allowed: use POST", {"Allow": "POST"})

    # Unknown API paths answer in JSON and never fall through to the frontend.
    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                   include_in_schema=False)
    async def api_not_found(rest: str) -> JSONResponse:
        return _error(404, "not found")

    if opts.static_dir is not None and (opts.static_dir / "index.html").is_file():
        app.mount("/", StaticFiles(directory=opts.static_dir, html=True), name="frontend")
    else:
        missing = opts.static_dir

        @app.get("/", include_in_schema=False)
        async def no_frontend() -> JSONResponse:
            where = f"{missing}/index.html is missing" if missing else "no frontend configured"
            return _error(404, f"web frontend not available ({where}; build it with `make frontend`)")

    if s.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(s.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(AccessLogMiddleware, csp=content_security_policy(s.public_url), metrics=opts.metrics,
                       proxies=s.trusted_proxies)
    return app


async def _read_body(request: Request) -> bytes:
    """The body, but never more than MAX_BODY_BYTES + 1 of it held in memory."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise InvalidRequest(f"request body too large (max {MAX_BODY_BYTES} bytes)")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise InvalidRequest(f"request body too large (max {MAX_BODY_BYTES} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
