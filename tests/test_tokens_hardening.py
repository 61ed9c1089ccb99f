"""Token service hardening (issue 12), each rule against the real `parley-tokens` process
over HTTP, and where it counts calls, against a real livekit-server:

- rooms are the server's choice, in its own prefix; client-named rooms only when the
  deployment opts in, only inside the prefix, never in a telephony namespace;
- identities are unique (a requested one becomes the display name);
- call caps per client and in all, answered 429 / 503 with Retry-After, counted from
  LiveKit's room list (so a restart of the service forgets nothing);
- X-Forwarded-For only from PARLEY_TOKEN_TRUSTED_PROXIES (`*` refused), IPv6 per /64;
- production refuses LiveKit's dev credentials and short keys, in one line;
- the web app's Content-Security-Policy;
- Prometheus metrics on their own port count refusals.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from livekit import api

from harness.devstack import BIN, ROOT, LiveKitServer, TokenService, free_port
from tests.conftest import wait_for

from .test_tokens import Reply, request

pytestmark = pytest.mark.e2e

API_KEY = "parley-hardening-bearer-key"
BASE_ENV = {
    "LIVEKIT_URL": "ws://127.0.0.1:7880",
    "LIVEKIT_API_KEY": "test-key",
    "LIVEKIT_API_SECRET": "a-test-secret-that-is-long-enough-for-hs256-0123456789",
    "PARLEY_AGENT_NAME": "parley-test",
    "PARLEY_TOKEN_API_KEY": API_KEY,
    "PARLEY_TOKEN_RATE_LIMIT": "0",
    # Caps off unless a test needs them (they need a livekit-server); metrics only where scraped.
    "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0",
    "PARLEY_TOKEN_MAX_CALLS": "0",
    "PARLEY_TOKEN_METRICS_PORT": "0",
}

# No worker serves this agent: rooms minted here never take a real worker's job.
NOBODY = "parley-nobody-home"


@pytest.fixture(scope="module")
def service_factory(out_dir: Path) -> Iterator[Callable[..., TokenService]]:
    started: list[TokenService] = []

    def start(env: dict[str, str] | None = None, **extra: str) -> TokenService:
        svc = TokenService(env={**(env or BASE_ENV), **extra}).start(out_dir / "logs", name="parley-tokens-hard")
        started.append(svc)
        return svc

    yield start
    for svc in started:
        svc.stop()


def post_token(base: str, payload: Any = None, *, key: str | None = API_KEY,
               source: str | None = None) -> Reply:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return request(base, "POST", "/api/token", b"" if payload is None else json.dumps(payload).encode(),
                   headers=headers, source=source)


def prefix() -> str:
    """A room prefix of its own per test: counts never see another test's rooms."""
    return f"t{secrets.token_hex(3)}-"


def lk_env(server: LiveKitServer, **extra: str) -> dict[str, str]:
    return {**BASE_ENV, **server.env(), "PARLEY_AGENT_NAME": NOBODY, "PARLEY_TOKEN_AGENTS": "",
            "PARLEY_TOKEN_MAX_CALLS_PER_CLIENT": "0", "PARLEY_TOKEN_MAX_CALLS": "0", **extra}


def run_service(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """parley-tokens that must refuse to start (it exits before binding anything)."""
    return subprocess.run([str(BIN / "parley-tokens"), "--port", str(free_port()), *args],
                          env={**BASE_ENV, "PATH": "/usr/bin:/bin", **env},
                          capture_output=True, text=True, timeout=30, cwd=ROOT)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
    return p.stderr.strip()


async def rooms_of(server: LiveKitServer, room_prefix: str) -> list[Any]:
    async with api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret) as lk:
        rooms = (await lk.room.list_rooms(api.ListRoomsRequest())).rooms
    return [r for r in rooms if r.name.startswith(room_prefix)]


async def delete_room(server: LiveKitServer, name: str) -> None:
    async with api.LiveKitAPI(server.url.replace("ws://", "http://"), server.api_key, server.api_secret) as lk:
        await lk.room.delete_room(api.DeleteRoomRequest(room=name))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one series in a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + ("{" if labels else " ")):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0])) if labels else {}
        if found == labels:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# ---------------------------------------------------------------- rooms and identities


