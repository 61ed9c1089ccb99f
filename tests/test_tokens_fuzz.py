"""Property-based tests of `POST /api/token` on the real `parley-tokens` process:
malformed bodies, huge strings, wrong types, any Unicode (lone surrogates included),
random bytes and random Authorization headers. Never a 500, never a token for an
invalid request, and a token exactly as asked for a valid one.

The number of requests tried is written to test-output/token-fuzz.json."""

from __future__ import annotations

import http.client
import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from livekit import api

from harness.devstack import TokenService

from .test_tokens import API_KEY, BASE_ENV, CONTRACT_FIELDS, LK_KEY, LK_SECRET

# The request contract, written down independently of the implementation (with
# client-named rooms allowed, in the default prefix).
FIELDS = ("room", "identity", "name", "agent", "metadata")
ROOM = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
ROOM_PREFIX = "web-"
SERVER_ROOM = re.compile(r"web-[0-9a-f]{16}")
SERVER_IDENTITY = re.compile(r"web-[0-9a-f]{8}")
IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
AGENTS = ("parley-test", "helper")
MAX_BODY = 8192

COUNTS: Counter[str] = Counter()


def expected(body: bytes) -> dict[str, str] | None:
    """The request the service must serve, or None when it must answer 400."""
    if len(body) > MAX_BODY:
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.strip(" \t\r\n"):  # JSON's whitespace only
        return {}
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        return None
    if data is None:
        return {}
    if not isinstance(data, dict):
        return None
    data = {k: v for k, v in data.items() if v is not None}
    if set(data) - set(FIELDS):
        return None
    for key, value in data.items():
        if not isinstance(value, str):
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return None
        ok = {
            "room": ROOM.fullmatch(value) is not None and value.startswith(ROOM_PREFIX),
            "identity": IDENTITY.fullmatch(value) is not None,
            "name": 1 <= len(value) <= 128 and not CONTROL.search(value),
            "agent": value in AGENTS,
            "metadata": len(value) <= 1024,
        }[key]
        if not ok:
            return None
    return data


class Client:
    """One keep-alive connection, reopened when the server closes it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request("POST", "/api/token", body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                return r.status, data
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def client(out_dir: Path) -> Iterator[Client]:
    svc = TokenService(env={**BASE_ENV, "PARLEY_TOKEN_CLIENT_ROOMS": "1"}).start(
        out_dir / "logs", name="parley-tokens-fuzz")
    COUNTS.clear()
    yield Client(svc.port)
    svc.stop()
    report = {"requests": sum(COUNTS.values()), **dict(COUNTS)}
    (out_dir / "token-fuzz.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"\ntoken fuzz: {report}")
    assert "500" not in log_statuses(svc)


def log_statuses(svc: TokenService) -> set[str]:
    return {str(json.loads(line)["status"]) for line in svc.proc.log().splitlines() if line.startswith("{")}


def check(client: Client, body: bytes, *, headers: dict[str, str] | None = None,
          authorized: bool = True) -> None:
    status, raw = client.post(body, headers or {"Authorization": f"Bearer {API_KEY}"})
    COUNTS[str(status)] += 1
    assert status != 500, raw
    reply = json.loads(raw)
    want = expected(body)
    if not authorized:
        assert status == 401 and set(reply) == {"error"}, (status, reply)
        return
    if want is None:
        assert status == 400, (body[:200], status, reply)
        assert set(reply) == {"error"} and isinstance(reply["error"], str) and reply["error"]
        assert "\n" not in reply["error"] and len(reply["error"]) < 300
        return
    assert status == 200, (body[:200], reply)
    assert set(reply) == CONTRACT_FIELDS
    claims = api.TokenVerifier(LK_KEY, LK_SECRET).verify(reply["token"])
    assert claims.video is not None and claims.video.room == reply["room"]
    assert claims.identity == reply["identity"]
    if "room" in want:
        assert reply["room"] == want["room"]
    else:
        assert SERVER_ROOM.fullmatch(reply["room"]), reply["room"]
    # A requested identity comes back unique (a random suffix) and is the default display name.
    if "identity" in want:
        base, _, suffix = reply["identity"].rpartition("-")
        assert base == want["identity"][:55] and re.fullmatch(r"[0-9a-f]{8}", suffix), reply["identity"]
    else:
        assert SERVER_IDENTITY.fullmatch(reply["identity"]), reply["identity"]
    assert claims.name == want.get("name", want.get("identity", ""))
    assert claims.metadata == want.get("metadata", "")
    assert claims.room_config is not None
    assert [a.agent_name for a in claims.room_config.agents] == [want.get("agent", "parley-test")]


# Any Unicode, lone surrogates included (json.dumps escapes them as \udXXX).
any_char = st.characters(exclude_categories=())
any_text = st.text(alphabet=any_char, max_size=80)
huge_text = st.integers(min_value=60, max_value=12_000).map(lambda n: "x" * n)
plausible = st.one_of(
    st.from_regex(ROOM, fullmatch=True),
    st.from_regex(r"web-[A-Za-z0-9_-]{0,60}", fullmatch=True),
    st.from_regex(r"(call|dial)-[A-Za-z0-9_+-]{0,30}", fullmatch=True),  # telephony rooms: never
    st.from_regex(IDENTITY, fullmatch=True),
    st.sampled_from(AGENTS),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x2FFF), min_size=1, max_size=130),
)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), any_text,
                        huge_text, plausible)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)), max_leaves=8)
field_values = st.one_of(plausible, plausible, json_scalar, json_value)
request_objects = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.sampled_from(FIELDS), any_text), field_values, max_size=6)

printable = st.characters(exclude_categories=("Cs", "Cc"))
valid_objects = st.fixed_dictionaries({}, optional={
    "room": st.from_regex(r"web-[A-Za-z0-9_-]{0,60}", fullmatch=True),
    "identity": st.from_regex(IDENTITY, fullmatch=True),
    "name": st.text(alphabet=printable, min_size=1, max_size=128),
    "agent": st.sampled_from(AGENTS),
    "metadata": st.text(alphabet=printable, max_size=1024),
})
# Near misses: a valid object with one field broken or one unknown field added.
near_misses = st.tuples(valid_objects, any_text, field_values).map(lambda t: {**t[0], t[1]: t[2]})

FUZZ = settings(max_examples=700, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])


@FUZZ
@given(obj=st.one_of(request_objects, valid_objects, near_misses))
def test_request_objects(client: Client, obj: dict[str, Any]) -> None:
    check(client, json.dumps(obj).encode())


@FUZZ
@given(value=json_value)
def test_any_json_document(client: Client, value: Any) -> None:
    check(client, json.dumps(value).encode())


@settings(FUZZ, max_examples=400)
@given(body=st.one_of(st.binary(max_size=400), st.text(alphabet=any_char, max_size=200).map(
    lambda t: t.encode("utf-8", "surrogatepass"))))
def test_raw_bytes(client: Client, body: bytes) -> None:
    check(client, body)


@settings(FUZZ, max_examples=200)
@given(header=st.one_of(
    # Any valid HTTP field value: visible ASCII, space, and obs-text (0x80-0xFF).
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
            max_size=80),
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40).map(lambda k: f"Bearer {k}"),
))
def test_authorization_header(client: Client, header: str) -> None:
    scheme, _, key = header.strip().partition(" ")  # whitespace around a field value is not part of it
    ok = scheme.lower() == "bearer" and key.strip() == API_KEY
    check(client, b"{}", headers={"Authorization": header}, authorized=ok)
