"""`parley-tokens`: run the token service (and serve the built web frontend)."""

from __future__ import annotations

import argparse
import logging
import socket
import sys
import warnings
from pathlib import Path

import uvicorn
from jwt.warnings import InsecureKeyLengthWarning

from .app import DEFAULT_STATIC_DIR, ServiceOptions, create_app
from .metrics import TokenMetrics
from .settings import SettingsError, TokenSettings

log = logging.getLogger("parley.tokens")


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="parley-tokens",
        description="Parley token service: mints LiveKit room tokens that dispatch the agent, "
        "and serves the web frontend.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--static-dir", type=Path, default=None, metavar="DIR",
                   help="built frontend to serve at / (default: PARLEY_TOKEN_STATIC_DIR or frontend/dist)")
    return p.parse_args(argv)


def _configure_logging(level: str) -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Access lines are JSON objects, one per line, on stdout: easy to ship and grep.
    access = logging.getLogger("parley.tokens.access")
    access_handler = logging.StreamHandler(sys.stdout)
    access_handler.setFormatter(logging.Formatter("%(message)s"))
    access.handlers[:] = [access_handler]
    access.propagate = False


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"parley-tokens: error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    try:
        settings = TokenSettings.load()
        settings.check_production(args.host)
        if settings.metrics_port == args.port:
            raise SettingsError(f"PARLEY_TOKEN_METRICS_PORT={settings.metrics_port} is the API port (--port); "
                                "metrics need a port of their own")
    except SettingsError as e:
        print(f"parley-tokens: error: {e}", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)

    static_dir = args.static_dir or (Path(settings.static_dir) if settings.static_dir else DEFAULT_STATIC_DIR)
    metrics = TokenMetrics()
    opts = ServiceOptions(settings=settings, static_dir=static_dir, metrics=metrics)
    app = create_app(opts)
    frontend = str(static_dir) if (static_dir / "index.html").is_file() else "not built"
    caps = (f"{settings.max_calls_per_client or 'off'} per client, {settings.max_calls or 'off'} in all"
            if settings.counts_calls else "off")
    log.info(
        "serving http://%s:%d  livekit=%s agent=%s auth=%s rate_limit=%s/min calls=%s rooms=%s%s ttl=%ss "
        "metrics=%s frontend=%s",
        args.host, args.port, settings.public_url, settings.agent_name,
        "dev mode (no key, loopback clients only)" if settings.dev_mode else "bearer key",
        settings.rate_limit or "off", caps, settings.room_prefix,
        "* (client-named allowed)" if settings.client_rooms else "<random>", settings.ttl_s,
        f"{args.host}:{settings.metrics_port}/metrics" if settings.metrics_port else "off", frontend,
    )
    # PyJWT warns on every short HMAC key; say it once, in words, instead.
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    if len(settings.secret.encode()) < 32:
        log.warning("LIVEKIT_API_SECRET is shorter than 32 bytes (fine for local development, "
                    "refused in production)")

    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level=settings.log_level.lower(),
        access_log=False,  # our middleware writes the structured access log
        # X-Forwarded-For is read by our middleware, against PARLEY_TOKEN_TRUSTED_PROXIES.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
    # Metrics first: once the API port accepts connections, everything is up.
    if settings.metrics_port:
        try:
            metrics.serve(args.host, settings.metrics_port)
        except OSError as e:
            log.error("cannot serve metrics on %s:%d (PARLEY_TOKEN_METRICS_PORT): %s", args.host,
                      settings.metrics_port, e.strerror or e)
            return 1
    try:
        sock = _listen(args.host, args.port)
    except OSError as e:
        log.error("cannot listen on %s:%d: %s", args.host, args.port, e.strerror or e)
        return 1
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """Bind before handing over to uvicorn, so a busy port is one clear line and exit 1."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


if __name__ == "__main__":
    sys.exit(main())