def test_rooms_are_random_in_the_prefix_and_identities_unique(service_factory) -> None:
    svc = service_factory()
    grants = [post_token(svc.url, {"identity": "alice"}) for _ in range(20)]
    assert all(g.status == 200 for g in grants), [g.body for g in grants if g.status != 200]
    data = [g.json() for g in grants]
    rooms = {d["room"] for d in data}
    identities = {d["identity"] for d in data}
    assert len(rooms) == 20 and all(re.fullmatch(r"web-[0-9a-f]{16}", r) for r in rooms), rooms
    assert len(identities) == 20 and all(re.fullmatch(r"alice-[0-9a-f]{8}", i) for i in identities), identities
    # The requested identity is what people see; the unique one is what LiveKit keys on.
    verifier = api.TokenVerifier(BASE_ENV["LIVEKIT_API_KEY"], BASE_ENV["LIVEKIT_API_SECRET"])
    for d in data:
        c = verifier.verify(d["token"])
        assert (c.identity, c.name, c.video.room) == (d["identity"], "alice", d["room"])
    named = post_token(svc.url, {"identity": "bob", "name": "Bob B."}).json()
    assert verifier.verify(named["token"]).name == "Bob B." and named["identity"].startswith("bob-")


def test_client_named_rooms_are_refused_by_default(service_factory) -> None:
    svc = service_factory()
    for room in ("web-mine", "lobby", "call-_+15550100_abcd"):
        r = post_token(svc.url, {"room": room})
        assert r.status == 400 and "PARLEY_TOKEN_CLIENT_ROOMS" in r.json()["error"], (room, r.body)


def test_opted_in_rooms_stay_in_the_prefix_and_out_of_sip(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_CLIENT_ROOMS="1")
    ok = post_token(svc.url, {"room": "web-team-standup"})
    assert ok.status == 200 and ok.json()["room"] == "web-team-standup", ok.body
    foreign = post_token(svc.url, {"room": "parley-other-room"})
    assert foreign.status == 400 and "must start with 'web-'" in foreign.json()["error"]
    # The room LiveKit SIP made for a phone caller, and an outbound call's room.
    for sip_room in ("call-_+15550100_Xk2fP", "dial-15550100-ab12cd"):
        r = post_token(svc.url, {"room": sip_room})
        assert r.status == 400 and "telephony room namespace" in r.json()["error"], r.body


def test_room_prefix_may_not_overlap_telephony() -> None:
    for value in ("call-", "c", "dial-in-"):
        err = one_line_error(run_service(PARLEY_TOKEN_ROOM_PREFIX=value))
        assert "PARLEY_TOKEN_ROOM_PREFIX" in err and "telephony" in err, err
    err = one_line_error(run_service(PARLEY_TOKEN_ROOM_PREFIX="web-", PARLEY_SIP_ROOM_PREFIX="web-phone-"))
    assert "PARLEY_SIP_ROOM_PREFIX" in err


# ---------------------------------------------------------------- call caps (LiveKit)


async def test_client_cap_is_429_and_survives_a_restart(service_factory, livekit_server: LiveKitServer) -> None:
    room_prefix = prefix()
    env = lk_env(livekit_server, PARLEY_TOKEN_ROOM_PREFIX=room_prefix, PARLEY_TOKEN_MAX_CALLS_PER_CLIENT="2",
                 PARLEY_TOKEN_METRICS_PORT=str(free_port()))
    svc = service_factory(env)
    first = [await asyncio.to_thread(post_token, svc.url, {}) for _ in range(2)]
    assert [r.status for r in first] == [200, 200], [r.body for r in first]
    # The rooms exist in LiveKit before anyone joins, tagged with a hash (not the address).
    rooms = await rooms_of(livekit_server, room_prefix)
    assert sorted(r.name for r in rooms) == sorted(r.json()["room"] for r in first)
    assert all("127.0.0.1" not in r.metadata and "parley_client" in r.metadata for r in rooms)
    assert len({r.metadata for r in rooms}) == 1

    over = await asyncio.to_thread(post_token, svc.url, {})
    assert over.status == 429 and "too many calls" in over.json()["error"], over.body
    assert int(over.headers["retry-after"]) >= 1
    other = await asyncio.to_thread(post_token, svc.url, {}, source="127.0.0.2")
    assert other.status == 200, other.body  # the cap is per client

    metrics = scrape(int(env["PARLEY_TOKEN_METRICS_PORT"]))
    assert sample(metrics, "parley_token_requests_total", reason="client call cap", status="429") == 1
    assert sample(metrics, "parley_token_rate_limited_total", limit="client_calls") == 1

    # A fresh process knows nothing in memory; LiveKit's room list still says 2.
    svc.stop()
    svc = service_factory({**env, "PARLEY_TOKEN_METRICS_PORT": str(free_port())})
    again = await asyncio.to_thread(post_token, svc.url, {})
    assert again.status == 429, again.body
    # One call ends (its room goes): a slot is free again.
    await delete_room(livekit_server, first[0].json()["room"])
    freed = await asyncio.to_thread(post_token, svc.url, {})
    assert freed.status == 200, freed.body


