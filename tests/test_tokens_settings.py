"""The token service's settings and pure rules, fast (no processes, no models): every
variable's name and default, one-line errors naming the variable, secrets hidden,
trusted-proxy resolution and /64 grouping, the CSP, and that tokens/ never imports the
worker. The same rules are tested against the real process in test_tokens_hardening.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tokens.app import content_security_policy
from tokens.clients import client_address, client_key
from tokens.settings import SettingsError, TokenSettings

TOKENS = Path(__file__).resolve().parent.parent / "tokens"
SECRET = "a-long-livekit-secret-that-must-never-leak-0123456789"
BEARER = "a-long-bearer-key-that-must-never-leak-0123456789"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A clean environment in a directory without .env."""
    import os

    for k in list(os.environ):
        if k.startswith(("LIVEKIT_", "PARLEY_")):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)

    def load(**values: str) -> TokenSettings:
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return TokenSettings.load()

    return load


def test_defaults_keep_the_documented_names(env) -> None:
    s = env()
    assert (s.livekit_url, s.livekit_api_key, s.secret) == ("ws://127.0.0.1:7880", "devkey", "secret")
    assert (s.agent_name, s.ttl_s, s.rate_limit, s.bearer_key) == ("parley", 900, 30, "")
    assert (s.room_prefix, s.client_rooms, s.sip_room_prefix) == ("web-", False, "call-")
    assert (s.max_calls_per_client, s.max_calls, s.metrics_port) == (3, 100, 9101)
    assert s.trusted_proxies == () and s.public_url == "ws://127.0.0.1:7880" and s.dev_mode


