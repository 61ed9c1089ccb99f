"""Token service: what is inside a minted token, and the HTTP contract of the real
`parley-tokens` process (auth, validation, rate limit, CORS, headers, access log)."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt
import pytest
from livekit import api

from harness.devstack import BIN, ROOT, TokenService, free_port
from tokens.minting import InvalidRequest, Minter
from tokens.ratelimit import RateLimiter
from tokens.settings import TokenSettings

LK_KEY = "test-key"
LK_SECRET = "a-test-secret-that-is-long-enough-for-hs256-0123456789"
API_KEY = "parley-test-bearer-key"
BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": LK_KEY,
    "LIVEKIT_API_SECRET": LK_SECRET,
    "PARLEY_AGENT_NAME": "parley-test",
    "PARLEY_TOKEN_AGENTS": "parley-test,helper",
    "PARLEY_TOKEN_API_KEY": API_KEY,
    "PARLEY_TOKEN_TTL": "600",
    "PARLEY_TOKEN_RATE_LIMIT": "0",
    # The contract tests run without a livekit-server: no call caps (test_tokens_hardening.py
    # tests those against a real one), and metrics only where a test scrapes them.
    "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0",
    "PARLEY_TOKEN_MAX_CALLS": "0",
    "PARLEY_TOKEN_METRICS_PORT": "0",
}
CONTRACT_FIELDS = {"server_url", "room", "identity", "token", "expires_at"}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(base: str, method: str, path: str, body: bytes | None = None, *,
            headers: dict[str, str] | None = None, source: str | None = None) -> Reply:
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10,
                                      source_address=(source, 0) if source else None)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Reply(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def post_token(base: str, payload: Any = None, *, key: str | None = API_KEY, raw: bytes | None = None,
               source: str | None = None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    body = raw if raw is not None else (b"" if payload is None else json.dumps(payload).encode())
    return request(base, "POST", "/api/token", body, headers=headers, source=source)


def claims(token: str) -> api.access_token.Claims:
    return api.TokenVerifier(LK_KEY, LK_SECRET).verify(token)


@pytest.fixture(scope="module")
def service_factory(out_dir: Path) -> Iterator:
    started: list[TokenService] = []

    def start(**env: str) -> TokenService:
        svc = TokenService(env={**BASE_ENV, **env}).start(out_dir / "logs", name="parley-tokens-test")
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


@pytest.fixture(scope="module")
def svc(service_factory) -> TokenService:
    # Client-named rooms on, so the room rules (prefix, telephony, pattern) show in the answers.
    return service_factory(PARLEY_TOKEN_CLIENT_ROOMS="1")


# ---------------------------------------------------------------- minted tokens


def minter(**env: str) -> Minter:
    saved = dict(os.environ)
    os.environ.update({**BASE_ENV, **env})
    try:
        return Minter.from_settings(TokenSettings.load())
    finally:
        os.environ.clear()
        os.environ.update(saved)


def mint(m: Minter, body: bytes):
    return m.mint(m.plan(m.parse(body)))


def test_token_grants_are_narrow() -> None:
    m = minter(PARLEY_TOKEN_CLIENT_ROOMS="1")
    out = mint(m, b'{"room": "web-lobby-1", "identity": "alice", "name": "Alice", "metadata": "{\\"a\\":1}"}')
    c = claims(out.token)
    v = c.video
    assert v is not None
    assert (v.room_join, v.room) == (True, "web-lobby-1")
    assert v.can_subscribe is True and v.can_publish is True and v.can_publish_data is True
    assert v.can_publish_sources == ["microphone"]  # no camera, no screen share
    assert not v.room_create and not v.room_admin and not v.room_list and not v.room_record
    assert not v.can_update_own_metadata and not v.hidden and not v.recorder and not v.agent
    assert c.sip is None or not (c.sip.admin or c.sip.call)
    assert (c.identity, c.name, c.metadata) == (out.identity, "Alice", '{"a":1}')
    assert out.identity.startswith("alice-")  # requested identities are made unique
    assert (out.room, out.server_url) == ("web-lobby-1", "ws://127.0.0.1:7880")


def test_token_dispatches_the_agent_by_name() -> None:
    m = minter()
    default = claims(mint(m, b"{}").token)
    assert default.room_config is not None
    assert [a.agent_name for a in default.room_config.agents] == ["parley-test"]
    chosen = claims(mint(m, b'{"agent": "helper"}').token)
    assert [a.agent_name for a in chosen.room_config.agents] == ["helper"]
    with pytest.raises(InvalidRequest, match="agent 'other' is not allowed"):
        m.parse(b'{"agent": "other"}')


def test_token_ttl_and_expires_at() -> None:
    m = minter(PARLEY_TOKEN_TTL="120")
    before = int(time.time())
    out = mint(m, b"")
    payload = jwt.decode(out.token, LK_SECRET, algorithms=["HS256"])  # verifies the signature too
    assert payload["exp"] - payload["nbf"] == 120, payload
    assert before <= payload["nbf"] <= int(time.time()) + 1
    assert out.expires_at.endswith("Z")
    assert datetime.fromisoformat(out.expires_at).timestamp() == payload["exp"]


def test_random_room_and_identity_are_unique_and_valid() -> None:
    m = minter(PARLEY_TOKEN_CLIENT_ROOMS="1")
    outs = [mint(m, b"{}") for _ in range(50)]
    assert len({o.room for o in outs}) == 50 and len({o.identity for o in outs}) == 50
    for o in outs:
        assert o.room.startswith("web-")
        m.parse(json.dumps({"room": o.room, "identity": o.identity}).encode())  # our own names validate


def test_any_agent_when_allowed_by_star() -> None:
    m = minter(PARLEY_TOKEN_AGENTS="*")
    assert claims(mint(m, b'{"agent": "sales-bot"}').token).room_config.agents[0].agent_name == "sales-bot"
    with pytest.raises(InvalidRequest, match="is not allowed"):
        m.parse(b'{"agent": "bad agent name"}')


def test_public_url_is_what_clients_get() -> None:
    m = minter(PARLEY_LIVEKIT_PUBLIC_URL="wss://voice.example.com")
    assert mint(m, b"{}").server_url == "wss://voice.example.com"


def test_room_pattern_is_configurable() -> None:
    m = minter(PARLEY_TOKEN_CLIENT_ROOMS="1", PARLEY_TOKEN_ROOM_PREFIX="support-",
               PARLEY_TOKEN_ROOM_PATTERN=r"support-[0-9]{1,6}")
    assert mint(m, b'{"room": "support-42"}').room == "support-42"
    with pytest.raises(InvalidRequest, match=r"room 'support-x' is not allowed: names must match support-"):
        m.parse(b'{"room": "support-x"}')
    with pytest.raises(InvalidRequest, match=r"room 'sales-1' is not allowed: names must start with 'support-'"):
        m.parse(b'{"room": "sales-1"}')


def test_rate_limiter_refills() -> None:
    now = [0.0]
    rl = RateLimiter(per_minute=6, clock=lambda: now[0])
    assert [rl.check("a") for _ in range(6)] == [0.0] * 6
    wait = rl.check("a")
    assert 9.9 < wait <= 10.0  # 6/min = one every 10 s
    assert rl.check("b") == 0.0  # per client
    now[0] += 10.0
    assert rl.check("a") == 0.0
    assert rl.check("a") > 0


def test_rate_limiter_memory_is_bounded() -> None:
    rl = RateLimiter(per_minute=1, max_clients=100)
    for i in range(1000):
        rl.check(f"10.0.{i // 256}.{i % 256}")
    assert len(rl._buckets) == 100


# ---------------------------------------------------------------- the HTTP contract


def test_contract_200(svc: TokenService) -> None:
    r = post_token(svc.url, {"identity": "bob", "name": "Bob", "agent": "helper"})
    assert r.status == 200, r.body
    data = r.json()
    assert set(data) == CONTRACT_FIELDS
    assert data["room"].startswith("web-") and data["identity"].startswith("bob-")
    assert data["server_url"] == "ws://127.0.0.1:7880"
    assert datetime.fromisoformat(data["expires_at"]) > datetime.now(UTC)
    c = claims(data["token"])
    assert c.video.room == data["room"] and c.room_config.agents[0].agent_name == "helper"
    assert (c.identity, c.name) == (data["identity"], "Bob")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_empty_body_means_defaults(svc: TokenService) -> None:
    for raw in (b"", b"{}", b"null", b"  \n"):
        r = post_token(svc.url, raw=raw)
        assert r.status == 200, (raw, r.body)
        assert r.json()["room"].startswith("web-")


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ({"room": "web-no spaces"}, "room 'web-no spaces' is not allowed"),
        ({"room": "../../etc"}, "is not allowed"),
        ({"room": "-leading-dash"}, "is not allowed"),
        ({"room": "lobby"}, "names must start with 'web-'"),
        ({"room": "call-_+15550100_abc"}, "telephony room namespace"),
        ({"room": "x" * 65}, "room: too long (max 64 characters)"),
        ({"room": ""}, "room: must not be empty"),
        ({"room": 5}, "room: must be a string"),
        ({"identity": "bad identity!"}, "identity: must match"),
        ({"name": "line\nbreak"}, "name: contains characters that are not allowed"),
        ({"name": ["Alice"]}, "name: must be a string"),
        ({"agent": "someone-else"}, "agent 'someone-else' is not allowed"),
        ({"metadata": "m" * 1025}, "metadata: too long"),
        ({"room": "web-ok", "admin": True}, "unknown field 'admin'"),
        ([1, 2], "request body must be a JSON object"),
        ("room", "request body must be a JSON object"),
    ],
)
def test_invalid_input_is_400_with_reason(svc: TokenService, payload: Any, reason: str) -> None:
    r = post_token(svc.url, payload)
    assert r.status == 400, r.body
    assert set(r.json()) == {"error"} and reason in r.json()["error"], r.json()
    assert r.headers["cache-control"] == "no-store"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{", "not valid JSON"),
        (b"\xff\xfe{\x00}\x00", "not UTF-8"),
        (b"\xef\xbb\xbf{}", "not valid JSON"),
        (b'{"name": "\\ud800"}', "name: must be valid Unicode text"),
        (b"[" * 5000 + b"]" * 5000, "body too large"),
        (b"[" * 4000 + b"]" * 4000, "request body is nested too deeply"),
        (b"[" * 50 + b"]" * 50, "request body must be a JSON object"),
        (b'{"room": "' + b"a" * 20000 + b'"}', "body too large"),
        (b"NaN", "request body must be a JSON object"),
    ],
)
def test_malformed_bodies_are_400(svc: TokenService, raw: bytes, reason: str) -> None:
    r = post_token(svc.url, raw=raw)
    assert r.status == 400, r.body
    assert reason in r.json()["error"], r.json()


def test_auth(svc: TokenService) -> None:
    missing = post_token(svc.url, {}, key=None)
    assert missing.status == 401 and "missing API key" in missing.json()["error"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = post_token(svc.url, {}, key="nope")
    assert wrong.status == 401 and wrong.json() == {"error": "invalid API key"}
    prefix = post_token(svc.url, {}, key=API_KEY[:-1])
    assert prefix.status == 401
    basic = request(svc.url, "POST", "/api/token", b"{}", headers={"Authorization": f"Basic {API_KEY}"})
    assert basic.status == 401
    # Authentication comes before validation: no hints about valid input without a key.
    assert post_token(svc.url, {"room": "bad room"}, key=None).status == 401
    assert post_token(svc.url, {}, key=API_KEY).status == 200


def test_healthz_openapi_and_methods(svc: TokenService) -> None:
    h = request(svc.url, "GET", "/healthz")
    assert h.status == 200 and h.json() == {"status": "ok"} and h.headers["cache-control"] == "no-store"
    spec = request(svc.url, "GET", "/openapi.json").json()
    op = spec["paths"]["/api/token"]["post"]
    assert {"200", "400", "401", "429"} <= set(op["responses"])
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["additionalProperties"] is False and {"room", "identity", "name", "agent"} <= set(schema["properties"])
    assert schema["properties"]["room"]["anyOf"][0]["pattern"] == "^(?=web\\-)(?:[A-Za-z0-9][A-Za-z0-9_-]{0,63})$"
    r = request(svc.url, "GET", "/api/token")
    assert r.status == 405 and "method not allowed" in r.json()["error"] and r.headers["allow"] == "POST"
    assert request(svc.url, "GET", "/api/nothing").json() == {"error": "not found"}


def test_rate_limit_per_client(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_RATE_LIMIT="5")
    codes = [post_token(svc.url, {}).status for _ in range(5)]
    assert codes == [200] * 5
    limited = post_token(svc.url, {})
    assert limited.status == 429
    assert "rate limit exceeded" in limited.json()["error"]
    assert int(limited.headers["retry-after"]) >= 1
    # Unauthenticated guessing is limited too.
    assert post_token(svc.url, {}, key="guess").status == 429
    # Another client address (127.0.0.2 is loopback too) has its own budget.
    assert post_token(svc.url, {}, source="127.0.0.2").status == 200


def test_cors_allow_list(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_CORS_ORIGINS="https://app.example.com, https://m.example.com")
    pre = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    ok = request(svc.url, "OPTIONS", "/api/token", headers=pre)
    assert ok.status == 200 and ok.headers["access-control-allow-origin"] == "https://app.example.com"
    evil = request(svc.url, "OPTIONS", "/api/token", headers={**pre, "Origin": "https://evil.example"})
    assert evil.status == 400 and "access-control-allow-origin" not in evil.headers
    r = request(svc.url, "POST", "/api/token", b"{}", headers={
        "Origin": "https://evil.example", "Authorization": f"Bearer {API_KEY}"})
    assert "access-control-allow-origin" not in r.headers  # the browser will not hand it to the page


def test_dev_mode_serves_loopback(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_API_KEY="")
    assert post_token(svc.url, {}, key=None).status == 200


@pytest.mark.e2e  # runs parley-tokens (it refuses before binding anything)
def test_dev_mode_refuses_public_listen() -> None:
    p = subprocess.run([str(BIN / "parley-tokens"), "--host", "0.0.0.0", "--port", str(free_port())],
                       env={**BASE_ENV, "PARLEY_TOKEN_API_KEY": "", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 2
    assert "dev mode" in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_bad_settings_and_busy_port_are_one_line_errors(svc: TokenService) -> None:
    p = subprocess.run([str(BIN / "parley-tokens"), "--port", str(free_port())],
                       env={**BASE_ENV, "PARLEY_TOKEN_ROOM_PATTERN": "(", "PATH": "/usr/bin:/bin"},
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 2 and "PARLEY_TOKEN_ROOM_PATTERN" in p.stderr and "Traceback" not in p.stderr
    busy = subprocess.run([str(BIN / "parley-tokens"), "--port", str(svc.port)], env={**BASE_ENV, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert busy.returncode == 1 and "Traceback" not in busy.stderr
    assert f"cannot listen on 127.0.0.1:{svc.port}: Address already in use" in busy.stderr


def test_access_log_is_structured_and_secret_free(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_CLIENT_ROOMS="1")
    grant = post_token(svc.url, {"room": "web-logged-room"}).json()
    token = grant["token"]
    post_token(svc.url, {}, key="wrong-key-value")
    time.sleep(0.3)
    log = svc.proc.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    ok = [x for x in lines if x.get("room") == "web-logged-room"]
    assert ok and ok[0]["status"] == 200 and ok[0]["path"] == "/api/token" and "ms" in ok[0]
    assert any(x["status"] == 401 and x.get("reason") == "wrong key" for x in lines)
    assert ok[0]["identity"] == grant["identity"]
    for secret in (API_KEY, "wrong-key-value", LK_SECRET, token, token.split(".")[1]):
        assert secret not in log


def test_frontend_is_served(svc: TokenService) -> None:
    r = request(svc.url, "GET", "/")
    if not (ROOT / "frontend" / "dist" / "index.html").exists():
        assert r.status == 404 and "make frontend" in r.json()["error"]
        return
    assert r.status == 200 and b"<title>Parley</title>" in r.body
    assert r.headers["x-frame-options"] == "DENY"
