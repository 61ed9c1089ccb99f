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

from agent.settings import Settings, SettingsError

from .app import DEFAULT_STATIC_DIR, ServiceOptions, create_app, is_loopback

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
    try:
        settings = Settings.load()
    except SettingsError as e:
        print(f"parley-tokens: error: {e}", file=sys.stderr)
        return 2
    if not 0 < args.port < 65536:
        print(f"parley-tokens: error: --port {args.port} is not a TCP port", file=sys.stderr)
        return 2
    dev_mode = not settings.token_api_key
    if dev_mode and not is_loopback(args.host):
        print(
            f"parley-tokens: error: PARLEY_TOKEN_API_KEY is empty (dev mode), which is for loopback "
            f"only; refusing to listen on {args.host}. Set a key, or use --host 127.0.0.1.",
            file=sys.stderr,
        )
        return 2
    level = settings.log_level if settings.log_level in logging.getLevelNamesMapping() else "INFO"
    _configure_logging(level)

    static_dir = args.static_dir or (
        Path(settings.token_static_dir) if settings.token_static_dir else DEFAULT_STATIC_DIR
    )
    opts = ServiceOptions(settings=settings, static_dir=static_dir)
    app = create_app(opts)
    frontend = str(static_dir) if (static_dir / "index.html").is_file() else "not built"
    log.info(
        "serving http://%s:%d  livekit=%s agent=%s auth=%s rate_limit=%s/min ttl=%ss frontend=%s",
        args.host, args.port, settings.livekit_public_url or settings.livekit_url, settings.agent_name,
        "dev mode (no key, loopback clients only)" if dev_mode else "bearer key",
        settings.token_rate_limit or "off", settings.token_ttl_s, frontend,
    )
    # PyJWT warns on every short HMAC key; say it once, in words, instead.
    warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)
    if len(settings.livekit_api_secret.encode()) < 32:
        log.warning("LIVEKIT_API_SECRET is shorter than 32 bytes (fine for local development, "
                    "not for production)")

    trusted = settings.token_trusted_proxies
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        log_level=level.lower(),
        access_log=False,  # our middleware writes the structured access log
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or None,
        server_header=False,
        timeout_graceful_shutdown=5,
    )
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