def test_environment_then_dotenv(env, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("PARLEY_TOKEN_TTL=120\nPARLEY_AGENT_NAME=from-dotenv\nPARLEY_STT=local\n")
    s = env(PARLEY_AGENT_NAME="from-env")
    assert (s.ttl_s, s.agent_name) == (120, "from-env")  # .env fills gaps; the environment wins


def test_lists_and_empty_values(env) -> None:
    s = env(PARLEY_TOKEN_AGENTS="a, b,,", PARLEY_TOKEN_CORS_ORIGINS="https://x.example", LIVEKIT_URL="")
    assert s.agents == ("a", "b") and s.cors_origins == ("https://x.example",)
    assert s.livekit_url == "ws://127.0.0.1:7880"  # empty means default


@pytest.mark.parametrize(("variable", "value", "reason"), [
    ("PARLEY_TOKEN_TTL", "5", "must be >= 60"),
    ("PARLEY_TOKEN_TTL", "soon", "is not an integer"),
    ("PARLEY_TOKEN_MAX_CALLS", "-1", "must be >= 0"),
    ("PARLEY_TOKEN_METRICS_PORT", "70000", "must be <= 65535"),
    ("PARLEY_TOKEN_CLIENT_ROOMS", "maybe", "not a boolean"),
    ("PARLEY_TOKEN_ROOM_PATTERN", "(", "not a valid regular expression"),
    ("PARLEY_TOKEN_ROOM_PREFIX", "bad prefix", "must match"),
    ("PARLEY_TOKEN_TRUSTED_PROXIES", "*", "'*' is refused"),
    ("PARLEY_TOKEN_TRUSTED_PROXIES", "::/0", "trusts every address"),
    ("PARLEY_TOKEN_TRUSTED_PROXIES", "10.0.0.0/8,proxy.local", "not an IP address or CIDR"),
    ("PARLEY_ENV", "staging", "is not one of: development, production"),
    ("LIVEKIT_URL", "livekit:7880", "is not a ws(s):// or http(s):// URL"),
])
def test_bad_values_are_one_line_naming_the_variable(env, variable: str, value: str, reason: str) -> None:
    with pytest.raises(SettingsError) as e:
        env(**{variable: value})
    msg = str(e.value)
    assert msg.startswith(variable) and reason in msg and "\n" not in msg, msg


def test_room_prefix_must_not_overlap_telephony(env) -> None:
    with pytest.raises(SettingsError, match=r"^PARLEY_TOKEN_ROOM_PREFIX='call-x' overlaps the telephony"):
        env(PARLEY_TOKEN_ROOM_PREFIX="call-x")
    with pytest.raises(SettingsError, match=r"'dial-'"):
        env(PARLEY_TOKEN_ROOM_PREFIX="dial-web-")


def test_secrets_never_show(env) -> None:
    s = env(LIVEKIT_API_SECRET=SECRET, PARLEY_TOKEN_API_KEY=BEARER)
    for text in (repr(s), str(s), str(s.masked()), str(s.model_dump())):
        assert SECRET not in text and BEARER not in text
    assert s.masked()["livekit_api_secret"] == f"***({len(SECRET)} chars)"
    # A bad secret-typed value is reported without its value.
    with pytest.raises(SettingsError) as e:
        TokenSettings.load(LIVEKIT_API_SECRET=["not", SECRET])
    assert SECRET not in str(e.value) and str(e.value).startswith("LIVEKIT_API_SECRET")


@pytest.mark.parametrize(("host", "values", "variable"), [
    ("127.0.0.1", {"PARLEY_ENV": "production"}, "PARLEY_TOKEN_API_KEY"),
    ("0.0.0.0", {"PARLEY_TOKEN_API_KEY": BEARER}, "LIVEKIT_API_KEY"),
    ("::", {"PARLEY_TOKEN_API_KEY": BEARER, "LIVEKIT_API_KEY": "prod"}, "LIVEKIT_API_SECRET"),
    ("10.1.2.3", {"PARLEY_TOKEN_API_KEY": BEARER, "LIVEKIT_API_KEY": "prod",
                  "LIVEKIT_API_SECRET": "x" * 31}, "LIVEKIT_API_SECRET"),
    ("0.0.0.0", {"PARLEY_TOKEN_API_KEY": "short", "LIVEKIT_API_KEY": "prod",
                 "LIVEKIT_API_SECRET": SECRET}, "PARLEY_TOKEN_API_KEY"),
])
def test_production_refusals(env, host: str, values: dict[str, str], variable: str) -> None:
    s = env(**values)
    with pytest.raises(SettingsError) as e:
        s.check_production(host)
    assert variable in str(e.value) and "\n" not in str(e.value)
    assert SECRET not in str(e.value) and BEARER not in str(e.value)


def test_development_on_loopback_allows_dev_keys(env) -> None:
    env().check_production("127.0.0.1")
    env().check_production("localhost")
    env(PARLEY_TOKEN_API_KEY=BEARER, LIVEKIT_API_KEY="prod", LIVEKIT_API_SECRET=SECRET).check_production("0.0.0.0")


PROXIES = TokenSettings.model_validate({"PARLEY_TOKEN_TRUSTED_PROXIES": "10.0.0.0/8, 2001:db8:ffff::/48"}).trusted_proxies


@pytest.mark.parametrize(("peer", "xff", "client"), [
    ("203.0.113.5", "198.51.100.1", "203.0.113.5"),  # not a proxy: its header is ignored
    ("10.1.1.1", "198.51.100.1", "198.51.100.1"),
    ("10.1.1.1", "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # the left end is the client's own claim
    ("10.1.1.1", "198.51.100.1, 10.2.2.2", "198.51.100.1"),  # a chain of trusted proxies
    ("10.1.1.1", "garbage, 10.2.2.2", "10.2.2.2"),  # stop at what we can vouch for
    ("10.1.1.1", None, "10.1.1.1"),
    ("2001:db8:ffff::1", "[2001:db8:1::5]:443", "2001:db8:1::5"),
    ("::ffff:10.1.1.1", "198.51.100.1", "198.51.100.1"),  # IPv4-mapped peer of a dual-stack socket
])
def test_client_address_behind_trusted_proxies(peer: str, xff: str | None, client: str) -> None:
    assert client_address(peer, xff, PROXIES) == client


def test_client_key_groups_ipv6_per_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("198.51.100.1") == "198.51.100.1" != client_key("198.51.100.2")
    assert client_key("::ffff:198.51.100.1") == "198.51.100.1"


def test_csp_allows_only_itself_and_livekit() -> None:
    csp = content_security_policy("wss://lk.example.com")
    assert "connect-src 'self' wss://lk.example.com https://lk.example.com;" in csp
    assert "script-src 'self';" in csp and "unsafe" not in csp
    assert "connect-src 'self' ws://127.0.0.1:7880 http://127.0.0.1:7880;" in content_security_policy(
        "ws://127.0.0.1:7880")


def test_tokens_never_imports_the_worker() -> None:
    for path in sorted(TOKENS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            assert not [n for n in names if n.split(".")[0] in ("agent", "harness", "ops")], (path.name, names)