async def test_global_cap_is_503(service_factory, livekit_server: LiveKitServer) -> None:
    room_prefix = prefix()
    svc = service_factory(lk_env(livekit_server, PARLEY_TOKEN_ROOM_PREFIX=room_prefix, PARLEY_TOKEN_MAX_CALLS="2"))
    codes = [(await asyncio.to_thread(post_token, svc.url, {}, source=src)).status
             for src in ("127.0.0.1", "127.0.0.2")]
    assert codes == [200, 200]
    full = await asyncio.to_thread(post_token, svc.url, {}, source="127.0.0.3")
    assert full.status == 503 and "call slots are taken" in full.json()["error"], full.body
    assert int(full.headers["retry-after"]) >= 1
    assert len(await rooms_of(livekit_server, room_prefix)) == 2  # no room for the refused one


async def test_minted_room_dispatches_the_agent_and_token_carries_the_tag(
        service_factory, livekit_server: LiveKitServer) -> None:
    room_prefix = prefix()
    svc = service_factory(lk_env(livekit_server, PARLEY_TOKEN_ROOM_PREFIX=room_prefix,
                                 PARLEY_TOKEN_MAX_CALLS_PER_CLIENT="3"))
    grant = (await asyncio.to_thread(post_token, svc.url, {})).json()
    async with api.LiveKitAPI(livekit_server.url.replace("ws://", "http://"), livekit_server.api_key,
                              livekit_server.api_secret) as lk:
        dispatches = await lk.agent_dispatch.list_dispatch(grant["room"])
    assert [d.agent_name for d in dispatches] == [NOBODY]
    (room,) = await rooms_of(livekit_server, room_prefix)
    # A join after the room closed (token still valid) recreates it with the same tag and agent.
    c = api.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(grant["token"])
    assert c.room_config.metadata == room.metadata
    assert [a.agent_name for a in c.room_config.agents] == [NOBODY]


def test_caps_fail_closed_when_livekit_is_unreachable(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_MAX_CALLS_PER_CLIENT="2", LIVEKIT_URL=f"ws://127.0.0.1:{free_port()}")
    r = post_token(svc.url, {})
    assert r.status == 503 and "cannot count calls" in r.json()["error"], r.body
    assert int(r.headers["retry-after"]) >= 1
    log = svc.proc.log()
    assert "cannot count calls on LiveKit" in log and BASE_ENV["LIVEKIT_API_SECRET"] not in log


# ---------------------------------------------------------------- forwarded headers


def test_trusted_proxies_star_is_refused_at_start() -> None:
    err = one_line_error(run_service(PARLEY_TOKEN_TRUSTED_PROXIES="*"))
    assert err.startswith("parley-tokens: error: PARLEY_TOKEN_TRUSTED_PROXIES") and "refused" in err
    err = one_line_error(run_service(PARLEY_TOKEN_TRUSTED_PROXIES="10.0.0.0/8, 0.0.0.0/0"))
    assert "PARLEY_TOKEN_TRUSTED_PROXIES" in err
    err = one_line_error(run_service(PARLEY_TOKEN_TRUSTED_PROXIES="not-an-address"))
    assert "not an IP address or CIDR" in err


def access_clients(svc: TokenService) -> list[str]:
    return [json.loads(line)["client"] for line in svc.proc.log().splitlines() if line.startswith("{")]


def test_forwarded_for_is_believed_only_from_trusted_proxies(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_TRUSTED_PROXIES="127.0.0.1/32")
    xff = {"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"}
    assert request(svc.url, "POST", "/api/token", b"{}", headers={
        **xff, "X-Forwarded-For": "198.51.100.7, 127.0.0.1"}).status == 200
    # 127.0.0.2 is not a trusted proxy: whatever it claims, it is itself.
    assert request(svc.url, "POST", "/api/token", b"{}", source="127.0.0.2", headers={
        **xff, "X-Forwarded-For": "203.0.113.9"}).status == 200
    wait_for(lambda: len(access_clients(svc)) >= 2, 10)
    assert access_clients(svc)[-2:] == ["198.51.100.7", "127.0.0.2"]


def test_ipv6_clients_are_rate_limited_per_64(service_factory) -> None:
    svc = service_factory(PARLEY_TOKEN_TRUSTED_PROXIES="127.0.0.0/8", PARLEY_TOKEN_RATE_LIMIT="2")

    def from_(addr: str) -> Reply:
        return request(svc.url, "POST", "/api/token", b"{}", headers={
            "Authorization": f"Bearer {API_KEY}", "X-Forwarded-For": addr})

    assert from_("2001:db8:1:2::1").status == 200
    assert from_("2001:db8:1:2:aaaa:bbbb:cccc:dddd").status == 200
    same_64 = from_("2001:db8:1:2:ffff::9")
    assert same_64.status == 429 and int(same_64.headers["retry-after"]) >= 1  # a new address, same /64
    assert from_("2001:db8:1:3::1").status == 200  # the next /64 is someone else
    assert from_("198.51.100.1").status == 200 and from_("198.51.100.2").status == 200  # IPv4: per address


# ---------------------------------------------------------------- production credentials


PROD = {"PARLEY_ENV": "production", "PARLEY_TOKEN_API_KEY": "k" * 40,
        "LIVEKIT_API_KEY": "parley-prod", "LIVEKIT_API_SECRET": "s" * 40}


@pytest.mark.parametrize(("env", "variable"), [
    ({"LIVEKIT_API_KEY": "devkey"}, "LIVEKIT_API_KEY"),
    ({"LIVEKIT_API_SECRET": "secret"}, "LIVEKIT_API_SECRET"),
    ({"LIVEKIT_API_SECRET": "short-secret-31-bytes-long-xxxx"}, "LIVEKIT_API_SECRET"),
    ({"PARLEY_TOKEN_API_KEY": "short-bearer-key"}, "PARLEY_TOKEN_API_KEY"),
    ({"PARLEY_TOKEN_API_KEY": ""}, "PARLEY_TOKEN_API_KEY"),
])
def test_production_refuses_dev_credentials_and_short_keys(env: dict[str, str], variable: str) -> None:
    p = run_service(**{**PROD, **env})
    err = one_line_error(p)
    assert variable in err and "production" in err, err
    for secret in (env.get("LIVEKIT_API_SECRET"), env.get("PARLEY_TOKEN_API_KEY")):
        assert not secret or secret == "secret" or secret not in p.stderr + p.stdout


def test_non_loopback_bind_is_production() -> None:
    # Refused before anything is bound: the loopback-only rule for the tests holds.
    err = one_line_error(run_service("--host", "0.0.0.0", **{**PROD, "PARLEY_ENV": "", "LIVEKIT_API_KEY": "devkey"}))
    assert "LIVEKIT_API_KEY" in err and "--host 0.0.0.0" in err


def test_production_starts_with_proper_keys(service_factory) -> None:
    svc = service_factory(**PROD)
    assert post_token(svc.url, {}, key=PROD["PARLEY_TOKEN_API_KEY"]).status == 200


# ---------------------------------------------------------------- CSP and metrics


def test_web_app_has_a_content_security_policy(service_factory) -> None:
    svc = service_factory(PARLEY_LIVEKIT_PUBLIC_URL="wss://lk.example.com:7443")
    for path in ("/", "/healthz"):
        csp = request(svc.url, "GET", path).headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["default-src"] == "'self'" and directives["script-src"] == "'self'"
        assert directives["connect-src"].split() == ["'self'", "wss://lk.example.com:7443",
                                                     "https://lk.example.com:7443"]
        assert "unsafe" not in csp and directives["frame-ancestors"] == "'none'"


def test_metrics_count_a_401_and_a_429_on_their_own_port(service_factory) -> None:
    port = free_port()
    svc = service_factory(PARLEY_TOKEN_METRICS_PORT=str(port), PARLEY_TOKEN_RATE_LIMIT="2")
    assert post_token(svc.url, {}).status == 200
    assert post_token(svc.url, {}, key="wrong").status == 401
    assert post_token(svc.url, {}).status == 429
    text = scrape(port)
    assert sample(text, "parley_token_requests_total", reason="ok", status="200") == 1
    assert sample(text, "parley_token_requests_total", reason="wrong key", status="401") == 1
    assert sample(text, "parley_token_requests_total", reason="rate limited", status="429") == 1
    assert sample(text, "parley_token_rate_limited_total", limit="rate") == 1
    assert sample(text, "parley_token_mint_seconds_count") == 1
    assert 0 < sample(text, "parley_token_mint_seconds_sum") < 5
    # No address, room or identity ever becomes a label.
    assert "127.0.0.1" not in text and "web-" not in text
    # Not on the public API port.
    assert request(svc.url, "GET", "/metrics").status == 404


def test_metrics_port_taken_is_one_line(service_factory) -> None:
    busy = service_factory()
    p = subprocess.run([str(BIN / "parley-tokens"), "--port", str(free_port())],
                       env={**BASE_ENV, "PATH": "/usr/bin:/bin", "PARLEY_TOKEN_METRICS_PORT": str(busy.port)},
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"cannot serve metrics on 127.0.0.1:{busy.port} (PARLEY_TOKEN_METRICS_PORT)" in p.stderr
